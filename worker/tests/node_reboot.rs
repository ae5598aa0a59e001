//! The operator's reboot route (`POST /v1/node/reboot`) against a real systemd: a node
//! whose PID 1 is systemd with a real D-Bus system bus (`hostplug_testenv::systemd`).
//! The route calls systemd's `Reboot` over the node's bus socket; systemd stops the
//! node's units and ends; the test environment's supervisor simulates the power cycle
//! (a new boot ID, the same container started again — that is the only stand-in).
//! Counted from the node's side: its list of boot IDs grows by exactly one for a request
//! sent twice.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use hostplug_testenv::systemd::{EXCHANGE_DIR, POWER_CYCLE_TIMEOUT, SystemdNode};
use hostplug_worker::auth::BearerToken;
use hostplug_worker::node_control::{NodeControl, routes, systemd_reboot};
use hostplug_worker::node_lock::NodeLock;
use tower::ServiceExt;

/// How long the test waits after the reboot for a second one that must not come.
const SETTLE: Duration = Duration::from_secs(5);

async fn post(app: &axum::Router, token: &str, body: &str) -> (u16, String) {
    let req = Request::builder()
        .method("POST")
        .uri("/v1/node/reboot")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("answer");
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_request_sent_twice_reboots_the_real_node_once() {
    let root = tempfile::tempdir().expect("tempdir");
    let run = tempfile::tempdir().expect("tempdir");
    let node = tokio::task::block_in_place(|| SystemdNode::start("reboot-node", root.path()))
        .unwrap_or_else(|e| panic!("cannot start the systemd node: {e}"));
    let before = node.boot_id();
    assert_eq!(node.boot_ids().len(), 1);

    let secret = "t".repeat(32);
    let app = routes(
        NodeControl {
            // The node's boot ID as the environment gives it to each boot (inside the
            // node it is bind-mounted over the kernel's).
            boot_id_file: root.path().join(EXCHANGE_DIR).join("boot_id"),
            bus_socket: Some(node.bus_socket()),
            node_lock: Some(NodeLock::new(run.path().join("mutate.lock"))),
            reboot: systemd_reboot(),
        },
        BearerToken::new(&secret).expect("token"),
    );
    let req = r#"{"id":"task-uid/1","reason":"test: kernel arguments changed"}"#;
    let (status, body) = post(&app, &secret, req).await;
    assert_eq!(status, 202, "{body}");
    assert!(
        body.contains(&before) && body.contains(r#""repeated":false"#),
        "{body}"
    );
    // The operator's repeat (a new leader that does not know the first was sent).
    let (status, body) = post(&app, &secret, req).await;
    assert_eq!(status, 202, "{body}");
    assert!(body.contains(r#""repeated":true"#), "{body}");

    let after = tokio::task::block_in_place(|| node.wait_rebooted(&before, POWER_CYCLE_TIMEOUT))
        .unwrap_or_else(|e| panic!("no reboot: {e}"));
    assert_ne!(after, before);
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        node.boot_ids(),
        vec![before, after],
        "exactly one reboot, counted from the node's boots"
    );
}

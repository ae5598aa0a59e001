//! The control plane and the harness, against real etcd, kube-apiserver and
//! kube-controller-manager and kube-scheduler (built by `make setup`). Mostly without nodes:
//! the node simulator has its own tests. Each test starts a private environment; they run
//! in parallel.

use std::time::Duration;

use hostplug_testenv::{EnvConfig, Environment};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Pod, PodSpec, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::conditions;
use kube::{Api, Resource, ResourceExt};

const GC_TIMEOUT: Duration = Duration::from_secs(90);

async fn start() -> Environment {
    Environment::start(EnvConfig::control_plane_only())
        .await
        .expect("start the control plane")
}

#[tokio::test]
async fn the_api_server_answers_and_kubectl_works() {
    let env = start().await;
    let client = env.admin_client();
    let version = client.apiserver_version().await.expect("server version");
    let expected_minor = hostplug_testenv::K8S_VERSION
        .split('.')
        .nth(1)
        .expect("a minor version");
    assert_eq!(version.major, "1");
    assert_eq!(version.minor, expected_minor);

    let namespaces: Api<Namespace> = Api::all(client);
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .expect("list namespaces")
        .into_iter()
        .map(|n| n.name_any())
        .collect();
    assert!(names.iter().any(|n| n == "kube-system"), "{names:?}");

    let kubeconfig = env.kubeconfig_path();
    assert!(
        kubeconfig.display().to_string().contains("kubeconfig"),
        "{}",
        kubeconfig.display()
    );
    let out = tokio::process::Command::new(env.kubectl())
        .args(["get", "namespaces", "-o", "name"])
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("namespace/default"));
    env.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_service_account_gets_only_the_rights_it_was_given() {
    let env = start().await;
    let accounts: Api<ServiceAccount> = Api::namespaced(env.admin_client(), "default");
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("nobody".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("create the ServiceAccount");

    let client = env
        .service_account_client("default", "nobody")
        .await
        .expect("a client for the ServiceAccount");
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "default");
    match configmaps.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }

    // Granting the right with server-side-applied YAML makes the same request succeed.
    let applied = env
        .apply_yaml(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: read-configmaps
rules:
  - apiGroups: [""]
    resources: ["configmaps"]
    verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: nobody-reads-configmaps
subjects:
  - kind: ServiceAccount
    name: nobody
    namespace: default
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: read-configmaps
"#,
        )
        .await
        .expect("apply the Role and RoleBinding");
    assert_eq!(applied.len(), 2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match configmaps.list(&ListParams::default()).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("not yet allowed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("still not allowed after the RoleBinding: {e}"),
        }
    }
    // …and nothing more.
    match configmaps
        .create(&PostParams::default(), &ConfigMap::default())
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert!(status.code == 403 || status.code == 422, "{status:?}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // The kubeconfig written for a child process authenticates the same way.
    let path = env
        .service_account_kubeconfig("default", "nobody")
        .await
        .expect("a kubeconfig for the ServiceAccount");
    let out = tokio::process::Command::new(env.kubectl())
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .env("KUBECONFIG", &path)
        .output()
        .await
        .expect("run kubectl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "system:serviceaccount:default:nobody",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn deleting_an_owner_collects_its_dependents() {
    let env = start().await;
    let configmaps: Api<ConfigMap> = Api::namespaced(env.admin_client(), "default");
    let owner = configmaps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("owner".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("create the owner");
    let reference = OwnerReference {
        api_version: ConfigMap::api_version(&()).into_owned(),
        kind: ConfigMap::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.uid().expect("the owner has a uid"),
        ..Default::default()
    };
    configmaps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("dependent".into()),
                    owner_references: Some(vec![reference]),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("create the dependent");

    configmaps
        .delete("owner", &DeleteParams::background())
        .await
        .expect("delete the owner");
    let dependent_uid = configmaps
        .get("dependent")
        .await
        .ok()
        .and_then(|d| d.uid())
        .unwrap_or_default();
    env.wait_for(
        &configmaps,
        "dependent",
        conditions::is_deleted(&dependent_uid),
        GC_TIMEOUT,
    )
    .await
    .expect("the garbage collector deletes the dependent");
    env.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_panicking_test_leaves_no_process_behind() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let failing_test = tokio::spawn(async move {
        let env = start().await;
        let seen = (env.control_plane().process_ids(), env.dir().to_owned());
        tx.send(seen).expect("report the process ids");
        panic!("a test failing on purpose, with its environment running");
    });
    assert!(failing_test.await.is_err(), "the task panicked");
    let (pids, dir) = rx.await.expect("the process ids");
    assert_eq!(pids.len(), 4, "{pids:?}");
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} outlived the panicking test"
        );
    }
    // A panicking test keeps its directory for inspection; this one was on purpose.
    assert!(dir.join("logs/kube-apiserver.log").is_file());
    std::fs::remove_dir_all(&dir).expect("remove the kept directory");
}

#[tokio::test]
async fn the_scheduler_places_pods_on_worker_nodes_only() {
    let env = Environment::start(EnvConfig::default())
        .await
        .expect("start the control plane and the nodes");
    let pods: Api<Pod> = Api::namespaced(env.admin_client(), "default");
    for name in ["unplaced-1", "unplaced-2", "unplaced-3"] {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "main".into(),
                    image: Some("registry.invalid/unmapped:1".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("create a Pod without nodeName");
        let scheduled = env
            .wait_for(
                &pods,
                name,
                |p: Option<&Pod>| {
                    p.and_then(|p| p.spec.as_ref())
                        .and_then(|s| s.node_name.as_ref())
                        .is_some()
                },
                Duration::from_secs(60),
            )
            .await
            .expect("the scheduler binds the Pod")
            .expect("the Pod exists");
        let node = scheduled
            .spec
            .and_then(|s| s.node_name)
            .expect("a node name");
        // `master` carries the control-plane taint, which the Pod does not tolerate.
        assert!(node == "node1" || node == "node2", "{name} went to {node}");
    }
    env.shutdown().await.expect("shutdown");
}

//! The console end to end in a real headless Chromium, over WebDriver, against the real
//! system: control plane, simulated nodes, the operator and its workers (the e2e harness),
//! and the console binary running as its own ServiceAccount with `deploy/web/rbac.yaml`.
//!
//! A person's first session: register the first account with the setup token from the
//! console's log (it becomes admin; the console serves HTTPS with a self-signed
//! certificate and Secure cookies, its defaults), log in, open
//! the catalog, create an etc-file task from the form generated from the method's schema
//! as a dry run, see it succeed with a diff and nothing written, apply it for real, see it
//! succeed with a diff and the file changed on the node; edit it (a new generation of the
//! same task, run again); follow a three-node rollout live on its page from 0 % to
//! 100 %. The form's parameters come in the plugin's own order. A documented enum
//! (etc-file's `state`, an enum with a doc comment per variant, which schemars writes as
//! a `oneOf` of `const`s) is a select of its values with their descriptions, and a value
//! outside it is refused on the form, naming the field, before any HostTask exists. A
//! screenshot of each page goes to `target/screenshots/` for review.

mod webdriver;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use hostplug_e2e::{Harness, NAMESPACE, repo_root};
use webdriver::Browser;

/// The console's ServiceAccount, from deploy/web/rbac.yaml.
const CONSOLE_SA: &str = "hostplug-web";
/// How long a task may take from the browser's point of view.
const TASK_WAIT: Duration = Duration::from_secs(180);
const PASSWORD: &str = "a long enough password";
const LINE: &str = "server ntp.console.example iburst";

fn screenshot_dir() -> PathBuf {
    repo_root().join("target/screenshots")
}

struct Console {
    url: String,
    _child: tokio::process::Child,
    log: PathBuf,
    /// The one-time setup token the console printed in its log.
    setup_token: String,
}

/// An HTTP client for the console's self-signed certificate.
fn insecure_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// Finds `setup_token=<token>` in the console's log (colour codes, if any, removed).
fn setup_token_in(log: &str) -> Option<String> {
    let mut plain = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let start = plain.find("setup_token=")? + "setup_token=".len();
    let token: String = plain[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (!token.is_empty()).then_some(token)
}

/// Starts the `hostplug-web` binary as its ServiceAccount on a free loopback port, with
/// its defaults: HTTPS with a self-signed certificate, Secure cookies, and a one-time
/// setup token in its log.
async fn start_console(h: &Harness) -> anyhow::Result<Console> {
    h.env
        .apply_yaml_file(repo_root().join("deploy/web/rbac.yaml"))
        .await
        .context("applying deploy/web/rbac.yaml")?;
    let kubeconfig = h
        .env
        .service_account_kubeconfig(NAMESPACE, CONSOLE_SA)
        .await
        .context("console kubeconfig")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = h.env.dir().join("console");
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("console.log");
    let out = std::fs::File::create(&log)?;
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hostplug-web"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--db-path")
        .arg(dir.join("console.db"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--namespace", NAMESPACE])
        .env("RUST_LOG", "info,hostplug_web=debug")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .context("starting hostplug-web")?;
    let url = format!("https://127.0.0.1:{port}");
    let client = insecure_client()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{url}/healthz")).send().await
            && r.status().is_success()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "console did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let setup_token = setup_token_in(&std::fs::read_to_string(&log)?)
        .context("no setup token in the console's log")?;
    Ok(Console {
        url,
        _child: child,
        log,
        setup_token,
    })
}

async fn shot(b: &Browser, name: &str) -> anyhow::Result<()> {
    b.screenshot(&screenshot_dir().join(format!("{name}.png")))
        .await
        .map_err(|e| anyhow::anyhow!("screenshot {name}: {e}"))
}

/// Waits until the page's `#task-state` reads `state` (the detail page refreshes itself).
async fn wait_state(b: &Browser, state: &str, console_log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + TASK_WAIT;
    loop {
        let now = b
            .find("#task-state")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .text()
            .await
            .unwrap_or_default();
        if now == state {
            return Ok(());
        }
        if now == "Failed" || Instant::now() > deadline {
            let page = b.source().await.unwrap_or_default();
            bail!(
                "task is {now}, expected {state}\npage:\n{page}\nconsole log:\n{}",
                std::fs::read_to_string(console_log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn wd(e: Box<dyn std::error::Error + Send + Sync>) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Registers the first account with the setup token from the console's log (it becomes
/// the admin) and logs in as it; with `screenshots`, the two forms are saved.
async fn register_and_log_in(
    b: &Browser,
    console: &Console,
    screenshots: bool,
) -> anyhow::Result<()> {
    let url = |path: &str| format!("{}{}", console.url, path);
    // Register the first account with the setup token from the log: it becomes the admin.
    b.goto(&url("/register")).await.map_err(wd)?;
    assert!(
        b.source()
            .await
            .map_err(wd)?
            .contains("No administrator yet")
    );
    b.find("#username")
        .await
        .map_err(wd)?
        .fill("admin")
        .await
        .map_err(wd)?;
    b.find("#password")
        .await
        .map_err(wd)?
        .fill(PASSWORD)
        .await
        .map_err(wd)?;
    b.find("#password2")
        .await
        .map_err(wd)?
        .fill(PASSWORD)
        .await
        .map_err(wd)?;
    b.find("#setup-token")
        .await
        .map_err(wd)?
        .fill(&console.setup_token)
        .await
        .map_err(wd)?;
    if screenshots {
        shot(b, "01-register").await?;
    }
    b.find("#register-submit")
        .await
        .map_err(wd)?
        .click()
        .await
        .map_err(wd)?;
    let notice = b
        .wait_for("#notice", Duration::from_secs(10))
        .await
        .map_err(wd)?
        .text()
        .await
        .map_err(wd)?;
    assert!(notice.contains("administrator"), "{notice}");

    // Log in.
    b.find("#username")
        .await
        .map_err(wd)?
        .fill("admin")
        .await
        .map_err(wd)?;
    b.find("#password")
        .await
        .map_err(wd)?
        .fill(PASSWORD)
        .await
        .map_err(wd)?;
    if screenshots {
        shot(b, "02-login").await?;
    }
    b.find("#login-submit")
        .await
        .map_err(wd)?
        .click()
        .await
        .map_err(wd)?;
    b.wait_for("#tasks", Duration::from_secs(10))
        .await
        .map_err(wd)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_session_in_a_real_browser() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let console = start_console(&h).await?;
    let b = Browser::start().await.map_err(wd)?;
    let url = |path: &str| format!("{}{}", console.url, path);

    // Plain HTTP is not served, and cookies are Secure.
    assert!(
        reqwest::get(console.url.replace("https://", "http://") + "/healthz")
            .await
            .is_err(),
        "the console answered plain HTTP"
    );
    let login = insecure_client()?.get(url("/login")).send().await?;
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");

    register_and_log_in(&b, &console, true).await?;
    let who = b
        .find("#current-user")
        .await
        .map_err(wd)?
        .text()
        .await
        .map_err(wd)?;
    assert_eq!(who, "admin");
    shot(&b, "03-tasks-empty").await?;

    // The catalog shows etc-file, its capabilities and the ensure-line parameters.
    b.goto(&url("/plugins")).await.map_err(wd)?;
    b.wait_for("#plugin-etc-file", Duration::from_secs(10))
        .await
        .map_err(wd)?;
    b.find("#method-etc-file-ensure-line summary")
        .await
        .map_err(wd)?
        .click()
        .await
        .map_err(wd)?;
    let catalog = b.source().await.map_err(wd)?;
    for needle in [
        "etc-file",
        "sha256:",
        "/etc: write",
        "ensure-line",
        "<code>path</code>",
        "<code>line</code>",
    ] {
        assert!(catalog.contains(needle), "catalog lacks {needle}");
    }
    shot(&b, "04-catalog").await?;

    // New task: choose plugin and method in the selects; the form comes from the schema.
    b.goto(&url("/tasks/new")).await.map_err(wd)?;
    b.find("#plugin-select option[value='etc-file']")
        .await
        .map_err(wd)?
        .click()
        .await
        .map_err(wd)?;
    b.wait_for("#method-select", Duration::from_secs(10))
        .await
        .map_err(wd)?;
    b.find("#method-select option[value='ensure-line']")
        .await
        .map_err(wd)?
        .click()
        .await
        .map_err(wd)?;
    b.wait_for("#task-form", Duration::from_secs(10))
        .await
        .map_err(wd)?;
    // The parameters come in the plugin's own order (etc-file declares path, line,
    // regexp, …), not alphabetically.
    let form = b.source().await.map_err(wd)?;
    let at = |id: &str| form.find(&format!("id=\"p.{id}\"")).unwrap_or(usize::MAX);
    assert!(
        at("path") < at("line") && at("line") < at("regexp") && at("regexp") < at("atomic"),
        "form fields out of the schema's order"
    );
    b.find("[id='p.path']")
        .await
        .map_err(wd)?
        .fill("/etc/chrony.conf")
        .await
        .map_err(wd)?;
    b.find("[id='p.line']")
        .await
        .map_err(wd)?
        .fill(LINE)
        .await
        .map_err(wd)?;
    b.find("#node-list input[value='node1']")
        .await
        .map_err(wd)?
        .click()
        .await
        .map_err(wd)?;
    // Rollout limits and timeout: "apply" must keep them.
    for (field, value) in [
        ("#max-parallel", "1"),
        ("#max-failures", "0"),
        ("#ttl-seconds", "3600"),
    ] {
        b.find(field)
            .await
            .map_err(wd)?
            .fill(value)
            .await
            .map_err(wd)?;
    }
    shot(&b, "05-new-task-form").await?;
    let before = std::fs::read_to_string(h.etc("node1")?.join("chrony.conf")).unwrap_or_default();

    // Dry run first: succeeds with a diff, writes nothing.
    b.find("#dry-run")
        .await
        .map_err(wd)?
        .click()
        .await
        .map_err(wd)?;
    b.wait_for("#task-state", Duration::from_secs(10))
        .await
        .map_err(wd)?;
    assert!(
        b.url()
            .await
            .map_err(wd)?
            .contains("/tasks/etc-file-ensure-line-dry-")
    );
    let dry_url = b.url().await.map_err(wd)?;
    let dry_task = dry_url.rsplit('/').next().unwrap_or_default().to_owned();
    wait_state(&b, "Succeeded", &console.log).await?;
    let dry = b.source().await.map_err(wd)?;
    assert!(dry.contains("would change"), "dry run reports a change");
    assert!(
        dry.contains(&format!("<span class=\"add\">+{LINE}</span>")),
        "diff shown:\n{dry}"
    );
    shot(&b, "06-dry-run-succeeded").await?;
    let after_dry =
        std::fs::read_to_string(h.etc("node1")?.join("chrony.conf")).unwrap_or_default();
    assert_eq!(before, after_dry, "a dry run wrote to the node");

    // Apply for real from the dry run's page.
    b.find("#apply")
        .await
        .map_err(wd)?
        .click()
        .await
        .map_err(wd)?;
    b.accept_dialog().await.map_err(wd)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.url().await.map_err(wd)?.contains("-dry-") {
        if Instant::now() > deadline {
            bail!("apply did not open the new task");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_state(&b, "Succeeded", &console.log).await?;
    // The applied task is the dry run's spec with only dryRun flipped.
    let applied_url = b.url().await.map_err(wd)?;
    let applied_task = applied_url.rsplit('/').next().unwrap_or_default();
    let dry_spec = h.tasks().get(&dry_task).await?.spec;
    let applied_spec = h.tasks().get(applied_task).await?.spec;
    assert!(dry_spec.dry_run && !applied_spec.dry_run);
    let mut expected = dry_spec.clone();
    expected.dry_run = false;
    assert_eq!(applied_spec, expected, "apply changed more than dryRun");
    let rollout = applied_spec.rollout.clone().context("rollout kept")?;
    assert_eq!((rollout.max_parallel, rollout.max_failures), (1, 0));
    assert_eq!(applied_spec.ttl_seconds_after_finished, Some(3600));
    let applied = b.source().await.map_err(wd)?;
    assert!(applied.contains(">changed<"), "node reports changed");
    assert!(applied.contains(&format!("<span class=\"add\">+{LINE}</span>")));
    shot(&b, "07-applied-succeeded").await?;
    let after = std::fs::read_to_string(h.etc("node1")?.join("chrony.conf"))?;
    assert!(
        after.contains(&format!("{LINE}\n")),
        "the node's file: {after}"
    );
    let node2 = std::fs::read_to_string(h.etc("node2")?.join("chrony.conf")).unwrap_or_default();
    assert!(!node2.contains(LINE), "only node1 was targeted");

    // Edit the applied task: the same task, a new generation, run again on its node.
    const LINE2: &str = "server ntp2.console.example iburst";
    b.find("#edit")
        .await
        .map_err(wd)?
        .click()
        .await
        .map_err(wd)?;
    b.wait_for("#task-form", Duration::from_secs(10))
        .await
        .map_err(wd)?;
    b.find("[id='p.line']")
        .await
        .map_err(wd)?
        .fill(LINE2)
        .await
        .map_err(wd)?;
    shot(&b, "07c-edit-form").await?;
    b.find("#apply-now")
        .await
        .map_err(wd)?
        .click()
        .await
        .map_err(wd)?;
    b.accept_dialog().await.map_err(wd)?;
    let edited = h
        .wait_task(applied_task, |t| {
            t.metadata.generation == Some(2)
                && t.status
                    .as_ref()
                    .is_some_and(|s| s.observed_generation == Some(2) && s.state.is_finished())
        })
        .await?;
    let st = edited.status.clone().unwrap_or_default();
    assert_eq!(edited.metadata.generation, Some(2));
    assert_eq!(st.observed_generation, Some(2), "{st:?}");
    assert_eq!(st.state, hostplug_api::crd::TaskState::Succeeded, "{st:?}");
    let mut expected = applied_spec.clone();
    if let Some(p) = expected
        .http
        .as_mut()
        .and_then(|h| h.call.parameter.as_mut())
    {
        p["line"] = serde_json::json!(LINE2);
    }
    assert_eq!(edited.spec, expected, "the edit changed more than the line");
    // The page (the same task's) shows the new generation succeeded.
    let deadline = Instant::now() + TASK_WAIT;
    loop {
        let generation = b
            .find("#task-generation")
            .await
            .map_err(wd)?
            .text()
            .await
            .unwrap_or_default();
        let state = b
            .find("#task-state")
            .await
            .map_err(wd)?
            .text()
            .await
            .unwrap_or_default();
        if generation == "2 (edited)" && state == "Succeeded" {
            break;
        }
        if Instant::now() > deadline {
            bail!("edited task shows generation {generation:?}, state {state}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        b.url()
            .await
            .map_err(wd)?
            .ends_with(&format!("/tasks/{applied_task}"))
    );
    shot(&b, "07d-edited-succeeded").await?;
    let after = std::fs::read_to_string(h.etc("node1")?.join("chrony.conf"))?;
    assert!(
        after.contains(&format!("{LINE2}\n")),
        "the node's file: {after}"
    );

    // Revert it from its page: a revert task is made and shown; it takes back what the
    // current run (the edit) changed on node1, and nothing else.
    b.find("#revert")
        .await
        .map_err(wd)?
        .click()
        .await
        .map_err(wd)?;
    b.accept_dialog().await.map_err(wd)?;
    wait_state(&b, "Succeeded", &console.log).await?;
    let revert_url = b.url().await.map_err(wd)?;
    assert!(
        revert_url.contains("/tasks/revert-") && !revert_url.ends_with(applied_task),
        "{revert_url}"
    );
    shot(&b, "07e-reverted").await?;
    let reverted = std::fs::read_to_string(h.etc("node1")?.join("chrony.conf"))?;
    assert!(
        !reverted.contains(LINE2) && reverted.contains(&format!("{LINE}\n")),
        "the node's file after the revert: {reverted}"
    );

    // A running rollout followed live: three nodes one after the other, each sleeping
    // in the plugin, watched on the task's page through its live stream (not polling)
    // from 0 % through the steps in between to 100 %.
    h.publish_plugin("test-spin.wasm", "test-spin", "none")
        .await?;
    h.apply(&format!(
        "apiVersion: hostplug.dev/v1alpha1\nkind: HostTask\nmetadata: {{name: live-rollout, namespace: {NAMESPACE}}}\n\
         spec: {{targetType: All, http: {{api: test-spin, method: sleep, parameter: {{ms: 1500}}}}, rollout: {{maxParallel: 1}}}}\n"
    ))
    .await?;
    b.goto(&url("/tasks/live-rollout")).await.map_err(wd)?;
    let mut seen_percent: Vec<String> = Vec::new();
    let mut seen_live: Vec<String> = Vec::new();
    let mut mid_shot = false;
    let deadline = Instant::now() + TASK_WAIT;
    loop {
        let percent = b
            .find("#task-percent")
            .await
            .map_err(wd)?
            .text()
            .await
            .unwrap_or_default();
        let live = b
            .find("#live-status")
            .await
            .map_err(wd)?
            .text()
            .await
            .unwrap_or_default();
        let state = b
            .find("#task-state")
            .await
            .map_err(wd)?
            .text()
            .await
            .unwrap_or_default();
        if seen_percent.last() != Some(&percent) {
            seen_percent.push(percent.clone());
        }
        if seen_live.last() != Some(&live) {
            seen_live.push(live.clone());
        }
        if !mid_shot && percent != "0 %" && percent != "100 %" {
            shot(&b, "07a-live-progress").await?;
            mid_shot = true;
        }
        if state == "Succeeded" && live == "Finished." {
            // The three reads above are not atomic: the last fragment may have replaced
            // the page between reading the percent and the state. Read it once more.
            let last = b
                .find("#task-percent")
                .await
                .map_err(wd)?
                .text()
                .await
                .unwrap_or_default();
            if seen_percent.last() != Some(&last) {
                seen_percent.push(last);
            }
            break;
        }
        if state == "Failed" || Instant::now() > deadline {
            bail!(
                "live rollout is {state} ({percent}, {live}); seen {seen_percent:?} {seen_live:?}\n{}",
                b.source().await.unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(
        seen_percent.last().map(String::as_str),
        Some("100 %"),
        "{seen_percent:?}"
    );
    assert!(
        seen_percent.iter().any(|p| p == "33 %" || p == "66 %"),
        "no step between 0 and 100 % seen: {seen_percent:?}"
    );
    assert!(
        seen_live.iter().any(|l| l.starts_with("Live:")),
        "the page did not follow the live stream: {seen_live:?}"
    );
    let done = b.source().await.map_err(wd)?;
    assert_eq!(
        done.matches("data-node=").count(),
        6,
        "3 nodes in the strip and 3 cards"
    );
    assert!(done.contains("3/3 nodes"), "{done}");
    shot(&b, "07b-live-finished").await?;

    // The list shows the tasks (the revert task too), succeeded; the audit log has who
    // did what.
    b.goto(&url("/tasks")).await.map_err(wd)?;
    let list = b
        .find("#task-rows")
        .await
        .map_err(wd)?
        .text()
        .await
        .map_err(wd)?;
    assert_eq!(list.matches("Succeeded").count(), 4, "{list}");
    assert!(list.contains("1/1"));
    shot(&b, "08-tasks").await?;
    // The list's live refresh (a watch on HostTasks, as the console's ServiceAccount)
    // is healthy: the indicator would turn "stale" on an error.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let live = b.source().await.map_err(wd)?;
    assert!(live.contains("class=\"muted live\""), "live refresh failed");

    // Delete the dry run from its page (the delete verb of the console's Role).
    let dry_name = list
        .split_whitespace()
        .find(|w| w.contains("-dry-"))
        .context("dry run in the list")?
        .to_owned();
    b.goto(&url(&format!("/tasks/{dry_name}")))
        .await
        .map_err(wd)?;
    b.find("#delete")
        .await
        .map_err(wd)?
        .click()
        .await
        .map_err(wd)?;
    b.accept_dialog().await.map_err(wd)?;
    b.wait_for("#tasks", Duration::from_secs(10))
        .await
        .map_err(wd)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = b
            .find("#task-rows")
            .await
            .map_err(wd)?
            .text()
            .await
            .map_err(wd)?;
        if !rows.contains(&dry_name) {
            break;
        }
        if Instant::now() > deadline {
            bail!("{dry_name} still listed after deletion: {rows}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    b.goto(&url("/admin/users")).await.map_err(wd)?;
    shot(&b, "10-users").await?;
    b.goto(&url("/admin/audit")).await.map_err(wd)?;
    let audit = b
        .find("#audit")
        .await
        .map_err(wd)?
        .text()
        .await
        .map_err(wd)?;
    assert!(audit.contains("task.create") && audit.contains("login") && audit.contains("register"));
    assert!(audit.contains("task.delete"), "{audit}");
    shot(&b, "09-audit").await?;

    drop(b);
    h.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_documented_enum_is_a_select_and_a_bad_value_is_refused() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let console = start_console(&h).await?;
    let b = Browser::start().await.map_err(wd)?;
    register_and_log_in(&b, &console, false).await?;

    // etc-file's ensure-block: `state` is `enum State { /// … Present, /// … Absent }`.
    b.goto(&format!(
        "{}/tasks/new?plugin=etc-file&method=ensure-block",
        console.url
    ))
    .await
    .map_err(wd)?;
    b.wait_for("#task-form", Duration::from_secs(10))
        .await
        .map_err(wd)?;
    b.find("select[id='p.state']").await.map_err(wd)?;
    let mut options = Vec::new();
    for o in b
        .find_all("select[id='p.state'] option")
        .await
        .map_err(wd)?
    {
        options.push(o.text().await.map_err(wd)?);
    }
    assert_eq!(
        options,
        [
            "(default)",
            "present — The block is in the file with exactly the given content.",
            "absent — The block and its markers are removed.",
        ],
        "the select's options"
    );
    // In the plugin's own order (path, block, marker, …, state, insertafter, …).
    let form = b.source().await.map_err(wd)?;
    let at = |id: &str| form.find(&format!("id=\"p.{id}\"")).unwrap_or(usize::MAX);
    assert!(
        at("path") < at("block") && at("block") < at("state") && at("state") < at("insertafter"),
        "form fields out of the schema's order"
    );
    shot(&b, "11-enum-select").await?;

    // A value outside the enum (what a crafted request would send) is refused on the
    // form, naming the field, and no HostTask is created.
    b.find("[id='p.path']")
        .await
        .map_err(wd)?
        .fill("/etc/hostplug-enum.conf")
        .await
        .map_err(wd)?;
    b.find("#node-list input[value='node1']")
        .await
        .map_err(wd)?
        .click()
        .await
        .map_err(wd)?;
    b.execute(
        "document.querySelector(\"select[id='p.state'] option[value='absent']\").value = 'sideways';",
    )
    .await
    .map_err(wd)?;
    b.find("select[id='p.state'] option[value='sideways']")
        .await
        .map_err(wd)?
        .click()
        .await
        .map_err(wd)?;
    b.find("#dry-run")
        .await
        .map_err(wd)?
        .click()
        .await
        .map_err(wd)?;
    let errors = b
        .wait_for("#form-errors", Duration::from_secs(10))
        .await
        .map_err(wd)?
        .text()
        .await
        .map_err(wd)?;
    assert!(
        errors.contains("spec.http.parameter.state: must be one of \"present\", \"absent\""),
        "{errors}"
    );
    shot(&b, "12-enum-refused").await?;
    let tasks = h.tasks().list(&Default::default()).await?;
    assert!(
        tasks.items.is_empty(),
        "a refused form created {:?}",
        tasks
            .items
            .iter()
            .map(|t| t.metadata.name.clone())
            .collect::<Vec<_>>()
    );

    drop(b);
    h.shutdown().await?;
    Ok(())
}

/// Worker nodes of the fleet test: the console must stay usable at this size (issue 22).
const FLEET_NODES: usize = 200;
/// The laptop width the console must fit without horizontal scrolling.
const FLEET_WIDTH: u32 = 1366;

/// The fleet test's labels of `nodeN`: a zone (a–d), a disk (every third `ssd`), and a
/// long topology label, so folded labels and long values are exercised.
fn fleet_labels(i: usize) -> serde_json::Value {
    let zone = ["a", "b", "c", "d"][i % 4];
    serde_json::json!({
        "zone": zone,
        "disk": if i.is_multiple_of(3) { "ssd" } else { "hdd" },
        "topology.hostplug.example/rack-position-in-the-datacenter-hall":
            format!("row-{:03}-rack-{:02}-unit-{:02}-a-rather-long-label-value", i / 20, i % 20, i % 7),
    })
}

/// Elements on the page that reach past the right edge of the viewport without a
/// scrolling or clipping box around them (a `pre` that scrolls inside itself is fine),
/// and whether the document itself scrolls sideways. Empty and `false`: nothing overflows.
const OVERFLOW_SCRIPT: &str = r##"
const width = document.documentElement.clientWidth;
const clipped = (el) => {
  for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
    const o = getComputedStyle(p).overflowX;
    if (o !== "visible") { return true; }
  }
  return false;
};
const offenders = [];
for (const el of document.body.querySelectorAll("*")) {
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) { continue; }
  if (r.right > width + 1 && !clipped(el)) {
    offenders.push(el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
      (el.className && typeof el.className === "string" ? "." + el.className.split(" ").join(".") : "") +
      " right=" + Math.round(r.right));
  }
}
return {
  viewport: width,
  scrollWidth: document.documentElement.scrollWidth,
  offenders: offenders.slice(0, 20),
};
"##;

/// The browser's own timing and size of the page it shows (Navigation Timing).
const TIMING_SCRIPT: &str = r#"
const n = performance.getEntriesByType("navigation")[0];
return {
  server_ms: n.responseStart - n.requestStart,
  loaded_ms: n.domContentLoadedEventEnd - n.startTime,
  bytes: n.decodedBodySize,
  elements: document.getElementsByTagName("*").length,
};
"#;

/// Fails when the page shown scrolls sideways at [`FLEET_WIDTH`] or an element reaches
/// past the viewport; saves a screenshot; prints the page's size and timing.
async fn fits_the_screen(b: &Browser, shot_name: &str) -> anyhow::Result<()> {
    shot(b, shot_name).await?;
    let o = b.execute(OVERFLOW_SCRIPT).await.map_err(wd)?;
    let viewport = o["viewport"].as_i64().unwrap_or_default();
    let scroll = o["scrollWidth"].as_i64().unwrap_or_default();
    let offenders = o["offenders"].as_array().cloned().unwrap_or_default();
    let t = b.execute(TIMING_SCRIPT).await.map_err(wd)?;
    eprintln!(
        "{shot_name}: {} bytes of HTML, {} elements, server {:.0} ms, DOM ready {:.0} ms, {viewport} px wide",
        t["bytes"],
        t["elements"],
        t["server_ms"].as_f64().unwrap_or_default(),
        t["loaded_ms"].as_f64().unwrap_or_default()
    );
    assert!(
        viewport > 1000,
        "{shot_name}: the viewport is {viewport} px, not a laptop's"
    );
    assert!(
        scroll <= viewport && offenders.is_empty(),
        "{shot_name}: the page is {scroll} px wide in a {viewport} px viewport; past the edge: {offenders:?}"
    );
    Ok(())
}

/// Reads an element's text, waiting until `ok` accepts it (the page updates itself).
async fn wait_text(b: &Browser, css: &str, ok: impl Fn(&str) -> bool) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = b.find(css).await.map_err(wd)?.text().await.map_err(wd)?;
        if ok(&text) {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!("{css} reads {text:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The console with 200 nodes, each with three labels, in a 1366 px wide browser: the
/// new-task form lists them with their labels folded, filters them by name or label,
/// ticks the shown ones, and counts live the nodes a role and a selector pick (the
/// operator's rule); a task over all 200 and a HostState drifted on all 200 show their
/// nodes 50 a page, filtered by phase or sync state. No page scrolls sideways. Page
/// sizes and timings are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_at_200_nodes_fits_a_laptop_screen() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Api, Patch, PatchParams};

    let h = Harness::start_with(Some(FLEET_NODES), &[]).await?;
    let nodes: Api<Node> = Api::all(h.admin.clone());
    for i in 1..=FLEET_NODES {
        nodes
            .patch(
                &format!("node{i}"),
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"labels": fleet_labels(i)}})),
            )
            .await
            .with_context(|| format!("labelling node{i}"))?;
    }
    // A state whose one line every node lacks, long enough to need its own scrolling:
    // drifted everywhere, with a diff per node.
    let long_line = format!("server ntp.fleet.example iburst # {}", "x".repeat(180));
    h.apply(&format!(
        r#"apiVersion: hostplug.dev/v1alpha1
kind: HostState
metadata:
  name: fleet-audit
spec:
  targetType: Node
  mode: Audit
  intervalSeconds: 3600
  steps:
    - api: etc-file
      method: ensure-line
      parameter:
        path: /etc/fleet.conf
        line: "{long_line}"
        create: true
  rollout: {{maxParallel: 50, maxFailures: 0}}
"#
    ))
    .await?;
    h.apply(
        r#"apiVersion: hostplug.dev/v1alpha1
kind: HostTask
metadata:
  name: fleet-line
  namespace: hostplug-system
spec:
  targetType: Node
  http:
    api: etc-file
    method: ensure-line
    parameter: {path: /etc/fleet-task.conf, line: "fleet = true", create: true}
  rollout: {maxParallel: 50, maxFailures: 0}
"#,
    )
    .await?;

    let console = start_console(&h).await?;
    let b = Browser::start().await.map_err(wd)?;
    b.set_window_size(FLEET_WIDTH, 900).await.map_err(wd)?;
    register_and_log_in(&b, &console, false).await?;
    let url = |path: &str| format!("{}{}", console.url, path);

    // The form: every node, labels folded, a filter, and the live count.
    b.goto(&url("/tasks/new?plugin=etc-file&method=ensure-line"))
        .await
        .map_err(wd)?;
    b.wait_for("#node-filter", Duration::from_secs(10))
        .await
        .map_err(wd)?;
    let all = FLEET_NODES + 1;
    assert_eq!(
        b.find_all("#node-list li.node-choice")
            .await
            .map_err(wd)?
            .len(),
        all
    );
    wait_text(&b, "#node-shown", |t| t == format!("{all} nodes")).await?;
    fits_the_screen(&b, "20-fleet-new-task").await?;
    // Labels are folded: open one node's.
    b.find("li.node-choice[data-node='node7'] details.labels summary")
        .await
        .map_err(wd)?
        .click()
        .await
        .map_err(wd)?;
    let labels = b
        .find("li.node-choice[data-node='node7'] details.labels")
        .await
        .map_err(wd)?
        .text()
        .await
        .map_err(wd)?;
    assert!(
        labels.contains("zone=d") && labels.contains("rack-position"),
        "{labels}"
    );
    fits_the_screen(&b, "21-fleet-labels-open").await?;

    // Filter by two words: a label and a value.
    b.find("#node-filter")
        .await
        .map_err(wd)?
        .fill("zone=b ssd")
        .await
        .map_err(wd)?;
    let picked: Vec<usize> = (1..=FLEET_NODES)
        .filter(|i| i % 4 == 1 && i.is_multiple_of(3))
        .collect();
    wait_text(&b, "#node-shown", |t| {
        t == format!("{} of {all} nodes shown", picked.len())
    })
    .await?;
    b.find("#nodes-tick-shown")
        .await
        .map_err(wd)?
        .click()
        .await
        .map_err(wd)?;
    wait_text(&b, "#nodes-ticked", |t| {
        t == format!("{} ticked", picked.len())
    })
    .await?;
    let ticked = b
        .execute(
            "return Array.from(document.querySelectorAll('#node-list input[name=nodes]:checked')).map(i => i.value);",
        )
        .await
        .map_err(wd)?;
    let mut ticked: Vec<String> = serde_json::from_value(ticked)?;
    ticked.sort();
    let mut expected: Vec<String> = picked.iter().map(|i| format!("node{i}")).collect();
    expected.sort();
    assert_eq!(ticked, expected, "the ticked nodes");
    fits_the_screen(&b, "22-fleet-filtered").await?;

    // A role and a selector: the live count applies the operator's rule.
    b.find("#target-role")
        .await
        .map_err(wd)?
        .click()
        .await
        .map_err(wd)?;
    b.find("#node-selector")
        .await
        .map_err(wd)?
        .fill("zone in (a, c)\ndisk=ssd")
        .await
        .map_err(wd)?;
    let matched = (1..=FLEET_NODES)
        .filter(|i| i.is_multiple_of(2) && i.is_multiple_of(3))
        .count();
    wait_text(&b, "#role-match", |t| {
        t.starts_with(&format!("{matched} of {all} nodes match: "))
    })
    .await?;
    b.find("#node-selector")
        .await
        .map_err(wd)?
        .fill("zone in a")
        .await
        .map_err(wd)?;
    wait_text(&b, "#role-match", |t| t.starts_with("nodeSelector:")).await?;
    fits_the_screen(&b, "23-fleet-role-count").await?;

    // The task over 200 nodes: four pages of 50, a phase filter.
    let t = h.wait_finished("fleet-line").await?;
    let done = t.status.clone().unwrap_or_default();
    anyhow::ensure!(
        done.nodes
            .iter()
            .any(|n| n.phase == hostplug_api::crd::NodePhase::Succeeded),
        "the 200-node task has no node that succeeded (the Succeeded filter needs one): {:?}",
        done.msg
    );
    b.goto(&url("/tasks/fleet-line")).await.map_err(wd)?;
    b.wait_for("nav.pager", Duration::from_secs(10))
        .await
        .map_err(wd)?;
    assert_eq!(b.find_all("article.card.node").await.map_err(wd)?.len(), 50);
    let pager = b
        .find("nav.pager .pager-where")
        .await
        .map_err(wd)?
        .text()
        .await
        .map_err(wd)?;
    assert_eq!(pager, format!("Nodes 1–50 of {FLEET_NODES} · page 1 of 4"));
    let chip = b
        .find("nav.chips a[data-filter='Succeeded']")
        .await
        .map_err(wd)?
        .text()
        .await
        .map_err(wd)?;
    assert_eq!(
        chip,
        format!("Succeeded {FLEET_NODES}"),
        "{:?}; first other node: {:?}",
        done.msg,
        done.nodes
            .iter()
            .find(|n| n.phase != hostplug_api::crd::NodePhase::Succeeded)
            .map(|n| (&n.node, n.phase, &n.message))
    );
    fits_the_screen(&b, "24-fleet-task").await?;
    b.find("nav.pager .pager-next")
        .await
        .map_err(wd)?
        .click()
        .await
        .map_err(wd)?;
    wait_text(&b, "nav.pager .pager-where", |t| t.contains("51–100")).await?;
    b.goto(&url("/tasks/fleet-line?phase=Succeeded&page=4"))
        .await
        .map_err(wd)?;
    wait_text(&b, "nav.pager .pager-where", |t| {
        t == format!("Nodes 151–200 of {FLEET_NODES} · page 4 of 4")
    })
    .await?;
    fits_the_screen(&b, "25-fleet-task-page-4").await?;
    b.goto(&url("/tasks/fleet-line?phase=Failed"))
        .await
        .map_err(wd)?;
    wait_text(&b, "p.empty", |t| t == "No node is Failed.").await?;

    // The state drifted on every node: the list shows its first 50, its page the rest.
    let states: Api<hostplug_api::state::HostState> = Api::all(h.admin.clone());
    let deadline = Instant::now() + TASK_WAIT;
    loop {
        let s = states.get("fleet-audit").await?;
        let drifted = s.status.as_ref().map_or(0, |st| st.nodes_drifted);
        if drifted == FLEET_NODES as i32 {
            break;
        }
        if Instant::now() > deadline {
            bail!("fleet-audit: {drifted} nodes drifted: {:?}", s.status);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    b.goto(&url("/states")).await.map_err(wd)?;
    b.wait_for("#state-fleet-audit", Duration::from_secs(10))
        .await
        .map_err(wd)?;
    assert_eq!(
        b.find_all("#state-fleet-audit tbody tr[data-node]")
            .await
            .map_err(wd)?
            .len(),
        50
    );
    fits_the_screen(&b, "26-fleet-states").await?;
    b.goto(&url("/states/fleet-audit?sync=Drifted&page=3"))
        .await
        .map_err(wd)?;
    wait_text(&b, "nav.pager .pager-where", |t| {
        t == format!("Nodes 101–150 of {FLEET_NODES} · page 3 of 4")
    })
    .await?;
    b.find("#state-fleet-audit tbody tr[data-node] details summary")
        .await
        .map_err(wd)?
        .click()
        .await
        .map_err(wd)?;
    fits_the_screen(&b, "27-fleet-state-page-3-diff-open").await?;

    // The task list.
    b.goto(&url("/tasks")).await.map_err(wd)?;
    b.wait_for("#tasks", Duration::from_secs(10))
        .await
        .map_err(wd)?;
    fits_the_screen(&b, "28-fleet-tasks").await?;

    drop(b);
    h.shutdown().await?;
    Ok(())
}

//! Router tests: the whole console through `oneshot`, no socket. The cluster is the
//! in-memory stand-in (`InMemoryCluster`), which is only good for rendering and
//! authorisation; the browser test in `browser.rs` runs against a real control plane.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{Method, Request, StatusCode, header},
};
use hostplug_api::crd::{
    Capabilities, EtcAccess, HostPlugin, HostPluginSpec, HostPluginStatus, HostTask, HostTaskSpec,
    HostTaskStatus, HttpSpec, MethodInfo, NodePhase, NodeResult, PluginInfo, PluginSource,
    RolloutSpec, TargetType, TaskState,
};
use hostplug_web::{AppState, WebConfig, app, cluster::InMemoryCluster, db::Db};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::ObjectMeta;
use serde_json::{Value, json};
use tower::ServiceExt;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn etc_file_plugin() -> HostPlugin {
    let mut plugin = HostPlugin::new(
        "etc-file",
        HostPluginSpec {
            source: PluginSource {
                builtin: Some("etc-file".to_owned()),
                config_map: None,
                oci: None,
            },
            sha256: None,
            capabilities: Capabilities {
                etc: EtcAccess::Write,
                docker: false,
                ..Default::default()
            },
            signature: None,
        },
    );
    plugin.status = Some(HostPluginStatus {
        digest: Some(format!("sha256:{}", "ab".repeat(32))),
        size: Some(92_000),
        ready: true,
        message: None,
        info: Some(PluginInfo {
            name: "etc-file".to_owned(),
            version: "0.1.0".to_owned(),
            description: "Edit files under /etc".to_owned(),
            methods: vec![
                MethodInfo {
                    name: "ensure-line".to_owned(),
                    description: "Make sure a line is present".to_owned(),
                    mutates: true,
                    params_schema: Some(json!({
                        "type": "object",
                        "required": ["path", "line"],
                        "properties": {
                            "path": {"type": "string", "description": "A file under /etc"},
                            "line": {"type": "string"},
                            "mode": {"type": "integer", "default": 420}
                        }
                    })),
                },
                MethodInfo {
                    name: "ensure-block".to_owned(),
                    description: "Make sure a block is present or absent".to_owned(),
                    mutates: true,
                    // What schemars 1 writes for a field of an enum whose variants have
                    // doc comments.
                    params_schema: Some(json!({
                        "type": "object",
                        "required": ["path"],
                        "additionalProperties": false,
                        "properties": {
                            "path": {"type": "string", "x-order": 0},
                            "state": {"$ref": "#/$defs/State", "x-order": 1,
                                      "description": "Whether the block is there."}
                        },
                        "$defs": {"State": {"oneOf": [
                            {"type": "string", "const": "present", "description": "It is in the file."},
                            {"type": "string", "const": "absent", "description": "It is removed."}
                        ]}}
                    })),
                },
            ],
        }),
        observed_generation: None,
    });
    plugin
}

fn node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    }
}

/// The bootstrap token the test console is armed with.
const SETUP_TOKEN: &str = "test-setup-token-0123456789";

struct TestApp {
    router: Router,
    cluster: Arc<InMemoryCluster>,
    state: AppState,
}

impl TestApp {
    fn new() -> Self {
        Self::with_ttl(Duration::from_secs(3600))
    }

    fn with_ttl(ttl: Duration) -> Self {
        let cluster = Arc::new(InMemoryCluster {
            namespace: "hostplug-system".to_owned(),
            ..InMemoryCluster::default()
        });
        cluster
            .plugins
            .lock()
            .expect("lock")
            .push(etc_file_plugin());
        cluster
            .nodes
            .lock()
            .expect("lock")
            .extend([node("node1"), node("node2")]);
        let mut config = WebConfig::for_tests("unused.db".into(), "hostplug-system");
        config.session_ttl = ttl;
        let state = AppState::new(Db::open_in_memory().expect("db"), cluster.clone(), config);
        state.bootstrap.arm(SETUP_TOKEN);
        Self {
            router: app(state.clone()),
            cluster,
            state,
        }
    }

    fn client(&self, ip: [u8; 4]) -> Client {
        Client {
            router: self.router.clone(),
            cookies: BTreeMap::new(),
            csrf: String::new(),
            addr: SocketAddr::from((ip, 40000)),
            bearer: None,
        }
    }
}

struct Response {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Response {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// A browser-like client: keeps cookies and the last CSRF token seen in a page.
#[derive(Clone)]
struct Client {
    router: Router,
    cookies: BTreeMap<String, String>,
    csrf: String,
    addr: SocketAddr,
    bearer: Option<String>,
}

fn find_csrf(body: &str) -> Option<String> {
    let marker = "name=\"csrf\" value=\"";
    let start = body.find(marker)? + marker.len();
    let end = body[start..].find('"')?;
    Some(body[start..start + end].to_owned())
}

impl Client {
    async fn request(
        &mut self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: String,
        extra: &[(&str, &str)],
    ) -> Response {
        let mut builder = Request::builder().method(method).uri(uri);
        if !self.cookies.is_empty() {
            let cookie = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            builder = builder.header(header::COOKIE, cookie);
        }
        if let Some(token) = &self.bearer {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        for (k, v) in extra {
            builder = builder.header(*k, *v);
        }
        let mut request = builder.body(Body::from(body)).expect("request");
        request.extensions_mut().insert(ConnectInfo(self.addr));
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        for value in headers.get_all(header::SET_COOKIE) {
            let text = value.to_str().unwrap_or_default();
            if let Some((pair, attrs)) = text.split_once(';')
                && let Some((name, value)) = pair.split_once('=')
            {
                if attrs.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(csrf) = find_csrf(&body) {
            self.csrf = csrf;
        }
        Response {
            status,
            headers,
            body,
        }
    }

    async fn get(&mut self, uri: &str) -> Response {
        self.request(Method::GET, uri, None, String::new(), &[])
            .await
    }

    /// Posts a form; `csrf` is added unless the pairs already contain it.
    async fn post_form(&mut self, uri: &str, pairs: &[(&str, &str)]) -> Response {
        let mut all: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if !pairs.iter().any(|(k, _)| *k == "csrf") {
            all.push(("csrf".to_owned(), self.csrf.clone()));
        }
        let body = serde_urlencoded::to_string(&all).expect("form");
        self.request(
            Method::POST,
            uri,
            Some("application/x-www-form-urlencoded"),
            body,
            &[],
        )
        .await
    }

    async fn register(&mut self, username: &str, password: &str) -> Response {
        self.get("/register").await;
        self.post_form(
            "/register",
            &[
                ("username", username),
                ("password", password),
                ("password2", password),
            ],
        )
        .await
    }

    /// Registers with the bootstrap token (the first admin).
    async fn register_admin(&mut self, username: &str, password: &str) -> Response {
        self.get("/register").await;
        self.post_form(
            "/register",
            &[
                ("username", username),
                ("password", password),
                ("password2", password),
                ("setup_token", SETUP_TOKEN),
            ],
        )
        .await
    }

    async fn login(&mut self, username: &str, password: &str) -> Response {
        self.get("/login").await;
        let response = self
            .post_form("/login", &[("username", username), ("password", password)])
            .await;
        if response.status == StatusCode::SEE_OTHER {
            // Pick up the session's CSRF token from a page.
            self.get("/tasks").await;
        }
        response
    }

    async fn json(&mut self, method: Method, uri: &str, body: Value) -> Response {
        let csrf = self.csrf.clone();
        self.request(
            method,
            uri,
            Some("application/json"),
            body.to_string(),
            &[("x-csrf-token", &csrf)],
        )
        .await
    }
}

const PW: &str = "correct horse battery";

async fn admin(app: &TestApp) -> Client {
    let mut admin = app.client([10, 0, 0, 1]);
    let r = admin.register_admin("alice", PW).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/login?registered=admin");
    let r = admin.login("alice", PW).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    admin
}

#[tokio::test]
async fn first_admin_needs_the_setup_token_later_accounts_wait_for_approval() -> TestResult {
    let app = TestApp::new();
    let mut mallory = app.client([10, 0, 0, 66]);
    let page = mallory.get("/register").await;
    assert!(page.body.contains("No administrator yet"));
    assert!(page.body.contains("name=\"setup_token\""));
    // Being first is no privilege: without the token, an ordinary pending account.
    let r = mallory.register("mallory", PW).await;
    assert_eq!(r.location(), "/login?registered=pending");
    assert_eq!(
        mallory.login("mallory", PW).await.status,
        StatusCode::FORBIDDEN
    );
    // A wrong token is refused and makes nobody admin.
    mallory.get("/register").await;
    let r = mallory
        .post_form(
            "/register",
            &[
                ("username", "mallory2"),
                ("password", PW),
                ("password2", PW),
                ("setup_token", "guessed-token-guessed-token"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let mut alice = admin(&app).await;
    // The token is used up.
    let mut late = app.client([10, 0, 0, 67]);
    assert!(!late.get("/register").await.body.contains("setup_token"));
    let r = late.register_admin("eve", PW).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let me = alice.get("/api/v1/me").await.body;
    assert_eq!(me, r#"{"name":"alice","role":"admin"}"#);
    let users = alice.get("/admin/users").await;
    assert_eq!(users.status, StatusCode::OK);
    assert!(users.body.contains("alice"));

    let mut bob = app.client([10, 0, 0, 2]);
    let r = bob.register("bob", PW).await;
    assert_eq!(r.location(), "/login?registered=pending");
    let r = bob.login("bob", PW).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("waiting for an administrator"));

    // Alice approves bob; bob is a viewer.
    let users = alice.get("/admin/users").await;
    let bob_id = users
        .body
        .split("action=\"/admin/users/")
        .filter_map(|s| s.split('"').next())
        .last()
        .ok_or("no user form")?
        .to_owned();
    let r = alice
        .post_form(&format!("/admin/users/{bob_id}"), &[("action", "approve")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = bob.login("bob", PW).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        bob.get("/api/v1/me").await.body,
        r#"{"name":"bob","role":"viewer"}"#
    );
    assert_eq!(bob.get("/admin/users").await.status, StatusCode::FORBIDDEN);

    // Role change to operator, recorded in the audit log.
    let r = alice
        .post_form(
            &format!("/admin/users/{bob_id}"),
            &[("action", "role"), ("role", "operator")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        bob.get("/api/v1/me").await.body,
        r#"{"name":"bob","role":"operator"}"#
    );
    let audit = alice.get("/admin/audit").await;
    assert!(audit.body.contains("user.role"));
    assert!(audit.body.contains("viewer → operator"));
    assert!(audit.body.contains("user.approve"));
    assert!(audit.body.contains("<code>login</code>"));

    // The last admin cannot demote herself (mallory is account 1, alice 2).
    let r = alice
        .post_form("/admin/users/2", &[("action", "role"), ("role", "viewer")])
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    Ok(())
}

#[tokio::test]
async fn registration_can_be_closed() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    let r = alice
        .post_form("/admin/settings", &[("require_approval", "on")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let mut eve = app.client([10, 0, 0, 9]);
    let page = eve.get("/register").await;
    assert!(page.body.contains("Registration is closed"));
    assert!(!page.body.contains("id=\"register-submit\""));
    // Posting anyway (with a valid pre-session token from the login page) is refused.
    eve.get("/login").await;
    let r = eve
        .post_form(
            "/register",
            &[("username", "eve"), ("password", PW), ("password2", PW)],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("Registration is closed"));
    Ok(())
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() -> TestResult {
    let app = TestApp::new();
    admin(&app).await;
    let mut c = app.client([10, 0, 0, 3]);
    let wrong = c.login("alice", "not the password").await;
    let unknown = c.login("nobody", "not the password").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("Invalid username or password."));
    assert!(unknown.body.contains("Invalid username or password."));
    assert!(!c.cookies.contains_key("hp_session"));
    assert_eq!(c.get("/tasks").await.status, StatusCode::SEE_OTHER);
    Ok(())
}

#[tokio::test]
async fn session_cookie_is_httponly_and_samesite() -> TestResult {
    let app = TestApp::new();
    let mut c = app.client([10, 0, 0, 1]);
    c.register_admin("alice", PW).await;
    c.get("/login").await;
    let r = c
        .post_form(
            "/login",
            &[
                ("username", "alice"),
                ("password", PW),
                ("next", "/plugins"),
            ],
        )
        .await;
    assert_eq!(r.location(), "/plugins");
    let cookie = r
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("hp_session="))
        .ok_or("no session cookie")?
        .to_owned();
    assert!(cookie.contains("HttpOnly"));
    assert!(cookie.contains("SameSite=Lax"));
    // An off-site `next` is not followed.
    c.get("/login").await;
    let mut d = app.client([10, 0, 0, 1]);
    d.get("/login").await;
    let r = d
        .post_form(
            "/login",
            &[
                ("username", "alice"),
                ("password", PW),
                ("next", "//evil.example"),
            ],
        )
        .await;
    assert_eq!(r.location(), "/tasks");
    Ok(())
}

#[tokio::test]
async fn csrf_token_is_required_on_every_state_change() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;

    // Login form without the pre-session token.
    let mut fresh = app.client([10, 0, 0, 4]);
    let r = fresh
        .post_form(
            "/login",
            &[("username", "alice"), ("password", PW), ("csrf", "")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Session forms with a missing or wrong token.
    let form = [
        ("plugin", "etc-file"),
        ("method", "ensure-line"),
        ("p.path", "/etc/hosts"),
        ("p.line", "x"),
        ("target", "nodes"),
        ("nodes", "node1"),
        ("mode", "dry-run"),
    ];
    let mut missing: Vec<(&str, &str)> = form.to_vec();
    missing.push(("csrf", ""));
    assert_eq!(
        alice.post_form("/tasks", &missing).await.status,
        StatusCode::FORBIDDEN
    );
    let mut wrong: Vec<(&str, &str)> = form.to_vec();
    let other = hostplug_web::auth::new_token();
    wrong.push(("csrf", &other));
    let r = alice.post_form("/tasks", &wrong).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("CSRF"), "an HTML error page: {}", r.body);
    assert!(app.cluster.tasks.lock().map_err(|_| "lock")?.is_empty());
    // Logout needs it too.
    assert_eq!(
        alice.post_form("/logout", &[("csrf", "nope")]).await.status,
        StatusCode::FORBIDDEN
    );

    // The API with the session cookie needs the header.
    let body = json!({"plugin": "etc-file", "method": "ensure-line", "params": {"path": "/etc/x", "line": "y"}, "workers": ["node1"]});
    let r = alice
        .request(
            Method::POST,
            "/api/v1/tasks",
            Some("application/json"),
            body.to_string(),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("\"code\":\"csrf\""));
    let r = alice.json(Method::POST, "/api/v1/tasks", body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // With the right token the form works.
    let r = alice.post_form("/tasks", &form).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(r.location().starts_with("/tasks/etc-file-ensure-line-dry-"));
    Ok(())
}

#[tokio::test]
async fn viewers_cannot_create_or_delete_tasks() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    alice
        .post_form("/admin/settings", &[("registration_open", "on")])
        .await;
    let mut v = app.client([10, 0, 0, 5]);
    v.register("victor", PW).await;
    let r = v.login("victor", PW).await;
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "approval off: active at once"
    );
    assert_eq!(
        v.get("/api/v1/me").await.body,
        r#"{"name":"victor","role":"viewer"}"#
    );

    assert_eq!(v.get("/tasks/new").await.status, StatusCode::FORBIDDEN);
    let r = v
        .post_form(
            "/tasks",
            &[
                ("plugin", "etc-file"),
                ("method", "ensure-line"),
                ("p.path", "/etc/a"),
                ("p.line", "b"),
                ("nodes", "node1"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let body = json!({"plugin": "etc-file", "method": "ensure-line", "workers": ["node1"]});
    assert_eq!(
        v.json(Method::POST, "/api/v1/tasks", body).await.status,
        StatusCode::FORBIDDEN
    );

    // Alice creates one; the viewer can see but not delete it.
    let r = alice
        .post_form(
            "/tasks",
            &[
                ("plugin", "etc-file"),
                ("method", "ensure-line"),
                ("p.path", "/etc/a"),
                ("p.line", "b"),
                ("target", "role"),
                ("role", "All"),
                ("name", "t1"),
                ("mode", "apply"),
            ],
        )
        .await;
    assert_eq!(r.location(), "/tasks/t1");
    let page = v.get("/tasks/t1").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("id=\"delete\""));
    assert_eq!(
        v.post_form("/tasks/t1/delete", &[]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        v.json(Method::DELETE, "/api/v1/tasks/t1", json!({}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.cluster.tasks.lock().map_err(|_| "lock")?.len(), 1);

    // The operator-level admin deletes it, and the audit log says so.
    let r = alice.post_form("/tasks/t1/delete", &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(app.cluster.tasks.lock().map_err(|_| "lock")?.is_empty());
    let audit = alice.get("/admin/audit").await.body;
    assert!(audit.contains("task.create") && audit.contains("task.delete"));
    Ok(())
}

#[tokio::test]
async fn form_generated_from_schema_creates_typed_task() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    let page = alice
        .get("/tasks/new?plugin=etc-file&method=ensure-line")
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("name=\"p.path\""));
    assert!(page.body.contains("A file under /etc"));
    assert!(
        page.body
            .contains("name=\"p.mode\" id=\"p.mode\" value=\"420\"")
    );
    assert!(page.body.contains("value=\"node2\""));

    // A bad integer comes back as a field error, keeping what was typed.
    let r = alice
        .post_form(
            "/tasks",
            &[
                ("plugin", "etc-file"),
                ("method", "ensure-line"),
                ("p.path", "/etc/chrony.conf"),
                ("p.line", "server ntp"),
                ("p.mode", "rw"),
                ("target", "nodes"),
                ("nodes", "node1"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body
            .contains("spec.http.parameter.mode: not a whole number")
    );
    assert!(r.body.contains("value=\"/etc/chrony.conf\""));

    let r = alice
        .post_form(
            "/tasks",
            &[
                ("plugin", "etc-file"),
                ("method", "ensure-line"),
                ("p.path", "/etc/chrony.conf"),
                ("p.line", "server ntp"),
                ("p.mode", "384"),
                ("target", "nodes"),
                ("nodes", "node1"),
                ("nodes", "node2"),
                ("mode", "dry-run"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let tasks = app.cluster.tasks.lock().map_err(|_| "lock")?.clone();
    let task = tasks.first().ok_or("no task")?;
    assert!(task.spec.dry_run);
    assert_eq!(task.spec.targets.workers, ["node1", "node2"]);
    assert_eq!(
        task.spec
            .http
            .as_ref()
            .and_then(|h| h.call.parameter.clone()),
        Some(json!({"path": "/etc/chrony.conf", "line": "server ntp", "mode": 384}))
    );
    let list = alice.get("/tasks").await;
    assert!(list.body.contains("Pending"));
    assert!(list.body.contains("0/2"));
    Ok(())
}

#[tokio::test]
async fn a_bad_enum_value_is_refused_naming_the_field_and_nothing_is_created() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    let page = alice
        .get("/tasks/new?plugin=etc-file&method=ensure-block")
        .await;
    assert!(
        page.body.contains("<select name=\"p.state\""),
        "{}",
        page.body
    );
    assert!(page.body.contains(">present — It is in the file.</option>"));
    assert!(page.body.contains(">absent — It is removed.</option>"));

    // The form: a value outside the enum, as a crafted request would send it.
    let r = alice
        .post_form(
            "/tasks",
            &[
                ("plugin", "etc-file"),
                ("method", "ensure-block"),
                ("p.path", "/etc/x"),
                ("p.state", "sideways"),
                ("target", "nodes"),
                ("nodes", "node1"),
                ("mode", "dry-run"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body.contains(
            "spec.http.parameter.state: must be one of &#34;present&#34;, &#34;absent&#34;"
        ),
        "{}",
        r.body
    );
    // The JSON API: the same check, the same words; an unknown name is named too.
    let r = alice
        .json(
            Method::POST,
            "/api/v1/tasks",
            json!({"plugin": "etc-file", "method": "ensure-block", "workers": ["node1"],
                   "params": {"path": "/etc/x", "state": "sideways"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let body: Value = serde_json::from_str(&r.body)?;
    assert_eq!(
        body["error"]["message"],
        "spec.http.parameter.state: must be one of \"present\", \"absent\""
    );
    let r = alice
        .json(
            Method::POST,
            "/api/v1/tasks",
            json!({"plugin": "etc-file", "method": "ensure-block", "workers": ["node1"],
                   "params": {"path": "/etc/x", "colour": "red"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let body: Value = serde_json::from_str(&r.body)?;
    assert_eq!(
        body["error"]["message"],
        "spec.http.parameter.colour: no such parameter; the method takes: path, state"
    );
    assert!(
        app.cluster.tasks.lock().map_err(|_| "lock")?.is_empty(),
        "a refused request created a task"
    );

    // A value of the enum is taken.
    let r = alice
        .post_form(
            "/tasks",
            &[
                ("plugin", "etc-file"),
                ("method", "ensure-block"),
                ("p.path", "/etc/x"),
                ("p.state", "absent"),
                ("target", "nodes"),
                ("nodes", "node1"),
                ("mode", "dry-run"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let tasks = app.cluster.tasks.lock().map_err(|_| "lock")?.clone();
    assert_eq!(
        tasks
            .first()
            .and_then(|t| t.spec.http.as_ref()?.call.parameter.clone()),
        Some(json!({"path": "/etc/x", "state": "absent"}))
    );
    Ok(())
}

#[tokio::test]
async fn login_is_rate_limited_per_account_and_per_ip() -> TestResult {
    let app = TestApp::new();
    admin(&app).await;
    let mut attacker = app.client([192, 0, 2, 1]);
    for _ in 0..hostplug_web::limits::MAX_FAILURES_PER_ACCOUNT {
        let r = attacker.login("alice", "guess guess").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    // Now even the right password is refused, from any address.
    let r = attacker.login("alice", PW).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    let mut elsewhere = app.client([192, 0, 2, 2]);
    assert_eq!(
        elsewhere.login("alice", PW).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    // Per address: many names from one address.
    let mut sprayer = app.client([198, 51, 100, 7]);
    for i in 0..hostplug_web::limits::MAX_FAILURES_PER_IP {
        let r = sprayer.login(&format!("user{i}"), "guess guess").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        sprayer.login("someone", "guess guess").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    Ok(())
}

#[tokio::test]
async fn script_and_sql_shaped_input_is_stored_and_shown_escaped() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    let script = "<script>alert(1)</script>";
    let sql = "x'); DROP TABLE users;--";
    let mut m = app.client([10, 0, 0, 6]);
    assert_eq!(m.register(script, PW).await.status, StatusCode::SEE_OTHER);
    let mut n = app.client([10, 0, 0, 7]);
    assert_eq!(n.register(sql, PW).await.status, StatusCode::SEE_OTHER);

    let users = alice.get("/admin/users").await.body;
    assert!(!users.contains(script));
    assert!(
        users.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
            || users.contains("&lt;script&gt;alert(1)&lt;/script&gt;")
    );
    assert!(
        users.contains("DROP TABLE users"),
        "stored literally, table intact"
    );
    let audit = alice.get("/admin/audit").await.body;
    assert!(!audit.contains(script));

    // Parameters with markup are shown escaped on the task page and in the list.
    let r = alice
        .post_form(
            "/tasks",
            &[
                ("plugin", "etc-file"),
                ("method", "ensure-line"),
                ("p.path", "/etc/motd"),
                ("p.line", "<img src=x onerror=alert(1)>"),
                ("target", "nodes"),
                ("nodes", "node1"),
                ("name", "xss"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = alice.get("/tasks/xss").await.body;
    assert!(!page.contains("<img src=x"));
    // A login with the SQL-shaped name works and finds exactly that account.
    let users_list = alice.get("/admin/users").await.body;
    let id = users_list
        .split("action=\"/admin/users/")
        .filter_map(|s| s.split('"').next())
        .last()
        .ok_or("no form")?
        .to_owned();
    alice
        .post_form(&format!("/admin/users/{id}"), &[("action", "approve")])
        .await;
    assert_eq!(n.login(sql, PW).await.status, StatusCode::SEE_OTHER);
    let me: Value = serde_json::from_str(&n.get("/api/v1/me").await.body)?;
    assert_eq!(me["name"], sql);
    Ok(())
}

#[tokio::test]
async fn sessions_expire_and_logout_ends_them() -> TestResult {
    let app = TestApp::with_ttl(Duration::from_secs(0));
    let mut c = app.client([10, 0, 0, 1]);
    c.register_admin("alice", PW).await;
    c.get("/login").await;
    let r = c
        .post_form("/login", &[("username", "alice"), ("password", PW)])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = c.get("/tasks").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "expired at once");
    assert!(r.location().starts_with("/login"));

    let app = TestApp::new();
    let mut c = admin(&app).await;
    let stolen = c.cookies.get("hp_session").cloned().ok_or("no cookie")?;
    assert_eq!(c.get("/tasks").await.status, StatusCode::OK);
    let r = c.post_form("/logout", &[]).await;
    assert_eq!(r.location(), "/login");
    assert!(!c.cookies.contains_key("hp_session"));
    let mut replay = app.client([10, 0, 0, 1]);
    replay.cookies.insert("hp_session".to_owned(), stolen);
    assert_eq!(replay.get("/tasks").await.status, StatusCode::SEE_OTHER);
    assert_eq!(
        replay.get("/api/v1/tasks").await.status,
        StatusCode::UNAUTHORIZED
    );
    Ok(())
}

#[tokio::test]
async fn api_tokens_work_without_csrf_and_can_be_revoked() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    let r = alice
        .post_form("/admin/tokens", &[("name", "ci"), ("role", "operator")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let start = r.body.find("id=\"new-token\">").ok_or("token shown")? + "id=\"new-token\">".len();
    let token = r.body[start..start + 43].to_owned();
    let mut script = app.client([10, 0, 0, 8]);
    script.bearer = Some(token.clone());
    assert_eq!(
        script.get("/api/v1/me").await.body,
        r#"{"name":"token:ci","role":"operator"}"#
    );
    let r = script
        .request(
            Method::POST,
            "/api/v1/tasks",
            Some("application/json"),
            json!({"name": "api-task", "plugin": "etc-file", "method": "ensure-line", "params": {"path": "/etc/a", "line": "b"}, "targetType": "Node", "dryRun": true}).to_string(),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let created: Value = serde_json::from_str(&r.body)?;
    assert_eq!(created["state"], "Pending");
    assert_eq!(created["targetType"], "Node");
    let r = script
        .request(
            Method::POST,
            "/api/v1/tasks",
            Some("application/json"),
            json!({"plugin": "nope", "method": "x", "workers": ["node1"]}).to_string(),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = script
        .request(
            Method::DELETE,
            "/api/v1/tasks/api-task",
            None,
            String::new(),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = script
        .request(
            Method::DELETE,
            "/api/v1/tasks/api-task",
            None,
            String::new(),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    alice.get("/admin/users").await;
    let r = alice.post_form("/admin/tokens/1/revoke", &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        script.get("/api/v1/me").await.status,
        StatusCode::UNAUTHORIZED
    );
    Ok(())
}

#[tokio::test]
async fn every_openapi_route_exists() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    let doc: Value = serde_json::from_str(&alice.get("/api/v1/openapi.json").await.body)?;
    let paths = doc["paths"].as_object().ok_or("paths")?;
    assert!(paths.len() >= 6);
    let mut checked = 0;
    for (path, item) in paths {
        let uri = format!("/api/v1{}", path.replace("{name}", "etc-file"));
        for method in item.as_object().ok_or("item")?.keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes())?;
            let r = alice.json(method.clone(), &uri, json!({})).await;
            assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            assert!(
                !r.body.contains("\"code\":\"no_route\""),
                "{method} {uri} is not routed"
            );
            checked += 1;
        }
    }
    assert!(checked >= 8);
    // And the check itself can fail: an unknown route says no_route.
    let r = alice.get("/api/v1/nothing").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("\"code\":\"no_route\""));
    Ok(())
}

#[tokio::test]
async fn pages_render_and_errors_are_html_for_browsers() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    let catalog = alice.get("/plugins").await;
    assert_eq!(catalog.status, StatusCode::OK);
    for needle in [
        "etc-file",
        "v0.1.0",
        "Edit files under /etc",
        "sha256:abab",
        "/etc: write",
        "ensure-line",
        "A file under /etc",
        "required",
    ] {
        assert!(catalog.body.contains(needle), "catalog shows {needle}");
    }
    assert!(
        catalog
            .headers
            .get(header::CONTENT_SECURITY_POLICY)
            .is_some()
    );
    let r = alice.get("/tasks/does-not-exist").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.starts_with("<!doctype html>"));
    let r = alice.get("/api/v1/tasks/does-not-exist").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("\"code\":\"not_found\""));
    let mut anon = app.client([10, 0, 0, 1]);
    let r = anon.get("/plugins").await;
    assert_eq!(r.location(), "/login?next=/plugins");
    assert_eq!(anon.get("/static/app.css").await.status, StatusCode::OK);
    Ok(())
}

/// A dry run with every HostTaskSpec field set (the struct literal has no `..`: a field
/// added to the spec breaks this test until it is set here too).
fn full_dry_run_spec() -> HostTaskSpec {
    HostTaskSpec {
        disruption: None,
        targets: hostplug_api::NodeTargets {
            workers: Vec::new(),
            target_type: Some(TargetType::Node),
            node_selector: Some(LabelSelector {
                match_labels: Some([("disk".to_owned(), "ssd".to_owned())].into()),
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "zone".to_owned(),
                    operator: "In".to_owned(),
                    values: Some(vec!["a".to_owned(), "b".to_owned()]),
                }]),
            }),
        },
        http: Some(HttpSpec {
            port: 9443,
            call: hostplug_api::PluginCall {
                api: "etc-file".to_owned(),
                method: "ensure-line".to_owned(),
                parameter: Some(
                    json!({"path": "/etc/chrony.conf", "line": "server ntp", "mode": 384}),
                ),
                vars: Vec::new(),
            },
        }),
        revert: None,
        dry_run: true,
        timeout_seconds: 123,
        rollout: Some(RolloutSpec {
            max_parallel: 2,
            max_failures: 1,
            ..RolloutSpec::default()
        }),
        ttl_seconds_after_finished: Some(600),
        registry_auth: None,
        rerun: 2,
        on_change: Vec::new(),
    }
}

/// Puts a finished task straight into the stand-in cluster.
fn put_task(app: &TestApp, name: &str, spec: HostTaskSpec, status: HostTaskStatus) -> TestResult {
    let mut task = HostTask::new(name, spec);
    task.metadata.namespace = Some("hostplug-system".to_owned());
    task.status = Some(status);
    app.cluster.tasks.lock().map_err(|_| "lock")?.push(task);
    Ok(())
}

fn succeeded_with_diff() -> HostTaskStatus {
    HostTaskStatus {
        state: TaskState::Succeeded,
        nodes: vec![NodeResult {
            node: "node1".to_owned(),
            phase: NodePhase::Succeeded,
            changed: true,
            diff: Some("--- a\n+++ b\n+SECRET-LINE-FROM-ETC\n".to_owned()),
            output: Some(json!({"content": "SECRET-OUTPUT-FROM-ETC"})),
            message: Some("changed".to_owned()),
            ..NodeResult::default()
        }],
        nodes_done: 1,
        nodes_total: 1,
        observed_generation: Some(1),
        ..HostTaskStatus::default()
    }
}

fn spec_of(app: &TestApp, name: &str) -> Result<HostTaskSpec, Box<dyn std::error::Error>> {
    Ok(app
        .cluster
        .tasks
        .lock()
        .map_err(|_| "lock")?
        .iter()
        .find(|t| t.metadata.name.as_deref() == Some(name))
        .ok_or("no such task")?
        .spec
        .clone())
}

#[tokio::test]
async fn apply_runs_exactly_the_dry_run_with_only_dry_run_flipped() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    let dry = full_dry_run_spec();
    put_task(&app, "dry-1", dry.clone(), succeeded_with_diff())?;
    let page = alice.get("/tasks/dry-1").await;
    assert!(page.body.contains("id=\"apply\""), "{}", page.body);
    assert!(page.body.contains("disk=ssd, zone in (a, b)"));
    assert!(page.body.contains("maxParallel 2, maxFailures 1"));
    let r = alice.post_form("/tasks/dry-1/apply", &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let applied_name = r.location().strip_prefix("/tasks/").ok_or("redirect")?;
    assert!(!applied_name.contains("-dry-"), "{applied_name}");
    let applied = spec_of(&app, applied_name)?;
    let mut expected = dry.clone();
    expected.dry_run = false;
    assert_eq!(applied, expected, "every field but dryRun is the dry run's");
    // Applying something that is no dry run is refused.
    let r = alice
        .post_form(&format!("/tasks/{applied_name}/apply"), &[])
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    // "Run again" copies the whole spec too, dry run included.
    let r = alice.post_form("/tasks/dry-1/rerun", &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let again = spec_of(
        &app,
        r.location().strip_prefix("/tasks/").ok_or("redirect")?,
    )?;
    assert_eq!(again, dry);

    // "Edit as new task" fills the form with every field of the spec.
    let form = alice.get("/tasks/new?from=dry-1").await;
    assert_eq!(form.status, StatusCode::OK);
    for needle in [
        "id=\"worker-port\" value=\"9443\"",
        "id=\"timeout-seconds\" value=\"123\"",
        "id=\"max-parallel\" value=\"2\"",
        "id=\"max-failures\" value=\"1\"",
        "id=\"ttl-seconds\" value=\"600\"",
        "disk=ssd\nzone in (a, b)</textarea>",
        "id=\"target-role\" checked",
        "value=\"/etc/chrony.conf\"",
        "id=\"p.mode\" value=\"384\"",
    ] {
        assert!(form.body.contains(needle), "form lacks {needle}");
    }
    Ok(())
}

#[tokio::test]
async fn the_form_sets_every_hosttask_field() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    let page = alice
        .get("/tasks/new?plugin=etc-file&method=ensure-line")
        .await;
    for field in [
        "name=\"port\"",
        "name=\"timeout_seconds\"",
        "name=\"max_parallel\"",
        "name=\"max_failures\"",
        "name=\"ttl_seconds_after_finished\"",
        "name=\"node_selector\"",
    ] {
        assert!(page.body.contains(field), "form lacks {field}");
    }
    // Help text comes from the CRD's schema.
    assert!(
        page.body.contains("Deadline of one node"),
        "CRD description shown"
    );
    let r = alice
        .post_form(
            "/tasks",
            &[
                ("plugin", "etc-file"),
                ("method", "ensure-line"),
                ("p.path", "/etc/chrony.conf"),
                ("p.line", "server ntp"),
                ("p.mode", "384"),
                ("target", "role"),
                ("role", "Node"),
                ("node_selector", "disk=ssd\nzone in (a, b)"),
                ("port", "9443"),
                ("timeout_seconds", "123"),
                ("max_parallel", "2"),
                ("max_failures", "1"),
                ("ttl_seconds_after_finished", "600"),
                ("name", "full"),
                ("mode", "dry-run"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    // A new task starts at `rerun: 0` (only `kubectl hostplug rerun` raises it).
    let expected = HostTaskSpec {
        disruption: None,
        rerun: 0,
        ..full_dry_run_spec()
    };
    assert_eq!(spec_of(&app, "full")?, expected);

    // Field errors name the field and keep the input.
    let r = alice
        .post_form(
            "/tasks",
            &[
                ("plugin", "etc-file"),
                ("method", "ensure-line"),
                ("p.path", "/etc/x"),
                ("p.line", "y"),
                ("target", "nodes"),
                ("nodes", "node1"),
                ("node_selector", "disk=ssd"),
                ("max_parallel", "0"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("nodeSelector: narrows a role target"));
    assert!(
        r.body
            .contains("rollout.maxParallel: a whole number from 1")
    );
    assert!(r.body.contains("disk=ssd</textarea>"));
    Ok(())
}

#[tokio::test]
async fn the_api_sets_every_hosttask_field() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    let body = json!({
        "name": "api-full", "plugin": "etc-file", "method": "ensure-line",
        "params": {"path": "/etc/chrony.conf", "line": "server ntp", "mode": 384},
        "targetType": "Node",
        "nodeSelector": {"matchLabels": {"disk": "ssd"},
                         "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]},
        "port": 9443, "timeoutSeconds": 123, "rollout": {"maxParallel": 2, "maxFailures": 1},
        "ttlSecondsAfterFinished": 600, "dryRun": true
    });
    let r = alice.json(Method::POST, "/api/v1/tasks", body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // A new task starts at `rerun: 0` (only `kubectl hostplug rerun` raises it).
    let expected = HostTaskSpec {
        disruption: None,
        rerun: 0,
        ..full_dry_run_spec()
    };
    assert_eq!(spec_of(&app, "api-full")?, expected);
    Ok(())
}

#[tokio::test]
async fn viewers_see_no_outputs_or_diffs() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    put_task(&app, "read-etc", full_dry_run_spec(), succeeded_with_diff())?;
    alice
        .post_form("/admin/settings", &[("registration_open", "on")])
        .await;
    let mut v = app.client([10, 0, 0, 5]);
    v.register("victor", PW).await;
    assert_eq!(v.login("victor", PW).await.status, StatusCode::SEE_OTHER);
    let page = v.get("/tasks/read-etc").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Succeeded"));
    assert!(page.body.contains("id=\"results-hidden\""));
    let api = v.get("/api/v1/tasks/read-etc").await.body;
    let list = v.get("/api/v1/tasks").await.body;
    for text in [&page.body, &api, &list] {
        assert!(!text.contains("SECRET-LINE-FROM-ETC"), "viewer sees a diff");
        assert!(
            !text.contains("SECRET-OUTPUT-FROM-ETC"),
            "viewer sees output"
        );
    }
    // Operators and admins do see them.
    let page = alice.get("/tasks/read-etc").await.body;
    assert!(page.contains("SECRET-LINE-FROM-ETC") && page.contains("SECRET-OUTPUT-FROM-ETC"));
    assert!(
        alice
            .get("/api/v1/tasks/read-etc")
            .await
            .body
            .contains("SECRET-LINE-FROM-ETC")
    );
    Ok(())
}

#[tokio::test]
async fn viewers_see_no_parameters_on_any_page_api_or_stream() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    let mut spec = full_dry_run_spec();
    if let Some(http) = spec.http.as_mut() {
        http.call.parameter =
            Some(json!({"path": "/etc/chrony.conf", "line": "SECRET-PARAM-LINE"}));
    }
    put_task(&app, "with-params", spec, succeeded_with_diff())?;
    alice
        .post_form("/admin/settings", &[("registration_open", "on")])
        .await;
    let mut v = app.client([10, 0, 0, 7]);
    v.register("viola", PW).await;
    assert_eq!(v.login("viola", PW).await.status, StatusCode::SEE_OTHER);
    for uri in [
        "/tasks",
        "/tasks/rows",
        "/tasks/with-params",
        "/tasks/with-params/live",
        "/api/v1/tasks",
        "/api/v1/tasks/with-params",
    ] {
        let r = v.get(uri).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
        assert!(
            !r.body.contains("SECRET-PARAM-LINE"),
            "a viewer sees the parameters at {uri}"
        );
        assert!(!r.body.contains("SECRET-LINE-FROM-ETC"), "{uri}");
    }
    let page = v.get("/tasks/with-params").await.body;
    assert!(page.contains("id=\"params-hidden\""), "{page}");
    // Operators and admins see them.
    assert!(
        alice
            .get("/tasks/with-params")
            .await
            .body
            .contains("SECRET-PARAM-LINE")
    );
    let api = alice.get("/api/v1/tasks/with-params").await.body;
    assert!(api.contains("SECRET-PARAM-LINE"), "{api}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_long_polls_from_one_viewer_are_capped() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    alice
        .post_form("/admin/settings", &[("registration_open", "on")])
        .await;
    let mut v = app.client([10, 0, 0, 8]);
    v.register("vince", PW).await;
    assert_eq!(v.login("vince", PW).await.status, StatusCode::SEE_OTHER);
    // Each long poll holds a watch on the API server for as long as it waits.
    *app.cluster.change_wait.lock().map_err(|_| "lock")? = Some(Duration::from_secs(2));
    let polls = (0..100).map(|_| {
        let mut c = v.clone();
        async move { c.get("/tasks/rows?wait=25").await }
    });
    let answers = futures::future::join_all(polls).await;
    let most = app
        .cluster
        .most_waiting
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        most <= hostplug_web::limits::MAX_LONG_POLLS_PER_USER,
        "{most} long polls of one viewer waited at once"
    );
    let ok = answers
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert!(ok >= 1, "no long poll was served");
    for r in answers.iter().filter(|r| r.status != StatusCode::OK) {
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
        assert!(r.headers.contains_key(header::RETRY_AFTER));
    }
    // Another user is not starved by the first one's polls.
    *app.cluster.change_wait.lock().map_err(|_| "lock")? = None;
    assert_eq!(alice.get("/tasks/rows?wait=1").await.status, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn fifty_concurrent_bad_logins_do_not_all_get_checked() -> TestResult {
    let app = TestApp::new();
    admin(&app).await;
    let mut attempts = Vec::new();
    for i in 0..50u8 {
        let mut c = app.client([203, 0, 113, i]);
        c.get("/login").await;
        attempts.push(tokio::spawn(async move {
            c.post_form(
                "/login",
                &[("username", "alice"), ("password", "guess guess")],
            )
            .await
            .status
        }));
    }
    let mut checked = 0;
    let mut refused = 0;
    for attempt in attempts {
        match attempt.await? {
            StatusCode::UNAUTHORIZED => checked += 1,
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => return Err(format!("unexpected {other}").into()),
        }
    }
    assert_eq!(
        checked,
        hostplug_web::limits::MAX_FAILURES_PER_ACCOUNT,
        "only the account's budget of guesses is checked"
    );
    assert_eq!(refused, 50 - checked);
    Ok(())
}

#[tokio::test]
async fn two_hundred_registrations_from_one_address_are_limited() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    alice
        .post_form("/admin/settings", &[("registration_open", "on")])
        .await;
    let mut c = app.client([198, 51, 100, 99]);
    c.get("/register").await;
    let mut created = 0;
    let mut limited = 0;
    for i in 0..200 {
        let name = format!("bot{i}");
        let r = c
            .post_form(
                "/register",
                &[("username", &name), ("password", PW), ("password2", PW)],
            )
            .await;
        match r.status {
            StatusCode::SEE_OTHER => created += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(r.headers.contains_key(header::RETRY_AFTER));
                limited += 1;
            }
            other => return Err(format!("unexpected {other}: {}", r.body).into()),
        }
    }
    assert_eq!(created, hostplug_web::limits::MAX_REGISTRATIONS_PER_IP);
    assert_eq!(limited, 200 - created);
    let users = alice.get("/admin/users").await.body;
    assert_eq!(users.matches("data-user=\"bot").count(), created);
    // Another address may still register.
    let mut other = app.client([198, 51, 100, 100]);
    assert_eq!(
        other.register("human", PW).await.status,
        StatusCode::SEE_OTHER
    );
    Ok(())
}

#[tokio::test]
async fn password_hashing_never_holds_the_database() -> TestResult {
    let app = TestApp::new();
    // One argon2 hash, timed here, is what a request would wait for if hashing held the
    // connection.
    let started = std::time::Instant::now();
    hostplug_web::auth::hash_password(PW)?;
    let one_hash = started.elapsed();
    let mut alice = admin(&app).await; // register (hash) and login (verify)
    alice.login("alice", "wrong password").await;
    let mut bob = app.client([10, 0, 0, 2]);
    bob.register("bob", PW).await;
    let held = app.state.db.longest_hold();
    eprintln!("longest database hold {held:?}; one argon2 hash {one_hash:?}");
    assert!(
        held < one_hash / 2,
        "the connection was held {held:?}; one hash takes {one_hash:?}"
    );
    // And argon2 refuses to run while the connection is held.
    let refused = app
        .state
        .db
        .call(|_| Ok(hostplug_web::auth::hash_password(PW).is_err()))
        .await
        .map_err(|e| e.to_string())?;
    assert!(refused);
    Ok(())
}

#[tokio::test]
async fn no_open_redirect_after_login() -> TestResult {
    let app = TestApp::new();
    admin(&app).await;
    for next in [
        "//evil.example",
        "/\\evil.example",
        "/%09/evil.example",
        "/%5C/evil.example",
        "https://evil.example/",
    ] {
        let mut c = app.client([10, 0, 0, 1]);
        c.get("/login").await;
        let r = c
            .post_form(
                "/login",
                &[("username", "alice"), ("password", PW), ("next", next)],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert_eq!(r.location(), "/tasks", "next={next:?}");
    }
    Ok(())
}

fn token_from(body: &str) -> Result<String, Box<dyn std::error::Error>> {
    let start = body.find("id=\"new-token\">").ok_or("token shown")? + "id=\"new-token\">".len();
    Ok(body[start..start + 43].to_owned())
}

#[tokio::test]
async fn api_tokens_expire_and_end_with_their_owner() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    alice
        .post_form("/admin/settings", &[("registration_open", "on")])
        .await;
    // A second admin makes a token; alice disables her.
    let mut carol = app.client([10, 0, 0, 3]);
    carol.register("carol", PW).await;
    let users = alice.get("/admin/users").await.body;
    let carol_id = users
        .split("action=\"/admin/users/")
        .filter_map(|s| s.split('"').next())
        .last()
        .ok_or("no user form")?
        .to_owned();
    alice
        .post_form(
            &format!("/admin/users/{carol_id}"),
            &[("action", "role"), ("role", "admin")],
        )
        .await;
    assert_eq!(carol.login("carol", PW).await.status, StatusCode::SEE_OTHER);
    let r = carol
        .post_form(
            "/admin/tokens",
            &[("name", "ci"), ("role", "admin"), ("days", "30")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut script = app.client([10, 0, 0, 8]);
    script.bearer = Some(token_from(&r.body)?);
    assert_eq!(script.get("/api/v1/me").await.status, StatusCode::OK);
    alice
        .post_form(
            &format!("/admin/users/{carol_id}"),
            &[("action", "disable")],
        )
        .await;
    assert_eq!(
        script.get("/api/v1/me").await.status,
        StatusCode::UNAUTHORIZED,
        "a disabled owner's token stops working"
    );

    // Alice's own token works until it expires.
    let r = alice
        .post_form(
            "/admin/tokens",
            &[("name", "short"), ("role", "viewer"), ("days", "1")],
        )
        .await;
    let mut script = app.client([10, 0, 0, 9]);
    script.bearer = Some(token_from(&r.body)?);
    assert_eq!(script.get("/api/v1/me").await.status, StatusCode::OK);
    app.state
        .db
        .call(|conn| {
            conn.execute(
                "UPDATE api_tokens SET expires_at = ?1 WHERE name = 'short'",
                [hostplug_web::db::now() - 1],
            )?;
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(
        script.get("/api/v1/me").await.status,
        StatusCode::UNAUTHORIZED,
        "an expired token stops working"
    );
    // Lifetimes are bounded.
    let r = alice
        .post_form(
            "/admin/tokens",
            &[("name", "forever"), ("role", "viewer"), ("days", "100000")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn password_change_needs_the_current_one_and_ends_sessions() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    let mut other_session = app.client([10, 0, 0, 2]);
    assert_eq!(
        other_session.login("alice", PW).await.status,
        StatusCode::SEE_OTHER
    );
    let page = alice.get("/account/password").await;
    assert_eq!(page.status, StatusCode::OK);
    const NEW: &str = "an even better passphrase";
    let r = alice
        .post_form(
            "/account/password",
            &[
                ("current", "not it at all"),
                ("password", NEW),
                ("password2", NEW),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("current password is not right"));
    let r = alice
        .post_form(
            "/account/password",
            &[
                ("current", PW),
                ("password", NEW),
                ("password2", "different"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = alice
        .post_form(
            "/account/password",
            &[("current", PW), ("password", NEW), ("password2", NEW)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), "/login?registered=password");
    assert_eq!(
        other_session.get("/tasks").await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(alice.get("/tasks").await.status, StatusCode::SEE_OTHER);
    let mut c = app.client([10, 0, 0, 3]);
    assert_eq!(c.login("alice", PW).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(c.login("alice", NEW).await.status, StatusCode::SEE_OTHER);
    let audit = c.get("/admin/audit").await.body;
    assert!(audit.contains("password.change"));
    Ok(())
}

#[test]
fn defaults_are_https_and_secure_cookies() {
    use clap::Parser;
    let config = WebConfig::parse_from(["hostplug-web"]);
    assert!(!config.insecure_http, "HTTPS by default");
    assert!(config.secure_cookies, "Secure cookies by default");
}

#[tokio::test]
async fn edit_makes_a_new_generation_of_the_same_task() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    put_task(&app, "edit-me", full_dry_run_spec(), succeeded_with_diff())?;
    let page = alice.get("/tasks/edit-me").await.body;
    assert!(page.contains("id=\"edit\""));
    let form = alice.get("/tasks/new?edit=edit-me").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("name=\"edit\" value=\"edit-me\""));
    assert!(form.body.contains("id=\"max-parallel\" value=\"2\""));
    let r = alice
        .post_form(
            "/tasks",
            &[
                ("edit", "edit-me"),
                ("plugin", "etc-file"),
                ("method", "ensure-line"),
                ("p.path", "/etc/chrony.conf"),
                ("p.line", "server ntp"),
                ("p.mode", "384"),
                ("target", "role"),
                ("role", "Node"),
                ("node_selector", "disk=ssd\nzone in (a, b)"),
                ("port", "9443"),
                ("timeout_seconds", "123"),
                ("max_parallel", "5"),
                ("max_failures", "1"),
                ("ttl_seconds_after_finished", "600"),
                ("mode", "apply"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), "/tasks/edit-me");
    let mut expected = full_dry_run_spec();
    expected.dry_run = false;
    expected.rollout = Some(RolloutSpec {
        max_parallel: 5,
        max_failures: 1,
        ..RolloutSpec::default()
    });
    assert_eq!(spec_of(&app, "edit-me")?, expected);
    assert_eq!(
        app.cluster.tasks.lock().map_err(|_| "lock")?.len(),
        1,
        "no new task"
    );
    let page = alice.get("/tasks/edit-me").await.body;
    assert!(page.contains("2 (edited)"), "{page}");
    // Until the operator has run generation 2, it cannot be edited again.
    let r = alice
        .post_form(
            "/tasks",
            &[
                ("edit", "edit-me"),
                ("plugin", "etc-file"),
                ("method", "ensure-line"),
                ("p.path", "/etc/x"),
                ("p.line", "y"),
                ("target", "nodes"),
                ("nodes", "node1"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("still running"));
    let audit = alice.get("/admin/audit").await.body;
    assert!(audit.contains("task.edit") && audit.contains("generation 1 → 2"));
    Ok(())
}

/// What the task form does not show survives an edit through it: registryAuth,
/// disruption, the rollout's waves and gate, the call's vars, rerun. Only the fields the
/// form shows change; onChange is shown (as JSON) and comes back as it was.
#[tokio::test]
async fn an_edit_keeps_what_the_form_does_not_show() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    let mut v = serde_json::to_value(full_dry_run_spec())?;
    v["onChange"] = json!([{"api": "etc-file", "method": "ensure-line",
        "parameter": {"path": "/etc/chrony.stamp", "line": "changed"}}]);
    v["registryAuth"] = json!({"secretName": "pull"});
    v["disruption"] = json!({"drain": true, "reboot": "Never"});
    v["rollout"]["waves"] = json!([1, "100%"]);
    v["http"]["vars"] = json!([{"name": "line", "value": "server ntp"}]);
    let rich: HostTaskSpec = serde_json::from_value(v)?;
    put_task(&app, "rich", rich.clone(), succeeded_with_diff())?;
    // The edit form shows the follow-up calls; posting them back keeps them.
    let form = alice.get("/tasks/new?edit=rich").await.body;
    assert!(form.contains("id=\"on-change\""), "{form}");
    assert!(form.contains("chrony.stamp"), "{form}");
    let on_change = serde_json::to_string(&rich.on_change)?;
    let r = alice
        .post_form(
            "/tasks",
            &[
                ("edit", "rich"),
                ("plugin", "etc-file"),
                ("method", "ensure-line"),
                ("p.path", "/etc/chrony.conf"),
                ("p.line", "server ntp"),
                ("p.mode", "384"),
                ("target", "role"),
                ("role", "Node"),
                ("node_selector", "disk=ssd\nzone in (a, b)"),
                ("port", "9443"),
                ("timeout_seconds", "123"),
                ("max_parallel", "5"),
                ("max_failures", "1"),
                ("ttl_seconds_after_finished", "600"),
                ("on_change", &on_change),
                ("mode", "apply"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let mut expected = rich;
    expected.dry_run = false;
    if let Some(rollout) = expected.rollout.as_mut() {
        rollout.max_parallel = 5;
    }
    assert_eq!(spec_of(&app, "rich")?, expected);
    Ok(())
}

/// A new task with a follow-up call from the form: a restart after the edit; a bad list
/// and an unknown follow-up method are refused naming the field, and nothing is created.
#[tokio::test]
async fn the_form_sets_follow_up_calls() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    let form = |name: &'static str, on_change: &'static str| {
        vec![
            ("name", name),
            ("plugin", "etc-file"),
            ("method", "ensure-line"),
            ("p.path", "/etc/chrony.conf"),
            ("p.line", "server ntp"),
            ("target", "nodes"),
            ("nodes", "node1"),
            ("mode", "apply"),
            ("on_change", on_change),
        ]
    };
    let r = alice
        .post_form(
            "/tasks",
            &form(
                "with-restart",
                r#"[{"api": "etc-file", "method": "ensure-line", "parameter": {"path": "/etc/chrony.stamp", "line": "changed"}}]"#,
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let spec = spec_of(&app, "with-restart")?;
    assert_eq!(spec.on_change.len(), 1);
    assert_eq!(
        (
            spec.on_change[0].api.as_str(),
            spec.on_change[0].method.as_str()
        ),
        ("etc-file", "ensure-line")
    );
    let r = alice
        .post_form("/tasks", &form("bad-json", "[{\"api\": "))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("onChange: not a JSON list"), "{}", r.body);
    let r = alice
        .post_form(
            "/tasks",
            &form(
                "bad-method",
                r#"[{"api": "etc-file", "method": "reboot-everything"}]"#,
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body.contains("spec.onChange[0].method") && r.body.contains("reboot-everything"),
        "{}",
        r.body
    );
    for name in ["bad-json", "bad-method"] {
        assert!(spec_of(&app, name).is_err(), "{name} was created");
    }
    Ok(())
}

/// The live stream of a task's page: the same fragment the page shows (progress at
/// 100 % for an ended task, outputs and diffs only for operators), then `end`; no
/// stream for a missing task or without a session.
#[tokio::test]
async fn live_stream_sends_the_page_fragment_then_end() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    put_task(&app, "read-etc", full_dry_run_spec(), succeeded_with_diff())?;
    let r = alice.get("/tasks/read-etc/live").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let detail = r.body.find("event: detail").ok_or("no detail event")?;
    let end = r.body.find("event: end").ok_or("no end event")?;
    assert!(detail < end, "{}", r.body);
    assert!(r.body.contains("id=\"task-progress\""), "{}", r.body);
    assert!(r.body.contains("100 %"), "{}", r.body);
    assert!(
        r.body.contains("SECRET-LINE-FROM-ETC"),
        "operators see the diff"
    );
    // The fragment is not a page: no layout around it.
    assert!(!r.body.contains("<!doctype html>"));

    alice
        .post_form("/admin/settings", &[("registration_open", "on")])
        .await;
    let mut v = app.client([10, 0, 0, 5]);
    v.register("victor", PW).await;
    assert_eq!(v.login("victor", PW).await.status, StatusCode::SEE_OTHER);
    let r = v.get("/tasks/read-etc/live").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("id=\"results-hidden\""), "{}", r.body);
    assert!(
        !r.body.contains("SECRET-LINE-FROM-ETC"),
        "viewer sees a diff"
    );
    assert!(
        !r.body.contains("SECRET-OUTPUT-FROM-ETC"),
        "viewer sees output"
    );

    assert_eq!(
        alice.get("/tasks/nope/live").await.status,
        StatusCode::NOT_FOUND
    );
    let mut anon = app.client([10, 0, 0, 1]);
    let r = anon.get("/tasks/read-etc/live").await;
    assert!(r.location().starts_with("/login"), "{:?}", r.status);
    Ok(())
}

#[tokio::test]
async fn states_show_drift_and_only_operators_switch_the_mode() -> TestResult {
    let app = TestApp::new();
    let state: hostplug_api::state::HostState = serde_json::from_value(json!({
        "apiVersion": "hostplug.dev/v1alpha1", "kind": "HostState",
        "metadata": {"name": "chrony"},
        "spec": {"targetType": "Node", "mode": "Audit",
                 "steps": [{"api": "etc-file", "method": "ensure-line",
                            "parameter": {"path": "/etc/chrony.conf", "line": "server x"}}]},
        "status": {"sync": "1/2", "nodes": [
            {"node": "node1", "sync": "InSync"},
            {"node": "node2", "sync": "Drifted",
             "drift": [{"step": 0, "diff": "+server x <b>"}]}
        ]}
    }))?;
    app.cluster.states.lock().map_err(|_| "lock")?.push(state);
    // A state whose results are sensitive: its diffs are /etc contents nobody should
    // read in the console.
    let sensitive: hostplug_api::state::HostState = serde_json::from_value(json!({
        "apiVersion": "hostplug.dev/v1alpha1", "kind": "HostState",
        "metadata": {"name": "shadow", "annotations": {"hostplug.dev/sensitive-output": "true"}},
        "spec": {"targetType": "Node", "mode": "Audit",
                 "steps": [{"api": "etc-file", "method": "ensure-line",
                            "parameter": {"path": "/etc/x", "line": "y"}}]},
        "status": {"sync": "0/1", "nodes": [
            {"node": "node1", "sync": "Drifted",
             "drift": [{"step": 0, "diff": "-SECRET-STATE-DIFF"}]}
        ]}
    }))?;
    app.cluster
        .states
        .lock()
        .map_err(|_| "lock")?
        .push(sensitive);
    let mut alice = admin(&app).await;
    alice
        .post_form("/admin/settings", &[("registration_open", "on")])
        .await;
    let mut v = app.client([10, 0, 0, 6]);
    v.register("vera", PW).await;
    v.login("vera", PW).await;

    // A viewer sees every node's sync, but no diff (it shows /etc contents) and no
    // switch.
    let page = v.get("/states").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("data-node=\"node2\" data-sync=\"Drifted\"")
    );
    assert!(!page.body.contains("+server x"), "viewer sees a drift diff");
    assert!(page.body.contains("id=\"drift-hidden\""), "{}", page.body);
    assert!(!page.body.contains("SECRET-STATE-DIFF"));
    assert!(page.body.contains("1/2 in sync"));
    // An operator-level user sees the diff (escaped); of the sensitive state, not even
    // they do.
    let seen = alice.get("/states").await.body;
    assert!(seen.contains("+server x &#60;b&#62;"), "{seen}");
    assert!(!seen.contains("+server x <b>"));
    assert!(!seen.contains("SECRET-STATE-DIFF"), "{seen}");
    assert!(seen.contains("id=\"drift-sensitive-shadow\""), "{seen}");
    assert!(!page.body.contains("id=\"switch-chrony\""));
    assert_eq!(
        v.post_form("/states/chrony/mode/Enforce", &[]).await.status,
        StatusCode::FORBIDDEN
    );
    let mode = |app: &TestApp| -> Result<String, &'static str> {
        Ok(app.cluster.states.lock().map_err(|_| "lock")?[0]
            .spec
            .mode
            .to_string())
    };
    assert_eq!(mode(&app)?, "Audit");

    // An operator-level user switches it; a bad mode and an unknown state are refused.
    assert!(
        alice
            .get("/states")
            .await
            .body
            .contains("id=\"switch-chrony\"")
    );
    let r = alice.post_form("/states/chrony/mode/Enforce", &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(mode(&app)?, "Enforce");
    assert_eq!(
        alice
            .post_form("/states/chrony/mode/enforce", &[])
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        alice.post_form("/states/nope/mode/Audit", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let audit = alice.get("/admin/audit").await.body;
    assert!(audit.contains("state.mode"), "{audit}");
    Ok(())
}

/// A task in flight, its rollout halted at wave 1 after its canary changed node1.
fn halted_at_wave_one() -> HostTaskStatus {
    HostTaskStatus {
        state: TaskState::Running,
        nodes: vec![
            NodeResult {
                node: "node1".to_owned(),
                phase: NodePhase::Succeeded,
                changed: true,
                wave: Some(1),
                ..NodeResult::default()
            },
            NodeResult {
                node: "node2".to_owned(),
                phase: NodePhase::Pending,
                wave: Some(2),
                ..NodeResult::default()
            },
        ],
        nodes_total: 2,
        nodes_done: 1,
        observed_generation: Some(1),
        rollout: Some(hostplug_api::crd::RolloutStatus {
            wave: 1,
            waves: 2,
            phase: hostplug_api::crd::RolloutPhase::Halted,
            ..Default::default()
        }),
        ..HostTaskStatus::default()
    }
}

fn applied_spec() -> HostTaskSpec {
    HostTaskSpec {
        dry_run: false,
        ..full_dry_run_spec()
    }
}

/// The rollout's buttons (pause, resume, cancel) and Revert: shown to operators and
/// admins only, each a CSRF-checked form that makes exactly the change `kubectl
/// hostplug` makes (resume at a halted gate approves that wave); viewers see none and
/// are refused.
#[tokio::test]
async fn rollout_controls_and_revert_are_for_writers_only() -> TestResult {
    let app = TestApp::new();
    let mut alice = admin(&app).await;
    put_task(&app, "canary", applied_spec(), halted_at_wave_one())?;
    let page = alice.get("/tasks/canary").await;
    assert_eq!(page.status, StatusCode::OK);
    for id in [
        r#"id="pause""#,
        r#"id="resume""#,
        r#"id="cancel""#,
        r#"id="revert""#,
    ] {
        assert!(page.body.contains(id), "{id} missing");
    }
    // Without the CSRF token: refused, nothing changed.
    let r = alice
        .post_form("/tasks/canary/rollout/resume", &[("csrf", "wrong")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        spec_of(&app, "canary")?.rollout.map(|r| r.approved_wave),
        Some(0)
    );
    // Resume at a halted gate approves its wave; pause and cancel set their fields.
    let r = alice.post_form("/tasks/canary/rollout/resume", &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let rollout = spec_of(&app, "canary")?.rollout.ok_or("no rollout")?;
    assert_eq!((rollout.approved_wave, rollout.paused), (1, false));
    assert_eq!(rollout.max_parallel, 2, "the rest of the rollout is kept");
    alice.post_form("/tasks/canary/rollout/pause", &[]).await;
    assert!(spec_of(&app, "canary")?.rollout.is_some_and(|r| r.paused));
    alice.post_form("/tasks/canary/rollout/cancel", &[]).await;
    assert!(spec_of(&app, "canary")?.rollout.is_some_and(|r| r.cancel));
    assert_eq!(
        alice
            .post_form("/tasks/canary/rollout/explode", &[])
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Revert makes a revert task of it and shows that.
    let r = alice.post_form("/tasks/canary/revert", &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let made = r.location().trim_start_matches("/tasks/").to_owned();
    assert!(made.starts_with("revert-canary-"), "{made}");
    let spec = spec_of(&app, &made)?;
    assert!(spec.http.is_none());
    assert_eq!(
        spec.revert,
        Some(hostplug_api::crd::RevertSpec {
            task: "canary".to_owned(),
            nodes: Vec::new(),
            force: false,
        })
    );
    // A revert task has no Revert button of its own.
    let page = alice.get(&format!("/tasks/{made}")).await;
    assert!(!page.body.contains(r#"id="revert""#));
    let audit = alice.get("/admin/audit").await.body;
    assert!(
        audit.contains("task.control") && audit.contains("task.revert"),
        "{audit}"
    );

    // A viewer sees no button and is refused.
    alice
        .post_form("/admin/settings", &[("registration_open", "on")])
        .await;
    let mut v = app.client([10, 0, 0, 5]);
    v.register("victor", PW).await;
    assert_eq!(v.login("victor", PW).await.status, StatusCode::SEE_OTHER);
    let page = v.get("/tasks/canary").await;
    assert_eq!(page.status, StatusCode::OK);
    for id in ["pause", "resume", "cancel", "revert"] {
        assert!(!page.body.contains(&format!(r#"id="{id}""#)), "{id} shown");
    }
    for uri in ["/tasks/canary/rollout/pause", "/tasks/canary/revert"] {
        assert_eq!(
            v.post_form(uri, &[]).await.status,
            StatusCode::FORBIDDEN,
            "{uri}"
        );
    }
    Ok(())
}

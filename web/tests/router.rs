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
use hostplug_operator::crd::{
    Capabilities, EtcAccess, HostPlugin, HostPluginSpec, HostPluginStatus, MethodInfo, PluginInfo,
    PluginSource,
};
use hostplug_web::{AppState, WebConfig, app, cluster::InMemoryCluster, db::Db};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Node;
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
            },
            sha256: None,
            capabilities: Capabilities {
                etc: EtcAccess::Write,
                docker: false,
            },
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
            methods: vec![MethodInfo {
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
            }],
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

struct TestApp {
    router: Router,
    cluster: Arc<InMemoryCluster>,
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
        Self {
            router: app(state),
            cluster,
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
    let r = admin.register("alice", PW).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/login?registered=admin");
    let r = admin.login("alice", PW).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    admin
}

#[tokio::test]
async fn first_account_is_admin_later_ones_wait_for_approval() -> TestResult {
    let app = TestApp::new();
    let mut alice = app.client([10, 0, 0, 1]);
    let page = alice.get("/register").await;
    assert!(page.body.contains("first account"));
    let mut alice = admin(&app).await;
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

    // The last admin cannot demote herself.
    let r = alice
        .post_form("/admin/users/1", &[("action", "role"), ("role", "viewer")])
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
    c.register("alice", PW).await;
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
    assert!(r.body.contains("mode: not a whole number"));
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
    assert_eq!(task.spec.workers, ["node1", "node2"]);
    assert_eq!(
        task.spec.http.parameter,
        Some(json!({"path": "/etc/chrony.conf", "line": "server ntp", "mode": 384}))
    );
    let list = alice.get("/tasks").await;
    assert!(list.body.contains("Pending"));
    assert!(list.body.contains("0/2"));
    Ok(())
}

#[tokio::test]
async fn login_is_rate_limited_per_account_and_per_ip() -> TestResult {
    let app = TestApp::new();
    admin(&app).await;
    let mut attacker = app.client([192, 0, 2, 1]);
    for _ in 0..hostplug_web::auth::MAX_FAILURES_PER_ACCOUNT {
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
    for i in 0..hostplug_web::auth::MAX_FAILURES_PER_IP {
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
    c.register("alice", PW).await;
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

//! The docker-image plugin through the real host against a real Docker Engine API:
//! Podman's Docker-compatible service with its own storage on a private socket, and a
//! docker-registry on loopback for pulls (`tests/podman`, crate `hostplug-podman`).
//!
//! Every test starts its own environment, so prunes and removals never meet another
//! test's images, and checks the daemon's state through Podman itself, not through the
//! plugin. The component is `target/plugins/docker-image.wasm` from `make plugins`; most
//! tests call it through the `hostplug_host` API (one compiled component for the whole
//! binary); `cli/tests` runs it through the `hostplug plugin run` CLI as a plugin author
//! would.
//!
//! Needs `podman`, `docker-registry`, `runc` and `setpriv` (scripts/setup.sh installs
//! them); see tests/podman/README.md.

mod common;

use std::sync::{Arc, OnceLock};

use hostplug_api::registry_auth::RegistryCredentials;
use hostplug_host::{
    CapabilityError, DockerPolicy, DockerRoute, ErrorKind, Grants, Host, HostConfig, Invocation,
    InvokeError, InvokeOutcome, Plugin,
};
use hostplug_podman::DockerEnv;
use hostplug_podman::registry::Registry;
use serde_json::{Value, json};

fn plugin() -> &'static Arc<Plugin> {
    static PLUGIN: OnceLock<Arc<Plugin>> = OnceLock::new();
    PLUGIN.get_or_init(|| common::load(common::host(), "docker-image"))
}

fn start() -> DockerEnv {
    DockerEnv::start().unwrap_or_else(|e| {
        panic!(
            "cannot start Podman's API service and the registry: {e} (see tests/podman/README.md)"
        )
    })
}

fn call(
    env: &DockerEnv,
    method: &str,
    params: Value,
    dry_run: bool,
) -> Result<InvokeOutcome, InvokeError> {
    let mut inv = Invocation::new(method, params.to_string());
    inv.dry_run = dry_run;
    plugin().invoke(&inv, &Grants::none().with_docker(env.socket()))
}

fn ok(env: &DockerEnv, method: &str, params: Value) -> (bool, Value) {
    let out = call(env, method, params.clone(), false)
        .unwrap_or_else(|e| panic!("{method} {params}: {e}"));
    (out.changed, out.output)
}

fn fails(env: &DockerEnv, method: &str, params: Value) -> InvokeError {
    match call(env, method, params.clone(), false) {
        Ok(out) => panic!("{method} {params} should fail, got {:?}", out.output),
        Err(e) => e,
    }
}

/// What the daemon holds: every image ID with its sorted names, read through Podman.
fn state(env: &DockerEnv) -> Vec<(String, Vec<String>)> {
    let out = env
        .podman(&[
            "images",
            "--all",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Repository}}:{{.Tag}}",
        ])
        .expect("podman images");
    let mut by_id: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in out.lines() {
        let (id, name) = line.split_once(' ').unwrap_or((line, ""));
        let id = if id.starts_with("sha256:") {
            id.to_owned()
        } else {
            format!("sha256:{id}")
        };
        let names = by_id.entry(id).or_default();
        if !name.contains("<none>") {
            names.push(name.to_owned());
        }
    }
    by_id
        .into_iter()
        .map(|(id, mut names)| {
            names.sort();
            (id, names)
        })
        .collect()
}

#[test]
fn describe_lists_every_method() {
    let info = plugin().describe().expect("describe");
    assert_eq!(info.name, "docker-image");
    let names: Vec<&str> = info.methods.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "list", "inspect", "pull", "tag", "remove", "prune", "push", "login", "save", "load"
        ]
    );
    assert!(info.method("push").expect("push").mutates);
    assert!(!info.method("login").expect("login").mutates);
    let pull = info.method("pull").expect("pull");
    assert!(pull.mutates);
    assert_eq!(
        pull.params_schema.as_ref().map(|s| &s["required"]),
        Some(&json!(["image"]))
    );
    assert!(!info.method("list").expect("list").mutates);
}

#[test]
fn list_and_inspect() {
    let env = start();
    let a = env
        .make_image("localhost/app:1", &[("team", "a")])
        .expect("image");
    let b = env.make_image("localhost/tool:1", &[]).expect("image");
    let (changed, out) = ok(&env, "list", json!({}));
    assert!(!changed);
    assert_eq!(out["count"], 2, "{out}");
    let (_, out) = ok(&env, "list", json!({"label": ["team=a"]}));
    assert_eq!(out["count"], 1, "{out}");
    assert_eq!(out["images"][0]["id"], a);
    assert_eq!(out["images"][0]["labels"]["team"], "a");
    let (_, out) = ok(&env, "list", json!({"reference": "localhost/tool"}));
    assert_eq!(out["images"][0]["id"], b, "{out}");
    let (_, out) = ok(&env, "list", json!({"dangling": true}));
    assert_eq!(out["count"], 0, "{out}");

    let (changed, out) = ok(&env, "inspect", json!({"image": "localhost/app:1"}));
    assert!(!changed);
    assert_eq!(out["id"], a);
    assert_eq!(out["repoTags"], json!(["localhost/app:1"]));
    assert_eq!(out["details"]["Config"]["Labels"]["team"], "a", "{out}");
    // By ID too.
    let (_, out) = ok(&env, "inspect", json!({"image": b}));
    assert_eq!(out["repoTags"], json!(["localhost/tool:1"]));

    let e = fails(&env, "inspect", json!({"image": "localhost/nope:1"}));
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    let e = fails(&env, "inspect", json!({"image": "../../containers/json"}));
    assert_eq!(e.kind, ErrorKind::InvalidParams, "{e}");
}

#[test]
fn pull_if_not_present_and_always() {
    let env = start();
    let first = env.make_image("localhost/src:1", &[]).expect("image");
    let remote = env.push("localhost/src:1", "team/app:1").expect("push");
    let params = json!({"image": remote});

    let (changed, out) = ok(&env, "pull", params.clone());
    assert!(changed, "{out}");
    assert_eq!(out["id"], first);
    assert_eq!(out["previousId"], Value::Null);
    assert_eq!(env.image_id(&remote).expect("inspect"), Some(first.clone()));

    // if-not-present (the default): present, nothing happens.
    let (changed, out) = ok(&env, "pull", params.clone());
    assert!(!changed);
    assert_eq!(out["pulled"], false);

    // always: the registry is asked, the image is the same: unchanged.
    let always =
        json!({"image": format!("{}/team/app", env.registry()), "tag": "1", "policy": "always"});
    let (changed, out) = ok(&env, "pull", always.clone());
    assert!(!changed, "{out}");
    assert_eq!(
        (out["pulled"].clone(), out["id"].clone()),
        (json!(true), json!(first))
    );

    // A new image under the same tag in the registry: always brings it, changed.
    let second = env.make_image("localhost/src:2", &[]).expect("image");
    env.push("localhost/src:2", "team/app:1").expect("push");
    let (changed, out) = ok(&env, "pull", always.clone());
    assert!(changed, "{out}");
    assert_eq!(
        (out["previousId"].clone(), out["id"].clone()),
        (json!(first), json!(second))
    );
    assert_eq!(env.image_id(&remote).expect("inspect"), Some(second));

    // A tag the registry does not have.
    let e = fails(
        &env,
        "pull",
        json!({"image": format!("{}/team/app:nope", env.registry())}),
    );
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
}

#[test]
fn pull_from_a_registry_that_is_down_says_so() {
    let env = start();
    let e = fails(
        &env,
        "pull",
        json!({"image": format!("{}/team/app:1", env.down_registry())}),
    );
    assert_eq!(e.kind, ErrorKind::Failed, "{e}");
    assert!(e.message.contains("down or unreachable"), "{e}");
    assert!(e.message.contains(env.down_registry()), "{e}");
}

#[test]
fn tag_keep_and_overwrite() {
    let env = start();
    let a = env.make_image("localhost/a:1", &[]).expect("image");
    let b = env.make_image("localhost/b:1", &[]).expect("image");

    let new_name =
        json!({"source": "localhost/a:1", "repository": "localhost/mirror", "tag": "v1"});
    let (changed, out) = ok(&env, "tag", new_name.clone());
    assert!(changed);
    assert_eq!(
        (out["sourceId"].clone(), out["id"].clone()),
        (json!(a), json!(a))
    );
    assert_eq!(
        env.image_id("localhost/mirror:v1").expect("inspect"),
        Some(a.clone())
    );
    let (changed, _) = ok(&env, "tag", new_name);
    assert!(!changed, "tagging twice changes nothing");

    // localhost/b:1 names b: keep leaves it there.
    let keep = json!({"source": a, "repository": "localhost/b", "tag": "1", "existing": "keep"});
    let (changed, out) = ok(&env, "tag", keep);
    assert!(!changed);
    assert_eq!(
        (out["kept"].clone(), out["id"].clone()),
        (json!(true), json!(b))
    );
    assert_eq!(
        env.image_id("localhost/b:1").expect("inspect"),
        Some(b.clone())
    );

    // overwrite moves it to a.
    let over = json!({"source": "localhost/a:1", "repository": "localhost/b", "tag": "1", "existing": "overwrite"});
    let (changed, out) = ok(&env, "tag", over.clone());
    assert!(changed);
    assert_eq!(
        (out["previousId"].clone(), out["id"].clone()),
        (json!(b), json!(a))
    );
    assert_eq!(env.image_id("localhost/b:1").expect("inspect"), Some(a));
    let (changed, _) = ok(&env, "tag", over);
    assert!(!changed);

    let e = fails(
        &env,
        "tag",
        json!({"source": "localhost/nope:1", "repository": "localhost/x"}),
    );
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
}

#[test]
fn remove_names_then_the_image() {
    let env = start();
    let id = env.make_image("localhost/gone:1", &[]).expect("image");
    env.podman(&["tag", "localhost/gone:1", "localhost/gone:2"])
        .expect("tag");

    let (changed, out) = ok(&env, "remove", json!({"image": "localhost/gone:1"}));
    assert!(changed);
    assert_eq!(out["id"], id);
    assert_eq!(out["imageRemoved"], false, "{out}");
    assert_eq!(
        env.image_id("localhost/gone:2").expect("inspect"),
        Some(id.clone())
    );

    let (changed, out) = ok(&env, "remove", json!({"image": "localhost/gone:2"}));
    assert!(changed);
    assert_eq!(out["imageRemoved"], true, "{out}");
    assert!(
        out["deleted"]
            .as_array()
            .is_some_and(|d| d.contains(&json!(id))),
        "{out}"
    );
    assert!(!env.image_ids().expect("ids").contains(&id));

    // Already gone: nothing to do.
    let (changed, out) = ok(&env, "remove", json!({"image": "localhost/gone:2"}));
    assert!(!changed);
    assert_eq!(out["id"], Value::Null);

    // By ID with several names needs force.
    let id = env.make_image("localhost/multi:1", &[]).expect("image");
    env.podman(&["tag", "localhost/multi:1", "localhost/multi:2"])
        .expect("tag");
    let e = fails(&env, "remove", json!({"image": id}));
    assert_eq!(e.kind, ErrorKind::Failed, "{e}");
    let (changed, out) = ok(&env, "remove", json!({"image": id, "force": true}));
    assert!(changed);
    assert_eq!(out["imageRemoved"], true, "{out}");
    assert!(env.image_ids().expect("ids").is_empty());
}

#[test]
fn prune_dangling_then_all_unused() {
    let env = start();
    let old = env
        .make_image("localhost/app:1", &[("team", "a")])
        .expect("image");
    // The same name again: the old image loses it and dangles.
    let new = env
        .make_image("localhost/app:1", &[("team", "a")])
        .expect("image");
    let other = env.make_image("localhost/other:1", &[]).expect("image");
    assert_eq!(env.image_ids().expect("ids").len(), 3);

    let (changed, out) = ok(&env, "prune", json!({}));
    assert!(changed, "{out}");
    assert_eq!(out["deleted"], json!([old]));
    let (changed, _) = ok(&env, "prune", json!({}));
    assert!(!changed, "a second prune finds nothing");

    // All unused, only those with label team=a.
    let (changed, out) = ok(&env, "prune", json!({"all": true, "label": ["team=a"]}));
    assert!(changed, "{out}");
    assert_eq!(out["deleted"], json!([new]));
    assert_eq!(env.image_ids().expect("ids"), vec![other.clone()]);

    // All unused.
    let (changed, out) = ok(&env, "prune", json!({"all": true}));
    assert!(changed, "{out}");
    assert_eq!(out["deleted"], json!([other]));
    assert!(env.image_ids().expect("ids").is_empty());
    let (changed, _) = ok(&env, "prune", json!({"all": true}));
    assert!(!changed);
}

#[test]
fn dry_runs_change_nothing() {
    let env = start();
    let a = env.make_image("localhost/a:1", &[]).expect("image");
    env.make_image("localhost/a:1", &[]).expect("image"); // `a` dangles now
    let b = env.make_image("localhost/b:1", &[]).expect("image");
    let remote = env.push("localhost/b:1", "b:1").expect("push");
    let before = state(&env);

    let dry = |method: &str, params: Value| {
        call(&env, method, params.clone(), true)
            .unwrap_or_else(|e| panic!("dry {method} {params}: {e}"))
    };
    let out = dry("pull", json!({"image": remote}));
    assert!(out.changed);
    assert_eq!(out.output["pulled"], true);
    let out = dry(
        "tag",
        json!({"source": "localhost/b:1", "repository": "localhost/c"}),
    );
    assert!(out.changed);
    assert_eq!(out.output["id"], b);
    let out = dry("remove", json!({"image": "localhost/b:1"}));
    assert!(out.changed);
    assert_eq!(out.output["deleted"], json!([b]));
    let out = dry("prune", json!({}));
    assert!(out.changed);
    assert_eq!(out.output["deleted"], json!([a]));
    let out = dry("prune", json!({"all": true}));
    assert_eq!(
        out.output["deleted"].as_array().map(Vec::len),
        Some(3),
        "{}",
        out.output
    );
    // Nothing to do is nothing to do in a dry run too.
    let out = dry("remove", json!({"image": "localhost/none:1"}));
    assert!(!out.changed);

    assert_eq!(state(&env), before, "a dry run changed the daemon");
}

#[test]
fn without_the_docker_capability_every_call_is_denied() {
    let env = start();
    let e = plugin()
        .invoke(&Invocation::new("list", "{}"), &Grants::none())
        .expect_err("no docker capability");
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    assert!(e.message.contains("docker"), "{e}");
    // The socket is there, the plugin just may not use it.
    assert_eq!(env.request("GET", "/_ping").expect("ping").status, 200);
}

#[test]
fn endpoints_outside_the_allow_list_are_denied() {
    // The default policy: image endpoints only.
    let policy = DockerPolicy::images();
    for (m, p) in [
        ("POST", "/containers/create"),
        ("POST", "/containers/x/start"),
        // Push is allowed now; load and save only through the archive directory.
        ("POST", "/images/load"),
        ("GET", "/images/x/get"),
        ("GET", "/images/../containers/json"),
    ] {
        let r = policy.check(m, p);
        assert!(
            matches!(r, Err(CapabilityError::Denied(_))),
            "{m} {p}: {r:?}"
        );
    }

    // Through a plugin: a host whose policy allows reads only denies the pull's
    // POST /images/create, and the plugin passes the refusal through as `denied`.
    let env = start();
    let mut config = HostConfig::default();
    config.docker.allow = vec![
        DockerRoute::new("GET", "/images/json").with_query(["all", "filters"]),
        DockerRoute::new("GET", "/images/{name}/json"),
    ];
    let host = Host::new(config).expect("host");
    let strict = common::load(&host, "docker-image");
    let grants = Grants::none().with_docker(env.socket());
    let out = strict
        .invoke(&Invocation::new("list", "{}"), &grants)
        .expect("list is allowed");
    assert_eq!(out.output["count"], 0);
    let pull = json!({"image": format!("{}/x:1", env.registry())}).to_string();
    let e = strict
        .invoke(&Invocation::new("pull", pull), &grants)
        .expect_err("pull is not allowed");
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    assert!(e.message.contains("/images/create"), "{e}");
}

/// The user and password of the htpasswd registry, and a wrong password.
const USER: &str = "pusher";
const PASSWORD: &str = "Pw-0f-the-test-registry";
const WRONG: &str = "Not-the-password-9";

/// Credentials as a task's `.dockerconfigjson` Secret would hold them, for `registry`.
fn credentials(registry: &str, password: &str) -> Arc<RegistryCredentials> {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
    let file = json!({"auths": {registry: {"auth": auth}}}).to_string();
    Arc::new(RegistryCredentials::from_docker_config_json(file.as_bytes()).expect("docker config"))
}

/// A Podman service and an htpasswd registry beside it that the service may reach over
/// plain HTTP as `localhost:<port>` (the name Podman's `/auth` needs for plain HTTP).
fn with_auth_registry() -> (DockerEnv, Registry, String) {
    let env = start();
    let registry = Registry::start(Some((USER, PASSWORD))).expect("htpasswd registry");
    let name = format!("localhost:{}", registry.port());
    env.trust_registry(&name).expect("trust");
    env.trust_registry(registry.addr()).expect("trust");
    (env, registry, name)
}

fn call_with(
    env: &DockerEnv,
    method: &str,
    params: Value,
    dry_run: bool,
    creds: Option<Arc<RegistryCredentials>>,
) -> Result<InvokeOutcome, InvokeError> {
    let mut inv = Invocation::new(method, params.to_string());
    inv.dry_run = dry_run;
    let mut grants = Grants::none().with_docker(env.socket());
    if let Some(c) = creds {
        grants = grants.with_registry_auth(c);
    }
    plugin().invoke(&inv, &grants)
}

/// Everything an invocation returned, as text, to look for a password in.
fn all_text(r: &Result<InvokeOutcome, InvokeError>) -> String {
    match r {
        Ok(o) => format!("{} {:?} {:?}", o.output, o.diff, o.logs),
        Err(e) => format!("{} {:?}", e.message, e.logs),
    }
}

#[test]
fn push_needs_the_right_credentials_and_never_shows_them() {
    let (env, registry, name) = with_auth_registry();
    let id = env.make_image("localhost/app:1", &[]).expect("image");
    let target = format!("{name}/team/app");
    ok(
        &env,
        "tag",
        json!({"source": "localhost/app:1", "repository": target, "tag": "1"}),
    );
    let push = json!({"image": format!("{target}:1")});

    // No credentials: the registry refuses, nothing is pushed.
    let r = call_with(&env, "push", push.clone(), false, None);
    let e = r.as_ref().expect_err("anonymous push");
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    assert!(e.message.contains("pushing"), "{e}");
    // Wrong credentials: the same, and the wrong password is nowhere.
    let r = call_with(
        &env,
        "push",
        push.clone(),
        false,
        Some(credentials(&name, WRONG)),
    );
    let e = r.as_ref().expect_err("wrong password");
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    assert!(!all_text(&r).contains(WRONG), "{}", all_text(&r));
    assert_eq!(
        registry
            .tags("team/app", Some((USER, PASSWORD)))
            .expect("tags"),
        None,
        "nothing was pushed"
    );

    // A dry run with the right ones: reports, pushes nothing.
    let r = call_with(
        &env,
        "push",
        push.clone(),
        true,
        Some(credentials(&name, PASSWORD)),
    );
    let out = r.as_ref().expect("dry run");
    assert!(out.changed);
    assert_eq!(out.output["authenticated"], true, "{}", out.output);
    assert_eq!(
        registry
            .tags("team/app", Some((USER, PASSWORD)))
            .expect("tags"),
        None
    );

    // The right ones: pushed, the image is in the registry, the password nowhere.
    let r = call_with(
        &env,
        "push",
        push.clone(),
        false,
        Some(credentials(&name, PASSWORD)),
    );
    let out = r.as_ref().expect("push");
    assert!(out.changed, "{}", out.output);
    assert_eq!(out.output["id"], id);
    assert_eq!(out.output["registry"], name);
    assert!(
        out.output["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{}",
        out.output
    );
    assert!(!all_text(&r).contains(PASSWORD), "{}", all_text(&r));
    assert_eq!(
        registry
            .tags("team/app", Some((USER, PASSWORD)))
            .expect("tags"),
        Some(vec!["1".to_owned()])
    );
    // The registry itself still wants the password.
    assert!(registry.tags("team/app", None).is_err());

    // Pull it back with the credentials: the image is authenticated and present.
    env.podman(&["rmi", "-f", &id]).expect("rmi");
    let pull = json!({"image": format!("{target}:1")});
    let e = call_with(&env, "pull", pull.clone(), false, None).expect_err("anonymous pull");
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    let r = call_with(
        &env,
        "pull",
        pull,
        false,
        Some(credentials(&name, PASSWORD)),
    );
    let out = r.as_ref().expect("pull");
    assert!(out.changed);
    assert_eq!(out.output["authenticated"], true);
    assert_eq!(out.output["id"], id);
    assert!(!all_text(&r).contains(PASSWORD));
}

#[test]
fn login_checks_credentials_against_the_registry() {
    let (env, _registry, name) = with_auth_registry();
    let login = json!({"registry": name});
    let r = call_with(
        &env,
        "login",
        login.clone(),
        false,
        Some(credentials(&name, PASSWORD)),
    );
    let out = r.as_ref().expect("login");
    assert!(!out.changed);
    assert_eq!(out.output["checked"], true);
    assert_eq!(out.output["username"], USER);
    assert_eq!(out.output["status"], "Login Succeeded", "{}", out.output);
    assert!(!all_text(&r).contains(PASSWORD));

    let r = call_with(
        &env,
        "login",
        login.clone(),
        false,
        Some(credentials(&name, WRONG)),
    );
    let e = r.as_ref().expect_err("wrong password");
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    assert!(e.message.contains(USER) && e.message.contains(&name), "{e}");
    assert!(!all_text(&r).contains(WRONG));

    // No credentials for that registry: the field and the fix are named.
    let e = call_with(&env, "login", login.clone(), false, None).expect_err("none");
    assert_eq!(e.kind, ErrorKind::InvalidParams, "{e}");
    assert!(e.message.contains("spec.registryAuth"), "{e}");
    // A dry run does not ask the registry.
    let out =
        call_with(&env, "login", login, true, Some(credentials(&name, WRONG))).expect("dry run");
    assert_eq!(out.output["checked"], false);
}

/// The threat: a plugin asks the host for credentials of every registry it can think
/// of. Without a registry-auth grant it gets nothing; with one it gets only the entry
/// of the registry it named, never a list.
#[test]
fn registry_auth_answers_only_what_was_granted_and_asked() {
    let escape = common::load(common::host(), "test-escape");
    let probe = json!({"registries": ["localhost:5000", "docker.io", "index.docker.io", ""]});
    let run = |grants: &Grants| {
        escape
            .invoke(&Invocation::new("registry-auth", probe.to_string()), grants)
            .expect("probe")
            .output
    };
    let out = run(&Grants::none());
    assert!(
        out["found"]
            .as_object()
            .expect("map")
            .values()
            .all(Value::is_null),
        "{out}"
    );
    let creds = credentials("localhost:5000", PASSWORD);
    let out = run(&Grants::none().with_registry_auth(creds));
    assert_eq!(
        out["found"]["localhost:5000"]["password"], PASSWORD,
        "{out}"
    );
    assert_eq!(out["found"]["docker.io"], Value::Null, "{out}");
    assert_eq!(out["found"][""], Value::Null, "{out}");
    // Docker Hub's names are one registry.
    let hub = credentials("https://index.docker.io/v1/", PASSWORD);
    let out = run(&Grants::none().with_registry_auth(hub));
    assert_eq!(out["found"]["docker.io"]["username"], USER, "{out}");
    assert_eq!(out["found"]["index.docker.io"]["username"], USER, "{out}");
    assert_eq!(out["found"]["localhost:5000"], Value::Null, "{out}");
}

/// `save` into the image archive directory and `load` back: the image returns with the
/// same ID; repeating either changes nothing; a dry run writes nothing; a name that is
/// a path is refused; without the directory the host refuses.
#[test]
fn save_and_load_round_trip_through_the_archive_directory() {
    let env = start();
    let archives = tempfile::tempdir().expect("tempdir");
    let id = env.make_image("localhost/app:1.0", &[]).expect("image");
    let grants = Grants::none()
        .with_docker(env.socket())
        .with_image_archives(archives.path());
    let run = |method: &str, params: Value, dry_run: bool| {
        let mut inv = Invocation::new(method, params.to_string());
        inv.dry_run = dry_run;
        plugin().invoke(&inv, &grants)
    };
    let save = json!({"image": "localhost/app:1.0", "file": "app-1.0.tar"});
    let tar = archives.path().join("app-1.0.tar");

    let out = run("save", save.clone(), true).expect("dry run");
    assert!(out.changed);
    assert!(!tar.exists(), "a dry run wrote the archive");

    let out = run("save", save.clone(), false).expect("save");
    assert!(out.changed, "{}", out.output);
    assert_eq!(out.output["id"], id);
    let bytes = std::fs::metadata(&tar).expect("the archive").len();
    assert_eq!(out.output["bytes"], bytes);
    assert!(bytes > 1024, "{bytes}");
    let out = run("save", save.clone(), false).expect("save again");
    assert!(!out.changed, "the same image saved again changed the file");

    env.podman(&["rmi", "-f", &id]).expect("rmi");
    assert!(state(&env).is_empty());
    let load = json!({"file": "app-1.0.tar"});
    let out = run("load", load.clone(), true).expect("dry run");
    assert!(out.changed);
    assert!(state(&env).is_empty(), "a dry run loaded");
    let out = run("load", load.clone(), false).expect("load");
    assert!(out.changed, "{}", out.output);
    assert_eq!(out.output["newIds"], json!([id]), "{}", out.output);
    assert_eq!(
        env.image_id("localhost/app:1.0").expect("inspect"),
        Some(id.clone())
    );
    let out = run("load", load, false).expect("load again");
    assert!(!out.changed, "{}", out.output);

    for bad in ["../etc/passwd.tar", "/tmp/x.tar", ".hidden.tar", "app.tgz"] {
        let e = run(
            "save",
            json!({"image": "localhost/app:1.0", "file": bad}),
            false,
        )
        .expect_err(bad);
        assert_eq!(e.kind, ErrorKind::InvalidParams, "{bad}: {e}");
    }
    let e = run("load", json!({"file": "missing.tar"}), false).expect_err("missing");
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    let e = run(
        "save",
        json!({"image": "localhost/nope:1", "file": "n.tar"}),
        false,
    )
    .expect_err("missing image");
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");

    // Without the archive directory (docker only): refused by the host.
    let e = call(&env, "save", save, false).expect_err("no archive directory");
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    assert!(e.message.contains("image archive directory"), "{e}");
}

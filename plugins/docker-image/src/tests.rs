//! Unit tests of the methods against an in-memory daemon that answers the image
//! endpoints the way Podman's Docker API does (the host-level tests run the component
//! against the real thing). The fake records every request, so the tests can prove that
//! a dry run sends no mutating one.

use std::cell::RefCell;
use std::collections::BTreeMap;

use hostplug_sdk::docker::{Method, Response};
use hostplug_sdk::{Outcome, Result};
use serde_json::{Value, json};

use super::*;
use crate::params::{Inspect, List, Prune, Pull, Remove, Tag};

#[derive(Debug, Clone)]
struct FakeImage {
    id: String,
    tags: Vec<String>,
    labels: BTreeMap<String, String>,
    containers: i64,
}

#[derive(Debug, Default)]
struct State {
    images: Vec<FakeImage>,
    /// What the registry serves: reference → image ID.
    registry: BTreeMap<String, String>,
    /// Registry hosts that are down.
    down: Vec<String>,
    requests: Vec<(Method, String)>,
    podman: bool,
}

#[derive(Debug, Default)]
struct Fake(RefCell<State>);

fn id(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

fn ok(body: Value) -> Result<Response> {
    Ok(Response {
        status: 200,
        body: body.to_string().into_bytes(),
    })
}

fn status(status: u16, message: &str) -> Result<Response> {
    Ok(Response {
        status,
        body: json!({ "message": message }).to_string().into_bytes(),
    })
}

fn decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() + 1 {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn with_latest(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

impl Fake {
    fn new() -> Self {
        let f = Self::default();
        f.add(id(1), &["localhost/tiny:1"], &[("team", "a")], 0);
        f.add(id(2), &["localhost/other:1", "localhost/other:2"], &[], 0);
        f.add(id(3), &[], &[("team", "a")], 0); // dangling
        f.add(id(4), &["localhost/used:1"], &[], 1);
        f.add(id(5), &[], &[], 0); // dangling, no label
        {
            let mut s = f.0.borrow_mut();
            s.registry.insert("reg:5000/app:1".into(), id(10));
            s.registry.insert("reg:5000/app:2".into(), id(11));
            s.down.push("down:5000".into());
        }
        f
    }

    fn add(&self, id: String, tags: &[&str], labels: &[(&str, &str)], containers: i64) {
        self.0.borrow_mut().images.push(FakeImage {
            id,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            containers,
        });
    }

    fn ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .0
            .borrow()
            .images
            .iter()
            .map(|i| i.id.clone())
            .collect();
        v.sort();
        v
    }

    fn mutations(&self) -> Vec<String> {
        self.0
            .borrow()
            .requests
            .iter()
            .filter(|(m, _)| *m != Method::Get)
            .map(|(m, p)| format!("{} {p}", m.as_str()))
            .collect()
    }

    fn find(s: &State, name: &str) -> Option<usize> {
        let tagged = with_latest(name);
        s.images.iter().position(|i| {
            i.tags.contains(&tagged)
                || i.id == name
                || i.id.trim_start_matches("sha256:").starts_with(name)
        })
    }

    fn summary(i: &FakeImage) -> Value {
        json!({"Id": i.id, "RepoTags": i.tags, "Created": 1, "Size": 10,
               "Labels": i.labels, "Containers": i.containers})
    }

    fn untag(s: &mut State, tag: &str) {
        for i in &mut s.images {
            i.tags.retain(|t| t != tag);
        }
    }
}

fn labels_match(i: &FakeImage, want: &[String], not: &[String]) -> bool {
    let has = |l: &String| match l.split_once('=') {
        Some((k, v)) => i.labels.get(k).is_some_and(|x| x == v),
        None => i.labels.contains_key(l.as_str()),
    };
    want.iter().all(has) && !not.iter().any(has)
}

impl Transport for Fake {
    fn request(&self, method: Method, path: &str, body: Option<&[u8]>) -> Result<Response> {
        assert!(body.is_none());
        let mut s = self.0.borrow_mut();
        s.requests.push((method, path.to_owned()));
        let (p, q) = path.split_once('?').unwrap_or((path, ""));
        let q: BTreeMap<String, String> = q
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), decode(v)))
            .collect();
        let filters: BTreeMap<String, Vec<String>> = q
            .get("filters")
            .map(|f| serde_json::from_str(f).unwrap())
            .unwrap_or_default();
        let filter = |k: &str| filters.get(k).cloned().unwrap_or_default();
        match (method, p) {
            (Method::Get, "/version") => {
                let name = if s.podman { "Podman Engine" } else { "Engine" };
                ok(json!({"Components": [{"Name": name}]}))
            }
            (Method::Get, "/images/json") => {
                let dangling = filter("dangling");
                let list: Vec<Value> = s
                    .images
                    .iter()
                    .filter(|i| dangling.is_empty() || (dangling[0] == "true") == i.tags.is_empty())
                    .filter(|i| labels_match(i, &filter("label"), &filter("label!")))
                    .filter(|i| {
                        filter("reference").iter().all(|r| {
                            i.tags
                                .iter()
                                .any(|t| t == r || t.starts_with(&format!("{r}:")))
                        })
                    })
                    .map(Self::summary)
                    .collect();
                ok(Value::Array(list))
            }
            (Method::Post, "/images/create") => {
                let repo = &q["fromImage"];
                let reference = format!("{repo}:{}", q["tag"]);
                if s.down.iter().any(|h| repo.starts_with(h.as_str())) {
                    return ok(
                        json!({"error": format!("initializing source docker://{reference}: pinging container registry: dial tcp: connect: connection refused")}),
                    );
                }
                let Some(new) = s.registry.get(&reference).cloned() else {
                    return ok(
                        json!({"error": format!("reading manifest in {reference}: manifest unknown")}),
                    );
                };
                Self::untag(&mut s, &reference);
                match s.images.iter_mut().find(|i| i.id == new) {
                    Some(i) => i.tags.push(reference),
                    None => s.images.push(FakeImage {
                        id: new,
                        tags: vec![reference],
                        labels: BTreeMap::new(),
                        containers: 0,
                    }),
                }
                ok(json!({"status": "Download complete"}))
            }
            (Method::Post, "/images/prune") => {
                let all = filter("dangling") == ["false"];
                let (want, not) = (filter("label"), filter("label!"));
                if all && s.podman {
                    return status(
                        500,
                        "specifying \"dangling\" filter more than once with different values is not supported",
                    );
                }
                let gone: Vec<String> = s
                    .images
                    .iter()
                    .filter(|i| (all || i.tags.is_empty()) && i.containers == 0)
                    .filter(|i| labels_match(i, &want, &not))
                    .map(|i| i.id.clone())
                    .collect();
                s.images.retain(|i| !gone.contains(&i.id));
                let deleted: Vec<Value> = gone.iter().map(|g| json!({"Deleted": g})).collect();
                ok(json!({"ImagesDeleted": deleted, "SpaceReclaimed": 10 * gone.len()}))
            }
            (method, p) if p.starts_with("/images/") => {
                let rest = &p["/images/".len()..];
                if let (Method::Get, Some(name)) = (method, rest.strip_suffix("/json")) {
                    let name = decode(name);
                    return match Self::find(&s, &name) {
                        Some(i) => {
                            let i = &s.images[i];
                            ok(json!({"Id": i.id, "RepoTags": i.tags, "Os": "linux",
                                      "Architecture": "amd64", "Config": {"Labels": i.labels}}))
                        }
                        None => status(404, &format!("failed to find image {name}: No such image")),
                    };
                }
                if let (Method::Post, Some(name)) = (method, rest.strip_suffix("/tag")) {
                    let Some(i) = Self::find(&s, &decode(name)) else {
                        return status(404, "No such image");
                    };
                    let target = format!("{}:{}", q["repo"], q["tag"]);
                    Self::untag(&mut s, &target);
                    s.images[i].tags.push(target);
                    return Ok(Response {
                        status: 201,
                        body: Vec::new(),
                    });
                }
                if method == Method::Delete {
                    let name = decode(rest);
                    let force = q.get("force").is_some_and(|f| f == "true");
                    let Some(i) = Self::find(&s, &name) else {
                        return status(404, "No such image");
                    };
                    let by_id = s.images[i].id.contains(name.trim_start_matches("sha256:"));
                    if by_id && s.images[i].tags.len() > 1 && !force {
                        return status(
                            409,
                            "unable to delete image by ID with more than one tag: please force removal",
                        );
                    }
                    let mut out = Vec::new();
                    if !by_id {
                        let tag = with_latest(&name);
                        s.images[i].tags.retain(|t| *t != tag);
                        out.push(json!({"Untagged": tag}));
                    } else {
                        for t in std::mem::take(&mut s.images[i].tags) {
                            out.push(json!({"Untagged": t}));
                        }
                    }
                    if s.images[i].tags.is_empty() {
                        if s.images[i].containers > 0 && !force {
                            return status(409, "image is in use by a container");
                        }
                        out.push(json!({"Deleted": s.images[i].id}));
                        s.images.remove(i);
                    }
                    return ok(Value::Array(out));
                }
                status(404, "no such route")
            }
            _ => status(404, "no such route"),
        }
    }
}

fn run<P: serde::de::DeserializeOwned>(
    fake: &Fake,
    dry_run: bool,
    params: Value,
    f: impl Fn(&Daemon<'_, Fake>, &P) -> Result<Outcome>,
) -> Result<(bool, Value)> {
    let p: P = hostplug_sdk::parse_params(&params.to_string())?;
    let out = f(&Daemon::new(fake, dry_run), &p)?;
    Ok((out.is_changed(), out.output().unwrap().clone()))
}

#[test]
fn list_filters() {
    let f = Fake::new();
    let (changed, out) = run::<List>(&f, false, json!({}), list).unwrap();
    assert!(!changed);
    assert_eq!(out["count"], 5);
    let (_, out) = run::<List>(
        &f,
        false,
        json!({"dangling": true, "label": ["team=a"]}),
        list,
    )
    .unwrap();
    assert_eq!(out["count"], 1);
    assert_eq!(out["images"][0]["id"], id(3));
    let (_, out) = run::<List>(&f, false, json!({"reference": "localhost/tiny"}), list).unwrap();
    assert_eq!(out["images"][0]["repoTags"], json!(["localhost/tiny:1"]));
    let e = run::<List>(&f, false, json!({"label": [" =x"]}), list).unwrap_err();
    assert_eq!(e.kind(), "invalid-params");
}

#[test]
fn inspect_found_and_missing() {
    let f = Fake::new();
    let (changed, out) =
        run::<Inspect>(&f, false, json!({"image": "localhost/tiny:1"}), inspect).unwrap();
    assert!(!changed);
    assert_eq!(out["id"], id(1));
    assert_eq!(out["platform"], "linux/amd64");
    let e = run::<Inspect>(&f, false, json!({"image": "localhost/nope:1"}), inspect).unwrap_err();
    assert_eq!(e.kind(), "not-found");
    let e = run::<Inspect>(&f, false, json!({"image": "../containers"}), inspect).unwrap_err();
    assert_eq!(e.kind(), "invalid-params");
    assert!(f.mutations().is_empty());
}

#[test]
fn pull_policies_and_idempotency() {
    let f = Fake::new();
    let p = json!({"image": "reg:5000/app", "tag": "1"});
    let (changed, out) = run::<Pull>(&f, false, p.clone(), pull).unwrap();
    assert!(changed);
    assert_eq!(out["id"], id(10));
    assert_eq!(out["previousId"], Value::Null);
    // if-not-present: present, so no request goes out.
    let before = f.mutations().len();
    let (changed, out) = run::<Pull>(&f, false, p, pull).unwrap();
    assert!(!changed);
    assert_eq!(out["pulled"], false);
    assert_eq!(f.mutations().len(), before);
    // always: asks, same ID, unchanged.
    let (changed, out) = run::<Pull>(
        &f,
        false,
        json!({"image": "reg:5000/app:1", "policy": "always"}),
        pull,
    )
    .unwrap();
    assert!(!changed);
    assert_eq!(out["pulled"], true);
    assert_eq!(f.mutations().len(), before + 1);
    // The registry moved the tag: always pulls the new image.
    f.0.borrow_mut()
        .registry
        .insert("reg:5000/app:1".into(), id(12));
    let (changed, out) = run::<Pull>(
        &f,
        false,
        json!({"image": "reg:5000/app:1", "policy": "always"}),
        pull,
    )
    .unwrap();
    assert!(changed);
    assert_eq!(
        (out["previousId"].clone(), out["id"].clone()),
        (json!(id(10)), json!(id(12)))
    );
}

#[test]
fn pull_errors() {
    let f = Fake::new();
    let e = run::<Pull>(&f, false, json!({"image": "reg:5000/app:9"}), pull).unwrap_err();
    assert_eq!(e.kind(), "not-found", "{e}");
    let e = run::<Pull>(&f, false, json!({"image": "down:5000/app:1"}), pull).unwrap_err();
    assert_eq!(e.kind(), "failed");
    assert!(e.message().contains("down or unreachable"), "{e}");
    let e = run::<Pull>(
        &f,
        false,
        json!({"image": "reg:5000/app:1", "tag": "2"}),
        pull,
    )
    .unwrap_err();
    assert_eq!(e.kind(), "invalid-params");
    let e = run::<Pull>(
        &f,
        false,
        json!({"image": "reg:5000/app", "platform": "linux"}),
        pull,
    )
    .unwrap_err();
    assert_eq!(e.kind(), "invalid-params");
    let e = run::<Pull>(
        &f,
        false,
        json!({"image": "reg:5000/app", "policy": "never"}),
        pull,
    )
    .unwrap_err();
    assert_eq!(e.kind(), "invalid-params");
}

#[test]
fn tag_keep_overwrite_idempotent() {
    let f = Fake::new();
    let p = json!({"source": "localhost/tiny:1", "repository": "localhost/copy", "tag": "v1"});
    let (changed, out) = run::<Tag>(&f, false, p.clone(), tag).unwrap();
    assert!(changed);
    assert_eq!(out["id"], id(1));
    let (changed, _) = run::<Tag>(&f, false, p, tag).unwrap();
    assert!(!changed);
    // localhost/other:1 names image 2: keep leaves it, overwrite moves it.
    let keep = json!({"source": "localhost/tiny:1", "repository": "localhost/other", "tag": "1", "existing": "keep"});
    let (changed, out) = run::<Tag>(&f, false, keep, tag).unwrap();
    assert!(!changed);
    assert_eq!(
        (out["kept"].clone(), out["id"].clone()),
        (json!(true), json!(id(2)))
    );
    let over = json!({"source": "localhost/tiny:1", "repository": "localhost/other", "tag": "1"});
    let (changed, out) = run::<Tag>(&f, false, over, tag).unwrap();
    assert!(changed);
    assert_eq!(
        (out["previousId"].clone(), out["id"].clone()),
        (json!(id(2)), json!(id(1)))
    );
    let e = run::<Tag>(
        &f,
        false,
        json!({"source": "localhost/nope:1", "repository": "a"}),
        tag,
    )
    .unwrap_err();
    assert_eq!(e.kind(), "not-found");
}

#[test]
fn remove_by_name_and_missing() {
    let f = Fake::new();
    let (changed, out) =
        run::<Remove>(&f, false, json!({"image": "localhost/other:1"}), remove).unwrap();
    assert!(changed);
    assert_eq!(out["untagged"], json!(["localhost/other:1"]));
    assert_eq!(out["imageRemoved"], false);
    let (changed, out) =
        run::<Remove>(&f, false, json!({"image": "localhost/other:2"}), remove).unwrap();
    assert!(changed);
    assert_eq!(out["deleted"], json!([id(2)]));
    assert_eq!(out["imageRemoved"], true);
    let (changed, out) =
        run::<Remove>(&f, false, json!({"image": "localhost/other:2"}), remove).unwrap();
    assert!(!changed);
    assert_eq!(out["id"], Value::Null);
    // In use: the daemon refuses and says why.
    let e = run::<Remove>(&f, false, json!({"image": "localhost/used:1"}), remove).unwrap_err();
    assert_eq!(e.kind(), "failed");
    assert!(e.message().contains("in use"), "{e}");
}

#[test]
fn prune_dangling_and_all() {
    let f = Fake::new();
    let (changed, out) = run::<Prune>(&f, false, json!({"label": ["team=a"]}), prune).unwrap();
    assert!(changed);
    assert_eq!(out["deleted"], json!([id(3)]));
    let (changed, out) = run::<Prune>(&f, false, json!({}), prune).unwrap();
    assert!(changed);
    assert_eq!(out["deleted"], json!([id(5)]));
    let (changed, _) = run::<Prune>(&f, false, json!({}), prune).unwrap();
    assert!(!changed);
    let (changed, out) = run::<Prune>(&f, false, json!({"all": true}), prune).unwrap();
    assert!(changed);
    assert_eq!(out["deleted"], json!([id(1), id(2)]));
    assert_eq!(f.ids(), vec![id(4)]);
    assert_eq!(out["inUse"], json!([id(4)]));
}

#[test]
fn prune_all_on_podman_removes_unused_by_name() {
    let f = Fake::new();
    f.0.borrow_mut().podman = true;
    let (changed, out) =
        run::<Prune>(&f, false, json!({"all": true, "labelNot": ["team"]}), prune).unwrap();
    assert!(changed);
    assert_eq!(out["deleted"], json!([id(2), id(5)]));
    assert_eq!(f.ids(), vec![id(1), id(3), id(4)]);
    assert!(
        f.mutations().iter().all(|m| m.starts_with("DELETE ")),
        "{:?}",
        f.mutations()
    );
}

#[test]
fn dry_runs_send_no_mutating_request() {
    let f = Fake::new();
    let before = f.ids();
    let (changed, out) = run::<Pull>(&f, true, json!({"image": "reg:5000/app:1"}), pull).unwrap();
    assert!(changed);
    assert_eq!(out["id"], Value::Null);
    let (changed, _) = run::<Tag>(
        &f,
        true,
        json!({"source": "localhost/tiny:1", "repository": "localhost/x"}),
        tag,
    )
    .unwrap();
    assert!(changed);
    let (changed, out) =
        run::<Remove>(&f, true, json!({"image": "localhost/other:1"}), remove).unwrap();
    assert!(changed);
    assert_eq!(out["imageRemoved"], false);
    let (changed, out) =
        run::<Remove>(&f, true, json!({"image": "localhost/tiny:1"}), remove).unwrap();
    assert!(changed);
    assert_eq!(out["deleted"], json!([id(1)]));
    let e = run::<Remove>(&f, true, json!({"image": id(2)}), remove).unwrap_err();
    assert!(e.message().contains("force"), "{e}");
    let (changed, out) =
        run::<Remove>(&f, true, json!({"image": id(2), "force": true}), remove).unwrap();
    assert!(changed);
    assert_eq!(out["deleted"], json!([id(2)]));
    let (changed, out) = run::<Prune>(&f, true, json!({"all": true}), prune).unwrap();
    assert!(changed);
    assert_eq!(out["deleted"].as_array().map(Vec::len), Some(4));
    assert_eq!(f.mutations(), Vec::<String>::new());
    assert_eq!(f.ids(), before);
    // And the guard itself refuses, should a method ever forget.
    let e = Daemon::new(&f, true)
        .tag(&id(1), "localhost/x", "1")
        .unwrap_err();
    assert_eq!(e.kind(), "failed");
    assert!(f.mutations().is_empty());
}

#[test]
fn describe_has_every_method_with_a_schema() {
    let d = DockerImage::definition();
    let names: Vec<&str> = d.methods().iter().map(|m| m.name()).collect();
    assert_eq!(
        names,
        [
            "list", "inspect", "pull", "tag", "remove", "prune", "push", "login", "save", "load"
        ]
    );
    for m in d.methods() {
        let schema: Value = serde_json::from_str(m.params_schema()).unwrap();
        assert_eq!(schema["additionalProperties"], false, "{}", m.name());
    }
    let pull: Value = serde_json::from_str(d.methods()[2].params_schema()).unwrap();
    assert_eq!(pull["required"], json!(["image"]));
    assert!(pull.to_string().contains("if-not-present"));
}

/// One recorded request: `METHOD path`, its extra headers, its body.
type Sent = (String, Vec<(String, String)>, Option<Vec<u8>>);

/// A daemon that records what it was sent (headers and bodies too) and answers every
/// push and login as told; credentials as a task's Secret would give them.
struct Recorder {
    sent: RefCell<Vec<Sent>>,
    login_status: u16,
}

impl Transport for Recorder {
    fn request(&self, method: Method, path: &str, body: Option<&[u8]>) -> Result<Response> {
        self.request_with_headers(method, path, &[], body)
    }

    fn request_with_headers(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response> {
        self.sent.borrow_mut().push((
            format!("{} {path}", method.as_str()),
            headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body.map(<[u8]>::to_vec),
        ));
        let (status, body): (u16, &[u8]) = match (method, path.split('?').next().unwrap_or("")) {
            (Method::Get, p) if p.ends_with("/json") => (
                200,
                br#"{"Id":"sha256:1","RepoTags":["localhost:5000/team/app:1"],"RepoDigests":[],"Os":"linux","Architecture":"amd64"}"#,
            ),
            (Method::Post, "/auth") if self.login_status == 200 => {
                (200, br#"{"Status":"Login Succeeded"}"#)
            }
            (Method::Post, "/auth") => (
                500,
                br#"{"message":"login attempt to localhost:5000 failed with status: 401 Unauthorized"}"#,
            ),
            (Method::Post, _) => (200, b"{\"status\":\"1: digest: sha256:abc size: 3\"}\n"),
            _ => (404, b"{}"),
        };
        Ok(Response {
            status,
            body: body.to_vec(),
        })
    }

    fn credential(&self, registry: &str) -> Option<hostplug_sdk::registry_auth::Credential> {
        (registry == "localhost:5000").then(|| hostplug_sdk::registry_auth::Credential {
            username: "alice".into(),
            password: "s3cr3t".into(),
        })
    }
}

fn recorder(login_status: u16) -> Recorder {
    Recorder {
        sent: RefCell::new(Vec::new()),
        login_status,
    }
}

#[test]
fn push_sends_the_registry_credential_in_a_header_only() {
    let t = recorder(200);
    let out = push(
        &Daemon::new(&t, false),
        &params::Push {
            image: "localhost:5000/team/app:1".into(),
            tag: None,
        },
    )
    .unwrap();
    let text = out.output().unwrap().to_string();
    assert!(
        !text.contains("s3cr3t") && text.contains("\"authenticated\":true"),
        "{text}"
    );
    assert!(text.contains("sha256:abc"), "{text}");
    let sent = t.sent.borrow();
    let (line, headers, _) = sent.last().unwrap();
    assert_eq!(
        line,
        "POST /images/localhost%3A5000%2Fteam%2Fapp/push?tag=1"
    );
    assert_eq!(headers.len(), 1);
    assert_eq!(headers[0].0, "X-Registry-Auth");
    assert!(!headers[0].1.contains("s3cr3t"), "base64url, not plain");

    // Another registry: no credential, no header.
    let t = recorder(200);
    let e = push(
        &Daemon::new(&t, false),
        &params::Push {
            image: "registry.example/team/app@sha256:abc".into(),
            tag: None,
        },
    )
    .unwrap_err();
    assert_eq!(e.kind(), "invalid-params");
    // A dry run sends nothing but reads.
    let t = recorder(200);
    push(
        &Daemon::new(&t, true),
        &params::Push {
            image: "localhost:5000/team/app".into(),
            tag: Some("1".into()),
        },
    )
    .unwrap();
    assert!(
        t.sent
            .borrow()
            .iter()
            .all(|(l, _, _)| l.starts_with("GET "))
    );
}

#[test]
fn login_reports_without_the_password() {
    let t = recorder(200);
    let out = login(
        &Daemon::new(&t, false),
        &params::Login {
            registry: "localhost:5000".into(),
        },
    )
    .unwrap();
    let text = out.output().unwrap().to_string();
    assert!(
        text.contains("Login Succeeded") && !text.contains("s3cr3t"),
        "{text}"
    );
    let sent = t.sent.borrow();
    let (line, headers, body) = &sent[0];
    assert_eq!(line, "POST /auth");
    assert_eq!(
        headers,
        &[("Content-Type".to_owned(), "application/json".to_owned())]
    );
    let body: Value = serde_json::from_slice(body.as_deref().unwrap()).unwrap();
    assert_eq!(body["serveraddress"], "localhost:5000");

    let t = recorder(500);
    let e = login(
        &Daemon::new(&t, false),
        &params::Login {
            registry: "localhost:5000".into(),
        },
    )
    .unwrap_err();
    assert_eq!(e.kind(), "denied");
    assert!(
        e.message().contains("alice") && !e.message().contains("s3cr3t"),
        "{e}"
    );

    let e = login(
        &Daemon::new(&recorder(200), false),
        &params::Login {
            registry: "quay.io".into(),
        },
    )
    .unwrap_err();
    assert_eq!(e.kind(), "invalid-params");
    assert!(e.message().contains("spec.registryAuth.secretName"), "{e}");

    // A dry run asks nobody.
    let t = recorder(200);
    login(
        &Daemon::new(&t, true),
        &params::Login {
            registry: "localhost:5000".into(),
        },
    )
    .unwrap();
    assert!(t.sent.borrow().is_empty());
}

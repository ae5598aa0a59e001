//! Unit tests of the methods against an in-memory runtime that answers the CRI image
//! calls the way containerd does (removing by any name removes the image with all its
//! names; a missing image removes fine). The host-level tests run the component against
//! a real containerd. The fake records every mutating call, so the tests can prove that a
//! dry run sends none.

use std::cell::RefCell;
use std::collections::BTreeMap;

use hostplug_sdk::containerd::AuthConfig;
use serde_json::Value;

use super::*;
use crate::params::{Inspect, List, Prune, Pull, Remove};

#[derive(Debug, Default)]
struct State {
    images: Vec<Image>,
    /// What the registry serves: reference → image ID.
    registry: BTreeMap<String, String>,
    uses: Vec<ImageUse>,
    mutations: Vec<String>,
}

#[derive(Debug, Default)]
struct Fake(RefCell<State>);

fn id(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

fn image(n: u8, tags: &[&str]) -> Image {
    Image {
        id: id(n),
        repo_tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        repo_digests: Vec::new(),
        size: u64::from(n) * 1000,
        pinned: false,
    }
}

impl Fake {
    fn find(&self, r: &str) -> Option<Image> {
        self.0
            .borrow()
            .images
            .iter()
            .find(|i| i.id == r || i.repo_tags.iter().any(|t| t == r))
            .cloned()
    }
}

impl Runtime for Fake {
    fn list(&self, filter: Option<&str>) -> Result<Vec<Image>> {
        Ok(match filter {
            Some(f) => self.find(f).into_iter().collect(),
            None => self.0.borrow().images.clone(),
        })
    }

    fn status(&self, image: &str) -> Result<Option<Image>> {
        Ok(self.find(image))
    }

    fn pull(&self, image: &str, _auth: Option<&AuthConfig>) -> Result<String> {
        let mut s = self.0.borrow_mut();
        s.mutations.push(format!("pull {image}"));
        let id = s
            .registry
            .get(image)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("{image}: not found in the registry")))?;
        for i in &mut s.images {
            i.repo_tags.retain(|t| t != image);
        }
        match s.images.iter_mut().find(|i| i.id == id) {
            Some(i) => i.repo_tags.push(image.to_owned()),
            None => s.images.push(Image {
                id: id.clone(),
                repo_tags: vec![image.to_owned()],
                repo_digests: Vec::new(),
                size: 5,
                pinned: false,
            }),
        }
        Ok(id)
    }

    fn remove(&self, image: &str) -> Result<()> {
        let target = self.find(image);
        let mut s = self.0.borrow_mut();
        s.mutations.push(format!("remove {image}"));
        if let Some(t) = target {
            s.images.retain(|i| i.id != t.id);
        }
        Ok(())
    }

    fn in_use(&self) -> Result<Vec<ImageUse>> {
        Ok(self.0.borrow().uses.clone())
    }

    fn filesystems(&self) -> Result<Vec<FilesystemUsage>> {
        Ok(vec![FilesystemUsage {
            mountpoint: "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs".into(),
            used_bytes: Some(42),
            inodes_used: Some(7),
        }])
    }
}

fn fake() -> Fake {
    let f = Fake::default();
    {
        let mut s = f.0.borrow_mut();
        s.images = vec![
            image(1, &["reg:5000/app:1"]),
            image(2, &["reg:5000/db:2", "reg:5000/db:latest"]),
            Image {
                pinned: true,
                ..image(3, &["reg:5000/pause:3.10"])
            },
            image(4, &["reg:5000/base/tools:1"]),
            image(5, &[]),
        ];
        s.uses = vec![ImageUse {
            container_id: "c1".into(),
            container_name: "web".into(),
            image: "reg:5000/app:1".into(),
            image_ref: id(1),
        }];
        s.registry.insert("reg:5000/app:1".into(), id(1));
        s.registry.insert("reg:5000/new:1".into(), id(9));
    }
    f
}

fn output(o: &Outcome) -> Value {
    o.output().cloned().unwrap_or_default()
}

fn mutations(f: &Fake) -> Vec<String> {
    f.0.borrow().mutations.clone()
}

#[test]
fn list_shows_users_and_filters() -> Result<()> {
    let f = fake();
    let o = list(&Node::new(&f, false), &List::default())?;
    let out = output(&o);
    assert!(!o.is_changed());
    assert_eq!(out["count"], 5);
    let app = out["images"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["id"] == id(1).as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(app["usedBy"], serde_json::json!(["web"]));
    let o = list(
        &Node::new(&f, false),
        &List {
            reference: Some("reg:5000/db:2".into()),
        },
    )?;
    assert_eq!(output(&o)["count"], 1);
    let e = list(
        &Node::new(&f, false),
        &List {
            reference: Some("bad ref".into()),
        },
    )
    .expect_err("bad reference");
    assert_eq!(e.kind(), "invalid-params");
    assert!(e.message().starts_with("reference:"), "{e}");
    Ok(())
}

#[test]
fn inspect_and_usage() -> Result<()> {
    let f = fake();
    let n = Node::new(&f, false);
    let o = inspect(
        &n,
        &Inspect {
            image: "reg:5000/pause:3.10".into(),
        },
    )?;
    assert_eq!(output(&o)["pinned"], true);
    let e = inspect(
        &n,
        &Inspect {
            image: "reg:5000/nope:1".into(),
        },
    )
    .expect_err("missing");
    assert_eq!(e.kind(), "not-found");
    let o = usage(&n)?;
    assert_eq!(output(&o)["filesystems"][0]["usedBytes"], 42);
    Ok(())
}

#[test]
fn pull_is_idempotent_and_dry_runs_do_not_pull() -> Result<()> {
    let f = fake();
    let p = |image: &str, policy| Pull {
        image: image.into(),
        tag: None,
        policy,
    };
    // Present: nothing to do.
    let o = pull(
        &Node::new(&f, false),
        &p("reg:5000/app:1", PullPolicy::IfNotPresent),
    )?;
    assert!(!o.is_changed());
    assert_eq!(output(&o)["pulled"], false);
    // Missing, dry run: would pull, does not.
    let o = pull(
        &Node::new(&f, true),
        &p("reg:5000/new:1", PullPolicy::IfNotPresent),
    )?;
    assert!(o.is_changed());
    assert_eq!(output(&o)["id"], Value::Null);
    assert!(mutations(&f).is_empty(), "{:?}", mutations(&f));
    // Missing: pulled, the ID in the output.
    let o = pull(
        &Node::new(&f, false),
        &p("reg:5000/new:1", PullPolicy::IfNotPresent),
    )?;
    assert!(o.is_changed());
    assert_eq!(output(&o)["id"], id(9).as_str());
    // Always, same image: asked, unchanged.
    let o = pull(
        &Node::new(&f, false),
        &p("reg:5000/new:1", PullPolicy::Always),
    )?;
    assert!(!o.is_changed());
    assert_eq!(output(&o)["pulled"], true);
    assert_eq!(mutations(&f).len(), 2);
    // A tag next to a tagged image; a bad tag.
    let e = pull(
        &Node::new(&f, false),
        &Pull {
            tag: Some("2".into()),
            ..p("reg:5000/app:1", PullPolicy::Always)
        },
    )
    .expect_err("two tags");
    assert!(e.message().starts_with("tag:"), "{e}");
    let e = pull(
        &Node::new(&f, false),
        &Pull {
            tag: Some("-x".into()),
            ..p("reg:5000/app", PullPolicy::Always)
        },
    )
    .expect_err("bad tag");
    assert!(e.message().starts_with("tag:"), "{e}");
    // No tag: latest.
    let o = pull(
        &Node::new(&f, true),
        &p("reg:5000/app", PullPolicy::IfNotPresent),
    )?;
    assert_eq!(output(&o)["image"], "reg:5000/app:latest");
    Ok(())
}

#[test]
fn remove_is_idempotent_and_refuses_images_in_use() -> Result<()> {
    let f = fake();
    let r = |image: &str, force| Remove {
        image: image.into(),
        force,
    };
    let o = remove(&Node::new(&f, false), &r("reg:5000/nope:1", false))?;
    assert!(!o.is_changed());
    let e = remove(&Node::new(&f, false), &r("reg:5000/app:1", false)).expect_err("in use");
    assert!(e.message().contains("web"), "{e}");
    let e = remove(&Node::new(&f, false), &r("reg:5000/pause:3.10", false)).expect_err("pinned");
    assert!(e.message().contains("pinned"), "{e}");
    // Dry run: would remove the image with both names; nothing sent.
    let o = remove(&Node::new(&f, true), &r("reg:5000/db:2", false))?;
    assert!(o.is_changed());
    assert_eq!(output(&o)["repoTags"].as_array().map(Vec::len), Some(2));
    assert!(mutations(&f).is_empty());
    let o = remove(&Node::new(&f, false), &r("reg:5000/db:2", false))?;
    assert!(o.is_changed());
    assert!(f.find("reg:5000/db:latest").is_none());
    let o = remove(&Node::new(&f, false), &r("reg:5000/db:2", false))?;
    assert!(!o.is_changed(), "again: nothing to do");
    // Forced: the image in use goes.
    let o = remove(&Node::new(&f, false), &r("reg:5000/app:1", true))?;
    assert!(o.is_changed());
    Ok(())
}

#[test]
fn prune_plans_in_dry_runs_and_keeps_what_it_must() -> Result<()> {
    let f = fake();
    let keep = Prune {
        keep: vec!["reg:5000/base/*".into()],
    };
    let o = prune(&Node::new(&f, true), &keep)?;
    let out = output(&o);
    assert!(o.is_changed());
    assert_eq!(out["deleted"], serde_json::json!([id(2), id(5)]));
    assert_eq!(out["inUse"], serde_json::json!([id(1)]));
    assert_eq!(out["pinned"], serde_json::json!([id(3)]));
    assert_eq!(out["kept"], serde_json::json!([id(4)]));
    assert_eq!(out["spaceReclaimed"], 7000);
    assert!(mutations(&f).is_empty(), "a dry run removes nothing");
    assert_eq!(f.0.borrow().images.len(), 5);

    let o = prune(&Node::new(&f, false), &keep)?;
    assert!(o.is_changed());
    assert_eq!(output(&o)["deleted"], serde_json::json!([id(2), id(5)]));
    assert_eq!(f.0.borrow().images.len(), 3);
    let o = prune(&Node::new(&f, false), &keep)?;
    assert!(!o.is_changed(), "again: nothing to do");

    let e = prune(
        &Node::new(&f, false),
        &Prune {
            keep: vec!["*".into()],
        },
    )
    .expect_err("keep everything");
    assert!(e.message().starts_with("keep[0]:"), "{e}");
    Ok(())
}

#[test]
fn references_are_checked_naming_the_field() {
    for bad in [
        "",
        "a b",
        "app:1\n",
        "/app",
        "reg//app",
        "reg/../app",
        "app:",
        "ä",
    ] {
        let e = check_image("image", bad).expect_err(bad);
        assert!(e.message().starts_with("image:"), "{bad:?}: {e}");
    }
    for good in [
        "nginx",
        "reg:5000/team/app:1.0",
        "reg/app@sha256:0123456789abcdef",
        "sha256:0123",
    ] {
        assert_eq!(check_image("image", good).ok(), Some(good));
    }
}

//! Path-scoped /etc grants through the real host and the real `test-escape` component:
//! a call's scope (its HostPlugin's `etcPaths`, its policies' `spec.etc`, the plugin's
//! exact sensitive allowances, as the operator computes them in `EtcScope::for_call`)
//! is enforced on every path the plugin uses, where it really is — a covered path works,
//! one outside the declared globs is refused, a deny-listed one stays refused unless
//! allowed by its exact name, links and `..` lead nowhere new, renames cannot move a
//! file into or out of the covered paths, and directory listings show only what the
//! call may read.

mod common;

use common::{Tree, host, load};
use hostplug_api::plugin::EtcScope;
use hostplug_host::{EtcAccess, Grants, Invocation, InvokeError, InvokeOutcome, Plugin};
use serde_json::{Value, json};

fn plugin() -> &'static Plugin {
    static PLUGIN: std::sync::OnceLock<std::sync::Arc<Plugin>> = std::sync::OnceLock::new();
    PLUGIN.get_or_init(|| load(host(), "test-escape"))
}

fn call(method: &str, params: Value, grants: &Grants) -> Result<InvokeOutcome, InvokeError> {
    plugin().invoke(&Invocation::new(method, params.to_string()), grants)
}

fn list(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// A tree with chrony's files, a k3s kubeconfig and a few others.
fn tree() -> Tree {
    let tree = Tree::new();
    let etc = tree.etc();
    for (rel, content) in [
        ("chrony.conf", "pool a\n"),
        ("chrony/sources.d/a.sources", "server b\n"),
        ("resolv.conf", "nameserver 1.1.1.1\n"),
        ("rancher/k3s/k3s.yaml", "admin kubeconfig\n"),
        ("rancher/k3s/registries.yaml", "creds\n"),
        ("crontab", "# root's\n"),
    ] {
        let path = etc.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }
    tree
}

/// Write access to the tree's /etc narrowed to chrony's files.
fn chrony(tree: &Tree) -> Grants {
    Grants::etc(tree.etc(), EtcAccess::Write).with_etc_scope(EtcScope {
        read: vec![list(&["chrony.conf", "chrony/**"])],
        write: vec![list(&["chrony.conf", "chrony/**"])],
        ..EtcScope::default()
    })
}

/// The call was refused by the host, and its logs name the path and why.
fn refused(r: Result<InvokeOutcome, InvokeError>, path: &str, why: &str) {
    let e = match r {
        Ok(out) => panic!("{path}: expected a refusal, got {}", out.output),
        Err(e) => e,
    };
    let logs: Vec<String> = e.logs.iter().map(ToString::to_string).collect();
    assert!(
        logs.iter().any(|l| l.contains(path) && l.contains(why)),
        "{path}: the host's refusal names the path and {why:?}: {e} / {logs:?}"
    );
}

#[test]
fn covered_paths_work_and_the_rest_is_refused() {
    let tree = tree();
    let g = chrony(&tree);
    let out = call("read", json!({"path": "/etc/chrony.conf"}), &g).expect("covered read");
    assert!(out.output.to_string().contains("pool a"), "{}", out.output);
    call(
        "write",
        json!({"path": "/etc/chrony/sources.d/b.sources", "content": "server c\n"}),
        &g,
    )
    .expect("covered create");
    assert_eq!(
        tree.read("etc/chrony/sources.d/b.sources").as_deref(),
        Some("server c\n")
    );
    // Outside the declared globs: neither read nor written.
    refused(
        call("read", json!({"path": "/etc/resolv.conf"}), &g),
        "/etc/resolv.conf",
        "outside the /etc paths this call may read",
    );
    refused(
        call(
            "write",
            json!({"path": "/etc/resolv.conf", "content": "x"}),
            &g,
        ),
        "/etc/resolv.conf",
        "outside the /etc paths this call may",
    );
    refused(
        call(
            "write",
            json!({"path": "/etc/new.conf", "content": "x"}),
            &g,
        ),
        "/etc/new.conf",
        "outside",
    );
    refused(
        call("remove", json!({"path": "/etc/resolv.conf"}), &g),
        "/etc/resolv.conf",
        "outside the /etc paths this call may write",
    );
    assert_eq!(
        tree.read("etc/resolv.conf").as_deref(),
        Some("nameserver 1.1.1.1\n")
    );
    assert_eq!(tree.read("etc/new.conf"), None);
    // A directory on the way to covered paths can be listed, and lists only them.
    let out = call("list", json!({"path": "/etc"}), &g).expect("list /etc");
    assert_eq!(out.output["entries"], json!(["chrony", "chrony.conf"]));
    // Reading a directory that leads nowhere covered: refused.
    refused(
        call("list", json!({"path": "/etc/rancher"}), &g),
        "/etc/rancher",
        "outside",
    );
}

#[test]
fn every_list_of_a_scope_must_cover_a_path() {
    let tree = tree();
    // The plugin covers chrony's files; the policy only chrony.conf, and lets nothing be
    // written.
    let g = Grants::etc(tree.etc(), EtcAccess::Write).with_etc_scope(EtcScope {
        read: vec![list(&["chrony.conf", "chrony/**"]), list(&["chrony.conf"])],
        write: vec![list(&["chrony.conf", "chrony/**"]), vec![]],
        ..EtcScope::default()
    });
    call("read", json!({"path": "/etc/chrony.conf"}), &g).expect("both cover it");
    refused(
        call(
            "read",
            json!({"path": "/etc/chrony/sources.d/a.sources"}),
            &g,
        ),
        "/etc/chrony/sources.d/a.sources",
        "outside the /etc paths this call may read",
    );
    refused(
        call(
            "write",
            json!({"path": "/etc/chrony.conf", "content": "x"}),
            &g,
        ),
        "/etc/chrony.conf",
        "outside the /etc paths this call may write",
    );
    assert_eq!(tree.read("etc/chrony.conf").as_deref(), Some("pool a\n"));
}

#[test]
fn sensitive_paths_stay_refused_unless_allowed_by_exact_name() {
    let tree = tree();
    let everything = Grants::etc(tree.etc(), EtcAccess::Read);
    // The default list covers k3s's kubeconfig and registries.yaml.
    for path in [
        "/etc/rancher/k3s/k3s.yaml",
        "/etc/rancher/k3s/registries.yaml",
    ] {
        refused(
            call("read", json!({"path": path}), &everything),
            path,
            "sensitive path",
        );
    }
    // A glob covering it does not make it readable: the deny list is not the scope.
    let globbed = Grants::etc(tree.etc(), EtcAccess::Read).with_etc_scope(EtcScope {
        read: vec![list(&["rancher/**"])],
        ..EtcScope::default()
    });
    refused(
        call(
            "read",
            json!({"path": "/etc/rancher/k3s/k3s.yaml"}),
            &globbed,
        ),
        "/etc/rancher/k3s/k3s.yaml",
        "sensitive path",
    );
    // The plugin's exact allowance: that file, and only it.
    let allowed = Grants::etc(tree.etc(), EtcAccess::Read).with_etc_scope(EtcScope {
        allow_sensitive: list(&["rancher/k3s/k3s.yaml"]),
        ..EtcScope::default()
    });
    let out = call(
        "read",
        json!({"path": "/etc/rancher/k3s/k3s.yaml"}),
        &allowed,
    )
    .expect("allowed by name");
    assert!(
        out.output.to_string().contains("admin kubeconfig"),
        "{}",
        out.output
    );
    refused(
        call(
            "read",
            json!({"path": "/etc/rancher/k3s/registries.yaml"}),
            &allowed,
        ),
        "/etc/rancher/k3s/registries.yaml",
        "sensitive path",
    );
    // An allowance is never a glob: the host refuses the whole call's scope.
    let glob = Grants::etc(tree.etc(), EtcAccess::Read).with_etc_scope(EtcScope {
        allow_sensitive: list(&["rancher/**"]),
        ..EtcScope::default()
    });
    let e = call("read", json!({"path": "/etc/hosts"}), &glob).expect_err("glob allowance");
    assert!(e.message.contains("wildcard"), "{e}");
}

#[test]
fn links_and_dotdot_do_not_leave_the_scope() {
    let tree = tree();
    let etc = tree.etc();
    // Links inside the covered tree pointing at what is not covered.
    std::os::unix::fs::symlink("../../resolv.conf", etc.join("chrony/sources.d/r.sources"))
        .expect("symlink");
    std::os::unix::fs::symlink("../rancher", etc.join("chrony/ranch")).expect("symlink");
    let g = chrony(&tree);
    for path in [
        "/etc/chrony/sources.d/r.sources",
        "/etc/chrony/../resolv.conf",
        "/etc/chrony/ranch/k3s/registries.yaml",
    ] {
        let r = call("read", json!({"path": path}), &g);
        assert!(r.is_err(), "{path}: read through a link or .. succeeded");
    }
    refused(
        call(
            "read",
            json!({"path": "/etc/chrony/sources.d/r.sources"}),
            &g,
        ),
        "/etc/resolv.conf",
        "outside",
    );
    // Writing through the link would change resolv.conf.
    let r = call(
        "write",
        json!({"path": "/etc/chrony/sources.d/r.sources", "content": "x"}),
        &g,
    );
    assert!(r.is_err(), "write through a link succeeded");
    assert_eq!(
        tree.read("etc/resolv.conf").as_deref(),
        Some("nameserver 1.1.1.1\n")
    );
}

#[test]
fn renames_cannot_move_into_or_out_of_the_scope() {
    let tree = tree();
    let g = chrony(&tree);
    // Within the scope: fine (an atomic replace of a covered file).
    call(
        "write",
        json!({"path": "/etc/chrony/chrony.conf.tmp", "content": "pool z\n"}),
        &g,
    )
    .expect("covered temp file");
    call(
        "rename",
        json!({"path": "/etc/chrony/chrony.conf.tmp", "to": "/etc/chrony.conf"}),
        &g,
    )
    .expect("rename within the scope");
    assert_eq!(tree.read("etc/chrony.conf").as_deref(), Some("pool z\n"));
    // Out of it: a covered file cannot become crontab.
    refused(
        call(
            "rename",
            json!({"path": "/etc/chrony.conf", "to": "/etc/crontab"}),
            &g,
        ),
        "/etc/crontab",
        "outside the /etc paths this call may write",
    );
    assert_eq!(tree.read("etc/crontab").as_deref(), Some("# root's\n"));
    // Into it: an uncovered file cannot be moved in (and so be read).
    refused(
        call(
            "rename",
            json!({"path": "/etc/resolv.conf", "to": "/etc/chrony/resolv"}),
            &g,
        ),
        "/etc/resolv.conf",
        "outside the /etc paths this call may write",
    );
    assert_eq!(
        tree.read("etc/resolv.conf").as_deref(),
        Some("nameserver 1.1.1.1\n")
    );
    // A directory moves whole only when the scope covers all of it.
    let narrow = Grants::etc(tree.etc(), EtcAccess::Write).with_etc_scope(EtcScope {
        read: vec![list(&["chrony/*"])],
        write: vec![list(&["chrony/*"])],
        ..EtcScope::default()
    });
    refused(
        call(
            "rename",
            json!({"path": "/etc/chrony/sources.d", "to": "/etc/chrony/old.d"}),
            &narrow,
        ),
        "/etc/chrony/sources.d",
        "holds paths outside",
    );
    assert!(tree.read("etc/chrony/sources.d/a.sources").is_some());
    call(
        "rename",
        json!({"path": "/etc/chrony/sources.d", "to": "/etc/chrony/old.d"}),
        &g,
    )
    .expect("chrony/** covers the whole directory");
    assert!(tree.read("etc/chrony/old.d/a.sources").is_some());
}

/// A policy that excludes root-equivalent paths: crontab is refused for writes even
/// where the plugin covers everything.
#[test]
fn excluded_root_equivalent_paths_are_not_written() {
    let tree = tree();
    let caps = hostplug_api::Capabilities {
        etc: EtcAccess::Write,
        ..Default::default()
    };
    let grant = hostplug_api::policy::EtcPathGrant {
        exclude_root_equivalent: true,
        ..Default::default()
    };
    let g = Grants::etc(tree.etc(), EtcAccess::Write)
        .with_etc_scope(EtcScope::for_call(&caps, Some(&grant)));
    call("read", json!({"path": "/etc/crontab"}), &g).expect("still readable");
    for path in ["/etc/crontab", "/etc/cron.d/job", "/etc/sudoers.d/me"] {
        let r = call(
            "write",
            json!({"path": path, "content": "* * * * * root sh\n"}),
            &g,
        );
        assert!(r.is_err(), "{path}: written");
    }
    assert_eq!(tree.read("etc/crontab").as_deref(), Some("# root's\n"));
    call(
        "write",
        json!({"path": "/etc/resolv.conf", "content": "nameserver 9.9.9.9\n"}),
        &g,
    )
    .expect("an ordinary file");
}

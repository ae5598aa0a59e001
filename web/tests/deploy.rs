//! `deploy/web/` parses into the Kubernetes types it claims to be, and the console's RBAC
//! grants exactly what docs/architecture.md allows: get/list/watch HostTasks and HostPlugins,
//! create/update/delete HostTasks, list Nodes — nothing else. (The browser test applies the same
//! RBAC to a real API server and runs the console under it.)

use std::{collections::BTreeSet, path::Path};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{PersistentVolumeClaim, Service, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
};
use serde::Deserialize;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn documents(file: &str) -> Result<Vec<serde_yaml::Value>, Box<dyn std::error::Error>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/web")
        .join(file);
    let text = std::fs::read_to_string(&path)?;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(doc)?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

fn kind(v: &serde_yaml::Value) -> &str {
    v.get("kind").and_then(|k| k.as_str()).unwrap_or_default()
}

fn grants(rules: &[PolicyRule]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for rule in rules {
        for group in rule.api_groups.clone().unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    out.insert(format!("{group}/{resource}:{verb}"));
                }
            }
        }
    }
    out
}

#[test]
fn rbac_is_exactly_what_the_console_needs() -> TestResult {
    let mut namespaced = BTreeSet::new();
    let mut cluster = BTreeSet::new();
    let mut kinds = Vec::new();
    for doc in documents("rbac.yaml")? {
        kinds.push(kind(&doc).to_owned());
        match kind(&doc) {
            "ServiceAccount" => {
                let sa: ServiceAccount = serde_yaml::from_value(doc)?;
                assert_eq!(sa.metadata.name.as_deref(), Some("hostplug-web"));
            }
            "Role" => {
                namespaced = grants(
                    &serde_yaml::from_value::<Role>(doc)?
                        .rules
                        .unwrap_or_default(),
                )
            }
            "ClusterRole" => {
                cluster = grants(
                    &serde_yaml::from_value::<ClusterRole>(doc)?
                        .rules
                        .unwrap_or_default(),
                )
            }
            "RoleBinding" => {
                let b: RoleBinding = serde_yaml::from_value(doc)?;
                assert_eq!(b.role_ref.name, "hostplug-web");
            }
            "ClusterRoleBinding" => {
                let b: ClusterRoleBinding = serde_yaml::from_value(doc)?;
                assert_eq!(b.role_ref.name, "hostplug-web");
            }
            other => panic!("unexpected kind {other} in rbac.yaml"),
        }
    }
    assert_eq!(kinds.len(), 5);
    let expect = |items: &[&str]| {
        items
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        namespaced,
        expect(&[
            "hostplug.dev/hosttasks:create",
            "hostplug.dev/hosttasks:delete",
            "hostplug.dev/hosttasks:get",
            "hostplug.dev/hosttasks:list",
            "hostplug.dev/hosttasks:update",
            "hostplug.dev/hosttasks:watch",
        ])
    );
    assert_eq!(
        cluster,
        expect(&[
            "/nodes:list",
            "hostplug.dev/hostplugins:get",
            "hostplug.dev/hostplugins:list",
            "hostplug.dev/hostplugins:watch",
            "hostplug.dev/hoststates:list",
            "hostplug.dev/hoststates:patch",
        ])
    );
    Ok(())
}

#[test]
fn deployment_and_service_are_well_formed() -> TestResult {
    let mut seen = BTreeSet::new();
    for file in ["deployment.yaml", "service.yaml"] {
        for doc in documents(file)? {
            seen.insert(kind(&doc).to_owned());
            match kind(&doc) {
                "PersistentVolumeClaim" => {
                    serde_yaml::from_value::<PersistentVolumeClaim>(doc)?;
                }
                "Deployment" => {
                    let d: Deployment = serde_yaml::from_value(doc)?;
                    let spec = d.spec.ok_or("spec")?;
                    assert_eq!(spec.replicas, Some(1), "one writer on the SQLite file");
                    let pod = spec.template.spec.ok_or("pod spec")?;
                    assert_eq!(pod.service_account_name.as_deref(), Some("hostplug-web"));
                    let c = pod.containers.first().ok_or("container")?;
                    let sc = c.security_context.clone().ok_or("securityContext")?;
                    assert_eq!(sc.read_only_root_filesystem, Some(true));
                    assert_eq!(sc.allow_privilege_escalation, Some(false));
                    let mounts = c.volume_mounts.clone().unwrap_or_default();
                    assert!(
                        mounts
                            .iter()
                            .any(|m| m.mount_path == "/var/lib/hostplug-web")
                    );
                    // HTTPS and Secure cookies are the defaults; nothing turns them off.
                    let args = c.args.clone().unwrap_or_default().join(" ");
                    let env: Vec<_> = c.env.clone().unwrap_or_default();
                    for off in ["insecure-http", "secure-cookies"] {
                        assert!(!args.contains(off), "the manifest sets --{off}");
                    }
                    for var in ["HOSTPLUG_WEB_INSECURE_HTTP", "HOSTPLUG_WEB_SECURE_COOKIES"] {
                        assert!(
                            !env.iter().any(|e| e.name == var),
                            "the manifest sets {var}"
                        );
                    }
                    assert!(args.contains("--tls-dir="), "certificate from a Secret");
                    assert!(args.contains("--bootstrap-token-file="), "bootstrap Secret");
                    let probe = c.readiness_probe.clone().ok_or("readiness")?;
                    assert_eq!(
                        probe.http_get.ok_or("httpGet")?.scheme.as_deref(),
                        Some("HTTPS")
                    );
                }
                "Service" => {
                    let s: Service = serde_yaml::from_value(doc)?;
                    assert_eq!(
                        s.spec.ok_or("spec")?.type_.as_deref(),
                        Some("ClusterIP"),
                        "the console is not exposed beyond the cluster by default"
                    );
                }
                other => panic!("unexpected kind {other}"),
            }
        }
    }
    assert_eq!(
        seen,
        ["Deployment", "PersistentVolumeClaim", "Service"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    );
    Ok(())
}

#[test]
fn exposing_the_console_is_opt_in() -> TestResult {
    let kustomization = documents("kustomization.yaml")?;
    let resources: Vec<String> = kustomization
        .first()
        .and_then(|k| k.get("resources"))
        .and_then(|r| r.as_sequence())
        .ok_or("resources")?
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    assert!(
        !resources.iter().any(|r| r.contains("nodeport")),
        "{resources:?}"
    );
    let nodeport = documents("nodeport.yaml")?;
    let service: Service = serde_yaml::from_value(nodeport.first().ok_or("service")?.clone())?;
    assert_eq!(
        service.spec.ok_or("spec")?.type_.as_deref(),
        Some("NodePort")
    );
    Ok(())
}

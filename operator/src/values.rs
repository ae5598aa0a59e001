//! The values of a plugin call's `vars`, read from their ConfigMaps and Secrets, and the
//! call's parameters for one node ([`CallValues::params_for`]): `$(…)` references
//! replaced ([`hostplug_api::expand`]) and checked against the method's schema again.
//!
//! Values are read when they are needed (a task's node call, a state's reconcile), never
//! stored: a rotated Secret is used at once, and the operator keeps no secret beyond the
//! call. Values from Secrets are remembered only to mask them ([`CallValues::mask`])
//! wherever the operator reports: statuses, Events, its log.

use std::collections::BTreeMap;

use hostplug_api::crd::{MethodInfo, PluginCall};
use hostplug_api::expand;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};

use crate::dispatch::NodeOutcome;
use crate::validate::{self, CallSite, Invalid, NodeView};
use crate::{Error, Result};

/// A call's vars, read.
#[derive(Clone, Default)]
pub struct CallValues {
    vars: BTreeMap<String, String>,
    secrets: Vec<String>,
}

impl std::fmt::Debug for CallValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values.
        f.debug_struct("CallValues")
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

/// Reads the vars of `call` at `site`. `namespace`: a task's own namespace (a ref may
/// name no other); `None` for a HostState, whose refs must each name one. `Ok(Err(_))`
/// names what is missing or not allowed (no value in the message); `Err(_)` is an API
/// failure to retry.
pub async fn read(
    client: &Client,
    call: &PluginCall,
    site: CallSite,
    namespace: Option<&str>,
) -> Result<Result<CallValues, Invalid>> {
    let mut out = CallValues::default();
    for (i, var) in call.vars.iter().enumerate() {
        let field = site.field(&format!("vars[{i}]"));
        if var.name == "node" {
            return Ok(Err(Invalid::new(
                format!("{field}.name"),
                "\"node\" is taken: $(node.…) refers to the node itself",
            )));
        }
        if out.vars.contains_key(&var.name) {
            return Ok(Err(Invalid::new(
                format!("{field}.name"),
                format!("{:?} is defined twice", var.name),
            )));
        }
        let value = match (&var.value, &var.value_from) {
            (Some(v), None) => v.clone(),
            (None, Some(from)) => {
                let (kind, r) = match (&from.config_map_key_ref, &from.secret_key_ref) {
                    (Some(r), None) => ("configMapKeyRef", r),
                    (None, Some(r)) => ("secretKeyRef", r),
                    _ => {
                        return Ok(Err(Invalid::new(
                            format!("{field}.valueFrom"),
                            "set exactly one of configMapKeyRef or secretKeyRef",
                        )));
                    }
                };
                let field = format!("{field}.valueFrom.{kind}");
                let ns = match (namespace, r.namespace.as_deref()) {
                    (Some(own), None) => own.to_owned(),
                    (Some(own), Some(ns)) if ns == own => own.to_owned(),
                    (Some(own), Some(ns)) => {
                        return Ok(Err(Invalid::new(
                            format!("{field}.namespace"),
                            format!(
                                "{ns:?} is not the task's namespace {own:?}; a task reads values \
                                 from its own namespace only"
                            ),
                        )));
                    }
                    (None, Some(ns)) => ns.to_owned(),
                    (None, None) => {
                        return Ok(Err(Invalid::new(
                            format!("{field}.namespace"),
                            "a HostState has no namespace of its own: name the namespace",
                        )));
                    }
                };
                let secret = kind == "secretKeyRef";
                let got = if secret {
                    read_secret(client, &ns, &r.name, &r.key).await
                } else {
                    read_config_map(client, &ns, &r.name, &r.key).await
                };
                match got? {
                    Ok(v) => {
                        if secret {
                            out.secrets.push(v.clone());
                        }
                        v
                    }
                    Err(problem) => return Ok(Err(Invalid::new(field, problem))),
                }
            }
            _ => {
                return Ok(Err(Invalid::new(
                    field,
                    "set exactly one of value or valueFrom",
                )));
            }
        };
        out.vars.insert(var.name.clone(), value);
    }
    Ok(Ok(out))
}

/// A key of a Secret, or what is missing; API failures other than "not there" or
/// "forbidden" are errors to retry.
async fn read_secret(
    client: &Client,
    ns: &str,
    name: &str,
    key: &str,
) -> Result<Result<String, String>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let found = match api.get_opt(name).await {
        Ok(s) => s,
        Err(kube::Error::Api(e)) if e.code == 403 => {
            return Ok(Err(forbidden("Secret", ns, name)));
        }
        Err(e) => return Err(Error::kube(format!("reading Secret {ns}/{name}"))(e)),
    };
    let Some(secret) = found else {
        return Ok(Err(format!("Secret {ns}/{name} does not exist")));
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.clone().into_bytes())
        });
    match bytes {
        None => Ok(Err(format!("Secret {ns}/{name} has no key {key:?}"))),
        Some(b) => Ok(String::from_utf8(b)
            .map_err(|_| format!("Secret {ns}/{name} key {key:?} is not UTF-8 text"))),
    }
}

/// A key of a ConfigMap (`data`, or `binaryData` as UTF-8), or what is missing.
async fn read_config_map(
    client: &Client,
    ns: &str,
    name: &str,
    key: &str,
) -> Result<Result<String, String>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let found = match api.get_opt(name).await {
        Ok(c) => c,
        Err(kube::Error::Api(e)) if e.code == 403 => {
            return Ok(Err(forbidden("ConfigMap", ns, name)));
        }
        Err(e) => return Err(Error::kube(format!("reading ConfigMap {ns}/{name}"))(e)),
    };
    let Some(cm) = found else {
        return Ok(Err(format!("ConfigMap {ns}/{name} does not exist")));
    };
    if let Some(v) = cm.data.as_ref().and_then(|d| d.get(key)) {
        return Ok(Ok(v.clone()));
    }
    match cm.binary_data.as_ref().and_then(|d| d.get(key)) {
        Some(b) => Ok(String::from_utf8(b.0.clone())
            .map_err(|_| format!("ConfigMap {ns}/{name} key {key:?} is not UTF-8 text"))),
        None => Ok(Err(format!("ConfigMap {ns}/{name} has no key {key:?}"))),
    }
}

fn forbidden(kind: &str, ns: &str, name: &str) -> String {
    format!(
        "the operator may not read {kind} {ns}/{name}: grant its ServiceAccount `get` on it \
         in that namespace (docs/operations.md, \"Values from ConfigMaps, Secrets and the node\")"
    )
}

impl CallValues {
    /// The call's parameters on `node`: references replaced, then checked against the
    /// method's schema; errors name the field and what is missing on that node.
    pub fn params_for(
        &self,
        call: &PluginCall,
        site: CallSite,
        method: &MethodInfo,
        node: &NodeView,
    ) -> Result<serde_json::Value, Invalid> {
        let params = expand::expand(&call.params(), &site.field("parameter"), &self.vars, node)
            .map_err(|e| self.mask_invalid(e))?;
        validate::check_params_value(&params, site, method).map_err(|e| self.mask_invalid(e))?;
        Ok(params)
    }

    /// Whether any var came from a Secret.
    pub fn has_secrets(&self) -> bool {
        !self.secrets.is_empty()
    }

    /// A fingerprint of the values (a HostState checks its nodes again when it changes):
    /// a hash, never the values.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.vars.hash(&mut h);
        h.finish()
    }

    /// `text` with the values from Secrets masked.
    pub fn mask(&self, text: &str) -> String {
        expand::mask(text, &self.secrets)
    }

    fn mask_invalid(&self, e: Invalid) -> Invalid {
        Invalid::new(e.field, self.mask(&e.problem))
    }

    /// Adds `other`'s values from Secrets to those [`Self::mask_outcome`] masks: a call
    /// and its follow-ups share one outcome, masked once with all of them.
    pub fn mask_also(&mut self, other: &CallValues) {
        self.secrets.extend(other.secrets.iter().cloned());
    }

    /// A call's outcome with the values from Secrets masked (diff, output, log tail,
    /// error messages, and the same of its follow-ups).
    pub fn mask_outcome(&self, outcome: NodeOutcome) -> NodeOutcome {
        use crate::client::CallError;
        if self.secrets.is_empty() {
            return outcome;
        }
        let m = |s: String| self.mask(&s);
        match outcome {
            Ok(mut s) => {
                s.diff = s.diff.map(m);
                s.output = expand::mask_json(&s.output, &self.secrets);
                s.logs = s.logs.into_iter().map(m).collect();
                for f in &mut s.follow_ups {
                    if let Some(o) = &mut f.outcome {
                        o.diff = o.diff.take().map(m);
                        o.output = expand::mask_json(&o.output, &self.secrets);
                        for l in &mut o.logs {
                            l.message = m(std::mem::take(&mut l.message));
                        }
                    }
                    if let Some(e) = &mut f.error {
                        e.message = m(std::mem::take(&mut e.message));
                        for l in &mut e.logs {
                            l.message = m(std::mem::take(&mut l.message));
                        }
                    }
                }
                Ok(s)
            }
            Err(CallError::Plugin(mut e)) => {
                e.message = m(e.message);
                for l in &mut e.logs {
                    l.message = m(std::mem::take(&mut l.message));
                }
                Err(CallError::Plugin(e))
            }
            Err(CallError::Unreachable(t)) => Err(CallError::Unreachable(m(t))),
            Err(CallError::Busy(t)) => Err(CallError::Busy(m(t))),
            Err(CallError::Worker(t)) => Err(CallError::Worker(m(t))),
            Err(CallError::NotSent(t)) => Err(CallError::NotSent(m(t))),
            Err(CallError::Disruption(t)) => Err(CallError::Disruption(m(t))),
        }
    }
}

//! What the operator tells people about the resources it controls, written once for
//! every controller: the status writer ([`write_status`]), the Event publisher
//! ([`Events`]) and the condition setter ([`set_condition`]).
//!
//! A status is written by server-side apply with the operator's field manager, fenced by
//! the resourceVersion the decision was made from: a deposed leader's write fails with a
//! [`Error::Conflict`] naming the kind instead of overwriting its successor's. Events
//! name their object; objects whose names are too long for the recorder's Event naming
//! get their Events all the same. Nothing here decides what a status says.

use std::fmt::Debug;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::warn;

use crate::{Error, FIELD_MANAGER, Result};
use hostplug_api::crd::{HostPlugin, HostTask};
use hostplug_api::state::HostState;

/// A resource the operator writes the status of.
pub trait Reported:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static
{
    /// The API of this object (its namespace when namespaced).
    fn api(&self, client: &Client) -> Api<Self>;
}

impl Reported for HostTask {
    fn api(&self, client: &Client) -> Api<Self> {
        Api::namespaced(client.clone(), &self.namespace().unwrap_or_default())
    }
}

impl Reported for HostState {
    fn api(&self, client: &Client) -> Api<Self> {
        Api::all(client.clone())
    }
}

impl Reported for HostPlugin {
    fn api(&self, client: &Client) -> Api<Self> {
        Api::all(client.clone())
    }
}

/// Writes `status` as the status of `obj`: the only status writer. Server-side apply
/// (lists replaced whole), fenced by `obj`'s resourceVersion. Returns the written object,
/// whose resourceVersion fences the next write.
pub async fn write_status<K: Reported>(
    client: &Client,
    obj: &K,
    status: &impl Serialize,
) -> Result<K> {
    let name = obj.name_any();
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"resourceVersion": obj.resource_version()},
        "status": status,
    });
    match obj
        .api(client)
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
    {
        Ok(written) => Ok(written),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::Conflict {
            kind: K::kind(&()).into_owned(),
            name,
        }),
        Err(e) => Err(Error::Kube {
            context: format!("writing status of {} {name}", K::kind(&())),
            source: e,
        }),
    }
}

/// Replaces the condition of the same type, keeping its transition time when its status
/// did not change.
pub fn set_condition(conds: &mut Vec<Condition>, mut new: Condition) {
    if let Some(old) = conds.iter_mut().find(|c| c.type_ == new.type_) {
        if old.status == new.status {
            new.last_transition_time = old.last_transition_time.clone();
        }
        *old = new;
    } else {
        conds.push(new);
    }
}

/// Longest object name the recorder can name an Event after: 236. It calls an Event
/// `<object name>.<nanoseconds in hex>` (up to 16 digits), and a name has at most 253
/// characters, which a HostTask's or a HostState's name may have itself.
pub const MAX_RECORDER_NAME: usize = 253 - 17;

/// Longest Event note: 1000 bytes, what the events API accepts (it refuses longer notes
/// and the Event is lost).
pub const MAX_NOTE_BYTES: usize = 1000;

/// The Event publisher every controller uses.
#[derive(Clone)]
pub struct Events {
    client: Client,
    recorder: Recorder,
    instance: String,
}

impl Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Events {
    /// A publisher reporting as `instance` of the operator.
    pub fn new(client: Client, instance: String) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(instance.clone()),
            },
        );
        Self {
            client,
            recorder,
            instance,
        }
    }

    /// Publishes an Event about `obj` (with `node`, the Node is its related object: the
    /// recorder then counts repeats per node as a series, and distinct nodes are
    /// distinct Events). Failures are logged, never returned: an Event is a courtesy,
    /// not the record.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        node: Option<&str>,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(crate::status::truncate_str(&note, MAX_NOTE_BYTES)),
            action: "Reconcile".into(),
            secondary: node.map(|n| ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(n.to_owned()),
                ..ObjectReference::default()
            }),
        };
        let reference = obj.object_ref(&());
        let long = reference
            .name
            .as_ref()
            .is_some_and(|n| n.len() > MAX_RECORDER_NAME);
        let published = if long {
            self.publish_long_name(&ev, &reference).await
        } else {
            self.recorder
                .publish(&ev, &reference)
                .await
                .map_err(|e| e.to_string())
        };
        if let Err(e) = published {
            warn!(error = %e, kind = ?reference.kind, name = ?reference.name, "publishing an event failed");
        }
    }

    /// Creates an Event about an object whose name is too long for the recorder's naming:
    /// the same fields, named like the recorder names them but after the shortened name.
    async fn publish_long_name(
        &self,
        ev: &Event,
        reference: &ObjectReference,
    ) -> std::result::Result<(), String> {
        use k8s_openapi::api::events::v1::Event as ApiEvent;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
        let name = reference.name.clone().unwrap_or_default();
        let prefix: String = name.chars().take(MAX_RECORDER_NAME).collect();
        let prefix = prefix.trim_end_matches(['.', '-']);
        // Cluster-scoped objects' Events go to `default`, as the recorder puts them.
        let ns = reference
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let now = Timestamp::now();
        let event = ApiEvent {
            metadata: ObjectMeta {
                // A cut valid subdomain without a trailing '.' or '-' is one; the suffix
                // is a label of its own, as the recorder makes it.
                name: Some(format!("{prefix}.{:x}", now.as_nanosecond())),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(match ev.type_ {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            reason: Some(ev.reason.clone()),
            note: ev.note.clone(),
            action: Some(ev.action.clone()),
            regarding: Some(reference.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(FIELD_MANAGER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..ApiEvent::default()
        };
        Api::<ApiEvent>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let at = |s: i64| Time(Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH));
        let cond = |status: &str, t| Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: "R".into(),
            message: "m".into(),
            observed_generation: None,
            last_transition_time: at(t),
        };
        let mut conds = vec![];
        set_condition(&mut conds, cond("False", 1));
        set_condition(&mut conds, cond("False", 2));
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time, at(1));
        set_condition(&mut conds, cond("True", 3));
        assert_eq!(conds[0].last_transition_time, at(3));
    }

    #[test]
    fn kinds_and_versions_come_from_the_types() {
        assert_eq!(HostState::kind(&()), "HostState");
        assert_eq!(HostTask::api_version(&()), "hostplug.dev/v1alpha1");
    }
}

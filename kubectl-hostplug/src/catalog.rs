//! The plugin catalog as people read it: which plugins exist, their methods and what
//! each method's parameters are, summarised from the JSON Schemas the plugins describe
//! themselves with (`HostPlugin.status.info`) through the reader the console and the
//! operator use too ([`hostplug_api::schema`]: the same kinds, enum values and order).
//! Pure functions over fetched HostPlugins; nothing here talks to a cluster.

use hostplug_api::crd::HostPlugin;
use hostplug_api::schema::ParamSchema;
use hostplug_api::{MethodInfo, PluginInfo};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::Error;

/// One parameter of a method, as `explain` and `plugins` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParamSummary {
    /// Dotted path, e.g. `path` or `owner.name`.
    pub name: String,
    /// The schema type (`string`, `integer`, `array of string`, `enum`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether the method requires it.
    pub required: bool,
    /// The schema's default, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// The allowed values of an enum.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Value>,
    /// What each of `values` means, where the schema says (same order; empty when it
    /// says nothing of any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub value_descriptions: Vec<String>,
    /// The schema's description (or title).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// One method of a plugin with its parameters summarised.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodSummary {
    /// Method name (`spec.http.method`).
    pub name: String,
    /// One sentence for people.
    pub description: String,
    /// Whether it can change the node.
    pub mutates: bool,
    /// Its parameters in the one order (nested ones inline, as dotted names).
    pub params: Vec<ParamSummary>,
}

/// One plugin of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginSummary {
    /// HostPlugin name (`spec.http.api`).
    pub name: String,
    /// Whether tasks can use it.
    pub ready: bool,
    /// Semantic version, when the module described itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What it is for.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// What it may touch (`etc=write,docker=false`).
    pub capabilities: String,
    /// Why it is not ready, or a note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Its methods.
    pub methods: Vec<MethodSummary>,
}

impl PluginSummary {
    /// The summary of a HostPlugin as the operator reported it.
    pub fn of(hp: &HostPlugin) -> Self {
        let status = hp.status.clone().unwrap_or_default();
        let info = status.info.as_ref();
        Self {
            name: hp.metadata.name.clone().unwrap_or_default(),
            ready: status.ready,
            version: info.map(|i| i.version.clone()),
            description: info.map(|i| i.description.clone()).unwrap_or_default(),
            capabilities: hp.spec.capabilities.to_string(),
            message: status.message.clone(),
            methods: info
                .map(|i| i.methods.iter().map(MethodSummary::of).collect())
                .unwrap_or_default(),
        }
    }
}

impl MethodSummary {
    /// The summary of one method.
    pub fn of(m: &MethodInfo) -> Self {
        Self {
            name: m.name.clone(),
            description: m.description.clone(),
            mutates: m.mutates,
            params: m.params_schema.as_ref().map(params_of).unwrap_or_default(),
        }
    }
}

/// The plugin called `name` among `plugins`, or an error naming those that exist.
pub fn find_plugin<'a>(plugins: &'a [HostPlugin], name: &str) -> Result<&'a HostPlugin, Error> {
    plugins
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .ok_or_else(|| Error::UnknownPlugin {
            name: name.to_owned(),
            known: names(plugins.iter().filter_map(|p| p.metadata.name.as_deref())),
        })
}

/// The described methods of a plugin; an error when it has not described itself.
pub fn info_of(hp: &HostPlugin) -> Result<&PluginInfo, Error> {
    let status = hp.status.as_ref();
    status
        .and_then(|s| s.info.as_ref())
        .ok_or_else(|| Error::PluginNotReady {
            name: hp.metadata.name.clone().unwrap_or_default(),
            message: status
                .and_then(|s| s.message.clone())
                .unwrap_or_else(|| "the operator has not loaded it yet".to_owned()),
        })
}

/// The method called `method` of a plugin, or an error naming the methods it has.
pub fn find_method<'a>(
    info: &'a PluginInfo,
    plugin: &str,
    method: &str,
) -> Result<&'a MethodInfo, Error> {
    info.method(method).ok_or_else(|| Error::UnknownMethod {
        plugin: plugin.to_owned(),
        method: method.to_owned(),
        known: names(info.methods.iter().map(|m| m.name.as_str())),
    })
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let mut v: Vec<&str> = it.collect();
    v.sort_unstable();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

/// The parameters a method's schema declares, flattened (`owner.name`), in the one order
/// of [`hostplug_api::schema`].
pub fn params_of(schema: &Value) -> Vec<ParamSummary> {
    ParamSchema::read(schema)
        .leaves()
        .into_iter()
        .map(|(f, required)| {
            let choices = f.kind.choices().unwrap_or_default();
            let described = choices.iter().any(|c| c.description.is_some());
            ParamSummary {
                name: f.path.clone(),
                kind: f.kind.to_string(),
                required,
                default: f.default.clone(),
                values: choices.iter().map(|c| c.value.clone()).collect(),
                value_descriptions: if described {
                    choices
                        .iter()
                        .map(|c| {
                            c.description
                                .as_deref()
                                .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
                                .unwrap_or_default()
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                description: f.summary(),
            }
        })
        .collect()
}

/// An empty JSON object.
pub fn empty_object() -> Value {
    Value::Object(Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["path", "owner"],
            "additionalProperties": false,
            "properties": {
                "path": {"type": "string", "description": "A file under /etc."},
                "state": {"enum": ["present", "absent"], "default": "present"},
                "policy": {"$ref": "#/$defs/policy"},
                "mode": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]},
                "lines": {"type": "array", "items": {"type": "string"}},
                "owner": {"$ref": "#/$defs/owner"}
            },
            "$defs": {"policy": {"oneOf": [{"const": "always"}, {"const": "never", "description": "Never."}]}, "owner": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string", "title": "User name"}, "uid": {"type": ["integer", "null"]}}
            }}
        })
    }

    #[test]
    fn parameters_are_flattened_with_types_in_the_one_order() {
        let params = params_of(&schema());
        let got: Vec<(&str, &str, bool)> = params
            .iter()
            .map(|p| (p.name.as_str(), p.kind.as_str(), p.required))
            .collect();
        // No stated order: required ones in the order of `required`, then by name
        // (nested ones inline, required only when their object is).
        assert_eq!(
            got,
            [
                ("path", "string", true),
                ("owner.name", "string", true),
                ("owner.uid", "integer", false),
                ("lines", "array of string", false),
                ("mode", "string | integer", false),
                ("policy", "enum", false),
                ("state", "enum", false),
            ]
        );
        let owner = params
            .iter()
            .find(|p| p.name == "owner.name")
            .map(|p| p.description.clone());
        assert_eq!(owner.as_deref(), Some("User name"));
        let policy = params
            .iter()
            .find(|p| p.name == "policy")
            .map(|p| (p.values.clone(), p.value_descriptions.clone()));
        assert_eq!(
            policy,
            Some((
                vec![json!("always"), json!("never")],
                vec![String::new(), "Never.".to_owned()]
            ))
        );
        let state = params
            .iter()
            .find(|p| p.name == "state")
            .and_then(|p| p.default.clone());
        assert_eq!(state, Some(json!("present")));
    }

    #[test]
    fn the_plugins_own_order_wins_where_stated() {
        let s = json!({
            "type": "object",
            "required": ["path"],
            "properties": {
                "zeta": {"type": "string", "x-order": 0},
                "path": {"type": "string", "x-order": 1},
                "alpha": {"type": "string", "x-order": 2},
                "unstated": {"type": "string"}
            }
        });
        let names: Vec<String> = params_of(&s).into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["zeta", "path", "alpha", "unstated"]);
    }

    #[test]
    fn unknown_names_list_what_exists() {
        let info = PluginInfo {
            name: "p".into(),
            version: "1.0.0".into(),
            description: String::new(),
            methods: vec![
                MethodInfo {
                    name: "write".into(),
                    description: String::new(),
                    mutates: true,
                    params_schema: None,
                },
                MethodInfo {
                    name: "read".into(),
                    description: String::new(),
                    mutates: false,
                    params_schema: None,
                },
            ],
        };
        let err = find_method(&info, "p", "nope")
            .expect_err("unknown")
            .to_string();
        assert!(
            err.contains("\"nope\"") && err.contains("read, write"),
            "{err}"
        );
        let err = find_plugin(&[], "x").expect_err("unknown").to_string();
        assert!(err.contains("\"x\"") && err.contains("none"), "{err}");
    }
}

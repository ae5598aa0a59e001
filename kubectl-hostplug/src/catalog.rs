//! The plugin catalog as people read it: which plugins exist, their methods and what
//! each method's parameters are, summarised from the JSON Schemas the plugins describe
//! themselves with (`HostPlugin.status.info`). Pure functions over fetched HostPlugins;
//! nothing here talks to a cluster.

use hostplug_api::crd::HostPlugin;
use hostplug_api::{MethodInfo, PluginInfo};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::Error;

/// How deep nested objects are flattened into dotted parameter names (`owner.name`);
/// deeper ones are summarised as `object`. Real plugin schemas are two levels at most.
const MAX_DEPTH: usize = 6;

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
    /// Its parameters, required ones first.
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

/// The parameters a method's schema declares, flattened (`owner.name`), in the plugin's
/// own order where the schema states it (see [`ordered`]).
pub fn params_of(schema: &Value) -> Vec<ParamSummary> {
    let mut out = Vec::new();
    collect(schema, schema, "", true, 0, &mut out);
    out
}

/// A property's stated place: `x-order` (what the hostplug SDK writes: the field's place
/// in its struct) or `propertyOrder`.
fn stated_order(prop: &Value) -> Option<i64> {
    prop.get("x-order")
        .or_else(|| prop.get("propertyOrder"))
        .and_then(Value::as_i64)
}

/// An object's properties in display order: JSON objects reach us with sorted keys (the
/// API server sorts them), so the plugin's order survives only where the schema states it.
/// Stated ones first by that number, then required ones, then the rest by name — the
/// console's rule too.
fn ordered<'a>(props: &'a Map<String, Value>, required: &[&str]) -> Vec<(&'a String, &'a Value)> {
    let mut list: Vec<(&String, &Value)> = props.iter().collect();
    list.sort_by_key(|(name, prop)| {
        (
            stated_order(prop).unwrap_or(i64::MAX),
            !required.contains(&name.as_str()),
            (*name).clone(),
        )
    });
    list
}

fn collect(
    root: &Value,
    schema: &Value,
    prefix: &str,
    parent_required: bool,
    depth: usize,
    out: &mut Vec<ParamSummary>,
) {
    let schema = resolve(root, schema);
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, prop) in ordered(props, &required) {
        let prop = resolve(root, prop);
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let is_required = parent_required && required.contains(&name.as_str());
        if prop.get("properties").is_some() && depth < MAX_DEPTH {
            collect(root, prop, &path, is_required, depth + 1, out);
            continue;
        }
        out.push(ParamSummary {
            name: path,
            kind: kind_of(root, prop),
            required: is_required,
            default: prop.get("default").filter(|d| !d.is_null()).cloned(),
            values: enum_values(root, prop),
            // Doc comments arrive wrapped at 90 columns: one line for tables.
            description: text(prop, "description")
                .or_else(|| text(prop, "title"))
                .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        });
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Follows a local `$ref` (`#/$defs/x`, `#/definitions/x`); anything else as it is.
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let mut at = schema;
    // A chain of refs is short; the bound keeps a cyclic one from looping.
    for _ in 0..MAX_DEPTH {
        match at.get("$ref").and_then(Value::as_str) {
            Some(r) => match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
                Some(target) => at = target,
                None => return at,
            },
            None => return at,
        }
    }
    at
}

/// The alternatives of a `oneOf`/`anyOf`, refs followed, `null` left out (an optional
/// value is not another type).
fn alternatives<'a>(root: &'a Value, prop: &'a Value) -> Option<Vec<&'a Value>> {
    let list = prop
        .get("oneOf")
        .or_else(|| prop.get("anyOf"))
        .and_then(Value::as_array)?;
    Some(
        list.iter()
            .map(|v| resolve(root, v))
            .filter(|v| v.get("type") != Some(&Value::String("null".to_owned())))
            .collect(),
    )
}

/// The allowed values of an enum: `enum`, or a `oneOf` of `const`s (how schemars
/// writes an enum whose variants have doc comments).
pub fn enum_values(root: &Value, prop: &Value) -> Vec<Value> {
    let prop = resolve(root, prop);
    if let Some(values) = prop.get("enum").and_then(Value::as_array) {
        return values.clone();
    }
    match alternatives(root, prop) {
        Some(alts) if !alts.is_empty() => {
            let mut out = Vec::new();
            for alt in alts {
                match (alt.get("const"), alt.get("enum").and_then(Value::as_array)) {
                    (Some(c), _) => out.push(c.clone()),
                    (None, Some(e)) => out.extend(e.iter().cloned()),
                    (None, None) => return Vec::new(),
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// The type of a property as one word or a few (`array of string`, `string | integer`).
pub fn kind_of(root: &Value, prop: &Value) -> String {
    let prop = resolve(root, prop);
    if !enum_values(root, prop).is_empty() {
        return "enum".to_owned();
    }
    if let Some(alts) = alternatives(root, prop) {
        let mut kinds: Vec<String> = Vec::new();
        for k in alts.into_iter().map(|a| kind_of(root, a)) {
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
        if !kinds.is_empty() {
            return kinds.join(" | ");
        }
    }
    let ty = match prop.get("type") {
        Some(Value::String(s)) => s.clone(),
        // `["string", "null"]`: the first non-null type.
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("any")
            .to_owned(),
        _ if prop.get("properties").is_some() => "object".to_owned(),
        _ => "any".to_owned(),
    };
    if ty == "array"
        && let Some(items) = prop.get("items")
    {
        return format!("array of {}", kind_of(root, items));
    }
    ty
}

/// The schema of the parameter at a dotted path (`owner.name`), if the schema declares it.
pub fn param_schema<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut at = resolve(root, root);
    for part in path.split('.') {
        at = resolve(root, at.get("properties")?.get(part)?);
    }
    Some(at)
}

/// Whether the schema allows parameters it does not name at `path`'s parent.
pub fn closed_object(root: &Value, schema: &Value) -> bool {
    let schema = resolve(root, schema);
    schema.get("additionalProperties") == Some(&Value::Bool(false))
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
    fn parameters_are_flattened_with_types_and_required_first() {
        let params = params_of(&schema());
        let got: Vec<(&str, &str, bool)> = params
            .iter()
            .map(|p| (p.name.as_str(), p.kind.as_str(), p.required))
            .collect();
        // No stated order: required first, then by name (nested ones inline).
        assert_eq!(
            got,
            [
                ("owner.name", "string", true),
                ("owner.uid", "integer", false),
                ("path", "string", true),
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
            .map(|p| p.values.clone());
        assert_eq!(policy, Some(vec![json!("always"), json!("never")]));
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
    fn nested_parameter_schemas_resolve_refs() {
        let s = schema();
        assert_eq!(
            param_schema(&s, "owner.name").and_then(|v| v.get("type")),
            Some(&json!("string"))
        );
        assert!(param_schema(&s, "owner.nope").is_none());
        assert!(closed_object(&s, &s));
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

//! JSON Schema → form fields, parameter tables, and back from a submitted form to JSON.
//!
//! Plugins describe each method's parameters with a JSON Schema. The console renders the
//! usual subset: `string`, `number`, `integer`, `boolean`, `enum`, arrays of scalars (one
//! item per line), nested `object`s (a fieldset per object), `required`, `default`,
//! `description`, `title`, local `$ref`s. Anything else (`oneOf`, arrays of objects, free
//! objects) becomes a JSON text area, so every schema can still be filled in. The form is
//! a flat list of [`FormItem`]s so templates stay simple and autoescaped. The operator
//! validates the result against the schema again; this module only shapes the input.

use serde_json::{Map, Value};

/// Prefix of form field names that carry parameters (`p.path`, `p.owner.name`).
pub const PARAM_PREFIX: &str = "p";
/// How deep nested objects are expanded into fieldsets before falling back to JSON.
const MAX_DEPTH: usize = 6;

/// What kind of input a parameter gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// `<input type=text>` (or a text area for long strings).
    Text,
    /// `<textarea>` for strings that are file contents or blocks.
    LongText,
    /// `<input type=number step=any>`.
    Number,
    /// `<input type=number step=1>`.
    Integer,
    /// A checkbox.
    Boolean,
    /// A `<select>`.
    Enum,
    /// A text area, one array item per line.
    Lines,
    /// A text area holding JSON.
    Json,
}

/// One entry of a generated form: a fieldset boundary or a field.
#[derive(Debug, Clone)]
pub struct FormItem {
    /// `open`, `close` or `field`.
    pub kind: &'static str,
    /// Field or fieldset data (empty for `close`).
    pub field: FormField,
}

/// A form field generated from a schema property.
#[derive(Debug, Clone, Default)]
pub struct FormField {
    /// Form key, e.g. `p.owner.name`.
    pub key: String,
    /// Dotted parameter path, e.g. `owner.name`.
    pub path: String,
    /// Label: the schema's `title`, or the property name.
    pub label: String,
    /// Help text from `description`.
    pub help: String,
    /// Input kind name for templates: `text`, `longtext`, `number`, `integer`, `boolean`,
    /// `enum`, `lines`, `json`.
    pub input: &'static str,
    /// Whether the property is required.
    pub required: bool,
    /// Initial value (the default, formatted for the input).
    pub value: String,
    /// Initial checkbox state.
    pub checked: bool,
    /// `enum` options.
    pub options: Vec<String>,
    /// Type label for tables, e.g. `string`, `array of string`.
    pub type_label: String,
    /// Nesting depth (0 for top-level properties).
    pub depth: usize,
}

/// A row of a method's parameter table in the catalog.
#[derive(Debug, Clone)]
pub struct ParamRow {
    /// Dotted path.
    pub path: String,
    /// Type label.
    pub type_label: String,
    /// Required?
    pub required: bool,
    /// Default as JSON text, or empty.
    pub default: String,
    /// Allowed values, comma-separated, or empty.
    pub allowed: String,
    /// Description.
    pub description: String,
}

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let mut current = schema;
    for _ in 0..8 {
        let Some(reference) = current.get("$ref").and_then(Value::as_str) else {
            return current;
        };
        let Some(pointer) = reference.strip_prefix('#') else {
            return current;
        };
        match root.pointer(pointer) {
            Some(target) => current = target,
            None => return current,
        }
    }
    current
}

fn type_of(schema: &Value) -> Option<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null"),
        _ => None,
    }
}

fn enum_values(schema: &Value) -> Option<Vec<String>> {
    let values = schema.get("enum")?.as_array()?;
    values
        .iter()
        .map(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        })
        .collect::<Option<Vec<_>>>()
        .or_else(|| {
            Some(
                values
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            )
        })
}

fn kind_of(root: &Value, schema: &Value, name: &str) -> FieldKind {
    if enum_values(schema).is_some_and(|v| !v.is_empty()) {
        return FieldKind::Enum;
    }
    match type_of(schema) {
        Some("string") => {
            let long = ["content", "block", "text", "body"]
                .iter()
                .any(|w| name.eq_ignore_ascii_case(w))
                || schema.get("format").and_then(Value::as_str) == Some("textarea");
            if long {
                FieldKind::LongText
            } else {
                FieldKind::Text
            }
        }
        Some("number") => FieldKind::Number,
        Some("integer") => FieldKind::Integer,
        Some("boolean") => FieldKind::Boolean,
        Some("array") => {
            let items = schema.get("items").map(|i| resolve(root, i));
            match items.and_then(type_of) {
                Some("string" | "number" | "integer" | "boolean") => FieldKind::Lines,
                _ => FieldKind::Json,
            }
        }
        _ => FieldKind::Json,
    }
}

fn input_name(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::Text => "text",
        FieldKind::LongText => "longtext",
        FieldKind::Number => "number",
        FieldKind::Integer => "integer",
        FieldKind::Boolean => "boolean",
        FieldKind::Enum => "enum",
        FieldKind::Lines => "lines",
        FieldKind::Json => "json",
    }
}

fn type_label(root: &Value, schema: &Value) -> String {
    if let Some(values) = enum_values(schema)
        && !values.is_empty()
    {
        return "enum".to_owned();
    }
    match type_of(schema) {
        Some("array") => {
            let item = schema
                .get("items")
                .map(|i| resolve(root, i))
                .and_then(type_of)
                .unwrap_or("any");
            format!("array of {item}")
        }
        Some(t) => t.to_owned(),
        None if schema.get("oneOf").is_some() || schema.get("anyOf").is_some() => {
            "one of several shapes".to_owned()
        }
        None => "any".to_owned(),
    }
}

fn is_expandable_object(schema: &Value) -> bool {
    type_of(schema) == Some("object")
        && schema
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| !p.is_empty())
}

fn required_set(schema: &Value) -> Vec<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn default_text(kind: FieldKind, default: Option<&Value>) -> (String, bool) {
    match (kind, default) {
        // `"default": null` (schemars writes it for optional fields) means "no value".
        (_, None | Some(Value::Null)) => (String::new(), false),
        (FieldKind::Boolean, Some(v)) => (String::new(), v.as_bool().unwrap_or(false)),
        (FieldKind::Lines, Some(Value::Array(items))) => (
            items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n"),
            false,
        ),
        (FieldKind::Json, Some(v)) => (serde_json::to_string_pretty(v).unwrap_or_default(), false),
        (_, Some(Value::String(s))) => (s.clone(), false),
        (_, Some(v)) => (v.to_string(), false),
    }
}

/// A property's place when the schema states one: `propertyOrder` (the json-editor
/// keyword) or `x-order`, both integers on the property.
fn stated_order(schema: &Value) -> Option<i64> {
    schema
        .get("propertyOrder")
        .or_else(|| schema.get("x-order"))
        .and_then(Value::as_i64)
}

/// A schema's properties in display order. Object keys reach the console sorted (JSON
/// objects have no order: serde_json sorts them, and so does the Kubernetes API server
/// when it stores the HostPlugin's status), so the plugin's own order survives only where
/// the schema states it: properties with `propertyOrder`/`x-order` come first, by that
/// number; then required ones in the order of `required` (an array, which keeps its
/// order); then the rest by name.
fn ordered_properties(schema: &Value) -> Vec<(&String, &Value)> {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    let required = required_set(schema);
    let mut stated: Vec<(i64, &String, &Value)> = properties
        .iter()
        .filter_map(|(name, prop)| stated_order(prop).map(|n| (n, name, prop)))
        .collect();
    stated.sort_by_key(|(n, _, _)| *n);
    let mut out: Vec<(&String, &Value)> = stated
        .into_iter()
        .map(|(_, name, prop)| (name, prop))
        .collect();
    let placed = |out: &Vec<(&String, &Value)>, name: &String| out.iter().any(|(n, _)| *n == name);
    for name in &required {
        if let Some((key, prop)) = properties.get_key_value(name)
            && !placed(&out, key)
        {
            out.push((key, prop));
        }
    }
    for (name, prop) in properties {
        if !placed(&out, name) {
            out.push((name, prop));
        }
    }
    out
}

/// Builds the form for a method's parameter schema.
pub fn form_items(schema: &Value) -> Vec<FormItem> {
    let mut items = Vec::new();
    let root = schema;
    let top = resolve(root, schema);
    if is_expandable_object(top) {
        push_object(root, top, PARAM_PREFIX, "", 0, &mut items);
    } else if type_of(top) != Some("object") || top.get("additionalProperties").is_some() {
        // Not a plain object of named properties: one JSON field for the whole value.
        items.push(FormItem {
            kind: "field",
            field: FormField {
                key: PARAM_PREFIX.to_owned(),
                path: String::new(),
                label: "Parameters (JSON)".to_owned(),
                help: top
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                input: "json",
                required: false,
                value: "{}".to_owned(),
                type_label: type_label(root, top),
                ..FormField::default()
            },
        });
    }
    items
}

fn push_object(
    root: &Value,
    schema: &Value,
    key_prefix: &str,
    path_prefix: &str,
    depth: usize,
    items: &mut Vec<FormItem>,
) {
    let required = required_set(schema);
    for (name, prop) in ordered_properties(schema) {
        let prop = resolve(root, prop);
        let key = format!("{key_prefix}.{name}");
        let path = if path_prefix.is_empty() {
            name.clone()
        } else {
            format!("{path_prefix}.{name}")
        };
        let label = prop
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or(name)
            .to_owned();
        let help = prop
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let is_required = required.contains(name);
        if is_expandable_object(prop) && depth < MAX_DEPTH {
            items.push(FormItem {
                kind: "open",
                field: FormField {
                    key: key.clone(),
                    path: path.clone(),
                    label,
                    help,
                    required: is_required,
                    depth,
                    type_label: "object".to_owned(),
                    ..FormField::default()
                },
            });
            push_object(root, prop, &key, &path, depth + 1, items);
            items.push(FormItem {
                kind: "close",
                field: FormField::default(),
            });
            continue;
        }
        let kind = kind_of(root, prop, name);
        let (value, checked) = default_text(kind, prop.get("default"));
        items.push(FormItem {
            kind: "field",
            field: FormField {
                key,
                path,
                label,
                help,
                input: input_name(kind),
                required: is_required,
                value,
                checked,
                options: enum_values(prop).unwrap_or_default(),
                type_label: type_label(root, prop),
                depth,
            },
        });
    }
}

/// The parameter table of a method, for the catalog.
pub fn param_rows(schema: &Value) -> Vec<ParamRow> {
    let mut rows = Vec::new();
    let root = schema;
    let top = resolve(root, schema);
    collect_rows(root, top, "", &mut rows, 0);
    rows
}

fn collect_rows(
    root: &Value,
    schema: &Value,
    prefix: &str,
    rows: &mut Vec<ParamRow>,
    depth: usize,
) {
    let required = required_set(schema);
    for (name, prop) in ordered_properties(schema) {
        let prop = resolve(root, prop);
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        rows.push(ParamRow {
            path: path.clone(),
            type_label: type_label(root, prop),
            required: required.contains(name),
            default: prop
                .get("default")
                .map(Value::to_string)
                .unwrap_or_default(),
            allowed: enum_values(prop).unwrap_or_default().join(", "),
            description: prop
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        });
        if is_expandable_object(prop) && depth < MAX_DEPTH {
            collect_rows(root, prop, &path, rows, depth + 1);
        }
    }
}

/// The form pairs that show `params` in the form built by [`form_items`]: the reverse of
/// [`params_from_form`], used to fill the form from an existing task.
pub fn form_pairs(schema: &Value, params: &Value) -> Vec<(String, String)> {
    let root = schema;
    let top = resolve(root, schema);
    let mut pairs = Vec::new();
    if is_expandable_object(top) {
        pairs_of_object(root, top, PARAM_PREFIX, params, 0, &mut pairs);
    } else if !params.is_null() {
        pairs.push((
            PARAM_PREFIX.to_owned(),
            serde_json::to_string_pretty(params).unwrap_or_default(),
        ));
    }
    pairs
}

fn pairs_of_object(
    root: &Value,
    schema: &Value,
    key_prefix: &str,
    value: &Value,
    depth: usize,
    pairs: &mut Vec<(String, String)>,
) {
    for (name, prop) in ordered_properties(schema) {
        let prop = resolve(root, prop);
        let Some(item) = value.get(name) else {
            continue;
        };
        let key = format!("{key_prefix}.{name}");
        if is_expandable_object(prop) && depth < MAX_DEPTH {
            pairs_of_object(root, prop, &key, item, depth + 1, pairs);
            continue;
        }
        let text = match (kind_of(root, prop, name), item) {
            (FieldKind::Boolean, Value::Bool(true)) => "on".to_owned(),
            (FieldKind::Boolean, _) => continue,
            (FieldKind::Lines, Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n"),
            (FieldKind::Json, other) => serde_json::to_string_pretty(other).unwrap_or_default(),
            (_, Value::String(s)) => s.clone(),
            (_, other) => other.to_string(),
        };
        pairs.push((key, text));
    }
}

/// Builds the parameter JSON from submitted form pairs, guided by the schema. Empty
/// optional fields are left out so the plugin's defaults apply. Returns the problems
/// found (one message per field) when some input cannot be converted.
pub fn params_from_form(schema: &Value, pairs: &[(String, String)]) -> Result<Value, Vec<String>> {
    let root = schema;
    let top = resolve(root, schema);
    let mut errors = Vec::new();
    let value = if is_expandable_object(top) {
        Value::Object(object_from_form(
            root,
            top,
            PARAM_PREFIX,
            "",
            0,
            pairs,
            &mut errors,
        ))
    } else {
        let text = lookup(pairs, PARAM_PREFIX).unwrap_or_default();
        if text.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            match serde_json::from_str(text) {
                Ok(v) => v,
                Err(err) => {
                    errors.push(format!("Parameters: not valid JSON ({err})"));
                    Value::Null
                }
            }
        }
    };
    if errors.is_empty() {
        Ok(value)
    } else {
        Err(errors)
    }
}

fn lookup<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn object_from_form(
    root: &Value,
    schema: &Value,
    key_prefix: &str,
    path_prefix: &str,
    depth: usize,
    pairs: &[(String, String)],
    errors: &mut Vec<String>,
) -> Map<String, Value> {
    let mut out = Map::new();
    let required = required_set(schema);
    for (name, prop) in ordered_properties(schema) {
        let prop = resolve(root, prop);
        let key = format!("{key_prefix}.{name}");
        let path = if path_prefix.is_empty() {
            name.clone()
        } else {
            format!("{path_prefix}.{name}")
        };
        let is_required = required.contains(name);
        if is_expandable_object(prop) && depth < MAX_DEPTH {
            let child = object_from_form(root, prop, &key, &path, depth + 1, pairs, errors);
            if !child.is_empty() || is_required {
                out.insert(name.clone(), Value::Object(child));
            }
            continue;
        }
        let kind = kind_of(root, prop, name);
        if kind == FieldKind::Boolean {
            // An unticked checkbox sends nothing; send false only when it matters.
            let ticked = lookup(pairs, &key).is_some();
            if ticked || is_required || prop.get("default").is_some() {
                out.insert(name.clone(), Value::Bool(ticked));
            }
            continue;
        }
        let raw = lookup(pairs, &key).unwrap_or_default();
        let text = if kind == FieldKind::LongText {
            // Browsers send CRLF line ends from text areas; files on nodes use LF.
            raw.replace("\r\n", "\n")
        } else {
            raw.trim().to_owned()
        };
        if text.is_empty() {
            if is_required && matches!(kind, FieldKind::Text | FieldKind::LongText) {
                out.insert(name.clone(), Value::String(String::new()));
            } else if is_required {
                errors.push(format!("{path}: required"));
            }
            continue;
        }
        match convert(root, prop, kind, &text) {
            Ok(value) => {
                out.insert(name.clone(), value);
            }
            Err(problem) => errors.push(format!("{path}: {problem}")),
        }
    }
    out
}

fn convert(root: &Value, schema: &Value, kind: FieldKind, text: &str) -> Result<Value, String> {
    match kind {
        FieldKind::Text | FieldKind::LongText => Ok(Value::String(text.to_owned())),
        FieldKind::Enum => {
            let options = enum_values(schema).unwrap_or_default();
            if !options.iter().any(|o| o == text) {
                return Err("not one of the allowed values".to_owned());
            }
            // Keep the enum value's JSON type (numbers stay numbers).
            let as_json: Option<Value> = serde_json::from_str(text).ok();
            let original = schema
                .get("enum")
                .and_then(Value::as_array)
                .and_then(|values| {
                    values.iter().find(|v| match v {
                        Value::String(s) => s == text,
                        other => as_json.as_ref() == Some(*other),
                    })
                })
                .cloned();
            Ok(original.unwrap_or_else(|| Value::String(text.to_owned())))
        }
        FieldKind::Number => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| "not a number".to_owned()),
        FieldKind::Integer => text
            .parse::<i64>()
            .map(|n| Value::Number(n.into()))
            .map_err(|_| "not a whole number".to_owned()),
        FieldKind::Boolean => Ok(Value::Bool(text == "on" || text == "true")),
        FieldKind::Lines => {
            let item_schema = schema
                .get("items")
                .map(|i| resolve(root, i))
                .cloned()
                .unwrap_or(Value::Null);
            let item_kind = match type_of(&item_schema) {
                Some("number") => FieldKind::Number,
                Some("integer") => FieldKind::Integer,
                Some("boolean") => FieldKind::Boolean,
                _ => FieldKind::Text,
            };
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|line| convert(root, &item_schema, item_kind, line))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        FieldKind::Json => {
            serde_json::from_str(text).map_err(|err| format!("not valid JSON ({err})"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["path", "line"],
            "properties": {
                "path": {"type": "string", "description": "File under /etc"},
                "line": {"type": "string"},
                "content": {"type": "string"},
                "mode": {"type": "integer", "default": 420},
                "regexp": {"type": ["string", "null"], "default": null},
                "ratio": {"type": "number"},
                "backup": {"type": "boolean", "default": true},
                "position": {"type": "string", "enum": ["start", "end"], "default": "end"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "ports": {"type": "array", "items": {"type": "integer"}},
                "owner": {"type": "object", "properties": {
                    "user": {"type": "string"}, "uid": {"type": "integer"}}},
                "extra": {"type": "array", "items": {"type": "object"}}
            }
        })
    }

    #[test]
    fn form_covers_every_kind() {
        let items = form_items(&schema());
        let inputs: Vec<(&str, &str)> = items
            .iter()
            .filter(|i| i.kind == "field")
            .map(|i| (i.field.path.as_str(), i.field.input))
            .collect();
        assert!(inputs.contains(&("path", "text")));
        assert!(inputs.contains(&("content", "longtext")));
        assert!(inputs.contains(&("mode", "integer")));
        assert!(inputs.contains(&("ratio", "number")));
        assert!(inputs.contains(&("backup", "boolean")));
        assert!(inputs.contains(&("position", "enum")));
        assert!(inputs.contains(&("tags", "lines")));
        assert!(inputs.contains(&("owner.user", "text")));
        assert!(inputs.contains(&("extra", "json")));
        assert!(
            items
                .iter()
                .any(|i| i.kind == "open" && i.field.path == "owner")
        );
        let mode = items.iter().find(|i| i.field.path == "mode").expect("mode");
        assert_eq!(mode.field.value, "420");
        let regexp = items
            .iter()
            .find(|i| i.field.path == "regexp")
            .expect("regexp");
        assert_eq!(
            regexp.field.value, "",
            "a null default leaves the field empty"
        );
        let path = items.iter().find(|i| i.field.path == "path").expect("path");
        assert!(path.field.required);
        assert_eq!(path.field.help, "File under /etc");
    }

    #[test]
    fn form_values_become_typed_json() {
        let pairs: Vec<(String, String)> = [
            ("p.path", "/etc/chrony.conf"),
            ("p.line", "server ntp iburst"),
            ("p.mode", "384"),
            ("p.ratio", "0.5"),
            ("p.position", "start"),
            ("p.tags", "a\r\nb\n\n"),
            ("p.ports", "80\n443"),
            ("p.owner.user", "root"),
            ("p.extra", "[{\"x\":1}]"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let params = params_from_form(&schema(), &pairs).expect("valid");
        assert_eq!(
            params,
            json!({
                "path": "/etc/chrony.conf", "line": "server ntp iburst", "mode": 384,
                "ratio": 0.5, "backup": false, "position": "start", "tags": ["a", "b"],
                "ports": [80, 443], "owner": {"user": "root"}, "extra": [{"x": 1}]
            })
        );
    }

    #[test]
    fn bad_input_is_reported_per_field() {
        let pairs = vec![
            ("p.path".to_owned(), "/etc/x".to_owned()),
            ("p.mode".to_owned(), "rw".to_owned()),
            ("p.position".to_owned(), "middle".to_owned()),
        ];
        let errors = params_from_form(&schema(), &pairs).expect_err("invalid");
        assert!(errors.iter().any(|e| e.starts_with("mode:")));
        assert!(errors.iter().any(|e| e.starts_with("position:")));
    }

    #[test]
    fn form_pairs_read_back_into_the_same_params() {
        let params = json!({
            "path": "/etc/chrony.conf", "line": "server ntp iburst", "mode": 384,
            "ratio": 0.5, "backup": true, "position": "start", "tags": ["a", "b"],
            "ports": [80, 443], "owner": {"user": "root"}, "extra": [{"x": 1}]
        });
        let pairs = form_pairs(&schema(), &params);
        assert_eq!(params_from_form(&schema(), &pairs), Ok(params));
    }

    #[test]
    fn stated_order_comes_first_then_required_then_names() {
        let schema = json!({
            "type": "object",
            "required": ["zeta", "alpha"],
            "properties": {
                "alpha": {"type": "string"},
                "beta": {"type": "string"},
                "zeta": {"type": "string"},
                "last": {"type": "string", "propertyOrder": 2},
                "first": {"type": "string", "x-order": 1}
            }
        });
        let order: Vec<String> = form_items(&schema)
            .into_iter()
            .map(|i| i.field.path)
            .collect();
        assert_eq!(order, ["first", "last", "zeta", "alpha", "beta"]);
    }

    #[test]
    fn refs_are_resolved() {
        let schema = json!({
            "$ref": "#/$defs/P",
            "$defs": {"P": {"type": "object", "properties": {"name": {"type": "string"}}}}
        });
        let rows = param_rows(&schema);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].path, "name");
    }
}

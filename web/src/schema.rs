//! A method's parameters in the console: the new-task form, the catalog's parameter
//! tables, and back from a submitted form to JSON.
//!
//! What a parameter is — its kind, its allowed values and their descriptions, whether it
//! is required, its default, its place in the order — comes from the one reader shared
//! with `kubectl hostplug` and the operator ([`hostplug_api::schema`]); this module only
//! picks the input that shows each kind: a text box, a text area for file contents, a
//! number, a checkbox, a `<select>` for every enum (whatever form schemars wrote it in),
//! one array item per line, a fieldset per nested object, and a JSON text area for the
//! rest (unions, arrays of objects, free maps), so every schema can still be filled in.
//! The form is a flat list of [`FormItem`]s so templates stay simple and autoescaped.
//!
//! Turning the form into JSON only converts text into values of the field's kind; whether
//! the result is valid is decided by [`hostplug_api::schema::check_params`], which the
//! console applies before it creates a task. This module must never judge parameters by
//! rules of its own.

use hostplug_api::schema::{Choice, Field, Kind, ParamSchema, TASK_PARAMETER_FIELD};
use serde_json::{Map, Value};

/// Prefix of form field names that carry parameters (`p.path`, `p.owner.name`).
pub const PARAM_PREFIX: &str = "p";

/// What kind of input a parameter gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// `<input type=text>`.
    Text,
    /// `<textarea>` for strings that are file contents or blocks.
    LongText,
    /// `<input type=number step=any>`.
    Number,
    /// `<input type=number step=1>`.
    Integer,
    /// A checkbox.
    Boolean,
    /// A `<select>` of the enum's values.
    Enum,
    /// A text area, one array item per line.
    Lines,
    /// A text area holding JSON.
    Json,
}

impl FieldKind {
    /// The input for a field.
    fn of(field: &Field) -> Self {
        match &field.kind {
            Kind::Enum(_) => Self::Enum,
            Kind::String => {
                let long = ["content", "block", "text", "body"]
                    .iter()
                    .any(|w| field.name.eq_ignore_ascii_case(w))
                    || field.format.as_deref() == Some("textarea");
                if long { Self::LongText } else { Self::Text }
            }
            Kind::Number => Self::Number,
            Kind::Integer => Self::Integer,
            Kind::Boolean => Self::Boolean,
            Kind::Array(item) if item.is_scalar() || item.choices().is_some() => Self::Lines,
            _ => Self::Json,
        }
    }

    /// The input kind's name for templates.
    fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::LongText => "longtext",
            Self::Number => "number",
            Self::Integer => "integer",
            Self::Boolean => "boolean",
            Self::Enum => "enum",
            Self::Lines => "lines",
            Self::Json => "json",
        }
    }
}

/// One entry of a generated form: a fieldset boundary or a field.
#[derive(Debug, Clone)]
pub struct FormItem {
    /// `open`, `close` or `field`.
    pub kind: &'static str,
    /// Field or fieldset data (empty for `close`).
    pub field: FormField,
}

/// One option of an enum's `<select>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormOption {
    /// The value as submitted and shown.
    pub value: String,
    /// What it means, from the schema (empty when it says nothing).
    pub description: String,
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
    /// An enum's values, with their descriptions.
    pub options: Vec<FormOption>,
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

fn options(choices: &[Choice]) -> Vec<FormOption> {
    choices
        .iter()
        .map(|c| FormOption {
            value: c.label(),
            description: c
                .description
                .as_deref()
                .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        })
        .collect()
}

/// A value as the input of `kind` shows it.
fn text_of(kind: FieldKind, value: &Value) -> String {
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match (kind, value) {
        (FieldKind::Lines, Value::Array(items)) => {
            items.iter().map(scalar).collect::<Vec<_>>().join("\n")
        }
        (FieldKind::Json, v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        (_, v) => scalar(v),
    }
}

/// The JSON form field for parameters that are not an object of named fields.
fn whole_value_field(read: &ParamSchema) -> FormField {
    FormField {
        key: PARAM_PREFIX.to_owned(),
        label: "Parameters (JSON)".to_owned(),
        help: read.description.clone().unwrap_or_default(),
        input: FieldKind::Json.name(),
        value: "{}".to_owned(),
        type_label: read.kind.to_string(),
        ..FormField::default()
    }
}

/// Builds the form for a method's parameter schema, in the one field order.
pub fn form_items(schema: &Value) -> Vec<FormItem> {
    let read = ParamSchema::read(schema);
    let mut items = Vec::new();
    if read.is_free_form() {
        items.push(FormItem {
            kind: "field",
            field: whole_value_field(&read),
        });
    } else {
        push_fields(read.fields(), &mut items);
    }
    items
}

fn push_fields(fields: &[Field], items: &mut Vec<FormItem>) {
    for f in fields {
        let key = format!("{PARAM_PREFIX}.{}", f.path);
        let base = FormField {
            key,
            path: f.path.clone(),
            label: f.label().to_owned(),
            help: f.description.clone().unwrap_or_default(),
            required: f.required,
            type_label: f.kind.to_string(),
            depth: f.depth,
            ..FormField::default()
        };
        if f.is_group() {
            items.push(FormItem {
                kind: "open",
                field: base,
            });
            push_fields(f.kind.fields(), items);
            items.push(FormItem {
                kind: "close",
                field: FormField::default(),
            });
            continue;
        }
        let kind = FieldKind::of(f);
        let (value, checked) = match (&f.default, kind) {
            (None, _) => (String::new(), false),
            (Some(v), FieldKind::Boolean) => (String::new(), v.as_bool().unwrap_or(false)),
            (Some(v), kind) => (text_of(kind, v), false),
        };
        let choices = match &f.kind {
            Kind::Array(item) => item.choices(),
            other => other.choices(),
        };
        items.push(FormItem {
            kind: "field",
            field: FormField {
                input: kind.name(),
                value,
                checked,
                options: choices.map(options).unwrap_or_default(),
                ..base
            },
        });
    }
}

/// The parameter table of a method, for the catalog: every field in the one order,
/// each object before its own fields.
pub fn param_rows(schema: &Value) -> Vec<ParamRow> {
    ParamSchema::read(schema)
        .walk()
        .into_iter()
        .map(|f| ParamRow {
            path: f.path.clone(),
            type_label: f.kind.to_string(),
            required: f.required,
            default: f.default.as_ref().map(Value::to_string).unwrap_or_default(),
            allowed: f
                .kind
                .choices()
                .map(|c| c.iter().map(Choice::label).collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
            description: f.summary(),
        })
        .collect()
}

/// The form pairs that show `params` in the form built by [`form_items`]: the reverse of
/// [`params_from_form`], used to fill the form from an existing task.
pub fn form_pairs(schema: &Value, params: &Value) -> Vec<(String, String)> {
    let read = ParamSchema::read(schema);
    let mut pairs = Vec::new();
    if !read.is_free_form() {
        pairs_of_fields(read.fields(), params, &mut pairs);
    } else if !params.is_null() {
        pairs.push((
            PARAM_PREFIX.to_owned(),
            serde_json::to_string_pretty(params).unwrap_or_default(),
        ));
    }
    pairs
}

fn pairs_of_fields(fields: &[Field], value: &Value, pairs: &mut Vec<(String, String)>) {
    for f in fields {
        let Some(item) = value.get(&f.name) else {
            continue;
        };
        if f.is_group() {
            pairs_of_fields(f.kind.fields(), item, pairs);
            continue;
        }
        let kind = FieldKind::of(f);
        let text = match (kind, item) {
            (FieldKind::Boolean, Value::Bool(true)) => "on".to_owned(),
            (FieldKind::Boolean, _) => continue,
            (kind, item) => text_of(kind, item),
        };
        pairs.push((format!("{PARAM_PREFIX}.{}", f.path), text));
    }
}

/// Builds the parameter JSON from submitted form pairs, guided by the schema. Empty
/// optional fields are left out so the plugin's defaults apply. Returns the problems
/// found (one message per field, named `spec.http.parameter.<path>`) when some input
/// cannot be converted to its field's kind.
pub fn params_from_form(schema: &Value, pairs: &[(String, String)]) -> Result<Value, Vec<String>> {
    let read = ParamSchema::read(schema);
    let mut errors = Vec::new();
    let value = if !read.is_free_form() {
        Value::Object(object_from_form(read.fields(), pairs, &mut errors))
    } else {
        let text = lookup(pairs, PARAM_PREFIX).unwrap_or_default();
        if text.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            match serde_json::from_str(text) {
                Ok(v) => v,
                Err(err) => {
                    errors.push(format!("{TASK_PARAMETER_FIELD}: not valid JSON ({err})"));
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
    fields: &[Field],
    pairs: &[(String, String)],
    errors: &mut Vec<String>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for f in fields {
        let key = format!("{PARAM_PREFIX}.{}", f.path);
        if f.is_group() {
            let child = object_from_form(f.kind.fields(), pairs, errors);
            if !child.is_empty() || f.required {
                out.insert(f.name.clone(), Value::Object(child));
            }
            continue;
        }
        let kind = FieldKind::of(f);
        if kind == FieldKind::Boolean {
            // An unticked checkbox sends nothing; send false only when it matters.
            let ticked = lookup(pairs, &key).is_some();
            if ticked || f.required || f.default.is_some() {
                out.insert(f.name.clone(), Value::Bool(ticked));
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
            if f.required && matches!(kind, FieldKind::Text | FieldKind::LongText) {
                out.insert(f.name.clone(), Value::String(String::new()));
            } else if f.required {
                errors.push(format!("{TASK_PARAMETER_FIELD}.{}: required", f.path));
            }
            continue;
        }
        match convert(&f.kind, kind, &text) {
            Ok(value) => {
                out.insert(f.name.clone(), value);
            }
            Err(problem) => errors.push(format!("{TASK_PARAMETER_FIELD}.{}: {problem}", f.path)),
        }
    }
    out
}

/// The enum value whose text is `text` (numbers stay numbers); another text stays the
/// text, for the schema check to refuse by name.
fn choice_value(choices: &[Choice], text: &str) -> Value {
    choices
        .iter()
        .find(|c| c.label() == text)
        .map(|c| c.value.clone())
        .unwrap_or_else(|| Value::String(text.to_owned()))
}

fn convert(kind: &Kind, input: FieldKind, text: &str) -> Result<Value, String> {
    match input {
        FieldKind::Text | FieldKind::LongText => Ok(Value::String(text.to_owned())),
        FieldKind::Enum => Ok(choice_value(kind.choices().unwrap_or_default(), text)),
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
            let item = match kind {
                Kind::Array(item) => item.as_ref(),
                other => other,
            };
            let item_input = match item {
                Kind::Number => FieldKind::Number,
                Kind::Integer => FieldKind::Integer,
                Kind::Boolean => FieldKind::Boolean,
                Kind::Enum(_) => FieldKind::Enum,
                _ => FieldKind::Text,
            };
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|line| convert(item, item_input, line))
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
                "state": {"$ref": "#/$defs/State", "description": "Whether it is there."},
                "tags": {"type": "array", "items": {"type": "string"}},
                "ports": {"type": "array", "items": {"type": "integer"}},
                "owner": {"type": "object", "properties": {
                    "user": {"type": "string"}, "uid": {"type": "integer"}}},
                "extra": {"type": "array", "items": {"type": "object"}}
            },
            "$defs": {"State": {"oneOf": [
                {"type": "string", "const": "present", "description": "It is in the file."},
                {"type": "string", "const": "absent", "description": "It is gone."}
            ]}}
        })
    }

    fn field<'a>(items: &'a [FormItem], path: &str) -> &'a FormField {
        &items
            .iter()
            .find(|i| i.kind == "field" && i.field.path == path)
            .unwrap_or_else(|| panic!("no field {path}"))
            .field
    }

    #[test]
    fn form_covers_every_kind() {
        let items = form_items(&schema());
        for (path, input) in [
            ("path", "text"),
            ("content", "longtext"),
            ("mode", "integer"),
            ("ratio", "number"),
            ("backup", "boolean"),
            ("position", "enum"),
            ("state", "enum"),
            ("tags", "lines"),
            ("owner.user", "text"),
            ("extra", "json"),
        ] {
            assert_eq!(field(&items, path).input, input, "{path}");
        }
        assert!(
            items
                .iter()
                .any(|i| i.kind == "open" && i.field.path == "owner")
        );
        assert_eq!(field(&items, "mode").value, "420");
        assert_eq!(field(&items, "regexp").value, "", "a null default is none");
        assert!(field(&items, "path").required);
        assert_eq!(field(&items, "path").help, "File under /etc");
    }

    #[test]
    fn a_documented_enum_is_a_select_with_its_descriptions() {
        let items = form_items(&schema());
        let state = field(&items, "state");
        assert_eq!(state.input, "enum");
        assert_eq!(
            state.options,
            [
                FormOption {
                    value: "present".into(),
                    description: "It is in the file.".into()
                },
                FormOption {
                    value: "absent".into(),
                    description: "It is gone.".into()
                },
            ]
        );
        assert_eq!(state.help, "Whether it is there.");
        let rows = param_rows(&schema());
        let row = rows.iter().find(|r| r.path == "state").expect("row");
        assert_eq!(
            (row.type_label.as_str(), row.allowed.as_str()),
            ("enum", "present, absent")
        );
    }

    #[test]
    fn form_values_become_typed_json() {
        let pairs: Vec<(String, String)> = [
            ("p.path", "/etc/chrony.conf"),
            ("p.line", "server ntp iburst"),
            ("p.mode", "384"),
            ("p.ratio", "0.5"),
            ("p.position", "start"),
            ("p.state", "absent"),
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
                "ratio": 0.5, "backup": false, "position": "start", "state": "absent",
                "tags": ["a", "b"], "ports": [80, 443], "owner": {"user": "root"},
                "extra": [{"x": 1}]
            })
        );
    }

    #[test]
    fn unconvertible_input_is_named_and_enums_are_left_to_the_schema_check() {
        let pairs = vec![
            ("p.path".to_owned(), "/etc/x".to_owned()),
            ("p.mode".to_owned(), "rw".to_owned()),
            ("p.position".to_owned(), "middle".to_owned()),
        ];
        let errors = params_from_form(&schema(), &pairs).expect_err("invalid");
        assert!(
            errors
                .iter()
                .any(|e| e == "spec.http.parameter.mode: not a whole number"),
            "{errors:?}"
        );
        let pairs = vec![
            ("p.path".to_owned(), "/etc/x".to_owned()),
            ("p.position".to_owned(), "middle".to_owned()),
        ];
        let params = params_from_form(&schema(), &pairs).expect("converted");
        assert_eq!(params["position"], json!("middle"));
        let e =
            hostplug_api::schema::check_params(Some(&schema()), "m", &params, TASK_PARAMETER_FIELD)
                .expect_err("not an allowed value");
        assert_eq!(
            e.to_string(),
            "spec.http.parameter.position: must be one of \"start\", \"end\""
        );
    }

    #[test]
    fn form_pairs_read_back_into_the_same_params() {
        let params = json!({
            "path": "/etc/chrony.conf", "line": "server ntp iburst", "mode": 384,
            "ratio": 0.5, "backup": true, "position": "start", "state": "present",
            "tags": ["a", "b"], "ports": [80, 443], "owner": {"user": "root"},
            "extra": [{"x": 1}]
        });
        let pairs = form_pairs(&schema(), &params);
        assert_eq!(params_from_form(&schema(), &pairs), Ok(params));
    }

    #[test]
    fn fields_come_in_the_one_order() {
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
        let rows: Vec<String> = param_rows(&schema).into_iter().map(|r| r.path).collect();
        assert_eq!(rows, order);
    }

    #[test]
    fn a_method_without_parameters_has_no_fields() {
        let none = json!({"type": "object", "properties": {}, "additionalProperties": false});
        assert!(form_items(&none).is_empty());
        let map = json!({"type": "object", "additionalProperties": {"type": "string"}});
        assert_eq!(form_items(&map)[0].field.input, "json");
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

//! A method's parameter schema, read once for everyone who shows or checks parameters.
//!
//! Plugins describe each method's parameters with a JSON Schema (the SDK derives it with
//! schemars). Three parts read it: the console (the new-task form, the catalog's
//! parameter tables), `kubectl hostplug` (`explain`, typing `--param NAME=VALUE`,
//! completions) and the check made before a plugin runs (the operator's validation of a
//! HostTask, `hostplug plugin run`, the console before it creates a task). All of them
//! use this module, so a parameter has one type, one list of allowed values and one place
//! in the order wherever it is shown.
//!
//! [`ParamSchema::read`] turns a schema into [`Field`]s, each of a [`Kind`]. It reads
//! every form schemars 1.x writes (draft 2020-12, draft-07 and OpenAPI 3 settings):
//! * **enums**: `enum: [...]`; a lone `const`; a `oneOf`/`anyOf` whose alternatives are
//!   all `const`s or `enum`s — schemars' form for an enum whose variants have doc
//!   comments; each variant's description is kept ([`Choice`]);
//! * **local references**: `$ref` to `#/$defs/…`, `#/definitions/…` or
//!   `#/components/schemas/…`, bare or wrapped in a one-element `allOf`; the property's own
//!   description, title and default win over the target's;
//! * **nullable values**: `type: [X, "null"]`, `nullable: true`, a `null` alternative in
//!   `anyOf`/`oneOf` (`Option<Enum>`), `null` in an `enum`;
//! * arrays (`items`), nested objects (expanded up to [`MAX_DEPTH`]) and other unions.
//!
//! **The one field order** of every form, table and list: properties with a stated
//! place first, by that number — `x-order` (what the hostplug SDK writes: the field's
//! place in its struct), else `propertyOrder`; then the properties without one, required
//! ones first in the order of `required`, then the rest by name. JSON objects lose their
//! key order on the way through the API server (it stores a HostPlugin's status with
//! sorted keys); a stated place and the `required` array are what survive of the
//! plugin's own order.
//!
//! [`check_params`] validates parameters against the schema with the `jsonschema` crate
//! (the whole of JSON Schema, not only what the reader shows) and names the offending
//! field under a root the caller chooses ([`TASK_PARAMETER_FIELD`] for a task):
//! `spec.http.parameter.state: must be one of "present", "absent"`.
//!
//! Pure: no I/O. It must never follow a reference out of the schema itself (no network,
//! no files): only `#…` pointers into the same document are resolved, and the validator
//! is built without remote resolution.

use std::fmt;

use serde_json::{Map, Value};

/// How deep nested objects are expanded into fields of their own; deeper ones are a
/// single field of kind `object`. Real plugin schemas are two levels deep at most; the
/// bound keeps a recursive type (a `$ref` to itself) finite.
pub const MAX_DEPTH: usize = 6;

/// Hops followed along a chain of `$ref`s before giving up: a chain is one or two hops
/// long in practice; the bound stops a cycle.
const MAX_REF_HOPS: usize = 8;

/// Parameter errors listed in one message: 5. Enough to fix a task in one go, short
/// enough that a status message stays readable.
pub const MAX_REPORTED_PARAM_ERRORS: usize = 5;

/// Longest text of one problem, in characters: the validator quotes the offending
/// value, which may be a whole file's content; 200 characters show what it was.
pub const MAX_PROBLEM_CHARS: usize = 200;

/// Where a HostTask's parameters are, as errors name them.
pub const TASK_PARAMETER_FIELD: &str = "spec.http.parameter";

/// The keywords that state a property's place, in order of preference: `x-order` (what
/// the hostplug SDK writes) and `propertyOrder` (json-editor's).
pub const ORDER_KEYWORDS: [&str; 2] = ["x-order", "propertyOrder"];

/// One allowed value of an enum.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The value as it goes into the parameters.
    pub value: Value,
    /// What it means (the variant's doc comment), when the schema says.
    pub description: Option<String>,
}

impl Choice {
    /// The value as people type it: a string as it is, anything else as JSON.
    pub fn label(&self) -> String {
        match &self.value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

/// What is allowed besides an object's named properties (`additionalProperties`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    /// `additionalProperties: false`: only the named properties.
    Refused,
    /// Not said: anything is allowed, nothing is expected.
    Unstated,
    /// `true` or a schema: a map of free names is expected.
    Allowed,
}

/// What values a parameter takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A string.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// One of a list of values.
    Enum(Vec<Choice>),
    /// A list of values of one kind.
    Array(Box<Kind>),
    /// An object: its named properties, in the one order, and what else it allows.
    Object {
        /// Its named properties ([`MAX_DEPTH`] deep at most; empty beyond).
        fields: Vec<Field>,
        /// Whether other names are refused, allowed, or expected.
        extra: Extra,
    },
    /// One of several shapes (a `oneOf`/`anyOf` that is not an enum).
    OneOf(Vec<Kind>),
    /// Anything the schema does not narrow to one of the above.
    Any,
}

impl Kind {
    /// The allowed values, when this is an enum (or a list of one).
    pub fn choices(&self) -> Option<&[Choice]> {
        match self {
            Self::Enum(choices) => Some(choices),
            _ => None,
        }
    }

    /// The named fields of an object; empty for anything else.
    pub fn fields(&self) -> &[Field] {
        match self {
            Self::Object { fields, .. } => fields,
            _ => &[],
        }
    }

    /// Whether this is a string, number, integer or boolean.
    pub fn is_scalar(&self) -> bool {
        matches!(
            self,
            Self::String | Self::Integer | Self::Number | Self::Boolean
        )
    }

    /// The kind of the value at a path of object keys and array indices below this one.
    fn at<'a>(&'a self, path: &[String]) -> Option<&'a Kind> {
        let Some((first, rest)) = path.split_first() else {
            return Some(self);
        };
        match self {
            Self::Object { fields, .. } => fields
                .iter()
                .find(|f| &f.name == first)
                .and_then(|f| f.kind.at(rest)),
            Self::Array(item) if first.bytes().all(|b| b.is_ascii_digit()) => item.at(rest),
            _ => None,
        }
    }
}

/// The type as one word or a few, the same in the console and `kubectl hostplug`:
/// `string`, `integer`, `enum`, `array of string`, `object`, `string | integer`, `any`.
impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::String => f.write_str("string"),
            Self::Integer => f.write_str("integer"),
            Self::Number => f.write_str("number"),
            Self::Boolean => f.write_str("boolean"),
            Self::Enum(_) => f.write_str("enum"),
            Self::Array(item) => write!(f, "array of {item}"),
            Self::Object { .. } => f.write_str("object"),
            Self::OneOf(kinds) => {
                for (i, k) in kinds.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" | ")?;
                    }
                    write!(f, "{k}")?;
                }
                Ok(())
            }
            Self::Any => f.write_str("any"),
        }
    }
}

/// One named parameter (a property of an object).
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The property's name.
    pub name: String,
    /// Its dotted path from the top (`owner.name`).
    pub path: String,
    /// Nesting depth: 0 for a top-level parameter.
    pub depth: usize,
    /// The schema's `title`.
    pub title: Option<String>,
    /// The schema's `description`.
    pub description: Option<String>,
    /// Whether its object requires it.
    pub required: bool,
    /// Whether `null` is allowed too.
    pub nullable: bool,
    /// The schema's default (a `null` default, which schemars writes for an `Option`,
    /// counts as none).
    pub default: Option<Value>,
    /// The schema's `format` (`uint32`, `textarea`, …).
    pub format: Option<String>,
    /// What values it takes.
    pub kind: Kind,
}

impl Field {
    /// Its label: the title, else the name.
    pub fn label(&self) -> &str {
        self.title.as_deref().unwrap_or(&self.name)
    }

    /// Its description on one line (doc comments arrive wrapped), else its title.
    pub fn summary(&self) -> String {
        self.description
            .as_deref()
            .or(self.title.as_deref())
            .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    }

    /// Whether it is an object shown as fields of its own.
    pub fn is_group(&self) -> bool {
        !self.kind.fields().is_empty()
    }
}

/// A method's parameter schema as read: the kind of the whole parameter value (for
/// every hostplug plugin an object of named fields).
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSchema {
    /// The kind of the parameters as a whole.
    pub kind: Kind,
    /// The schema's own description.
    pub description: Option<String>,
}

impl ParamSchema {
    /// Reads a schema. Anything it does not understand becomes [`Kind::Any`]: reading
    /// never fails, so every schema can still be filled in (as JSON).
    pub fn read(schema: &Value) -> Self {
        let read = Reader { root: schema }.read(schema, "", 0);
        Self {
            kind: read.kind,
            description: read.description,
        }
    }

    /// The top-level fields in the one order (empty when the parameters are not an
    /// object of named fields).
    pub fn fields(&self) -> &[Field] {
        self.kind.fields()
    }

    /// Whether the parameters are one free value (not an object of named fields, and
    /// not an object that takes nothing): the console shows a JSON text area for it.
    pub fn is_free_form(&self) -> bool {
        match &self.kind {
            Kind::Object { fields, extra } => fields.is_empty() && *extra == Extra::Allowed,
            _ => true,
        }
    }

    /// Every field depth first in the one order, each object before its own fields.
    pub fn walk(&self) -> Vec<&Field> {
        fn go<'a>(fields: &'a [Field], out: &mut Vec<&'a Field>) {
            for f in fields {
                out.push(f);
                go(f.kind.fields(), out);
            }
        }
        let mut out = Vec::new();
        go(self.fields(), &mut out);
        out
    }

    /// The fields that are not objects of fields, depth first in the one order, each
    /// with whether it must be given (required, and its objects required too).
    pub fn leaves(&self) -> Vec<(&Field, bool)> {
        fn go<'a>(fields: &'a [Field], parent_required: bool, out: &mut Vec<(&'a Field, bool)>) {
            for f in fields {
                let required = parent_required && f.required;
                if f.is_group() {
                    go(f.kind.fields(), required, out);
                } else {
                    out.push((f, required));
                }
            }
        }
        let mut out = Vec::new();
        go(self.fields(), true, &mut out);
        out
    }

    /// The field at a dotted path (`owner.name`).
    pub fn field(&self, path: &str) -> Option<&Field> {
        let mut fields = self.fields();
        let mut found = None;
        for part in path.split('.') {
            let f = fields.iter().find(|f| f.name == part)?;
            fields = f.kind.fields();
            found = Some(f);
        }
        found
    }

    /// The names an object at a JSON pointer takes, in the one order.
    fn names_at(&self, pointer: &[String]) -> Option<Vec<&str>> {
        match self.kind.at(pointer)? {
            Kind::Object { fields, .. } => Some(fields.iter().map(|f| f.name.as_str()).collect()),
            _ => None,
        }
    }
}

/// What [`Reader::read`] learns of one subschema.
struct Read {
    kind: Kind,
    nullable: bool,
    title: Option<String>,
    description: Option<String>,
    default: Option<Value>,
    format: Option<String>,
}

/// Annotations gathered on the way through references and wrappers: the first one seen
/// (the outermost, the property's own) wins.
#[derive(Default)]
struct Notes {
    title: Option<String>,
    description: Option<String>,
    default: Option<Value>,
    format: Option<String>,
    nullable: bool,
}

impl Notes {
    fn take(&mut self, schema: &Value) {
        let text = |key: &str| schema.get(key).and_then(Value::as_str).map(str::to_owned);
        if self.title.is_none() {
            self.title = text("title");
        }
        if self.description.is_none() {
            self.description = text("description");
        }
        if self.default.is_none() {
            self.default = schema.get("default").filter(|d| !d.is_null()).cloned();
        }
        if self.format.is_none() {
            self.format = text("format");
        }
        if schema.get("nullable") == Some(&Value::Bool(true)) {
            self.nullable = true;
        }
    }
}

struct Reader<'a> {
    root: &'a Value,
}

impl<'a> Reader<'a> {
    /// Follows `$ref`s and one-element `allOf` wrappers to the schema that says what the
    /// value is, gathering the annotations on the way.
    fn unwrap(&self, mut schema: &'a Value, notes: &mut Notes) -> &'a Value {
        for _ in 0..MAX_REF_HOPS {
            notes.take(schema);
            let target = match (schema.get("$ref"), schema.get("allOf")) {
                (Some(Value::String(r)), _) => r
                    .strip_prefix('#')
                    .and_then(|pointer| self.root.pointer(pointer)),
                (None, Some(Value::Array(all))) if all.len() == 1 => all.first(),
                _ => None,
            };
            match target {
                Some(next) => schema = next,
                None => return schema,
            }
        }
        schema
    }

    fn read(&self, schema: &'a Value, path: &str, depth: usize) -> Read {
        let mut notes = Notes::default();
        let schema = self.unwrap(schema, &mut notes);
        let kind = self.kind(schema, path, depth, &mut notes);
        Read {
            kind,
            nullable: notes.nullable,
            title: notes.title,
            description: notes.description,
            default: notes.default,
            format: notes.format,
        }
    }

    fn kind(&self, schema: &'a Value, path: &str, depth: usize, notes: &mut Notes) -> Kind {
        // Alternatives: `null` ones make the value nullable; all-constant ones are an
        // enum; a lone other one is the value's own schema (`Option<T>`); several are a
        // union — unless the schema has a shape of its own, when they only constrain it
        // (`anyOf` of `required` lists).
        let own_shape = schema.get("type").is_some() || schema.get("properties").is_some();
        if let Some(alts) = schema
            .get("oneOf")
            .or_else(|| schema.get("anyOf"))
            .and_then(Value::as_array)
        {
            let mut rest = Vec::new();
            for alt in alts {
                let mut alt_notes = Notes::default();
                let resolved = self.unwrap(alt, &mut alt_notes);
                if is_null_only(resolved) {
                    notes.nullable = true;
                } else {
                    rest.push((alt, resolved, alt_notes));
                }
            }
            let choices: Option<Vec<Choice>> = rest
                .iter()
                .map(|(_, resolved, alt_notes)| self.constants(resolved, alt_notes, notes))
                .collect::<Option<Vec<Vec<Choice>>>>()
                .map(|c| c.into_iter().flatten().collect());
            if let Some(choices) = choices.filter(|c| !c.is_empty()) {
                return Kind::Enum(choices);
            }
            if !own_shape {
                if let [(alt, _, _)] = rest.as_slice() {
                    let inner = self.unwrap(alt, notes);
                    return self.kind(inner, path, depth, notes);
                }
                let mut kinds: Vec<Kind> = Vec::new();
                for (alt, _, _) in rest {
                    let k = self.read(alt, path, depth).kind;
                    if !kinds.contains(&k) {
                        kinds.push(k);
                    }
                }
                return match kinds.len() {
                    0 => Kind::Any,
                    1 => kinds.pop().unwrap_or(Kind::Any),
                    _ => Kind::OneOf(kinds),
                };
            }
        }
        if let Some(choices) = self
            .constants(schema, &Notes::default(), notes)
            .filter(|c| !c.is_empty())
        {
            return Kind::Enum(choices);
        }
        let ty = match schema.get("type") {
            Some(Value::String(t)) => Some(t.as_str()),
            Some(Value::Array(types)) => {
                let mut named = types.iter().filter_map(Value::as_str);
                if types.iter().any(|t| t == "null") {
                    notes.nullable = true;
                }
                named.find(|t| *t != "null")
            }
            _ if schema.get("properties").is_some() => Some("object"),
            _ => None,
        };
        match ty {
            Some("string") => Kind::String,
            Some("integer") => Kind::Integer,
            Some("number") => Kind::Number,
            Some("boolean") => Kind::Boolean,
            Some("array") => Kind::Array(Box::new(match schema.get("items") {
                Some(items) => self.read(items, path, depth).kind,
                None => Kind::Any,
            })),
            Some("object") => Kind::Object {
                fields: if depth < MAX_DEPTH {
                    self.fields(schema, path, depth)
                } else {
                    Vec::new()
                },
                extra: match schema.get("additionalProperties") {
                    None => Extra::Unstated,
                    Some(Value::Bool(false)) => Extra::Refused,
                    Some(_) => Extra::Allowed,
                },
            },
            _ => Kind::Any,
        }
    }

    /// The values of an `enum` or `const` (no `null`: that makes the value nullable);
    /// `None` when the schema is neither. A `const`'s description is its own, else the
    /// alternative's.
    fn constants(&self, schema: &Value, alt: &Notes, notes: &mut Notes) -> Option<Vec<Choice>> {
        let describe = |s: &Value| {
            s.get("description")
                .or_else(|| s.get("title"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| alt.description.clone().or_else(|| alt.title.clone()))
        };
        let values: Vec<Value> = if let Some(values) = schema.get("enum").and_then(Value::as_array)
        {
            values.clone()
        } else {
            let value = schema.get("const")?;
            return if value.is_null() {
                notes.nullable = true;
                Some(Vec::new())
            } else {
                Some(vec![Choice {
                    value: value.clone(),
                    description: describe(schema),
                }])
            };
        };
        let mut out = Vec::new();
        for value in values {
            if value.is_null() {
                notes.nullable = true;
            } else {
                out.push(Choice {
                    value,
                    description: None,
                });
            }
        }
        Some(out)
    }

    fn fields(&self, schema: &'a Value, path: &str, depth: usize) -> Vec<Field> {
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return Vec::new();
        };
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        ordered(props, &required)
            .into_iter()
            .map(|(name, prop)| {
                let field_path = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                let read = self.read(prop, &field_path, depth + 1);
                Field {
                    name: name.clone(),
                    path: field_path,
                    depth,
                    title: read.title,
                    description: read.description,
                    required: required.contains(&name.as_str()),
                    nullable: read.nullable,
                    default: read.default,
                    format: read.format,
                    kind: read.kind,
                }
            })
            .collect()
    }
}

/// Whether a schema allows `null` and nothing else.
fn is_null_only(schema: &Value) -> bool {
    schema.get("type") == Some(&Value::String("null".to_owned()))
        || schema.get("const") == Some(&Value::Null)
        || schema
            .get("enum")
            .and_then(Value::as_array)
            .is_some_and(|e| e.iter().all(Value::is_null))
}

/// A property's stated place (see [`ORDER_KEYWORDS`]).
fn stated_place(prop: &Value) -> Option<i64> {
    ORDER_KEYWORDS
        .iter()
        .find_map(|k| prop.get(*k))
        .and_then(Value::as_i64)
}

/// An object's properties in the one order (see the module's documentation).
fn ordered<'v>(props: &'v Map<String, Value>, required: &[&str]) -> Vec<(&'v String, &'v Value)> {
    let mut list: Vec<(&String, &Value)> = props.iter().collect();
    list.sort_by_key(|(name, prop)| {
        let unstated_rank = required
            .iter()
            .position(|r| r == name)
            .unwrap_or(required.len());
        (
            stated_place(prop).unwrap_or(i64::MAX),
            unstated_rank,
            (*name).clone(),
        )
    });
    list
}

/// Why parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// The method's own schema does not compile (a plugin defect).
    #[error("method {method:?} has an invalid parameter schema: {problem}")]
    BadSchema {
        /// Method name.
        method: String,
        /// The schema compiler's error.
        problem: String,
    },
    /// The parameters break the schema.
    #[error("{field}: {problem}")]
    Invalid {
        /// Dotted path of the first offending field, e.g. `spec.http.parameter.path`.
        field: String,
        /// Every problem found (up to [`MAX_REPORTED_PARAM_ERRORS`]); those of other
        /// fields than `field` start with their own field.
        problem: String,
    },
}

/// Checks `params` against `schema` (none: anything goes) of method `method`; fields are
/// named under `root` (e.g. [`TASK_PARAMETER_FIELD`]). An enum's problem lists its
/// values; an unknown name in an object that refuses others is named itself, with the
/// names the object takes; a missing required property is told at its object.
pub fn check_params(
    schema: Option<&Value>,
    method: &str,
    params: &Value,
    root: &str,
) -> Result<(), ParamsError> {
    let Some(schema) = schema else {
        return Ok(());
    };
    let validator = jsonschema::validator_for(schema).map_err(|e| ParamsError::BadSchema {
        method: method.to_owned(),
        problem: e.to_string(),
    })?;
    let mut errors = validator.iter_errors(params).peekable();
    if errors.peek().is_none() {
        return Ok(());
    }
    let read = ParamSchema::read(schema);
    let mut problems: Vec<(String, String)> = Vec::new();
    for e in errors {
        let pointer = segments(e.instance_path.as_str());
        let (at, text) = explain(&read, &pointer, &e);
        let field = field_of_pointer(root, &to_pointer(&at));
        if !problems.iter().any(|(f, t)| *f == field && *t == text) {
            problems.push((field, text));
        }
        if problems.len() == MAX_REPORTED_PARAM_ERRORS {
            break;
        }
    }
    let field = problems
        .first()
        .map(|(f, _)| f.clone())
        .unwrap_or_else(|| root.to_owned());
    let problem = problems
        .iter()
        .map(|(f, text)| {
            if *f == field {
                text.clone()
            } else {
                format!("{f}: {text}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    Err(ParamsError::Invalid { field, problem })
}

/// Where a validation error belongs and what to tell about it.
fn explain(
    read: &ParamSchema,
    pointer: &[String],
    e: &jsonschema::ValidationError<'_>,
) -> (Vec<String>, String) {
    use jsonschema::error::ValidationErrorKind as K;
    match &e.kind {
        K::AdditionalProperties { unexpected } if !unexpected.is_empty() => {
            let mut at = pointer.to_vec();
            at.push(unexpected[0].clone());
            let takes = read
                .names_at(pointer)
                .filter(|n| !n.is_empty())
                .map(|n| n.join(", "))
                .unwrap_or_else(|| "none".to_owned());
            let others = if unexpected.len() > 1 {
                format!(" (nor {})", unexpected[1..].join(", "))
            } else {
                String::new()
            };
            (
                at,
                format!("no such parameter{others}; the method takes: {takes}"),
            )
        }
        K::Enum { .. }
        | K::Constant { .. }
        | K::OneOfNotValid { .. }
        | K::AnyOf { .. }
        | K::Type { .. } => match read.kind.at(pointer).and_then(Kind::choices) {
            Some(choices) => (pointer.to_vec(), must_be_one_of(choices)),
            None => (pointer.to_vec(), cut(&e.to_string())),
        },
        _ => (pointer.to_vec(), cut(&e.to_string())),
    }
}

/// `must be one of "a", "b"` (values as JSON, so a string and a number are told apart).
pub fn must_be_one_of(choices: &[Choice]) -> String {
    let values: Vec<String> = choices.iter().map(|c| c.value.to_string()).collect();
    format!("must be one of {}", values.join(", "))
}

fn cut(text: &str) -> String {
    if text.chars().count() <= MAX_PROBLEM_CHARS {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(MAX_PROBLEM_CHARS).collect();
        s.push('…');
        s
    }
}

/// A JSON pointer's segments, unescaped.
fn segments(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

fn to_pointer(segments: &[String]) -> String {
    segments
        .iter()
        .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// `root` plus a JSON pointer, in dotted form (`/a/0/b` → `root.a[0].b`).
pub fn field_of_pointer(root: &str, pointer: &str) -> String {
    let mut out = String::from(root);
    for seg in segments(pointer) {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemars::{JsonSchema, generate::SchemaSettings};
    use serde_json::json;

    /// Whether the block should be there.
    #[derive(serde::Deserialize, serde::Serialize, JsonSchema, Default)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum State {
        /// It is in the file.
        #[default]
        Present,
        /// It is gone.
        Absent,
    }

    #[derive(serde::Deserialize, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Plain {
        A,
        B,
    }

    #[derive(serde::Deserialize, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Mixed {
        /// Documented.
        A,
        B,
    }

    #[derive(serde::Deserialize, JsonSchema)]
    #[allow(dead_code)]
    enum Single {
        Only,
    }

    #[derive(serde::Deserialize, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Shapes {
        Unit,
        Named(String),
    }

    #[derive(serde::Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Owner {
        uid: Option<u32>,
        name: String,
    }

    /// Parameters of every shape schemars writes.
    #[derive(serde::Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Params {
        /// A file under /etc.
        path: String,
        /// The field's own words.
        #[serde(default)]
        state: State,
        undocumented_state: State,
        /// Optional, documented.
        maybe_state: Option<State>,
        plain: Plain,
        maybe_plain: Option<Plain>,
        mixed: Mixed,
        single: Single,
        shapes: Shapes,
        text: Option<String>,
        count: Option<u32>,
        list: Vec<Plain>,
        owner: Owner,
    }

    fn schema_of(settings: SchemaSettings) -> Value {
        settings
            .into_generator()
            .into_root_schema_for::<Params>()
            .to_value()
    }

    fn choices(read: &ParamSchema, path: &str) -> Vec<(String, Option<String>)> {
        read.field(path)
            .and_then(|f| f.kind.choices())
            .unwrap_or_default()
            .iter()
            .map(|c| (c.label(), c.description.clone()))
            .collect()
    }

    #[test]
    fn every_enum_form_schemars_writes_is_an_enum() {
        for (settings, name) in [
            (SchemaSettings::draft2020_12(), "2020-12"),
            (SchemaSettings::draft07(), "draft-07"),
            (SchemaSettings::openapi3(), "openapi3"),
        ] {
            let schema = schema_of(settings);
            let read = ParamSchema::read(&schema);
            let documented = vec![
                ("present".to_owned(), Some("It is in the file.".to_owned())),
                ("absent".to_owned(), Some("It is gone.".to_owned())),
            ];
            assert_eq!(choices(&read, "state"), documented, "{name}: {schema}");
            assert_eq!(choices(&read, "undocumented_state"), documented, "{name}");
            assert_eq!(choices(&read, "maybe_state"), documented, "{name}");
            let plain = vec![("a".to_owned(), None), ("b".to_owned(), None)];
            assert_eq!(choices(&read, "plain"), plain, "{name}");
            assert_eq!(choices(&read, "maybe_plain"), plain, "{name}");
            let mut mixed = choices(&read, "mixed");
            mixed.sort();
            assert_eq!(
                mixed,
                [
                    ("a".to_owned(), Some("Documented.".to_owned())),
                    ("b".to_owned(), None)
                ],
                "{name}"
            );
            assert_eq!(choices(&read, "single"), [("Only".to_owned(), None)]);
            let field = |p: &str| read.field(p).expect(p);
            // The field's own description wins over the enum type's.
            assert_eq!(
                field("state").description.as_deref(),
                Some("The field's own words."),
                "{name}"
            );
            assert_eq!(field("state").default, Some(json!("present")), "{name}");
            assert!(field("maybe_state").nullable, "{name}");
            assert_eq!(
                field("maybe_state").description.as_deref(),
                Some("Optional, documented."),
                "{name}"
            );
            assert!(field("maybe_plain").nullable && !field("plain").nullable);
            assert_eq!(field("text").kind, Kind::String, "{name}");
            assert!(field("text").nullable, "{name}");
            assert_eq!(field("count").kind, Kind::Integer, "{name}");
            assert!(field("count").nullable, "{name}");
            assert_eq!(field("list").kind.to_string(), "array of enum", "{name}");
            assert_eq!(field("shapes").kind.to_string(), "enum | object", "{name}");
            assert_eq!(field("owner.name").kind, Kind::String, "{name}");
            assert!(field("owner").is_group());
            assert!(field("path").required && !field("state").required);
        }
    }

    #[test]
    fn one_order_stated_places_then_required_then_names() {
        let schema = json!({
            "type": "object",
            "required": ["zeta", "alpha"],
            "properties": {
                "alpha": {"type": "string"},
                "beta": {"type": "string"},
                "zeta": {"type": "string"},
                "last": {"type": "string", "propertyOrder": 2},
                "first": {"type": "string", "x-order": 1},
                "group": {"type": "object", "x-order": 3, "required": ["b"], "properties": {
                    "a": {"type": "string"}, "b": {"type": "string"}}}
            }
        });
        let read = ParamSchema::read(&schema);
        let order: Vec<&str> = read.walk().iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            order,
            [
                "first", "last", "group", "group.b", "group.a", "zeta", "alpha", "beta"
            ]
        );
        let leaves: Vec<(&str, bool)> = read
            .leaves()
            .iter()
            .map(|(f, r)| (f.path.as_str(), *r))
            .collect();
        // `group.b` is required within an optional object: not required of the caller.
        assert_eq!(leaves[2], ("group.b", false));
        assert_eq!(leaves[4], ("zeta", true));
    }

    #[test]
    fn what_is_not_an_object_of_fields_is_free_form() {
        assert!(!ParamSchema::read(&json!({"type": "object"})).is_free_form());
        let no_params = json!({"type": "object", "properties": {}, "additionalProperties": false});
        assert!(!ParamSchema::read(&no_params).is_free_form());
        let map = json!({"type": "object", "additionalProperties": {"type": "string"}});
        assert!(ParamSchema::read(&map).is_free_form());
        assert!(ParamSchema::read(&json!({"type": "array"})).is_free_form());
        // A cycle of references ends.
        let cyclic = json!({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}});
        assert_eq!(ParamSchema::read(&cyclic).kind, Kind::Any);
    }

    #[test]
    fn an_enum_refusal_names_the_field_and_its_values() {
        let schema = schema_of(SchemaSettings::draft2020_12());
        let mut params = json!({
            "path": "/etc/x", "undocumented_state": "absent", "plain": "a", "mixed": "a",
            "single": "Only", "shapes": "unit", "list": [], "owner": {"name": "root"},
            "state": "sideways"
        });
        let e = check_params(Some(&schema), "m", &params, TASK_PARAMETER_FIELD)
            .expect_err("a value outside the enum");
        assert_eq!(
            e.to_string(),
            "spec.http.parameter.state: must be one of \"present\", \"absent\""
        );
        params["state"] = json!("absent");
        params["list"] = json!(["a", "c"]);
        params["maybe_state"] = json!(7);
        let e = check_params(Some(&schema), "m", &params, "params").expect_err("two");
        let ParamsError::Invalid { field, problem } = e else {
            panic!("not an Invalid");
        };
        assert!(
            field == "params.list[1]" || field == "params.maybe_state",
            "{field}"
        );
        assert!(problem.contains("must be one of \"a\", \"b\""), "{problem}");
        assert!(
            problem.contains("must be one of \"present\", \"absent\""),
            "{problem}"
        );
        params["list"] = json!([]);
        params["maybe_state"] = json!(null);
        assert_eq!(check_params(Some(&schema), "m", &params, "params"), Ok(()));
    }

    #[test]
    fn other_refusals_name_the_field() {
        let schema = json!({
            "type": "object",
            "required": ["path"],
            "additionalProperties": false,
            "properties": {
                "path": {"type": "string", "x-order": 0},
                "lines": {"type": "array", "x-order": 1, "items": {"type": "object",
                    "properties": {"n": {"type": "integer", "minimum": 1}}}}
            }
        });
        let check = |p: Value| check_params(Some(&schema), "m", &p, "params");
        let e = check(json!({"path": "/x", "lines": [{"n": 0}]})).expect_err("minimum");
        assert!(
            e.to_string().starts_with("params.lines[0].n: ") && e.to_string().contains("1"),
            "{e}"
        );
        let e = check(json!({"path": "/x", "colour": "red"})).expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "params.colour: no such parameter; the method takes: path, lines"
        );
        // A missing property is told at its object, naming it.
        let e = check(json!({})).expect_err("missing");
        assert!(
            e.to_string().starts_with("params: ") && e.to_string().contains("\"path\""),
            "{e}"
        );
        // The offending value is quoted, but not a whole file of it.
        let e = check(json!({"path": vec!["y"; 2_000]})).expect_err("long value");
        assert!(
            e.to_string().chars().count() < MAX_PROBLEM_CHARS + 40,
            "{e}"
        );
        assert_eq!(check(json!({"path": "/x", "lines": []})), Ok(()));
        assert_eq!(check_params(None, "m", &json!(7), "params"), Ok(()));
        let e = check_params(Some(&json!({"type": 7})), "m", &json!({}), "params")
            .expect_err("bad schema");
        assert!(matches!(e, ParamsError::BadSchema { .. }), "{e}");
    }

    #[test]
    fn pointers_become_dotted_fields() {
        assert_eq!(field_of_pointer("r", "/a~1b/c~0d"), "r.a/b.c~d");
        assert_eq!(field_of_pointer("r", ""), "r");
        assert_eq!(field_of_pointer("r", "/a/0/b"), "r.a[0].b");
        assert_eq!(field_of_pointer("", "/a/b"), "a.b");
    }
}

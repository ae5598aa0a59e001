//! `--param key=value` arguments → the task's `spec.http.parameter`, typed by the
//! method's JSON Schema, then checked against it, so a mistake is reported with the
//! parameter's name before any task exists.
//!
//! * `key=value`: the value is typed by the parameter's kind, as the shared reader
//!   ([`hostplug_api::schema`]) reads it: a string stays a string (no quoting needed), an
//!   integer, number or boolean is parsed as one, an enum's value is matched by its text
//!   (in whatever form schemars wrote the enum), an array of scalars is split on commas
//!   (or given as a JSON array), anything else is read as JSON.
//! * `key:=json`: the value is JSON as it is (`mode:=420`, `lines:='["a","b"]'`).
//! * Dotted keys (`owner.name=root`) fill nested objects.

use hostplug_api::schema::{self, Kind, ParamSchema, ParamsError};
use serde_json::{Map, Value};

use crate::Error;

/// Builds the parameter object from `key=value` / `key:=json` arguments. `schema` is the
/// method's parameter schema (none: every value is a string unless given with `:=`).
pub fn build(args: &[String], schema: Option<&Value>) -> Result<Value, Error> {
    let read = schema.map(ParamSchema::read);
    let mut out = Map::new();
    for arg in args {
        let (key, raw, value) = split(arg)?;
        let value = match (raw, &read) {
            (true, _) => serde_json::from_str(value).map_err(|e| Error::BadParam {
                name: key.to_owned(),
                reason: format!("`{key}:=` takes JSON: {e}"),
            })?,
            (false, Some(read)) => typed(read, key, value)?,
            (false, None) => Value::String(value.to_owned()),
        };
        insert(&mut out, key, value)?;
    }
    let params = Value::Object(out);
    if let Some(schema) = schema {
        check(schema, &params)?;
    }
    Ok(params)
}

/// `key=value` → (key, false, value); `key:=json` → (key, true, json).
fn split(arg: &str) -> Result<(&str, bool, &str), Error> {
    let Some((key, value)) = arg.split_once('=') else {
        return Err(Error::BadParam {
            name: arg.to_owned(),
            reason: "expected key=value or key:=json".to_owned(),
        });
    };
    let (key, raw) = match key.strip_suffix(':') {
        Some(k) => (k, true),
        None => (key, false),
    };
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(Error::BadParam {
            name: arg.to_owned(),
            reason: "the parameter name is empty".to_owned(),
        });
    }
    Ok((key, raw, value))
}

/// The value typed by the kind of the parameter at `key`.
fn typed(read: &ParamSchema, key: &str, value: &str) -> Result<Value, Error> {
    let Some(field) = read.field(key) else {
        // Not declared: an open schema takes it as a string; a closed one is told by
        // `check` with the names it knows.
        return Ok(Value::String(value.to_owned()));
    };
    match &field.kind {
        Kind::Array(item) if !value.trim_start().starts_with('[') => value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|part| scalar(item, key, part))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Kind::Array(_) => serde_json::from_str(value).map_err(|e| Error::BadParam {
            name: key.to_owned(),
            reason: format!("a JSON array was expected: {e}"),
        }),
        kind => scalar(kind, key, value),
    }
}

/// One value typed by `kind`: strings as they are, an enum's value by its text (a text
/// that is none of them is passed on for the schema check to refuse with the values),
/// numbers and booleans parsed; anything else is JSON if it reads as JSON, else text.
fn scalar(kind: &Kind, key: &str, value: &str) -> Result<Value, Error> {
    let bad = |what: &str| Error::BadParam {
        name: key.to_owned(),
        reason: format!("{value:?} is not {what}"),
    };
    Ok(match kind {
        Kind::String => Value::String(value.to_owned()),
        Kind::Integer => Value::from(value.trim().parse::<i64>().map_err(|_| bad("an integer"))?),
        Kind::Number => {
            let n: f64 = value.trim().parse().map_err(|_| bad("a number"))?;
            serde_json::Number::from_f64(n)
                .map(Value::Number)
                .ok_or_else(|| bad("a finite number"))?
        }
        Kind::Boolean => Value::Bool(match value.trim() {
            "true" | "yes" | "on" | "1" => true,
            "false" | "no" | "off" | "0" => false,
            _ => return Err(bad("a boolean (true or false)")),
        }),
        Kind::Enum(choices) => choices
            .iter()
            .find(|c| c.label() == value)
            .map(|c| c.value.clone())
            .unwrap_or_else(|| Value::String(value.to_owned())),
        _ => serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned())),
    })
}

/// Puts `value` at the dotted `key`, creating the objects on the way.
fn insert(out: &mut Map<String, Value>, key: &str, value: Value) -> Result<(), Error> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or(key);
    let mut at = out;
    for part in parts {
        let slot = at
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        at = slot.as_object_mut().ok_or_else(|| Error::BadParam {
            name: key.to_owned(),
            reason: format!("{part:?} is already given as a value, not an object"),
        })?;
    }
    if at.insert(last.to_owned(), value).is_some() {
        return Err(Error::BadParam {
            name: key.to_owned(),
            reason: "given twice".to_owned(),
        });
    }
    Ok(())
}

/// Checks the parameters with the check the operator makes
/// ([`hostplug_api::schema::check_params`]), naming parameters by their dotted names: an
/// unknown one with the names the method takes, an enum's wrong value with its values.
fn check(schema: &Value, params: &Value) -> Result<(), Error> {
    schema::check_params(Some(schema), "", params, "").map_err(|e| match e {
        ParamsError::Invalid { field, problem } => Error::BadParam {
            name: if field.is_empty() {
                "(parameters)".to_owned()
            } else {
                field
            },
            reason: problem,
        },
        ParamsError::BadSchema { problem, .. } => Error::BadParam {
            name: "(schema)".to_owned(),
            reason: format!("the method's parameter schema is invalid: {problem}"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["path"],
            "additionalProperties": false,
            "properties": {
                "path": {"type": "string"},
                "mode": {"type": "integer"},
                "force": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "owner": {"type": "object", "properties": {"uid": {"type": "integer"}}}
            }
        })
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn values_are_typed_by_the_schema() -> Result<(), Error> {
        let p = build(
            &args(&[
                "path=/etc/a=b",
                "mode=420",
                "force=true",
                "tags=a, b",
                "owner.uid=0",
            ]),
            Some(&schema()),
        )?;
        assert_eq!(
            p,
            json!({"path": "/etc/a=b", "mode": 420, "force": true, "tags": ["a", "b"], "owner": {"uid": 0}})
        );
        let p = build(
            &args(&["path:=\"/etc/x\"", "tags:=[\"x\"]"]),
            Some(&schema()),
        )?;
        assert_eq!(p, json!({"path": "/etc/x", "tags": ["x"]}));
        // Without a schema every value is text.
        assert_eq!(build(&args(&["n=1"]), None)?, json!({"n": "1"}));
        Ok(())
    }

    #[test]
    fn mistakes_name_the_parameter() {
        let err = |a: &[&str]| {
            build(&args(a), Some(&schema()))
                .expect_err("bad")
                .to_string()
        };
        let e = err(&["path=/x", "mode=rw"]);
        assert!(e.contains("mode") && e.contains("integer"), "{e}");
        let e = err(&["path=/x", "colour=red"]);
        assert_eq!(
            e,
            "parameter colour: no such parameter; the method takes: path, force, mode, owner, tags"
        );
        let e = err(&["mode=1"]);
        assert!(e.contains("path"), "{e}");
        let e = err(&["path"]);
        assert!(e.contains("key=value"), "{e}");
        let e = err(&["path=/a", "path=/b"]);
        assert!(e.contains("twice"), "{e}");
        let e = err(&["path=/a", "mode:=nope"]);
        assert!(e.contains("mode") && e.contains("JSON"), "{e}");
    }

    #[test]
    fn a_documented_enum_takes_its_values_by_text_and_names_them_when_wrong() {
        // What schemars writes for an enum whose variants have doc comments.
        let schema = json!({
            "type": "object",
            "properties": {"state": {"$ref": "#/$defs/State", "x-order": 0},
                           "levels": {"type": "array", "items": {"$ref": "#/$defs/Level"}}},
            "$defs": {
                "State": {"oneOf": [
                    {"type": "string", "const": "present", "description": "It is there."},
                    {"type": "string", "const": "absent", "description": "It is gone."}]},
                "Level": {"oneOf": [{"const": 1, "description": "Low."}, {"const": 2}]}
            }
        });
        let built = build(&args(&["state=absent", "levels=2,1"]), Some(&schema));
        assert_eq!(
            built.ok(),
            Some(json!({"state": "absent", "levels": [2, 1]}))
        );
        let e = build(&args(&["state=sideways"]), Some(&schema))
            .expect_err("not a value")
            .to_string();
        assert_eq!(e, "parameter state: must be one of \"present\", \"absent\"");
    }
}

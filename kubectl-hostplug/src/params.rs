//! `--param key=value` arguments → the task's `spec.http.parameter`, typed by the
//! method's JSON Schema, then checked against it, so a mistake is reported with the
//! parameter's name before any task exists.
//!
//! * `key=value`: the value is typed by the schema: a string stays a string (no quoting
//!   needed), an integer, number or boolean is parsed as one, an array of scalars is
//!   split on commas (or given as a JSON array), anything else is read as JSON.
//! * `key:=json`: the value is JSON as it is (`mode:=420`, `lines:='["a","b"]'`).
//! * Dotted keys (`owner.name=root`) fill nested objects.

use serde_json::{Map, Value};

use crate::Error;
use crate::catalog::{closed_object, kind_of, param_schema, params_of};

/// How many schema violations one error lists: enough to fix a command line in one go,
/// few enough to read.
const MAX_REPORTED_ERRORS: usize = 5;

/// Builds the parameter object from `key=value` / `key:=json` arguments. `schema` is the
/// method's parameter schema (none: every value is a string unless given with `:=`).
pub fn build(args: &[String], schema: Option<&Value>) -> Result<Value, Error> {
    let mut out = Map::new();
    for arg in args {
        let (key, raw, value) = split(arg)?;
        let value = match (raw, schema) {
            (true, _) => serde_json::from_str(value).map_err(|e| Error::BadParam {
                name: key.to_owned(),
                reason: format!("`{key}:=` takes JSON: {e}"),
            })?,
            (false, Some(schema)) => typed(schema, key, value)?,
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

/// The value typed by the schema of the parameter at `key`.
fn typed(root: &Value, key: &str, value: &str) -> Result<Value, Error> {
    let Some(prop) = param_schema(root, key) else {
        // Not declared: an open schema takes it as a string; a closed one is told by
        // `check` with the names it knows.
        return Ok(Value::String(value.to_owned()));
    };
    let bad = |what: &str| Error::BadParam {
        name: key.to_owned(),
        reason: format!("{value:?} is not {what}"),
    };
    let kind = kind_of(root, prop);
    Ok(match kind.as_str() {
        "string" => Value::String(value.to_owned()),
        "integer" => Value::from(value.trim().parse::<i64>().map_err(|_| bad("an integer"))?),
        "number" => {
            let n: f64 = value.trim().parse().map_err(|_| bad("a number"))?;
            serde_json::Number::from_f64(n)
                .map(Value::Number)
                .ok_or_else(|| bad("a finite number"))?
        }
        "boolean" => Value::Bool(match value.trim() {
            "true" | "yes" | "on" | "1" => true,
            "false" | "no" | "off" | "0" => false,
            _ => return Err(bad("a boolean (true or false)")),
        }),
        // An enum of strings takes the text as it is; of anything else, as JSON.
        "enum" => {
            let as_str = Value::String(value.to_owned());
            let allowed = prop.get("enum").and_then(Value::as_array);
            if allowed.is_some_and(|a| a.contains(&as_str)) {
                as_str
            } else {
                serde_json::from_str(value).unwrap_or(as_str)
            }
        }
        k if k.starts_with("array") => {
            if value.trim_start().starts_with('[') {
                serde_json::from_str(value).map_err(|e| Error::BadParam {
                    name: key.to_owned(),
                    reason: format!("a JSON array was expected: {e}"),
                })?
            } else {
                let items = prop.get("items").cloned().unwrap_or(Value::Null);
                let item_kind = kind_of(root, &items);
                let parts = value.split(',').map(str::trim).filter(|s| !s.is_empty());
                Value::Array(
                    parts
                        .map(|p| match item_kind.as_str() {
                            "string" => Ok(Value::String(p.to_owned())),
                            _ => serde_json::from_str(p).map_err(|_| bad("a list of JSON values")),
                        })
                        .collect::<Result<_, _>>()?,
                )
            }
        }
        // Objects, `any`, unions: JSON if it reads as JSON, else the text.
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

/// Checks the parameters against the schema; the error names the first wrong parameter
/// and, for an unknown one, the parameters the method has.
fn check(schema: &Value, params: &Value) -> Result<(), Error> {
    // Unknown names first: the most common mistake, and the schema error alone would not
    // say which names exist.
    if closed_object(schema, schema)
        && let Some(obj) = params.as_object()
    {
        let mut known: Vec<String> = params_of(schema).into_iter().map(|p| p.name).collect();
        known.sort();
        let top: Vec<&str> = known
            .iter()
            .map(|k| k.split('.').next().unwrap_or(k))
            .collect();
        if let Some(unknown) = obj.keys().find(|k| !top.contains(&k.as_str())) {
            return Err(Error::BadParam {
                name: unknown.clone(),
                reason: format!("no such parameter (the method takes: {})", known.join(", ")),
            });
        }
    }
    let validator = jsonschema::validator_for(schema).map_err(|e| Error::BadParam {
        name: "(schema)".to_owned(),
        reason: format!("the method's parameter schema is invalid: {e}"),
    })?;
    let mut errors = validator.iter_errors(params).peekable();
    let Some(first) = errors.peek() else {
        return Ok(());
    };
    let name = dotted(first.instance_path.as_str());
    let reasons: Vec<String> = errors
        .take(MAX_REPORTED_ERRORS)
        .map(|e| {
            let at = dotted(e.instance_path.as_str());
            if at == name {
                e.to_string()
            } else {
                format!("{at}: {e}")
            }
        })
        .collect();
    Err(Error::BadParam {
        name: if name.is_empty() {
            "(parameters)".to_owned()
        } else {
            name
        },
        reason: reasons.join("; "),
    })
}

/// A JSON pointer as a dotted name (`/owner/name` → `owner.name`).
fn dotted(pointer: &str) -> String {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join(".")
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
        assert!(
            e.contains("colour") && e.contains("force, mode, owner.uid, path, tags"),
            "{e}"
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
}

//! Parameter validation against a method's JSON Schema — the one check both the operator
//! (before a HostTask touches any node) and `hostplug plugin run` (before the plugin
//! runs) apply, so an author sees locally exactly the refusal the cluster would give.
//!
//! Pure: no I/O. Errors name the offending field as a dotted path under a root the
//! caller chooses (`spec.http.parameter` for a task, `params` for the CLI).

use serde_json::Value;

/// Parameter errors listed in one message: 5. Enough to fix a task in one go, short
/// enough that the status message stays readable.
pub const MAX_REPORTED_PARAM_ERRORS: usize = 5;

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
        /// Every problem found (up to [`MAX_REPORTED_PARAM_ERRORS`]).
        problem: String,
    },
}

/// Checks `params` against `schema` (none: anything goes) of method `method`; fields are
/// named under `root`.
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
    let Some(first) = errors.peek() else {
        return Ok(());
    };
    let field = field_of_pointer(root, first.instance_path.as_str());
    let problems: Vec<String> = errors
        .take(MAX_REPORTED_PARAM_ERRORS)
        .map(|e| {
            let at = field_of_pointer(root, e.instance_path.as_str());
            if at == field {
                e.to_string()
            } else {
                format!("{at}: {e}")
            }
        })
        .collect();
    Err(ParamsError::Invalid {
        field,
        problem: format!(
            "does not match the parameters of {method:?}: {}",
            problems.join("; ")
        ),
    })
}

/// `root` plus a JSON pointer, in dotted form (`/a/0/b` → `root.a[0].b`).
pub fn field_of_pointer(root: &str, pointer: &str) -> String {
    let mut out = String::from(root);
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            out.push('.');
            out.push_str(&seg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_field_under_the_root() {
        let schema = json!({
            "type": "object",
            "properties": {"lines": {"type": "array", "items": {"type": "object",
                "properties": {"n": {"type": "integer", "minimum": 1}}}}},
        });
        let e = check_params(Some(&schema), "m", &json!({"lines": [{"n": 0}]}), "params")
            .expect_err("minimum");
        let ParamsError::Invalid { field, problem } = e else {
            panic!("not an Invalid");
        };
        assert_eq!(field, "params.lines[0].n");
        assert!(problem.contains("minimum of 1"), "{problem}");
        assert!(check_params(Some(&schema), "m", &json!({"lines": []}), "params").is_ok());
        assert!(check_params(None, "m", &json!(7), "params").is_ok());
        let e = check_params(Some(&json!({"type": 7})), "m", &json!({}), "params")
            .expect_err("bad schema");
        assert!(matches!(e, ParamsError::BadSchema { .. }), "{e}");
        assert_eq!(field_of_pointer("r", "/a~1b/c~0d"), "r.a/b.c~d");
    }
}

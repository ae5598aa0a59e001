//! Declaring a plugin: its name, version, description and typed methods.
//!
//! A plugin implements [`Plugin`] by returning a [`Definition`]; each method is a
//! parameter type (serde + schemars) and a handler function. The SDK derives every
//! method's JSON Schema for `describe`, parses `invoke`'s JSON parameters into the typed
//! struct (errors name the offending field), and dispatches to the handler.

use std::fmt;

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::de::DeserializeOwned;

use crate::{Error, Outcome, Result};

/// A plugin: implement this and call [`export_plugin!`](crate::export_plugin) once.
///
/// `definition` is called for every `describe` and `invoke` (the host runs each
/// invocation in a fresh instance), so keep it cheap: build the table, do no I/O.
pub trait Plugin {
    /// The plugin's name, version, description and methods.
    fn definition() -> Definition;
}

/// What a handler knows about the call besides its parameters.
#[derive(Debug, Clone)]
pub struct Context {
    method: String,
    dry_run: bool,
}

impl Context {
    /// A context for calling handlers directly, e.g. in unit tests.
    pub fn new(method: impl Into<String>, dry_run: bool) -> Self {
        Self {
            method: method.into(),
            dry_run,
        }
    }

    /// True when the caller asked what would change: report it, change nothing. The host
    /// also mounts /etc read-only for dry runs, so a write would fail with `denied`.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// The method being invoked.
    pub fn method(&self) -> &str {
        &self.method
    }
}

type Handler = Box<dyn Fn(&str, &Context) -> Result<Outcome>>;

/// One method of a plugin.
pub struct Method {
    name: String,
    description: String,
    mutates: bool,
    params_schema: String,
    handler: Handler,
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Method")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("mutates", &self.mutates)
            .finish_non_exhaustive()
    }
}

impl Method {
    /// The method's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The JSON Schema of the method's parameters (draft 2020-12), as JSON text.
    pub fn params_schema(&self) -> &str {
        &self.params_schema
    }

    /// Whether the method can change the node.
    pub fn mutates(&self) -> bool {
        self.mutates
    }
}

/// A plugin's description and method table, built with chained calls:
///
/// ```
/// use hostplug_sdk::{Context, Definition, Outcome, Result};
/// use schemars::JsonSchema;
/// use serde::Deserialize;
///
/// /// Parameters of `greet`.
/// #[derive(Deserialize, JsonSchema)]
/// #[serde(deny_unknown_fields)]
/// struct Greet {
///     /// Whom to greet.
///     name: String,
/// }
///
/// fn greet(p: Greet, _cx: &Context) -> Result<Outcome> {
///     Ok(Outcome::unchanged(format!("hello, {}", p.name)))
/// }
///
/// let def = Definition::new("hello", "0.1.0", "Says hello.")
///     .read_only("greet", "Greets someone.", greet);
/// let out = def.invoke("greet", r#"{"name":"node1"}"#, false).unwrap();
/// assert_eq!(out.output().unwrap(), "hello, node1");
/// ```
pub struct Definition {
    name: String,
    version: String,
    description: String,
    methods: Vec<Method>,
}

impl fmt::Debug for Definition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Definition")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("methods", &self.methods)
            .finish_non_exhaustive()
    }
}

impl Definition {
    /// A plugin with no methods yet. Pass `env!("CARGO_PKG_VERSION")` as the version.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            methods: Vec::new(),
        }
    }

    /// Adds a method whose parameters are `P`. `mutates` tells the operator and the
    /// console whether the method can change the node. The handler receives the parsed
    /// parameters and the call's [`Context`].
    ///
    /// `P`'s doc comments become the descriptions in its schema; use
    /// `#[serde(deny_unknown_fields)]` so a misspelt parameter is an error, not ignored.
    #[must_use]
    pub fn method<P, F>(
        mut self,
        name: impl Into<String>,
        description: impl Into<String>,
        mutates: bool,
        handler: F,
    ) -> Self
    where
        P: DeserializeOwned + JsonSchema + 'static,
        F: Fn(P, &Context) -> Result<Outcome> + 'static,
    {
        let name = name.into();
        // Caught by the plugin's own unit tests (debug builds); in a release component
        // the first method of that name would win.
        debug_assert!(
            self.methods.iter().all(|m| m.name != name),
            "method `{name}` is defined twice"
        );
        let handler: Handler = Box::new(move |params, cx| handler(parse_params::<P>(params)?, cx));
        self.methods.push(Method {
            name,
            description: description.into(),
            mutates,
            params_schema: params_schema::<P>(),
            handler,
        });
        self
    }

    /// Adds a method that only looks (`mutates: false`).
    #[must_use]
    pub fn read_only<P, F>(
        self,
        name: impl Into<String>,
        description: impl Into<String>,
        handler: F,
    ) -> Self
    where
        P: DeserializeOwned + JsonSchema + 'static,
        F: Fn(P, &Context) -> Result<Outcome> + 'static,
    {
        self.method(name, description, false, handler)
    }

    /// Adds a method that can change the node (`mutates: true`).
    #[must_use]
    pub fn mutating<P, F>(
        self,
        name: impl Into<String>,
        description: impl Into<String>,
        handler: F,
    ) -> Self
    where
        P: DeserializeOwned + JsonSchema + 'static,
        F: Fn(P, &Context) -> Result<Outcome> + 'static,
    {
        self.method(name, description, true, handler)
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The methods, in the order they were added.
    pub fn methods(&self) -> &[Method] {
        &self.methods
    }

    /// Runs `method` with JSON `params` exactly as the host's `invoke` would: unknown
    /// methods are [`Error::NotFound`], unparsable parameters [`Error::InvalidParams`].
    /// Useful in unit tests of a plugin.
    pub fn invoke(&self, method: &str, params: &str, dry_run: bool) -> Result<Outcome> {
        let Some(m) = self.methods.iter().find(|m| m.name == method) else {
            let known: Vec<&str> = self.methods.iter().map(|m| m.name.as_str()).collect();
            return Err(Error::not_found(format!(
                "unknown method `{method}`; this plugin offers: {}",
                known.join(", ")
            )));
        };
        (m.handler)(params, &Context::new(method, dry_run))
    }

    pub(crate) fn into_wit(self) -> crate::bindings::PluginInfo {
        crate::bindings::PluginInfo {
            name: self.name,
            version: self.version,
            description: self.description,
            methods: self
                .methods
                .into_iter()
                .map(|m| crate::bindings::hostplug::plugin::types::MethodInfo {
                    name: m.name,
                    description: m.description,
                    mutates: m.mutates,
                    params_schema: m.params_schema,
                })
                .collect(),
        }
    }
}

/// Parses JSON parameters into `P`. An empty document or `null` counts as `{}`, so a
/// method whose parameters are all optional can be called without any. Errors name the
/// field (`line: invalid type: integer 3, expected a string`).
pub fn parse_params<P: DeserializeOwned>(params: &str) -> Result<P> {
    let trimmed = params.trim();
    let text = if trimmed.is_empty() || trimmed == "null" {
        "{}"
    } else {
        trimmed
    };
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            Error::invalid_params(inner.to_string())
        } else {
            Error::invalid_params(format!("{path}: {inner}"))
        }
    })
}

/// The keyword that carries a property's place in its struct: `x-order`, 0-based, on
/// every property of every object. JSON objects have no order (the Kubernetes API server
/// stores a HostPlugin's status with its keys sorted), so the order in which a plugin
/// declares its parameters reaches the console and `kubectl hostplug` only this way; it
/// is an annotation that validators ignore.
pub const ORDER_KEYWORD: &str = "x-order";

/// The JSON Schema (draft 2020-12) of `P`, as JSON text, with [`ORDER_KEYWORD`] on each
/// property in the order the fields are declared.
pub fn params_schema<P: JsonSchema>() -> String {
    let mut schema = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<P>();
    // schemars titles every root schema with the type's name; for the SDK's own
    // `NoParams` that would show an SDK type name in every plugin's method table.
    if P::schema_id() == <NoParams as JsonSchema>::schema_id() {
        schema.remove("title");
    }
    let mut value = schema.to_value();
    number_properties(&mut value);
    // A JSON value; serialising it cannot fail.
    serde_json::to_string(&value).unwrap_or_else(|_| "{}".to_string())
}

/// Adds [`ORDER_KEYWORD`] to every property of every object schema inside `v` (the
/// workspace's serde_json keeps insertion order, so `properties` is in declaration
/// order here).
fn number_properties(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(props)) = map.get_mut("properties") {
                for (i, prop) in props.values_mut().enumerate() {
                    if let serde_json::Value::Object(p) = prop {
                        p.insert(ORDER_KEYWORD.to_owned(), serde_json::Value::from(i));
                    }
                }
            }
            for child in map.values_mut() {
                number_properties(child);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(number_properties),
        _ => {}
    }
}

/// Parameters of a method that takes none. Unknown fields are refused.
///
/// Its schema is a bare empty object: no title or description of its own (the method's
/// description is what a reader needs), unlike a derived schema, which would carry this
/// doc comment into every plugin that uses it.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

impl JsonSchema for NoParams {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NoParams".into()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        concat!(module_path!(), "::NoParams").into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "properties": {},
            "additionalProperties": false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// Test parameters.
    #[derive(Debug, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct P {
        /// A line.
        line: String,
        #[serde(default)]
        count: u32,
    }

    fn handler(p: P, cx: &Context) -> Result<Outcome> {
        Ok(Outcome::new(
            !cx.dry_run(),
            serde_json::json!({"line": p.line, "count": p.count}),
        ))
    }

    fn def() -> Definition {
        Definition::new("t", "1.0.0", "test").mutating("m", "does m", handler)
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_params::<P>(r#"{"line": 3}"#).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidParams(m) if m.starts_with("line: ")),
            "{e}"
        );
        let e = parse_params::<P>(r#"{}"#).unwrap_err();
        assert!(e.message().contains("`line`"), "{e}");
        let e = parse_params::<P>(r#"{"line": "x", "lines": 1}"#).unwrap_err();
        assert!(e.message().contains("lines"), "{e}");
        let e = parse_params::<P>("{not json").unwrap_err();
        assert_eq!(e.kind(), "invalid-params");
    }

    #[test]
    #[should_panic(expected = "defined twice")]
    #[cfg(debug_assertions)]
    fn duplicate_methods_are_caught_in_tests() {
        let _ = def().mutating("m", "again", handler);
    }

    #[test]
    fn no_params_schema_has_no_sdk_title_or_description() {
        let s: serde_json::Value =
            serde_json::from_str(&params_schema::<NoParams>()).expect("json");
        assert_eq!(s["type"], "object");
        assert_eq!(s["additionalProperties"], false);
        assert!(s.get("title").is_none(), "{s}");
        assert!(s.get("description").is_none(), "{s}");
        // Other types keep their title.
        let p: serde_json::Value = serde_json::from_str(&params_schema::<P>()).expect("json");
        assert_eq!(p["title"], "P");
    }

    #[test]
    fn empty_params_are_an_empty_object() {
        assert!(parse_params::<NoParams>("").is_ok());
        assert!(parse_params::<NoParams>("null").is_ok());
        assert!(parse_params::<NoParams>(r#"{"x":1}"#).is_err());
    }

    #[test]
    fn dispatch_and_unknown_method() {
        let out = def().invoke("m", r#"{"line":"a"}"#, true).unwrap();
        assert!(!out.is_changed());
        let e = def().invoke("nope", "{}", false).unwrap_err();
        assert!(
            matches!(&e, Error::NotFound(m) if m.contains("offers: m")),
            "{e}"
        );
    }

    #[test]
    fn schema_is_draft_2020_12_with_descriptions() {
        let d = def();
        let schema: serde_json::Value =
            serde_json::from_str(d.methods()[0].params_schema()).unwrap();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(schema["properties"]["line"]["description"], "A line.");
        assert_eq!(schema["required"], serde_json::json!(["line"]));
        assert_eq!(schema["additionalProperties"], false);
        // Declaration order (line, count), not the alphabetical one.
        assert_eq!(schema["properties"]["line"][ORDER_KEYWORD], 0);
        assert_eq!(schema["properties"]["count"][ORDER_KEYWORD], 1);
    }
}

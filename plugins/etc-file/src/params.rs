//! The parameters of each etc-file method. Doc comments here become the descriptions in
//! the methods' JSON Schemas, which the operator validates tasks against and the console
//! shows, so they are written for administrators.

use schemars::JsonSchema;
use serde::Deserialize;

fn yes() -> bool {
    true
}

fn default_marker() -> String {
    "# {mark} HOSTPLUG MANAGED BLOCK".to_string()
}

fn default_begin() -> String {
    "BEGIN".to_string()
}

fn default_end() -> String {
    "END".to_string()
}

/// A file mode parameter: an octal string ("0640") or an integer value (416).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Mode {
    /// Octal digits, optionally prefixed by `0o`: "0640", "640", "0o640".
    Octal(String),
    /// The mode's numeric value, e.g. 416 for 0640 (JSON has no octal numbers).
    Value(u32),
}

/// Parameters of `read`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Read {
    /// Absolute path of the file, under /etc.
    pub path: String,
}

/// Parameters of `write`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Write {
    /// Absolute path of the file, under /etc.
    pub path: String,
    /// The complete new content of the file (UTF-8 text).
    pub content: String,
    /// File mode: an octal string such as "0640", or an integer holding the mode's value
    /// as in Kubernetes' `defaultMode` (420 = 0644). Permission bits only: setuid, setgid
    /// and sticky are refused. Without it an existing file keeps its mode and a new file
    /// gets 0644. A different mode is a change even when the content is the same.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Create the file when it does not exist (default true); when false a missing file
    /// is a not-found error.
    #[serde(default = "yes")]
    pub create: bool,
    /// Before changing the file, keep a copy of it as `<path>.<UTC timestamp>.bak`; the
    /// output names it.
    #[serde(default)]
    pub backup: bool,
    /// Replace the file atomically (temporary file + rename; default true), keeping its
    /// mode, owner and group (not its inode, so hard links are broken). Set false to
    /// rewrite the file in place, keeping its inode, at the price of atomicity.
    #[serde(default = "yes")]
    pub atomic: bool,
}

/// Parameters of `ensure-line`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnsureLine {
    /// Absolute path of the file, under /etc.
    pub path: String,
    /// The line that must be in the file, without a line break.
    pub line: String,
    /// Regular expression matched against each line (Rust regex syntax; `\d`, `\w`, `\s`
    /// are ASCII-only). The last matching line is replaced by `line`. When no line
    /// matches, `line` is added unless it is already present.
    #[serde(default)]
    pub regexp: Option<String>,
    /// Regular expression: insert a new line after the last line matching it (end of
    /// file when none matches). Exclusive with `insertbefore`; default: end of file.
    #[serde(default)]
    pub insertafter: Option<String>,
    /// Regular expression: insert a new line before the first line matching it (end of
    /// file when none matches); "^" inserts at the beginning. Exclusive with `insertafter`.
    #[serde(default)]
    pub insertbefore: Option<String>,
    /// Create the file (empty) when it does not exist (default false: not-found error).
    #[serde(default)]
    pub create: bool,
    /// Before changing the file, keep a copy of it as `<path>.<UTC timestamp>.bak`; the
    /// output names it.
    #[serde(default)]
    pub backup: bool,
    /// Replace the file atomically (default true), keeping mode, owner and group; false
    /// rewrites it in place, keeping its inode. See `write`.
    #[serde(default = "yes")]
    pub atomic: bool,
}

/// Parameters of `remove-line`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveLine {
    /// Absolute path of the file, under /etc. A missing file is left alone (nothing to
    /// remove).
    pub path: String,
    /// Regular expression (Rust regex syntax; `\d`, `\w`, `\s` are ASCII-only): every
    /// line matching it is removed.
    pub regexp: String,
    /// Before changing the file, keep a copy of it as `<path>.<UTC timestamp>.bak`.
    #[serde(default)]
    pub backup: bool,
    /// Replace the file atomically (default true), keeping mode, owner and group; false
    /// rewrites it in place, keeping its inode. See `write`.
    #[serde(default = "yes")]
    pub atomic: bool,
}

/// Parameters of `replace`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Replace {
    /// Absolute path of the file, under /etc.
    pub path: String,
    /// Regular expression (Rust regex syntax; `\d`, `\w`, `\s` are ASCII-only) searched
    /// in the whole file; `^` and `$` match at line starts and ends. Every match is
    /// replaced. For the call to be idempotent the replacement must not match again.
    pub regexp: String,
    /// Replacement text; `$1` or `${name}` insert capture groups, `$$` is a literal `$`.
    pub replacement: String,
    /// Before changing the file, keep a copy of it as `<path>.<UTC timestamp>.bak`.
    #[serde(default)]
    pub backup: bool,
    /// Replace the file atomically (default true), keeping mode, owner and group; false
    /// rewrites it in place, keeping its inode. See `write`.
    #[serde(default = "yes")]
    pub atomic: bool,
}

/// Whether a managed block should be in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The block is in the file with exactly the given content.
    #[default]
    Present,
    /// The block and its markers are removed.
    Absent,
}

/// Parameters of `ensure-block`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnsureBlock {
    /// Absolute path of the file, under /etc.
    pub path: String,
    /// The lines between the markers (a final line break is optional). Ignored when
    /// `state` is "absent".
    #[serde(default)]
    pub block: String,
    /// Template of the marker lines around the block; `{mark}` is replaced by
    /// `markerbegin` and `markerend`. Use a distinct marker per block in the same file.
    #[serde(default = "default_marker")]
    pub marker: String,
    /// Word that replaces `{mark}` in the opening marker line.
    #[serde(default = "default_begin")]
    pub markerbegin: String,
    /// Word that replaces `{mark}` in the closing marker line.
    #[serde(default = "default_end")]
    pub markerend: String,
    /// "present" (default): the block exists with this content; "absent": it is removed.
    #[serde(default)]
    pub state: State,
    /// Regular expression: insert a new block after the last line matching it (end of
    /// file when none matches). Exclusive with `insertbefore`.
    #[serde(default)]
    pub insertafter: Option<String>,
    /// Regular expression: insert a new block before the first line matching it (end of
    /// file when none matches). Exclusive with `insertafter`.
    #[serde(default)]
    pub insertbefore: Option<String>,
    /// Create the file when it does not exist (default false: not-found error).
    #[serde(default)]
    pub create: bool,
    /// Before changing the file, keep a copy of it as `<path>.<UTC timestamp>.bak`.
    #[serde(default)]
    pub backup: bool,
    /// Replace the file atomically (default true), keeping mode, owner and group; false
    /// rewrites it in place, keeping its inode. See `write`.
    #[serde(default = "yes")]
    pub atomic: bool,
}

/// Parameters of `delete`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Delete {
    /// Absolute path of the file, under /etc. A missing file is not an error (nothing to
    /// do); a directory is refused. A symbolic link is removed itself, not its target.
    pub path: String,
    /// Keep a copy of the file as `<path>.<UTC timestamp>.bak` before deleting it.
    #[serde(default)]
    pub backup: bool,
}

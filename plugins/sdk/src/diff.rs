//! Unified diffs of text files, as `diff -u` and `git diff` print them.

use similar::TextDiff;

/// Lines of context around each change, as `diff -u` uses by default.
pub const CONTEXT_LINES: usize = 3;

/// The unified diff between two versions of the file at `path`, with
/// `--- a/<path>` / `+++ b/<path>` headers (the leading `/` of an absolute path is
/// dropped, as git does). `None` for a file that does not exist on that side: the
/// header then reads `/dev/null`. Returns `None` when nothing differs.
///
/// ```
/// let d = hostplug_sdk::diff::unified("/etc/motd", Some("a\n"), Some("b\n")).unwrap();
/// assert!(d.starts_with("--- a/etc/motd\n+++ b/etc/motd\n@@ -1 +1 @@\n-a\n+b\n"));
/// ```
pub fn unified(path: &str, old: Option<&str>, new: Option<&str>) -> Option<String> {
    if old == new {
        return None;
    }
    let name = path.trim_start_matches('/');
    let a = old.map_or_else(|| "/dev/null".to_string(), |_| format!("a/{name}"));
    let b = new.map_or_else(|| "/dev/null".to_string(), |_| format!("b/{name}"));
    let (old, new) = (old.unwrap_or(""), new.unwrap_or(""));
    let diff = TextDiff::from_lines(old, new);
    let text = diff
        .unified_diff()
        .context_radius(CONTEXT_LINES)
        .header(&a, &b)
        .to_string();
    if text.is_empty() {
        // Both sides exist and are empty, or one side is absent and the other empty:
        // still a change (creation or deletion of an empty file).
        Some(format!("--- {a}\n+++ {b}\n"))
    } else {
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(unified("/etc/x", Some("a\n"), Some("a\n")), None);
        assert_eq!(unified("/etc/x", None, None), None);
    }

    #[test]
    fn creation_and_deletion_use_dev_null() {
        let created = unified("/etc/x", None, Some("hi\n")).unwrap();
        assert!(
            created.starts_with("--- /dev/null\n+++ b/etc/x\n"),
            "{created}"
        );
        assert!(created.contains("+hi\n"));
        let deleted = unified("/etc/x", Some("hi\n"), None).unwrap();
        assert!(
            deleted.starts_with("--- a/etc/x\n+++ /dev/null\n"),
            "{deleted}"
        );
        let empty = unified("/etc/x", None, Some("")).unwrap();
        assert_eq!(empty, "--- /dev/null\n+++ b/etc/x\n");
    }

    #[test]
    fn missing_final_newline_is_marked() {
        let d = unified("/etc/x", Some("a"), Some("a\n")).unwrap();
        assert!(d.contains("\\ No newline at end of file"), "{d}");
    }
}

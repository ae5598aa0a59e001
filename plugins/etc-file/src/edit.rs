//! Pure text editing: the line, regex and block logic of etc-file, with no I/O.
//!
//! Every function takes the current text and returns the new text; the caller compares
//! the two to decide whether anything changed. Line endings are kept as they are: each
//! line carries its own ending (`\n`, `\r\n`, or none for a last line without one), and
//! inserted lines use the file's style (`\r\n` when its first line ends so, else `\n`).

use regex_lite::Regex;

use hostplug_sdk::{Error, Result};

/// One line of a file: its text without the ending, and the ending.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    text: String,
    eol: &'static str,
}

/// A text file as a list of lines.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Doc {
    lines: Vec<Line>,
    style: &'static str,
}

impl Doc {
    fn parse(text: &str) -> Self {
        let lines: Vec<Line> = text
            .split_inclusive('\n')
            .map(|l| {
                if let Some(t) = l.strip_suffix("\r\n") {
                    Line {
                        text: t.to_string(),
                        eol: "\r\n",
                    }
                } else if let Some(t) = l.strip_suffix('\n') {
                    Line {
                        text: t.to_string(),
                        eol: "\n",
                    }
                } else {
                    Line {
                        text: l.to_string(),
                        eol: "",
                    }
                }
            })
            .collect();
        let style = match lines.first() {
            Some(Line { eol: "\r\n", .. }) => "\r\n",
            _ => "\n",
        };
        Self { lines, style }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            out.push_str(&l.text);
            out.push_str(l.eol);
        }
        out
    }

    fn new_line(&self, text: &str) -> Line {
        Line {
            text: text.to_string(),
            eol: self.style,
        }
    }

    /// Inserts lines at `index`, giving the line before a line ending if it had none
    /// (a last line without a final newline).
    fn insert(&mut self, index: usize, lines: Vec<Line>) {
        if index > 0
            && let Some(prev) = self.lines.get_mut(index - 1)
            && prev.eol.is_empty()
        {
            prev.eol = self.style;
        }
        self.lines.splice(index..index, lines);
    }

    fn first_match(&self, re: &Regex) -> Option<usize> {
        self.lines.iter().position(|l| re.is_match(&l.text))
    }

    fn last_match(&self, re: &Regex) -> Option<usize> {
        self.lines.iter().rposition(|l| re.is_match(&l.text))
    }

    /// Where new lines go: after the last line matching `after`, before the first line
    /// matching `before`, or at the end when neither is given or nothing matches.
    fn insertion_index(&self, at: &Position) -> usize {
        match at {
            Position::End => None,
            Position::After(re) => self.last_match(re).map(|i| i + 1),
            Position::Before(re) => self.first_match(re),
        }
        .unwrap_or(self.lines.len())
    }
}

/// Where a line or block is inserted when it is not in the file yet.
#[derive(Debug, Clone, Default)]
pub enum Position {
    /// At the end of the file.
    #[default]
    End,
    /// After the last line matching the regex (end of file when none matches).
    After(Regex),
    /// Before the first line matching the regex (end of file when none matches).
    Before(Regex),
}

impl Position {
    /// From the optional `insertafter` / `insertbefore` parameters (at most one).
    pub fn from_params(after: Option<&str>, before: Option<&str>) -> Result<Self> {
        match (after, before) {
            (Some(_), Some(_)) => Err(Error::invalid_params(
                "insertafter, insertbefore: give at most one of them",
            )),
            (Some(a), None) => Ok(Self::After(compile("insertafter", a)?)),
            (None, Some(b)) => Ok(Self::Before(compile("insertbefore", b)?)),
            (None, None) => Ok(Self::End),
        }
    }
}

/// Compiles a regex parameter; an invalid pattern is an `invalid-params` error naming
/// the field.
pub fn compile(field: &str, pattern: &str) -> Result<Regex> {
    Regex::new(pattern).map_err(|e| Error::invalid_params(format!("{field}: {e}")))
}

/// Compiles a regex for whole-text search with `^`/`$` matching at line boundaries.
pub fn compile_multiline(field: &str, pattern: &str) -> Result<Regex> {
    regex_lite::RegexBuilder::new(pattern)
        .multi_line(true)
        .build()
        .map_err(|e| Error::invalid_params(format!("{field}: {e}")))
}

fn check_single_line(field: &str, text: &str) -> Result<()> {
    if text.contains('\n') || text.contains('\r') {
        return Err(Error::invalid_params(format!(
            "{field}: must be a single line (no line breaks)"
        )));
    }
    Ok(())
}

/// Makes sure `line` is in `text`.
///
/// With `regexp`: the last line matching it is replaced by `line` (nothing changes when
/// it already equals `line`). Without a match, or without `regexp`: nothing changes when
/// some line equals `line` exactly, else `line` is inserted at `at`.
pub fn ensure_line(
    text: &str,
    line: &str,
    regexp: Option<&Regex>,
    at: &Position,
) -> Result<String> {
    check_single_line("line", line)?;
    let mut doc = Doc::parse(text);
    if let Some(i) = regexp.and_then(|re| doc.last_match(re)) {
        doc.lines[i].text = line.to_string();
        return Ok(doc.render());
    }
    if doc.lines.iter().any(|l| l.text == line) {
        return Ok(text.to_string());
    }
    let index = doc.insertion_index(at);
    let new = doc.new_line(line);
    doc.insert(index, vec![new]);
    Ok(doc.render())
}

/// Removes every line matching `regexp`.
pub fn remove_lines(text: &str, regexp: &Regex) -> String {
    let mut doc = Doc::parse(text);
    doc.lines.retain(|l| !regexp.is_match(&l.text));
    doc.render()
}

/// Replaces every match of `regexp` (compiled with [`compile_multiline`]) in the whole
/// text by `replacement`, in which `$1`, `${name}` refer to capture groups and `$$` is a
/// literal `$`.
pub fn replace(text: &str, regexp: &Regex, replacement: &str) -> String {
    regexp.replace_all(text, replacement).into_owned()
}

/// The begin and end marker lines of a managed block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Markers {
    /// The line that opens the block.
    pub begin: String,
    /// The line that closes the block.
    pub end: String,
}

impl Markers {
    /// Builds the marker lines from a template containing `{mark}` and the words that
    /// replace it.
    pub fn new(template: &str, begin: &str, end: &str) -> Result<Self> {
        if !template.contains("{mark}") {
            return Err(Error::invalid_params(
                "marker: must contain {mark}, which becomes markerbegin or markerend",
            ));
        }
        check_single_line("marker", template)?;
        check_single_line("markerbegin", begin)?;
        check_single_line("markerend", end)?;
        let markers = Self {
            begin: template.replace("{mark}", begin),
            end: template.replace("{mark}", end),
        };
        if markers.begin == markers.end {
            return Err(Error::invalid_params(
                "markerbegin, markerend: must differ, or the block cannot be found again",
            ));
        }
        Ok(markers)
    }

    /// The index range of the marked block, if the file has one. A begin marker without
    /// its end (or an end without a begin) is an error: the file was edited by hand, and
    /// guessing would destroy content.
    fn find(&self, doc: &Doc) -> Result<Option<(usize, usize)>> {
        let is = |l: &Line, m: &str| l.text.trim_end() == m;
        let begin = doc.lines.iter().position(|l| is(l, &self.begin));
        let end = match begin {
            Some(b) => doc.lines[b + 1..]
                .iter()
                .position(|l| is(l, &self.end))
                .map(|i| i + b + 1),
            None => doc.lines.iter().position(|l| is(l, &self.end)),
        };
        match (begin, end) {
            (Some(b), Some(e)) => Ok(Some((b, e))),
            (None, None) => Ok(None),
            (Some(b), None) => Err(Error::failed(format!(
                "line {}: found the begin marker `{}` but no end marker `{}` after it; fix the file by hand",
                b + 1,
                self.begin,
                self.end
            ))),
            (None, Some(e)) => Err(Error::failed(format!(
                "line {}: found the end marker `{}` but no begin marker `{}` before it; fix the file by hand",
                e + 1,
                self.end,
                self.begin
            ))),
        }
    }
}

/// Makes sure the block between `markers` holds exactly `block` (present), or that there
/// is no such block (absent). A new block is inserted at `at`.
pub fn ensure_block(
    text: &str,
    markers: &Markers,
    block: &str,
    present: bool,
    at: &Position,
) -> Result<String> {
    let mut doc = Doc::parse(text);
    let found = markers.find(&doc)?;
    if !present {
        return Ok(match found {
            Some((b, e)) => {
                doc.lines.drain(b..=e);
                doc.render()
            }
            None => text.to_string(),
        });
    }
    let body: Vec<&str> = if block.is_empty() {
        Vec::new()
    } else {
        block
            .strip_suffix('\n')
            .unwrap_or(block)
            .split('\n')
            .collect()
    };
    if let Some(l) = body
        .iter()
        .map(|l| l.trim_end())
        .find(|l| *l == markers.begin || *l == markers.end)
    {
        return Err(Error::invalid_params(format!(
            "block: contains the marker line `{l}`"
        )));
    }
    let mut lines = vec![doc.new_line(&markers.begin)];
    lines.extend(
        body.iter()
            .map(|l| doc.new_line(l.strip_suffix('\r').unwrap_or(l))),
    );
    lines.push(doc.new_line(&markers.end));
    match found {
        Some((b, e)) => {
            // Keep a missing final newline missing if the block was the file's end.
            if let (Some(last), Some(old_end)) = (lines.last_mut(), doc.lines.get(e)) {
                last.eol = old_end.eol;
            }
            doc.lines.splice(b..=e, lines);
        }
        None => {
            let index = doc.insertion_index(at);
            doc.insert(index, lines);
        }
    }
    Ok(doc.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(p: &str) -> Regex {
        compile("t", p).unwrap()
    }

    fn at_after(p: &str) -> Position {
        Position::After(re(p))
    }

    #[test]
    fn ensure_line_appends_once() {
        let t = "a\nb\n";
        let once = ensure_line(t, "c", None, &Position::End).unwrap();
        assert_eq!(once, "a\nb\nc\n");
        assert_eq!(ensure_line(&once, "c", None, &Position::End).unwrap(), once);
    }

    #[test]
    fn ensure_line_into_empty_and_unterminated_files() {
        assert_eq!(ensure_line("", "x", None, &Position::End).unwrap(), "x\n");
        assert_eq!(
            ensure_line("a", "x", None, &Position::End).unwrap(),
            "a\nx\n"
        );
        assert_eq!(
            ensure_line("a\r\nb\r\n", "x", None, &Position::End).unwrap(),
            "a\r\nb\r\nx\r\n"
        );
    }

    #[test]
    fn ensure_line_replaces_the_last_regexp_match() {
        let t = "server a\n# x\nserver b\n";
        let r = re("^server ");
        let out = ensure_line(t, "server ntp iburst", Some(&r), &Position::End).unwrap();
        assert_eq!(out, "server a\n# x\nserver ntp iburst\n");
        assert_eq!(
            ensure_line(&out, "server ntp iburst", Some(&r), &Position::End).unwrap(),
            out
        );
    }

    #[test]
    fn ensure_line_regexp_without_match_inserts() {
        let out = ensure_line(
            "a\n",
            "PermitRootLogin no",
            Some(&re("^#?PermitRootLogin")),
            &Position::End,
        )
        .unwrap();
        assert_eq!(out, "a\nPermitRootLogin no\n");
    }

    #[test]
    fn ensure_line_positions() {
        let t = "[main]\nx=1\n[other]\ny=2\n";
        assert_eq!(
            ensure_line(t, "z=3", None, &at_after(r"^x=")).unwrap(),
            "[main]\nx=1\nz=3\n[other]\ny=2\n"
        );
        assert_eq!(
            ensure_line(t, "z=3", None, &Position::Before(re(r"^\["))).unwrap(),
            "z=3\n[main]\nx=1\n[other]\ny=2\n"
        );
        assert_eq!(
            ensure_line(t, "z=3", None, &at_after("^nomatch")).unwrap(),
            "[main]\nx=1\n[other]\ny=2\nz=3\n"
        );
        // After the last line of an unterminated file.
        assert_eq!(
            ensure_line("a", "b", None, &at_after("^a")).unwrap(),
            "a\nb\n"
        );
    }

    #[test]
    fn ensure_line_refuses_line_breaks() {
        let e = ensure_line("", "a\nb", None, &Position::End).unwrap_err();
        assert!(e.message().starts_with("line:"), "{e}");
    }

    #[test]
    fn position_params() {
        assert!(Position::from_params(Some("a"), Some("b")).is_err());
        let e = Position::from_params(Some("("), None).unwrap_err();
        assert!(e.message().starts_with("insertafter:"), "{e}");
        assert!(matches!(
            Position::from_params(None, None),
            Ok(Position::End)
        ));
    }

    #[test]
    fn remove_lines_removes_all_matches() {
        let t = "a\n#b\nc\n#d";
        assert_eq!(remove_lines(t, &re("^#")), "a\nc\n");
        assert_eq!(remove_lines("a\n", &re("^#")), "a\n");
    }

    #[test]
    fn replace_is_multiline_with_groups() {
        let r = compile_multiline("regexp", r"^(\s*)PasswordAuthentication\s+yes$").unwrap();
        let t = "x\n  PasswordAuthentication yes\n";
        let out = replace(t, &r, "${1}PasswordAuthentication no");
        assert_eq!(out, "x\n  PasswordAuthentication no\n");
        assert_eq!(replace(&out, &r, "${1}PasswordAuthentication no"), out);
    }

    fn markers() -> Markers {
        Markers::new("# {mark} MANAGED", "BEGIN", "END").unwrap()
    }

    #[test]
    fn ensure_block_inserts_updates_and_removes() {
        let m = markers();
        let t = "a\n";
        let one = ensure_block(t, &m, "x=1\ny=2\n", true, &Position::End).unwrap();
        assert_eq!(one, "a\n# BEGIN MANAGED\nx=1\ny=2\n# END MANAGED\n");
        assert_eq!(
            ensure_block(&one, &m, "x=1\ny=2", true, &Position::End).unwrap(),
            one
        );
        let two = ensure_block(&format!("{one}z\n"), &m, "x=3", true, &Position::End).unwrap();
        assert_eq!(two, "a\n# BEGIN MANAGED\nx=3\n# END MANAGED\nz\n");
        let gone = ensure_block(&two, &m, "", false, &Position::End).unwrap();
        assert_eq!(gone, "a\nz\n");
        assert_eq!(
            ensure_block(&gone, &m, "", false, &Position::End).unwrap(),
            gone
        );
    }

    #[test]
    fn ensure_block_position_and_empty_block() {
        let m = markers();
        let out = ensure_block("a\nb\n", &m, "", true, &Position::Before(re("^b"))).unwrap();
        assert_eq!(out, "a\n# BEGIN MANAGED\n# END MANAGED\nb\n");
    }

    #[test]
    fn ensure_block_refuses_broken_markers() {
        let m = markers();
        let e = ensure_block("# BEGIN MANAGED\nx\n", &m, "y", true, &Position::End).unwrap_err();
        assert!(e.message().contains("no end marker"), "{e}");
        let e = ensure_block("# END MANAGED\n", &m, "y", true, &Position::End).unwrap_err();
        assert!(e.message().contains("no begin marker"), "{e}");
        let e = ensure_block("", &m, "# END MANAGED", true, &Position::End).unwrap_err();
        assert_eq!(e.kind(), "invalid-params");
        assert!(Markers::new("# no mark", "B", "E").is_err());
        assert!(Markers::new("# {mark}", "X", "X").is_err());
    }
}

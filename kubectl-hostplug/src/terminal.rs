//! Text from elsewhere, made safe to print on a terminal.
//!
//! Everything `kubectl hostplug` prints that it did not write itself — plugin names,
//! descriptions and schemas, node names, task messages, diffs, outputs, API errors — may
//! come from an untrusted plugin or node. A terminal obeys control sequences in it: OSC 52
//! writes the clipboard, CSI moves the cursor and erases what was shown, OSC 8 hides
//! links, a title sequence can be read back as input on some terminals. [`plain`] removes
//! every such sequence (7-bit and 8-bit forms) and every other control character but line
//! feed and tab. The renderers pass outside text through it before they add their own
//! colours; JSON and YAML output escape control characters instead ([`escape_c1`] for
//! the ones serde_json leaves raw), so the data stays exact.
//!
//! Pure. It must never be applied to the codes the renderers write themselves (it would
//! strip them), nor be skipped for a string that came from the cluster.

/// ESC: starts a 7-bit control sequence.
const ESC: char = '\u{1b}';
/// BEL: ends an OSC (xterm's form).
const BEL: char = '\u{7}';
/// The 8-bit string terminator.
const ST: char = '\u{9c}';

/// What a sequence that has started runs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// Nothing: plain text.
    None,
    /// A CSI: parameters and intermediates, up to a final byte `@`..`~`.
    Csi,
    /// An OSC, DCS, SOS, PM or APC string: up to ST (`ESC \` or 0x9C) or BEL.
    Text,
    /// After ESC: the next character says what follows.
    Escape,
    /// After ESC and an intermediate (`ESC ( B`): intermediates, then one final.
    Intermediate,
    /// ESC inside a string: `\` ends it; anything else goes on with the string.
    TextEscape,
}

/// `text` without terminal control sequences or control characters (line feed and tab
/// stay). An unterminated sequence swallows the rest of the text, as a terminal would.
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut skip = Skip::None;
    for c in text.chars() {
        skip = match skip {
            Skip::None => match c {
                ESC => Skip::Escape,
                '\u{9b}' => Skip::Csi,
                '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => Skip::Text,
                '\n' | '\t' => {
                    out.push(c);
                    Skip::None
                }
                c if c.is_control() => Skip::None,
                c => {
                    out.push(c);
                    Skip::None
                }
            },
            Skip::Escape => match c {
                '[' => Skip::Csi,
                ']' | 'P' | 'X' | '^' | '_' => Skip::Text,
                '\u{20}'..='\u{2f}' => Skip::Intermediate,
                _ => Skip::None,
            },
            Skip::Intermediate => match c {
                '\u{20}'..='\u{2f}' => Skip::Intermediate,
                _ => Skip::None,
            },
            Skip::Csi => match c {
                '\u{40}'..='\u{7e}' => Skip::None,
                _ => Skip::Csi,
            },
            Skip::Text => match c {
                BEL | ST => Skip::None,
                ESC => Skip::TextEscape,
                _ => Skip::Text,
            },
            Skip::TextEscape => match c {
                '\\' => Skip::None,
                ESC => Skip::TextEscape,
                _ => Skip::Text,
            },
        };
    }
    out
}

/// JSON text with the C1 control characters (U+0080–U+009F, which serde_json leaves raw
/// and some terminals obey) written as `\u00XX` escapes: the same JSON value. In JSON
/// text such characters can only stand inside strings, where the escape is valid.
pub fn escape_c1(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if ('\u{80}'..='\u{9f}').contains(&c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_and_controls_are_removed_text_stays() {
        let cases = [
            // OSC 52: set the clipboard, ended by BEL and by ST.
            ("a\u{1b}]52;c;cm0gLXJmIH4K\u{7}b", "ab"),
            ("a\u{1b}]52;c;cm0gLXJmIH4K\u{1b}\\b", "ab"),
            // CSI: erase the screen, move the cursor, colours.
            ("x\u{1b}[2J\u{1b}[1;1Hy\u{1b}[31mz\u{1b}[0m", "xyz"),
            // 8-bit CSI and OSC.
            ("p\u{9b}2Jq\u{9d}0;title\u{9c}r", "pqr"),
            // OSC 8 hyperlink around visible text: the text stays.
            (
                "\u{1b}]8;;https://evil.example\u{1b}\\click\u{1b}]8;;\u{1b}\\",
                "click",
            ),
            // DCS, charset designation, a two-character escape, CR and BS.
            ("1\u{1b}Pq#0\u{1b}\\2\u{1b}(B3\u{1b}c4\r5\u{8}6", "123456"),
            // Line feeds, tabs and other scripts stay.
            ("line 1\n\tline 2 — ünïcödé", "line 1\n\tline 2 — ünïcödé"),
            // An unterminated OSC swallows the rest.
            ("ok\u{1b}]52;c;AAAA", "ok"),
        ];
        for (input, expected) in cases {
            assert_eq!(plain(input), expected, "{input:?}");
        }
    }

    #[test]
    fn c1_escapes_keep_the_json_value() {
        let value = serde_json::json!({"m": "a\u{9b}2Jb\u{1b}c"});
        let text = escape_c1(&serde_json::to_string(&value).unwrap_or_default());
        assert!(
            !text.chars().any(|c| c.is_control()),
            "{text:?} has a control character"
        );
        let back: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back, value);
    }
}

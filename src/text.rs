//! Text from elsewhere, made safe to show: names that profiled processes chose (process, thread
//! and function names, paths), fields of captures made on other machines, what servers answer.
//! Printed raw, such text could move the cursor, retitle or clear the terminal, set the
//! clipboard (OSC 52), reorder what follows it (bidi controls) or end a line early; in an SVG or
//! a folded stack it could break the format.

use std::{borrow::Cow, fmt::Write as _, io};

use serde_json::ser::{Formatter, PrettyFormatter};

/// `s` with every character that a terminal, an XML parser or a line-oriented reader would act
/// on instead of showing replaced by a visible escape: C0 controls (tab, CR and LF included) and
/// DEL as `\x1b`, C1 controls and invisible format characters (bidi overrides and isolates,
/// zero-width characters, line and paragraph separators, the byte-order mark, tags) and the
/// noncharacters XML forbids as `\u{202e}`. A backslash is left as it is. Borrows `s` when
/// nothing needs escaping.
pub fn printable(s: &str) -> Cow<'_, str> {
    let Some(first) = s.find(needs_escape) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        if !needs_escape(c) {
            out.push(c);
        } else if c.is_ascii() {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// Writes `value` as pretty-printed JSON that is safe on a terminal too: the characters
/// [`printable`] escapes become `\uXXXX` escapes (serde_json writes DEL, C1 and format
/// characters raw). A JSON reader gets the text exactly as it was.
pub fn write_json(out: impl io::Write, value: &impl serde::Serialize) -> serde_json::Result<()> {
    let mut serializer =
        serde_json::Serializer::with_formatter(out, TerminalSafe(PrettyFormatter::new()));
    value.serialize(&mut serializer)
}

/// serde_json's pretty formatter, escaping what [`printable`] escapes.
struct TerminalSafe<'a>(PrettyFormatter<'a>);

macro_rules! delegate {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $name<W: ?Sized + io::Write>(&mut self, w: &mut W $(, $arg: $ty)*) -> io::Result<()> {
            self.0.$name(w $(, $arg)*)
        }
    )*};
}

impl Formatter for TerminalSafe<'_> {
    delegate! {
        begin_array();
        end_array();
        begin_array_value(first: bool);
        end_array_value();
        begin_object();
        end_object();
        begin_object_key(first: bool);
        begin_object_value();
        end_object_value();
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (at, c) in fragment.char_indices().filter(|&(_, c)| needs_escape(c)) {
            w.write_all(&fragment.as_bytes()[start..at])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            start = at + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

fn needs_escape(c: char) -> bool {
    // Cc: C0, DEL and C1.
    c.is_control()
        || matches!(
            c,
            // Soft hyphen, Arabic letter mark, Mongolian vowel separator.
            '\u{ad}' | '\u{61c}' | '\u{180e}'
            // Zero-width space, joiners, LRM and RLM.
            | '\u{200b}'..='\u{200f}'
            // Line and paragraph separators, bidi embeddings and overrides (LRE..RLO).
            | '\u{2028}'..='\u{202e}'
            // Word joiner, invisible operators, bidi isolates (LRI..PDI), deprecated formats.
            | '\u{2060}'..='\u{206f}'
            // Byte-order mark / zero-width no-break space.
            | '\u{feff}'
            // Interlinear annotations, and the noncharacters XML 1.0 does not allow.
            | '\u{fff9}'..='\u{fffb}'
            | '\u{fffe}'..='\u{ffff}'
            // Tags (invisible, and used to smuggle text).
            | '\u{e0000}'..='\u{e007f}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for text in [
            "",
            "main",
            "std::vec::Vec<T>::push",
            "café ünïcode 名前 🦀",
            r"C:\path",
        ] {
            assert!(matches!(printable(text), Cow::Borrowed(t) if t == text));
        }
    }

    #[test]
    fn controls_become_visible_escapes() {
        assert_eq!(printable("a\x1b[2Jb"), r"a\x1b[2Jb");
        assert_eq!(
            printable("\x1b]52;c;ZXZpbA==\x07"),
            r"\x1b]52;c;ZXZpbA==\x07"
        );
        assert_eq!(printable("tab\there\r\nnext"), r"tab\x09here\x0d\x0anext");
        assert_eq!(printable("\0\x7f"), r"\x00\x7f");
        assert_eq!(printable("csi\u{9b}2J nel\u{85}"), r"csi\u{9b}2J nel\u{85}");
        assert_eq!(printable("abc\u{202e}fed"), r"abc\u{202e}fed");
        assert_eq!(
            printable("\u{2066}\u{2069}\u{200e}\u{200f}\u{feff}\u{2028}"),
            r"\u{2066}\u{2069}\u{200e}\u{200f}\u{feff}\u{2028}"
        );
        assert_eq!(printable("\u{fffe}\u{e0041}"), r"\u{fffe}\u{e0041}");
        // A backslash stays: the escapes are for reading, not for decoding.
        assert_eq!(printable("a\\x1b\x01"), r"a\x1b\x01");
    }

    #[test]
    fn json_escapes_them_and_keeps_the_text() {
        let text = "a\x1b[2J\u{9b}\u{202e}\u{e0041}é\\\"\x7f";
        let mut out = Vec::new();
        write_json(
            &mut out,
            &serde_json::json!({ "name": text, "list": [1, 2] }),
        )
        .unwrap();
        let json = String::from_utf8(out).unwrap();
        assert!(
            json.contains(r#""name": "a\u001b[2J\u009b\u202e\udb40\udc41é\\\"\u007f""#),
            "{json}"
        );
        assert!(!json.chars().any(|c| c != '\n' && needs_escape(c)));
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["name"], text);
        assert_eq!(back["list"][1], 2);
    }

    #[test]
    fn every_control_of_any_kind_is_escaped() {
        let all: String = (0..=0x10ffff).filter_map(char::from_u32).collect();
        let shown = printable(&all);
        assert!(
            !shown
                .chars()
                .any(|c| c.is_control() || needs_escape(c) || c == '\n')
        );
        // Everything else is kept as it was.
        for c in all.chars().filter(|&c| !needs_escape(c)) {
            let text = c.to_string();
            assert_eq!(printable(&text), text.as_str());
        }
    }
}

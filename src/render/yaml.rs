//! `format: yaml`: a small YAML writer whose strings read back as the same
//! strings in every YAML reader, YAML 1.1 (PyYAML, SnakeYAML, Ruby Psych, Go
//! yaml.v2) and YAML 1.2 (ruamel.yaml, yaml.v3, libfyaml) alike.
//!
//! A general YAML serializer writes a string plain whenever the resolver of
//! *its* YAML version reads it back as a string; a reader of the other
//! version may not (`no`, `on`, `0755`, `12:30`, `1_000` and `2001-12-14` are
//! strings in YAML 1.2 but a boolean, numbers and a date in YAML 1.1). So a
//! string is written plain only when it is of a shape no resolver of either
//! version reads as anything else: it starts with an ASCII letter, holds only
//! letters, digits, spaces and `_./@+=%:-`, and is not one of the boolean or
//! null words in any case (`y`, `no`, `ON`, `Null`, ...). Every other string
//! is double-quoted, with escapes for what YAML cannot hold raw (control
//! characters, NUL included; U+0085, U+2028 and U+2029, which YAML 1.1 reads
//! as line breaks; BOMs, non-characters and invisible bidi and zero-width
//! controls), except that a multi-line string whose lines can be written as
//! they are becomes a literal block (`|`), as PEM keys usually are.
//!
//! Non-string values keep their YAML meaning: integers as written by JSON,
//! floats always with a `.` and, with an exponent, its sign (`1.0e+300`, as
//! YAML 1.1 readers need to read a float), `true`, `false`, `null`, and
//! maps and lists in block style (`{}` and `[]` when empty). Map keys are
//! sorted (by their UTF-8 bytes) and written like strings; a key too long
//! for an implicit key (YAML allows at most 1024 characters) is written as
//! an explicit `? key` entry.

use serde_json::{Map, Number, Value as Json};

/// Indentation of a nested level.
const STEP: usize = 2;

/// Implicit keys must fit in 1024 characters including quotes (YAML 1.1 and
/// 1.2 alike); longer keys are written as explicit `? key` entries.
const IMPLICIT_KEY_LIMIT: usize = 1000;

/// The YAML document of `value`, ending with a newline.
pub(super) fn document(value: &Json) -> String {
    let mut out = String::new();
    node(&mut out, value, 0, Place::Root);
    out
}

/// Where a node is written, which decides what separates it from what came
/// before and how its children are indented.
#[derive(Clone, Copy, PartialEq)]
enum Place {
    /// The whole document.
    Root,
    /// After `key:` of an entry at the given indentation.
    Value,
    /// After `-` of a sequence item at the given indentation.
    Item,
    /// After `:` of an explicit `? key` entry at the given indentation.
    ExplicitValue,
}

/// Writes `value` after whatever `place` says precedes it, at `indent`
/// (the column of that entry's key, dash or `:`), ending with a newline.
fn node(out: &mut String, value: &Json, indent: usize, place: Place) {
    let space = if place == Place::Root { "" } else { " " };
    match value {
        Json::Object(map) if !map.is_empty() => match place {
            Place::Root => mapping(out, map, 0, false),
            Place::Item => {
                out.push(' ');
                mapping(out, map, indent + STEP, true);
            }
            Place::Value | Place::ExplicitValue => {
                out.push('\n');
                mapping(out, map, indent + STEP, false);
            }
        },
        Json::Array(items) if !items.is_empty() => match place {
            Place::Root => sequence(out, items, 0, false),
            Place::Item => {
                out.push(' ');
                sequence(out, items, indent + STEP, true);
            }
            // `key:` then `- item` lines at the key's own indentation, as
            // most YAML writers do (a sequence's dash counts as indentation).
            Place::Value => {
                out.push('\n');
                sequence(out, items, indent, false);
            }
            Place::ExplicitValue => {
                out.push('\n');
                sequence(out, items, indent + STEP, false);
            }
        },
        Json::Object(_) => {
            out.push_str(space);
            out.push_str("{}\n");
        }
        Json::Array(_) => {
            out.push_str(space);
            out.push_str("[]\n");
        }
        Json::String(s) => {
            out.push_str(space);
            match block_chomping(s) {
                Some(chomping) => literal_block(out, s, chomping, indent + STEP),
                None => {
                    inline_string(out, s);
                    out.push('\n');
                }
            }
        }
        Json::Null => {
            out.push_str(space);
            out.push_str("null\n");
        }
        Json::Bool(b) => {
            out.push_str(space);
            out.push_str(if *b { "true\n" } else { "false\n" });
        }
        Json::Number(n) => {
            out.push_str(space);
            out.push_str(&number(n));
            out.push('\n');
        }
    }
}

/// A non-empty map's entries at `indent`, keys sorted. With `first_inline`
/// the first entry continues the current line (after `- `).
fn mapping(out: &mut String, map: &Map<String, Json>, indent: usize, first_inline: bool) {
    let mut entries: Vec<(&String, &Json)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 || !first_inline {
            pad(out, indent);
        }
        let mut text = String::new();
        inline_string(&mut text, key);
        if text.chars().count() <= IMPLICIT_KEY_LIMIT {
            out.push_str(&text);
            out.push(':');
            node(out, value, indent, Place::Value);
        } else {
            out.push_str("? ");
            out.push_str(&text);
            out.push('\n');
            pad(out, indent);
            out.push(':');
            node(out, value, indent, Place::ExplicitValue);
        }
    }
}

/// A non-empty list's items at `indent`. With `first_inline` the first item
/// continues the current line (after `- `).
fn sequence(out: &mut String, items: &[Json], indent: usize, first_inline: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !first_inline {
            pad(out, indent);
        }
        out.push('-');
        node(out, item, indent, Place::Item);
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A string on one line: plain when no YAML resolver can read it as
/// anything but this string, else double-quoted.
fn inline_string(out: &mut String, s: &str) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else {
        double_quoted(out, s);
    }
}

/// Words that some YAML 1.1 or 1.2 resolver reads as a boolean or null when
/// plain, compared case-insensitively (Ruby Psych ignores case; the YAML 1.1
/// types list `y` and `n`, which some readers implement).
const RESERVED_WORDS: [&str; 9] = ["y", "n", "yes", "no", "true", "false", "on", "off", "null"];

/// True for strings safe to write plain. Numbers, dates, times, `.inf`,
/// `.nan`, `~`, `=`, `<<`, indicators and document markers all start with
/// something other than a letter; what starts with a letter can only be a
/// boolean or null word; the characters allowed after it cannot start a
/// comment, a flow collection, a quote or a `key: value` pair.
fn is_plain_safe(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some(first) = bytes.first() else {
        return false;
    };
    if !first.is_ascii_alphabetic() || bytes.last() == Some(&b' ') {
        return false;
    }
    for (i, &b) in bytes.iter().enumerate() {
        let ok = match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b' ' | b'_' | b'.' | b'/' | b'@' | b'+' | b'=' | b'%' | b'-' => {
                true
            }
            // `:` is a value indicator before a space or at the end.
            b':' => matches!(bytes.get(i + 1), Some(next) if *next != b' '),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    !RESERVED_WORDS.iter().any(|w| w.eq_ignore_ascii_case(s))
}

/// True for characters written as they are inside quotes and blocks: what
/// every YAML reader accepts raw and shows as what it is.
fn is_raw(c: char) -> bool {
    match c {
        ' '..='~' => true,
        '\u{0}'..='\u{1F}' | '\u{7F}'..='\u{9F}' => false,
        // YAML 1.1 line separators and the byte-order mark.
        '\u{2028}' | '\u{2029}' | '\u{FEFF}' => false,
        // Zero-width and bidi controls: invisible, and able to make the
        // file look like it says something else.
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' => false,
        // Not characters; YAML's printable set excludes them.
        '\u{FFFE}' | '\u{FFFF}' => false,
        _ => true,
    }
}

/// `"..."` with `\"`, `\\` and escapes for every character [`is_raw`]
/// refuses, so any string, NUL included, reads back exactly.
fn double_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c < ' ' || c == '\u{7F}' => out.push_str(&format!("\\x{:02X}", u32::from(c))),
            c if !is_raw(c) => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The chomping indicator when `s` can be a literal block: a multi-line
/// string of raw characters without tabs or carriage returns, whose first
/// line is not empty and starts without a space (the first line sets the
/// block's indentation), and without a space at the end of any line (editors
/// and linters strip trailing spaces, which would change a block's value
/// without a trace; inside quotes they survive).
fn block_chomping(s: &str) -> Option<&'static str> {
    let ok = s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && !s.ends_with(' ')
        && !s.contains(" \n")
        && s.chars().all(|c| c == '\n' || (c != '\t' && is_raw(c)));
    if !ok {
        return None;
    }
    let trailing = s.len() - s.trim_end_matches('\n').len();
    Some(match trailing {
        0 => "|-",
        1 => "|",
        _ => "|+",
    })
}

/// `|` (with its chomping indicator) and the lines of `s` at `indent`;
/// empty lines stay empty.
fn literal_block(out: &mut String, s: &str, chomping: &str, indent: usize) {
    out.push_str(chomping);
    out.push('\n');
    let body = s.strip_suffix('\n').unwrap_or(s);
    for line in body.split('\n') {
        if !line.is_empty() {
            pad(out, indent);
            out.push_str(line);
        }
        out.push('\n');
    }
}

/// JSON's number text, with floats in a form YAML 1.1 readers read as floats
/// too: a `.` in the mantissa and a sign on the exponent (`1e300` is a string
/// to PyYAML, `1.0e+300` a float to every reader).
fn number(n: &Number) -> String {
    let text = n.to_string();
    if !n.is_f64() {
        return text;
    }
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (text.as_str(), None),
    };
    let mut out = mantissa.to_string();
    if !out.contains('.') {
        out.push_str(".0");
    }
    if let Some(e) = exponent {
        out.push('e');
        if !e.starts_with(['+', '-']) {
            out.push('+');
        }
        out.push_str(e);
    }
    out
}

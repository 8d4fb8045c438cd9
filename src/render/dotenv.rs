//! `format: dotenv`: `KEY=value` lines that `sh` reads back exactly (`set -a;
//! . ./file`, the usual way an entrypoint loads them) and that python-dotenv
//! reads back exactly wherever some quoting lets both agree.
//!
//! Each value gets the first of these forms that fits:
//!
//! 1. **as it is** when it holds only letters, digits and `_./:@%+,=-` (or
//!    is empty): literal to `sh`, python-dotenv and `docker run --env-file`;
//! 2. **single-quoted**, line breaks as they are, when it has no `'`, no
//!    `\\` and does not end in `\`: literal to `sh`; python-dotenv decodes
//!    only `\\` and `\'` inside single quotes, and a final `\` would escape
//!    the closing quote for it;
//! 3. **double-quoted**, line breaks as they are, with `\` before every `\`,
//!    `"`, `$` and `` ` ``; a value's trailing backslashes are written after
//!    the closing quote (`"a"\\` is `a\` to `sh`). Exact for `sh`.
//!    python-dotenv decodes `\\` and `\"` the same way, but keeps the `\` of
//!    `\$` and `` \` ``, and cannot parse what follows the closing quote, so
//!    it skips that line: the key is missing, but no later line is misread.
//!
//! Where python-dotenv reads something else (see the README's table, which
//! `tests/it/readers.rs` checks against both readers): a value ending in `\`
//! (missing), carriage returns (its universal-newline reading turns `\r` and
//! `\r\n` into `\n` in any form), and a value with `$` or `` ` `` that also
//! has `'` or `\\` (each `$` and `` ` `` gets a `\` before it). No single
//! form is read the same by both there: `sh` needs `'...'` or `\$` to keep
//! `$` literal, and python-dotenv has no way to write `'` inside `'...'`
//! that `sh` reads, nor a literal `$` after a `\` inside `"..."`.

use serde_json::Value as Json;

use crate::error::{Error, ErrorKind, Result};
use crate::model::ObjectSpec;

/// `KEY=value` lines, keys sorted, each value quoted as the module says.
pub(super) fn document(object: &ObjectSpec, value: &Json) -> Result<Vec<u8>> {
    let Json::Object(map) = value else {
        return Err(Error::new(
            ErrorKind::InvalidRequest,
            format!(
                "object {:?}: format dotenv needs a map of keys, but the selected value is {}",
                object.name,
                super::kind(value)
            ),
        ));
    };
    let bad: Vec<&str> = map.keys().map(String::as_str).filter(|k| !is_env_name(k)).collect();
    if !bad.is_empty() {
        return Err(Error::new(ErrorKind::InvalidRequest, format!(
            "object {:?}: format dotenv: keys {} of {} are not valid environment variable names (letters, digits and _, not starting with a digit)",
            object.name,
            bad.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", "),
            object.read
        )));
    }
    let mut entries: Vec<(&String, &Json)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::new();
    for (k, v) in entries {
        let text = super::value_text(v);
        if text.contains('\0') {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                format!(
                    "object {:?}: format dotenv: the value of {k:?} contains a NUL byte, which no environment can hold",
                    object.name
                ),
            ));
        }
        out.push_str(k);
        out.push('=');
        quoted(&mut out, &text);
        out.push('\n');
    }
    Ok(out.into_bytes())
}

fn is_env_name(k: &str) -> bool {
    let mut bytes = k.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Characters no reader treats specially in an unquoted value: no quoting,
/// expansion (`~` is expanded in `sh` assignments), comment or white space.
fn is_bare(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_./:@%+,=-".contains(&b)
}

/// Writes `text` in the first form of the module's list that fits it.
fn quoted(out: &mut String, text: &str) {
    if text.bytes().all(is_bare) {
        out.push_str(text);
    } else if !text.contains('\'') && !text.contains("\\\\") && !text.ends_with('\\') {
        out.push('\'');
        out.push_str(text);
        out.push('\'');
    } else {
        let body = text.trim_end_matches('\\');
        out.push('"');
        for c in body.chars() {
            if matches!(c, '\\' | '"' | '$' | '`') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        for _ in 0..text.len() - body.len() {
            out.push_str("\\\\");
        }
    }
}

//! The typed form of the `objects` fields that shape files (issue 7):
//! `secretKeyPointer`, `format`, `expandKeys`, `template` and `writeFile`.
//! Every combination that makes no sense is refused here, so rendering only
//! sees shapes that can be produced.

use super::Encoding;
use crate::error::Quoted;

/// How one object's response becomes file content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// No `secretKey`: the whole Vault response as compact JSON, minus the
    /// per-request `request_id` (the behaviour of every existing SPC).
    Envelope,
    /// One selected value: a string is written raw, anything else as compact
    /// JSON, then decoded by `encoding`.
    Value {
        /// Which value.
        select: Select,
        /// Decoding of that value.
        encoding: Encoding,
    },
    /// The selected value (by default the KV-unwrapped `data`) in a file format.
    Formatted {
        /// Which value.
        select: Select,
        /// The file format.
        format: Format,
    },
    /// One file `<objectName>/<key>` per key of the selected map, each
    /// written like a selected value, each with its own version.
    Expand {
        /// Which map.
        select: Select,
        /// Decoding of every value.
        encoding: Encoding,
    },
    /// A template over this object's response and the responses of the
    /// other objects of the SPC.
    Template(TemplateSource),
    /// `writeFile: false`: read only as an input of templates; no file, no version.
    Hidden,
}

impl Output {
    /// Whether the object produces at least a file name of its own.
    pub fn writes_files(&self) -> bool {
        !matches!(self, Output::Hidden)
    }
}

/// Which part of a response an object uses. Every selection starts at the
/// KV-unwrapped data: `data.data` when that is an object (KV v2), else `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select {
    /// The KV-unwrapped data itself.
    Data,
    /// `secretKey`: one literal key of the data (may contain `/` or `~`).
    Key(String),
    /// `secretKeyPointer`: an RFC 6901 JSON Pointer into the data.
    Pointer(JsonPointer),
}

/// A file format for data-only output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Pretty-printed JSON, keys sorted, with a final newline.
    Json,
    /// YAML, keys sorted.
    Yaml,
    /// `KEY=value` lines; keys must be valid environment variable names.
    Dotenv,
}

impl Format {
    /// Parses the `format` field (case-insensitive).
    pub fn parse(s: &str) -> Result<Format, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "yaml" | "yml" => Ok(Format::Yaml),
            "dotenv" | "env" => Ok(Format::Dotenv),
            other => Err(format!("unknown format {} (use json, yaml or dotenv)", Quoted(other))),
        }
    }

    /// The name users write.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Yaml => "yaml",
            Format::Dotenv => "dotenv",
        }
    }
}

/// A parsed RFC 6901 JSON Pointer such as `/tls/cert` or `/a~1b/0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPointer {
    text: String,
    tokens: Vec<String>,
}

impl JsonPointer {
    /// Parses a pointer: empty (the whole value) or `/`-separated reference
    /// tokens where `~1` means `/` and `~0` means `~`.
    pub fn parse(text: &str) -> Result<JsonPointer, String> {
        if text.is_empty() {
            return Ok(JsonPointer {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "{} is not a JSON Pointer: it must start with \"/\" (e.g. \"/{}\")",
                Quoted(text),
                Quoted(text).to_string().trim_matches('"')
            ));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    token.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => token.push('~'),
                    Some('1') => token.push('/'),
                    _ => {
                        return Err(format!(
                            "{} has a \"~\" not followed by 0 or 1 (write ~0 for \"~\" and ~1 for \"/\")",
                            Quoted(text)
                        ))
                    }
                }
            }
            tokens.push(token);
        }
        Ok(JsonPointer {
            text: text.to_string(),
            tokens,
        })
    }

    /// The pointer as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The unescaped reference tokens.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }
}

impl std::fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

/// A template that compiled, with the objects it names literally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSource {
    /// The template text.
    pub source: String,
    /// Object names referenced as `objects["name"]` or `objects.name`.
    pub references: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_pointers_follow_rfc_6901() {
        let p = |s: &str| JsonPointer::parse(s).map(|p| p.tokens().to_vec());
        assert_eq!(p("").unwrap(), Vec::<String>::new());
        assert_eq!(p("/").unwrap(), vec![String::new()]);
        assert_eq!(p("/a/b").unwrap(), vec!["a", "b"]);
        assert_eq!(p("/a~1b/m~0n/0").unwrap(), vec!["a/b", "m~n", "0"]);
        assert_eq!(p("/~01").unwrap(), vec!["~1"], "~01 is ~ then 1, not /");
        assert!(p("a/b").unwrap_err().contains("must start with \"/\""));
        assert!(p("/a~2").unwrap_err().contains("not followed by 0 or 1"));
        assert!(p("/a~").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(Format::parse("JSON"), Ok(Format::Json));
        assert_eq!(Format::parse("yml"), Ok(Format::Yaml));
        assert_eq!(Format::parse(" dotenv "), Ok(Format::Dotenv));
        assert!(Format::parse("toml").unwrap_err().contains("unknown format \"toml\""));
    }
}

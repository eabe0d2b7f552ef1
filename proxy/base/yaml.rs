//! YAML files read the one way: every error names the file, and for syntax
//! errors the line, column and field path (`file:line:col: field: message`),
//! so an operator can fix it without guessing.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {field}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },
    #[error("{file}: {field}: {message}")]
    Invalid {
        file: String,
        field: &'static str,
        message: String,
    },
}

/// Reads and parses the YAML file `path`.
pub fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let file = path.display().to_string();
    let text = crate::base::paths::read_file(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    parse_yaml(&text, &file)
}

/// Deserializes YAML, reporting errors as `file:line:col: field.path: message`.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, ConfigError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let field = yaml_field(&err);
        let inner = err.into_inner();
        let (line, column) = inner
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        ConfigError::Syntax {
            file: file.to_string(),
            line,
            column,
            message: strip_location(&inner.to_string(), &field),
            field,
        }
    })
}

/// The field an error is about, or `(document)` when it is about the syntax.
fn yaml_field<E>(err: &serde_path_to_error::Error<E>) -> String {
    match err.path().to_string() {
        // An empty key at the top has an empty path: that is the document too.
        p if p.is_empty() || p == "." || p == "?" => "(document)".to_string(),
        p => p,
    }
}

/// serde_yaml_ng puts its own path in front and " at line L column C" behind;
/// both are already in our prefix.
fn strip_location(msg: &str, field: &str) -> String {
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    match msg.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') && field.starts_with(head) => rest.to_string(),
        _ => msg.to_string(),
    }
}

/// Longest duration a configuration accepts anywhere: a hundred years, far
/// past any timeout that means something, and far inside what an `Instant`
/// can be moved by (humantime reads up to 584 billion years; added to the
/// clock, that panicked the connection's task).
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// A duration written as humantime (`500ms`, `10s`, `5m`), at most
/// [`MAX_DURATION`]; zero is allowed here ([`de_duration`] refuses it).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let dur = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}); use e.g. 500ms, 10s, 5m"))?;
    if dur > MAX_DURATION {
        return Err(format!(
            "`{s}` is above the longest duration accepted, 100 years"
        ));
    }
    Ok(dur)
}

/// A duration written as humantime (`500ms`, `10s`, `5m`), never zero, at
/// most [`MAX_DURATION`].
pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    let dur = parse_duration(&s).map_err(serde::de::Error::custom)?;
    if dur.is_zero() {
        return Err(serde::de::Error::custom("a timeout of zero is not allowed"));
    }
    Ok(dur)
}

/// [`de_duration`] for a field where zero means "off" (`0`, `0s`).
pub fn de_duration_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// [`de_duration`] for a field that may be left out (`#[serde(default)]`).
pub fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

//! What a snapshot is built from: the `policy` section, the files it names, read whole.

use std::fmt;
use std::path::{Path, PathBuf};

use miette::Diagnostic;
use serde::Deserialize;

use super::*;

/// The `policy` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The Cedar schema (`*.cedarschema`).
    pub schema: PathBuf,
    /// Static entities (Cedar entities JSON): domains, teams, groups, services.
    #[serde(default)]
    pub entities: Option<PathBuf>,
    /// Policy files or directories of `*.cedar`, mesh baseline first; a
    /// source may belong to a domain (see [`PolicySource`]).
    pub sources: Vec<PolicySource>,
    /// ODCS contracts: files or directories of `*.odcs.yaml`; a source may
    /// belong to a domain, and then holds only that domain's contracts.
    #[serde(default)]
    pub contracts: Vec<PolicySource>,
    /// A complete alternative policy set evaluated beside the enforced one and
    /// never enforced: disagreements are logged and counted.
    #[serde(default)]
    pub shadow: Vec<PolicySource>,
}

impl PolicyConfig {
    pub(crate) fn resolve(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| crate::base::paths::resolve(base, p);
        fix(&mut self.schema);
        if let Some(e) = self.entities.as_mut() {
            fix(e);
        }
        self.sources.iter_mut().for_each(|s| fix(&mut s.path));
        self.contracts.iter_mut().for_each(|s| fix(&mut s.path));
        self.shadow.iter_mut().for_each(|s| fix(&mut s.path));
    }

    /// Every path named, for the file watcher.
    pub fn watched_paths(&self) -> Vec<PathBuf> {
        let mut v = vec![self.schema.clone()];
        v.extend(self.entities.clone());
        v.extend(self.sources.iter().map(|s| s.path.clone()));
        v.extend(self.contracts.iter().map(|s| s.path.clone()));
        v.extend(self.shadow.iter().map(|s| s.path.clone()));
        v
    }
}

/// One entry of `policy.sources` (or `policy.shadow`): a file or directory,
/// written as a plain path (the mesh baseline's authority) or as
/// `{ path: …, domain: … }` (a domain's: its policies may speak only about
/// the domain's own resources, see `authority`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    pub path: PathBuf,
    pub domain: Option<String>,
}

impl From<PathBuf> for PolicySource {
    fn from(path: PathBuf) -> PolicySource {
        PolicySource { path, domain: None }
    }
}

/// The `{ path, domain }` form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnedSource {
    path: PathBuf,
    domain: String,
}

impl<'de> Deserialize<'de> for PolicySource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PolicySource, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = PolicySource;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path, or a map `{ path: …, domain: … }`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PolicySource, E> {
                Ok(PathBuf::from(v).into())
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<PolicySource, A::Error> {
                let o =
                    OwnedSource::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                if o.domain.trim().is_empty() || o.domain.chars().any(char::is_control) {
                    return Err(serde::de::Error::custom(format!(
                        "domain: {:?} is not a domain id (a contract's `domain`)",
                        o.domain
                    )));
                }
                Ok(PolicySource {
                    path: o.path,
                    domain: Some(o.domain),
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One input file's name and text.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: String,
    /// The domain whose authority the file speaks with (policy sources
    /// only); `None`: the mesh baseline's.
    pub domain: Option<String>,
}

/// Everything a snapshot is built from.
#[derive(Debug, Clone)]
pub struct PolicyInputs {
    pub schema: Source,
    pub entities: Option<Source>,
    pub policies: Vec<Source>,
    pub contracts: Vec<Source>,
    pub shadow: Vec<Source>,
}

/// Everything that was wrong, one `file:line:col: message` per entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadErrors(pub Vec<String>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [] => f.write_str("policy: unknown error"),
            [one] => f.write_str(one),
            [first, rest @ ..] => write!(
                f,
                "{first} (and {} more error{})",
                rest.len(),
                if rest.len() == 1 { "" } else { "s" }
            ),
        }
    }
}

impl std::error::Error for LoadErrors {}

pub(super) fn read_source(path: &Path) -> Result<Source, String> {
    std::fs::read_to_string(path)
        .map(|text| Source {
            name: path.display().to_string(),
            text,
            domain: None,
        })
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A file as is, or a directory's files ending in `suffix`, sorted by name.
pub(super) fn expand(path: &Path, suffixes: &[&str]) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| suffixes.iter().any(|s| n.ends_with(s)))
        })
        .collect();
    files.sort();
    Ok(files)
}

impl PolicyInputs {
    /// Reads every file the configuration names.
    pub fn read(cfg: &PolicyConfig) -> Result<PolicyInputs, LoadErrors> {
        let mut errors = Vec::new();
        let mut read_all = |paths: &[(&Path, Option<&str>)], suffix: &[&str]| -> Vec<Source> {
            let mut out = Vec::new();
            for &(p, domain) in paths {
                match expand(p, suffix) {
                    Ok(files) => {
                        for f in files {
                            match read_source(&f) {
                                Ok(mut s) => {
                                    s.domain = domain.map(str::to_string);
                                    out.push(s)
                                }
                                Err(e) => errors.push(e),
                            }
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
            out
        };
        fn owned(list: &[PolicySource]) -> Vec<(&Path, Option<&str>)> {
            list.iter()
                .map(|s| (s.path.as_path(), s.domain.as_deref()))
                .collect()
        }
        let policies = read_all(&owned(&cfg.sources), &[".cedar", LINKS]);
        let contracts = read_all(&owned(&cfg.contracts), &[".odcs.yaml"]);
        let shadow = read_all(&owned(&cfg.shadow), &[".cedar", LINKS]);
        let schema = read_source(&cfg.schema);
        let entities = cfg.entities.as_deref().map(read_source).transpose();
        match (schema, entities) {
            (Ok(schema), Ok(entities)) if errors.is_empty() => Ok(PolicyInputs {
                schema,
                entities,
                policies,
                contracts,
                shadow,
            }),
            (s, e) => {
                errors.extend(s.err());
                errors.extend(e.err());
                Err(LoadErrors(errors))
            }
        }
    }

    /// SHA-256 over every input's name and text: the snapshot's version.
    pub fn version(&self) -> String {
        let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut add = |tag: &str, s: &Source| {
            for part in [tag, s.name.as_str(), s.text.as_str()] {
                h.update(&(part.len() as u64).to_be_bytes());
                h.update(part.as_bytes());
            }
            // A file's owner is part of what it means (unowned: as before).
            if let Some(d) = &s.domain {
                for part in ["domain", d.as_str()] {
                    h.update(&(part.len() as u64).to_be_bytes());
                    h.update(part.as_bytes());
                }
            }
        };
        add("schema", &self.schema);
        if let Some(e) = &self.entities {
            add("entities", e);
        }
        self.policies.iter().for_each(|s| add("policy", s));
        self.contracts.iter().for_each(|s| add("contract", s));
        self.shadow.iter().for_each(|s| add("shadow", s));
        h.finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// `file:line:col` for a byte offset into `text` (1-based).
pub(super) fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map(|i| before.len() - i)
        .unwrap_or(before.len() + 1);
    (line, col)
}

/// Formats a Cedar diagnostic as `file:line:col: message`.
pub(super) fn diag(file: &str, text: &str, d: &(dyn Diagnostic + Send + Sync)) -> String {
    let mut msg = d.to_string();
    if let Some(help) = d.help() {
        msg.push_str(&format!(" ({help})"));
    }
    match d.labels().and_then(|mut l| l.next()) {
        Some(label) => {
            let (line, col) = position(text, label.offset());
            format!("{file}:{line}:{col}: {msg}")
        }
        None => format!("{file}: {msg}"),
    }
}

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

    /// Every path named, for the file watcher: a directory's entries count
    /// only when a source would read them (by the suffixes read from it).
    pub fn watch_targets(&self) -> Vec<crate::base::watch::Target> {
        use crate::base::watch::Target;
        let mut v: Vec<Target> = vec![self.schema.clone().into()];
        v.extend(self.entities.clone().map(Target::from));
        let sources = self.sources.iter().chain(&self.shadow);
        v.extend(sources.map(|s| Target::dir(s.path.clone(), POLICY_SUFFIXES)));
        v.extend(
            self.contracts
                .iter()
                .map(|s| Target::dir(s.path.clone(), CONTRACT_SUFFIXES)),
        );
        v
    }

    /// Every path named.
    pub fn watched_paths(&self) -> Vec<PathBuf> {
        let mut v = vec![self.schema.clone()];
        v.extend(self.entities.clone());
        v.extend(self.sources.iter().map(|s| s.path.clone()));
        v.extend(self.contracts.iter().map(|s| s.path.clone()));
        v.extend(self.shadow.iter().map(|s| s.path.clone()));
        v
    }
}

/// The files a policy directory (`sources`, `shadow`) is read for.
const POLICY_SUFFIXES: &[&str] = &[".cedar", LINKS];
/// The files a contract directory is read for.
const CONTRACT_SUFFIXES: &[&str] = &[".odcs.yaml"];

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

/// Everything that was wrong, one `file:line:col: message` per entry, the
/// first [`REPORTED`] of them, and how many more there were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadErrors {
    /// The errors reported, in the order found.
    pub shown: Vec<String>,
    /// How many more there were past [`REPORTED`].
    pub not_shown: usize,
    /// Errors not shown that a line of `shown` stands for besides itself:
    /// a contract's own `and N more errors not shown` (its list is capped
    /// where it is read).
    pub summarised: usize,
}

/// Errors a load reports at most (`validate`, the reload log, `/policy`'s
/// `last_error`): 16,000 failing policies made 16,000 lines of each.
pub const REPORTED: usize = 100;

impl LoadErrors {
    /// Every one of `errors`, none held back.
    pub fn all(errors: Vec<String>) -> LoadErrors {
        LoadErrors {
            shown: errors,
            not_shown: 0,
            summarised: 0,
        }
    }

    /// The first [`REPORTED`] of `errors` (in the order found: parse and
    /// input errors, then the validator's, each in file order), and how
    /// many more there are.
    pub fn capped(mut errors: Vec<String>) -> LoadErrors {
        let not_shown = errors.len().saturating_sub(REPORTED);
        errors.truncate(REPORTED);
        LoadErrors {
            shown: errors,
            not_shown,
            summarised: 0,
        }
    }

    /// The same, with `summarised` more that its lines stand for.
    pub fn summarising(mut self, summarised: usize) -> LoadErrors {
        self.summarised += summarised;
        self
    }

    /// How many errors there were, shown or not.
    pub fn total(&self) -> usize {
        self.shown.len() + self.not_shown + self.summarised
    }

    /// The errors as lines to print: those shown, then one saying how many
    /// more there are (`policy: and N more errors not shown`).
    pub fn lines(&self) -> Vec<String> {
        let mut lines = self.shown.clone();
        if self.not_shown > 0 {
            let more = self.not_shown;
            let s = if more == 1 { "" } else { "s" };
            lines.push(format!("policy: and {more} more error{s} not shown"));
        }
        lines
    }
}

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let more = self.total().saturating_sub(1);
        match self.shown.first() {
            None => f.write_str("policy: unknown error"),
            Some(first) if more == 0 => f.write_str(first),
            Some(first) => write!(
                f,
                "{first} (and {more} more error{})",
                if more == 1 { "" } else { "s" }
            ),
        }
    }
}

impl std::error::Error for LoadErrors {}

/// Why a policy source directory with no policy file is refused: a
/// directory emptied or removed and made again (`rm -rf`, `mkdir`, then a
/// copy) would otherwise load as a snapshot without its policies, the
/// mesh baseline's forbids gone, until the files come back.
const EMPTY_SOURCE: &str = "holds no policy file (`*.cedar`, `*.links.json`) and no contract; a source that lost its files is refused rather than its policies dropped (replace a source's files whole, as a link swap does; a source meant to hold no policy holds a `.cedar` file of comments)";

/// An error for each directory of `sources` from which nothing was read:
/// no policy file, and no contract when it is a contracts directory too
/// (a domain's ConfigMap may hold contracts alone).
fn empty_sources(cfg: &PolicyConfig, policies: &[Source], contracts: &[Source]) -> Vec<String> {
    let mut errors = Vec::new();
    for source in &cfg.sources {
        let dir = source.path.as_path();
        let holds = |read: &[Source]| {
            read.iter()
                .any(|f| Path::new(&f.name).parent() == Some(dir))
        };
        if dir.is_dir() && !holds(policies) && !holds(contracts) {
            errors.push(format!("{}: {EMPTY_SOURCE}", dir.display()));
        }
    }
    errors
}

pub(super) fn read_source(path: &Path) -> Result<Source, String> {
    read_source_from(path, path)
}

/// The file at `from`, named `name` (its path in the configured directory).
fn read_source_from(name: &Path, from: &Path) -> Result<Source, String> {
    crate::base::paths::read_file(from)
        .map(|text| Source {
            name: name.display().to_string(),
            text,
            domain: None,
        })
        .map_err(|e| format!("{}: {e}", name.display()))
}

/// A file as is, or a directory's files ending in `suffix`, sorted by name:
/// each as (its name in `path`, where to read it).
///
/// A Kubernetes volume (a ConfigMap's, a Secret's) holds each file as a link
/// through `..data` to the generation in force; the kubelet swaps `..data`
/// first and makes the links to files new in that generation after it. So
/// such a directory is listed by its `..data`: a read between the two steps
/// would otherwise load the new generation without its new files.
///
/// `confined` (a domain's directory): a file that resolves outside the
/// directory is refused. A domain's repository, synced by git, could
/// otherwise point the sidecar at the baseline's files (read twice, every
/// `@id` a duplicate), another domain's, or any file it can read (a
/// token, whose text a parse error would show). The links of a Kubernetes
/// volume (`x.cedar` -> `..data/x.cedar` -> `..2026_…/x.cedar`) stay in the
/// directory. A domain's source given as one file is confined the same way
/// to the directory it is in.
pub(super) fn expand(
    path: &Path,
    suffixes: &[&str],
    confined: bool,
) -> Result<Vec<(PathBuf, PathBuf)>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_dir() {
        let dir = path.parent().unwrap_or(Path::new("/"));
        let from = if confined {
            confine(dir, path, path)?
        } else {
            path.to_path_buf()
        };
        return Ok(vec![(path.to_path_buf(), from)]);
    }
    let generation = path.join("..data");
    let listed = if generation.is_dir() {
        generation.as_path()
    } else {
        path
    };
    let mut files: Vec<(PathBuf, PathBuf)> = std::fs::read_dir(listed)
        .map_err(|e| format!("{}: {e}", listed.display()))?
        .filter_map(|e| e.ok().map(|e| (path.join(e.file_name()), e.path())))
        .filter(|(name, from)| {
            from.is_file()
                && name
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| suffixes.iter().any(|s| n.ends_with(s)))
        })
        .collect();
    files.sort();
    if confined {
        for (name, from) in &mut files {
            *from = confine(path, name, from)?;
        }
    }
    Ok(files)
}

/// Where `from` (the file named `name`) resolves, if that is inside the
/// domain's directory `dir`. The file read is the one checked: its resolved
/// path, not the link (which could be swapped between the check and the
/// read).
fn confine(dir: &Path, name: &Path, from: &Path) -> Result<PathBuf, String> {
    let root = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let real = std::fs::canonicalize(from).map_err(|e| format!("{}: {e}", name.display()))?;
    if !real.starts_with(&root) {
        return Err(format!(
            "{}: links to {}, outside the domain's directory {}; a domain's source reads only its own files",
            name.display(),
            real.display(),
            dir.display()
        ));
    }
    Ok(real)
}

impl PolicyInputs {
    /// Reads every file the configuration names, all of one generation:
    /// when a path was swapped to new files while they were read (a
    /// listing from the old directory, files from the new), it reads them
    /// again, and refuses after `base::paths::READ_ATTEMPTS` tries rather
    /// than build a set nobody wrote.
    ///
    /// A file of a policy directory that looks like a policy file but is
    /// not read (in a subdirectory, `fields.Cedar`) is an error too: see
    /// `stray`.
    pub fn read(cfg: &PolicyConfig) -> Result<PolicyInputs, LoadErrors> {
        let stray = super::stray::policy_files(cfg);
        match Self::read_consistently(cfg, Self::read_once) {
            Ok(inputs) if stray.is_empty() => Ok(inputs),
            Ok(_) => Err(LoadErrors::all(stray)),
            Err(mut errors) => {
                errors.shown.extend(stray);
                Err(errors)
            }
        }
    }

    fn read_consistently(
        cfg: &PolicyConfig,
        mut read_once: impl FnMut(&PolicyConfig) -> Result<PolicyInputs, LoadErrors>,
    ) -> Result<PolicyInputs, LoadErrors> {
        crate::base::paths::read_whole(&cfg.watched_paths(), || read_once(cfg)).unwrap_or_else(
            |replaced| {
                Err(LoadErrors::all(
                    replaced
                        .0
                        .iter()
                        .map(|p| format!("{}: {replaced}; not loaded", p.display()))
                        .collect(),
                ))
            },
        )
    }

    /// Reads every file the configuration names, once.
    fn read_once(cfg: &PolicyConfig) -> Result<PolicyInputs, LoadErrors> {
        let mut errors = Vec::new();
        let mut read_all = |paths: &[(&Path, Option<&str>)], suffix: &[&str]| -> Vec<Source> {
            let mut out = Vec::new();
            for &(p, domain) in paths {
                match expand(p, suffix, domain.is_some()) {
                    Ok(files) => {
                        for (name, from) in files {
                            match read_source_from(&name, &from) {
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
        let policies = read_all(&owned(&cfg.sources), POLICY_SUFFIXES);
        let contracts = read_all(&owned(&cfg.contracts), CONTRACT_SUFFIXES);
        let shadow = read_all(&owned(&cfg.shadow), POLICY_SUFFIXES);
        // (A source whose read failed is reported for that already.)
        if errors.is_empty() {
            errors.extend(empty_sources(cfg, &policies, &contracts));
        }
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
                Err(LoadErrors::all(errors))
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

/// Where the lines of one text start: [`position`] of many offsets of
/// it, each without reading the text from its start (a file of 18,000
/// policies with two errors each took 200 s to report).
pub(super) struct Lines {
    starts: Vec<usize>,
    len: usize,
}

impl Lines {
    pub(super) fn of(text: &str) -> Lines {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines {
            starts,
            len: text.len(),
        }
    }

    /// As [`position`].
    pub(super) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.len);
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts.get(line.wrapping_sub(1)).copied().unwrap_or(0);
        (line.max(1), offset - start + 1)
    }
}

/// Formats a Cedar diagnostic as `file:line:col: message`.
pub(super) fn diag(file: &str, text: &str, d: &(dyn Diagnostic + Send + Sync)) -> String {
    diag_at(file, &Lines::of(text), 0, d)
}

/// [`diag`] with the lines of the file's text.
/// `at`: the offset in `file` of the text Cedar's positions are relative
/// to (a piece of it, see `parse.rs`).
pub(super) fn diag_at(
    file: &str,
    lines: &Lines,
    at: usize,
    d: &(dyn Diagnostic + Send + Sync),
) -> String {
    let mut msg = d.to_string();
    if let Some(help) = d.help() {
        msg.push_str(&format!(" ({help})"));
    }
    match d.labels().and_then(|mut l| l.next()) {
        Some(label) => {
            let (line, col) = lines.position(at + label.offset());
            format!("{file}:{line}:{col}: {msg}")
        }
        None => format!("{file}: {msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::paths::READ_ATTEMPTS;
    use std::os::unix::fs::symlink;

    fn config(dir: &Path, source: &str) -> PolicyConfig {
        std::fs::write(dir.join("schema.cedarschema"), "namespace Mesh {}\n").expect("schema");
        PolicyConfig {
            schema: dir.join("schema.cedarschema"),
            entities: None,
            sources: vec![dir.join(source).into()],
            contracts: Vec::new(),
            shadow: Vec::new(),
        }
    }

    fn write(dir: &Path, files: &[&str]) {
        std::fs::create_dir_all(dir).expect("mkdir");
        for f in files {
            std::fs::write(dir.join(f), format!("// {f}\n")).expect("write");
        }
    }

    /// Points `link` (in `dir`) at `target` atomically, as git-sync and the
    /// kubelet do.
    fn swap(dir: &Path, link: &str, target: &str) {
        let tmp = dir.join(format!("{link}.tmp"));
        symlink(target, &tmp).expect("symlink");
        std::fs::rename(&tmp, dir.join(link)).expect("rename");
    }

    fn names(inputs: &PolicyInputs) -> Vec<String> {
        inputs.policies.iter().map(|s| s.name.clone()).collect()
    }

    #[test]
    fn a_policy_source_directory_with_no_policy_file_is_refused() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path();
        // Emptied and made again: the baseline would be gone.
        write(&dir.join("mesh"), &["README.md", "baseline.cedar.off"]);
        let mut cfg = config(dir, "mesh");
        let Err(err) = PolicyInputs::read(&cfg) else {
            panic!("an empty source was read")
        };
        let shown = err.lines().join("\n");
        assert_eq!(
            shown,
            format!("{}: {EMPTY_SOURCE}", dir.join("mesh").display()),
            "{shown}"
        );
        // A source that is a contracts directory too may hold contracts
        // alone (a domain's ConfigMap).
        write(&dir.join("mesh"), &["orders.odcs.yaml"]);
        cfg.contracts = vec![dir.join("mesh").into()];
        assert!(PolicyInputs::read(&cfg).is_ok());
        cfg.contracts.clear();
        std::fs::remove_file(dir.join("mesh/orders.odcs.yaml")).expect("rm");
        // A shadow directory may be empty (it enforces nothing); a source
        // of template links alone is a source.
        write(&dir.join("shadow"), &[]);
        write(&dir.join("mesh"), &["grants.links.json"]);
        cfg.shadow = vec![dir.join("shadow").into()];
        let inputs = PolicyInputs::read(&cfg).expect("read");
        assert_eq!(names(&inputs).len(), 1);
        assert!(inputs.shadow.is_empty());
    }

    #[test]
    fn lines_place_every_offset_as_position_does() {
        for text in ["", "a", "\n", "ab\ncd\n\nxyz", "\n\nä\r\nb"] {
            let lines = Lines::of(text);
            let offsets = (0..=text.len()).filter(|&o| text.is_char_boundary(o));
            for offset in offsets.chain([text.len() + 2]) {
                assert_eq!(
                    lines.position(offset),
                    position(text, offset),
                    "{text:?} at {offset}"
                );
            }
        }
    }

    #[test]
    fn a_worktree_swapped_during_the_read_is_read_again_whole() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path();
        write(&dir.join("gen/1"), &["allow.cedar", "broken.cedar"]);
        write(&dir.join("gen/2"), &["deny.cedar"]);
        symlink("gen/1", dir.join("live")).expect("symlink");
        let cfg = config(dir, "live");
        let mut calls = 0;
        let read = PolicyInputs::read_consistently(&cfg, |cfg| {
            calls += 1;
            let r = PolicyInputs::read_once(cfg);
            if calls == 1 {
                swap(dir, "live", "gen/2");
            }
            r
        })
        .expect("read");
        assert_eq!(calls, 2);
        assert_eq!(
            names(&read),
            [dir.join("live/deny.cedar").display().to_string()]
        );
        assert_eq!(read.policies[0].text, "// deny.cedar\n");
    }

    #[test]
    fn a_volume_whose_data_link_is_swapped_during_the_read_is_read_again() {
        // A ConfigMap volume: each file is a symlink through `..data`,
        // itself a symlink to the generation in force.
        let t = tempfile::tempdir().expect("tempdir");
        let vol = t.path().join("vol");
        write(&vol.join("..gen1"), &["allow.cedar"]);
        write(&vol.join("..gen2"), &["allow.cedar"]);
        std::fs::write(vol.join("..gen2/allow.cedar"), "// new\n").expect("write");
        symlink("..gen1", vol.join("..data")).expect("symlink");
        symlink("..data/allow.cedar", vol.join("allow.cedar")).expect("symlink");
        let cfg = config(t.path(), "vol");
        let mut calls = 0;
        let read = PolicyInputs::read_consistently(&cfg, |cfg| {
            calls += 1;
            let r = PolicyInputs::read_once(cfg);
            if calls == 1 {
                swap(&vol, "..data", "..gen2");
            }
            r
        })
        .expect("read");
        assert_eq!(calls, 2);
        assert_eq!(read.policies[0].text, "// new\n");
    }

    #[test]
    fn a_volume_is_listed_by_its_generation_before_the_links_to_new_files_exist() {
        // The moment after the kubelet has swapped `..data` and before it
        // has made the link to the generation's new file.
        let t = tempfile::tempdir().expect("tempdir");
        let vol = t.path().join("vol");
        write(
            &vol.join("..gen2"),
            &["allow.cedar", "deny.cedar", "notes.txt"],
        );
        symlink("..gen2", vol.join("..data")).expect("symlink");
        symlink("..data/allow.cedar", vol.join("allow.cedar")).expect("symlink");
        let cfg = config(t.path(), "vol");
        let read = PolicyInputs::read(&cfg).expect("read");
        let p = |f: &str| vol.join(f).display().to_string();
        assert_eq!(names(&read), [p("allow.cedar"), p("deny.cedar")]);
        assert_eq!(read.policies[1].text, "// deny.cedar\n");
    }

    /// `config` with its source declared as `domain`'s.
    fn owned_config(dir: &Path, source: &str, domain: &str) -> PolicyConfig {
        let mut cfg = config(dir, source);
        cfg.sources[0].domain = Some(domain.into());
        cfg
    }

    #[test]
    fn a_domain_directory_reads_no_file_outside_it() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path();
        write(&dir.join("mesh"), &["baseline.cedar"]);
        write(&dir.join("sales"), &["own.cedar"]);
        write(&dir.join("sales/sub"), &["inner.cedar"]);
        symlink("sub/inner.cedar", dir.join("sales/near.cedar")).expect("symlink");
        // Inside the directory: read.
        let read = PolicyInputs::read(&owned_config(dir, "sales", "sales")).expect("read");
        assert_eq!(read.policies.len(), 2);
        assert_eq!(read.policies[0].text, "// inner.cedar\n");
        // Outside it: refused, naming the link and where it leads.
        symlink("../mesh/baseline.cedar", dir.join("sales/zz.cedar")).expect("symlink");
        let err = PolicyInputs::read(&owned_config(dir, "sales", "sales")).expect_err("refused");
        let real = std::fs::canonicalize(dir.join("mesh/baseline.cedar")).expect("real");
        assert_eq!(
            err.shown,
            [format!(
                "{}: links to {}, outside the domain's directory {}; a domain's source reads only its own files",
                dir.join("sales/zz.cedar").display(),
                real.display(),
                dir.join("sales").display()
            )]
        );
        // The baseline's own sources are the platform's: not confined.
        let read = PolicyInputs::read(&config(dir, "sales")).expect("read");
        assert_eq!(read.policies.len(), 3);

        // A domain's source given as one file: confined to its directory.
        let read = PolicyInputs::read(&owned_config(dir, "sales/own.cedar", "sales"))
            .expect("its own file");
        assert_eq!(read.policies[0].text, "// own.cedar\n");
        let read = PolicyInputs::read(&owned_config(dir, "sales/near.cedar", "sales"))
            .expect("a link inside");
        assert_eq!(read.policies[0].text, "// inner.cedar\n");
        symlink("/dev/zero", dir.join("sales/zero.cedar")).expect("symlink");
        let secret = dir.join("token");
        std::fs::write(&secret, "s3cr3t").expect("write");
        symlink(&secret, dir.join("sales/secret.cedar")).expect("symlink");
        for (file, real) in [
            ("zz.cedar", real.clone()),
            ("zero.cedar", PathBuf::from("/dev/zero")),
            (
                "secret.cedar",
                std::fs::canonicalize(&secret).expect("real"),
            ),
        ] {
            let cfg = owned_config(dir, &format!("sales/{file}"), "sales");
            let err = PolicyInputs::read(&cfg).expect_err("refused");
            assert_eq!(
                err.shown,
                [format!(
                    "{}: links to {}, outside the domain's directory {}; a domain's source reads only its own files",
                    dir.join("sales").join(file).display(),
                    real.display(),
                    dir.join("sales").display()
                )]
            );
        }
        // The baseline's single file is read where it leads.
        let read = PolicyInputs::read(&config(dir, "sales/zz.cedar")).expect("read");
        assert_eq!(read.policies[0].text, "// baseline.cedar\n");
    }

    #[test]
    fn a_domain_volume_reads_through_its_data_link() {
        let t = tempfile::tempdir().expect("tempdir");
        let vol = t.path().join("vol");
        write(&vol.join("..2026_01_01"), &["allow.cedar"]);
        symlink("..2026_01_01", vol.join("..data")).expect("symlink");
        symlink("..data/allow.cedar", vol.join("allow.cedar")).expect("symlink");
        let read = PolicyInputs::read(&owned_config(t.path(), "vol", "sales")).expect("read");
        assert_eq!(read.policies.len(), 1);
        assert_eq!(read.policies[0].domain.as_deref(), Some("sales"));
        // The volume itself reached through a link (git-sync's `--link`).
        symlink("vol", t.path().join("live")).expect("symlink");
        let read = PolicyInputs::read(&owned_config(t.path(), "live", "sales")).expect("read");
        assert_eq!(read.policies[0].text, "// allow.cedar\n");
    }

    #[test]
    fn files_unchanged_during_the_read_are_read_once() {
        let t = tempfile::tempdir().expect("tempdir");
        write(&t.path().join("p"), &["a.cedar", "b.cedar", "notes.txt"]);
        let cfg = config(t.path(), "p");
        let mut calls = 0;
        let read = PolicyInputs::read_consistently(&cfg, |cfg| {
            calls += 1;
            PolicyInputs::read_once(cfg)
        })
        .expect("read");
        assert_eq!(calls, 1);
        let p = |f: &str| t.path().join("p").join(f).display().to_string();
        assert_eq!(names(&read), [p("a.cedar"), p("b.cedar")]);
    }

    #[test]
    fn files_replaced_at_every_read_are_refused_naming_the_path() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path();
        for g in 0..=READ_ATTEMPTS {
            write(&dir.join(format!("gen/{g}")), &["allow.cedar"]);
        }
        symlink("gen/0", dir.join("live")).expect("symlink");
        let cfg = config(dir, "live");
        let mut calls = 0;
        let err = PolicyInputs::read_consistently(&cfg, |cfg| {
            calls += 1;
            let r = PolicyInputs::read_once(cfg);
            swap(dir, "live", &format!("gen/{calls}"));
            r
        })
        .expect_err("never the same twice");
        assert_eq!(calls, READ_ATTEMPTS);
        assert_eq!(
            err.shown,
            [format!(
                "{}: replaced while being read, {READ_ATTEMPTS} times in a row; not loaded",
                dir.join("live").display()
            )]
        );
    }
}

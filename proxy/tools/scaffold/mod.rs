//! `meshgate init`: the skeleton of a domain and of a data product, laid out
//! like the example tree `policies/` (the platform's schema, `entities.json`
//! and `mesh/` at the root, each domain under `domains/NAME/`), so that
//! `meshgate validate`, `meshgate test` and `meshgate slo-rules` pass on it as
//! written. Nothing is ever overwritten: every file is checked first, and a
//! skeleton is written whole or not at all. The texts are in `templates`.

mod templates;
#[cfg(test)]
mod tests;

use std::io::Write;
use std::path::{Path, PathBuf};

/// The SPIFFE trust domain the mesh baseline expects.
pub const DEFAULT_TRUST_DOMAIN: &str = "mesh.local";

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("{what} `{value}`: {reason}")]
    BadName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{0}: already exists; meshgate init never overwrites a file (move it away or choose another name)")]
    Exists(String),
    #[error("{0}: not found; copy the platform's mesh baseline (schema.cedarschema, entities.json, mesh/; policies/ in the meshgate repository) into {1} first, or pass --dir")]
    NoBaseline(String, String),
    #[error("{0}: not found; run `meshgate init domain {1}` first (with the same --dir)")]
    NoDomain(String, String),
    #[error("{path}: {message}")]
    Entities { path: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// What `meshgate init domain` is asked for.
#[derive(Debug, Clone)]
pub struct DomainSpec {
    pub name: String,
    /// The Kubernetes namespaces whose services belong to the domain.
    pub namespaces: Vec<String>,
    pub trust_domain: String,
}

/// What `meshgate init product` is asked for.
#[derive(Debug, Clone)]
pub struct ProductSpec {
    /// The contract id, `DOMAIN.PRODUCT`.
    pub id: String,
    pub domain: String,
    pub product: String,
    /// The namespace of the domain's own services in the generated tests.
    pub namespace: String,
    pub trust_domain: String,
    /// The owning team (ODCS `team` with role owner, and `owner`).
    pub owner: String,
}

/// What was written, and what the user still has to do by hand.
#[derive(Debug, Default)]
pub struct Written {
    pub files: Vec<PathBuf>,
    /// Lines for the user: entries for files meshgate does not own.
    pub notes: Vec<String>,
}

impl DomainSpec {
    /// Checks the names; `namespaces` empty means the domain's own name.
    pub fn new(
        name: &str,
        namespaces: &[String],
        trust_domain: &str,
    ) -> Result<DomainSpec, ScaffoldError> {
        check_label("domain name", name)?;
        let namespaces = if namespaces.is_empty() {
            vec![name.to_string()]
        } else {
            namespaces.to_vec()
        };
        for ns in &namespaces {
            check_label("--namespace", ns)?;
        }
        check_trust_domain(trust_domain)?;
        Ok(DomainSpec {
            name: name.into(),
            namespaces,
            trust_domain: trust_domain.into(),
        })
    }
}

impl ProductSpec {
    /// Checks `DOMAIN.PRODUCT` and the options; `namespace` defaults to the
    /// domain's name, `owner` to a placeholder address to be replaced.
    pub fn new(
        id: &str,
        namespace: Option<&str>,
        trust_domain: &str,
        owner: Option<&str>,
    ) -> Result<ProductSpec, ScaffoldError> {
        let Some((domain, product)) = id.split_once('.') else {
            return Err(ScaffoldError::BadName {
                what: "product id",
                value: id.into(),
                reason: "expected DOMAIN.PRODUCT, e.g. logistics.shipments",
            });
        };
        check_label("product id's domain", domain)?;
        check_label("product id's product", product)?;
        let namespace = namespace.unwrap_or(domain);
        check_label("--namespace", namespace)?;
        check_trust_domain(trust_domain)?;
        let owner = owner.map_or_else(|| format!("{domain}-data-team@example.com"), String::from);
        if owner.is_empty()
            || owner
                .chars()
                .any(|c| c.is_control() || c == '"' || c == '\\')
        {
            return Err(ScaffoldError::BadName {
                what: "--owner",
                value: owner,
                reason:
                    "must be a non-empty name without quotes, backslashes or control characters",
            });
        }
        Ok(ProductSpec {
            id: id.into(),
            domain: domain.into(),
            product: product.into(),
            namespace: namespace.into(),
            trust_domain: trust_domain.into(),
            owner,
        })
    }
}

/// A name used as a Cedar id, a file name, a path segment and a Kubernetes
/// name: an RFC 1123 label (what a namespace must be).
fn check_label(what: &'static str, value: &str) -> Result<(), ScaffoldError> {
    let bad = |reason| {
        Err(ScaffoldError::BadName {
            what,
            value: value.into(),
            reason,
        })
    };
    if value.is_empty() || value.len() > 63 {
        return bad("must be 1 to 63 characters");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("may hold only lower-case letters, digits and - (it names a Kubernetes namespace, a file and a Cedar id)");
    }
    if value.starts_with('-') || value.ends_with('-') {
        return bad("must start and end with a letter or digit");
    }
    Ok(())
}

fn check_trust_domain(value: &str) -> Result<(), ScaffoldError> {
    let ok = !value.is_empty()
        && value.len() <= 255
        && value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(ScaffoldError::BadName {
            what: "--trust-domain",
            value: value.into(),
            reason: "a SPIFFE trust domain holds only lower-case letters, digits, ., - and _",
        })
    }
}

/// `meshgate init domain`: `domains/NAME/` (policies, grants, the policy
/// ConfigMap's kustomization) and `domains/NAME/local/` (a sidecar
/// configuration for a local run; `entities.json` with the domain's entry
/// when the mesh's `entities.json` does not have it yet).
pub fn init_domain(dir: &Path, spec: &DomainSpec) -> Result<Written, ScaffoldError> {
    for needed in ["schema.cedarschema", "mesh"] {
        let p = dir.join(needed);
        if !p.exists() {
            let root = match dir.as_os_str().is_empty() {
                true => ".".to_string(),
                false => dir.display().to_string(),
            };
            return Err(ScaffoldError::NoBaseline(p.display().to_string(), root));
        }
    }
    let home = dir.join("domains").join(&spec.name);
    let entry = templates::domain_entity(spec);
    let mesh_entities = dir.join("entities.json");
    let local_entities = local_entities(&mesh_entities, spec, &entry)?;
    let entities_ref = if local_entities.is_some() {
        "entities.json"
    } else {
        "../../../entities.json"
    };
    let mut files = vec![
        (
            home.join("policies.cedar"),
            templates::domain_policies(spec),
        ),
        (home.join("grants.links.json"), "[]\n".to_string()),
        (
            home.join("kustomization.yaml"),
            templates::kustomization(spec),
        ),
        (
            home.join("local").join("meshgate.yaml"),
            templates::local_config(spec, entities_ref),
        ),
        (
            home.join("local").join(".gitignore"),
            "certs/\n".to_string(),
        ),
    ];
    let mut notes = Vec::new();
    if let Some(text) = local_entities {
        files.push((home.join("local").join("entities.json"), text));
        notes.push(format!(
            "{} has no Mesh::Domain \"{}\": the platform team owns that file; ask them to add this entry (until then domains/{}/local/entities.json stands in for it):\n{}",
            mesh_entities.display(),
            spec.name,
            spec.name,
            serde_json::to_string_pretty(&entry).unwrap_or_default()
        ));
    }
    write_all(&files)?;
    Ok(Written {
        files: files.into_iter().map(|(p, _)| p).collect(),
        notes,
    })
}

/// The mesh's entities with the domain's entry added, or None when it is
/// there already. A namespace another domain claims is refused: a service
/// would belong to both.
fn local_entities(
    mesh: &Path,
    spec: &DomainSpec,
    entry: &serde_json::Value,
) -> Result<Option<String>, ScaffoldError> {
    let err = |message: String| ScaffoldError::Entities {
        path: mesh.display().to_string(),
        message,
    };
    let mut list = match std::fs::read_to_string(mesh) {
        Ok(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Array(list)) => list,
            Ok(_) => return Err(err("expected a JSON list of entities".into())),
            Err(e) => return Err(err(e.to_string())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(ScaffoldError::Io {
                path: mesh.display().to_string(),
                source,
            })
        }
    };
    for e in &list {
        if e["uid"]["type"] != "Mesh::Domain" {
            continue;
        }
        let id = e["uid"]["id"].as_str().unwrap_or_default();
        if id == spec.name {
            return Ok(None);
        }
        let claimed = e["attrs"]["namespaces"].as_array();
        if let Some(ns) = spec
            .namespaces
            .iter()
            .find(|ns| claimed.is_some_and(|c| c.iter().any(|v| v == ns.as_str())))
        {
            return Err(err(format!(
                "namespace `{ns}` already belongs to domain `{id}`; choose another with --namespace"
            )));
        }
    }
    list.push(entry.clone());
    let mut text = serde_json::to_string_pretty(&list).map_err(|e| err(e.to_string()))?;
    text.push('\n');
    Ok(Some(text))
}

/// `meshgate init product`: the contract, the product's policy and its
/// tests in both formats, in the domain's directory.
pub fn init_product(dir: &Path, spec: &ProductSpec) -> Result<Written, ScaffoldError> {
    let home = dir.join("domains").join(&spec.domain);
    if !home.is_dir() {
        return Err(ScaffoldError::NoDomain(
            home.display().to_string(),
            spec.domain.clone(),
        ));
    }
    let p = &spec.product;
    let files = vec![
        (
            home.join(format!("{p}.odcs.yaml")),
            templates::contract(spec),
        ),
        (
            home.join(format!("{p}.cedar")),
            templates::product_policies(spec),
        ),
        (
            home.join("tests").join(format!("{p}.test.yaml")),
            templates::http_tests(spec),
        ),
        (
            home.join("tests").join(format!("{p}.test.json")),
            templates::cedar_tests(spec),
        ),
    ];
    write_all(&files)?;
    Ok(Written {
        files: files.into_iter().map(|(p, _)| p).collect(),
        notes: kustomization_note(&home, spec).into_iter().collect(),
    })
}

/// What the user has to add to the domain's kustomization for the
/// product's files to reach its ConfigMap, if anything.
fn kustomization_note(home: &Path, spec: &ProductSpec) -> Option<String> {
    let p = &spec.product;
    let kustomization = home.join("kustomization.yaml");
    let Ok(listed) = std::fs::read_to_string(&kustomization) else {
        return Some(format!(
            "{}: not found; list {p}.odcs.yaml and {p}.cedar in the kustomization that makes the ConfigMap {}-policies",
            kustomization.display(),
            spec.domain
        ));
    };
    let missing: Vec<String> = [format!("{p}.odcs.yaml"), format!("{p}.cedar")]
        .into_iter()
        .filter(|f| !listed.lines().any(|l| l.trim() == format!("- {f}")))
        .map(|f| format!("      - {f}"))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "add to the `files:` of {} (meshgate init never edits an existing file), so that the ConfigMap {}-policies carries them:\n{}",
            kustomization.display(),
            spec.domain,
            missing.join("\n")
        )
    })
}

/// Writes every file, or none: each path is checked first, then created
/// with `create_new`, so a file that appears in between is not replaced.
fn write_all(files: &[(PathBuf, String)]) -> Result<(), ScaffoldError> {
    if let Some((p, _)) = files.iter().find(|(p, _)| p.symlink_metadata().is_ok()) {
        return Err(ScaffoldError::Exists(p.display().to_string()));
    }
    for (path, text) in files {
        let io = |source| ScaffoldError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    ScaffoldError::Exists(path.display().to_string())
                } else {
                    io(e)
                }
            })?;
        f.write_all(text.as_bytes()).map_err(io)?;
    }
    Ok(())
}

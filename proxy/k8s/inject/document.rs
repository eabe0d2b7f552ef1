//! `meshgate inject`: workloads of a manifest stream injected document by document.

use json_patch::jsonptr::PointerBuf;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::*;

/// What happened to one document of `meshgate inject -f`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocOutcome {
    Injected(Box<Status>),
    Skipped(SkipReason),
    /// Not a kind that holds a pod (Service, ConfigMap, ...).
    NotApplicable,
}

/// Where a kind keeps its pod (template), as pointer tokens.
pub(super) fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => Some(&["spec", "template"]),
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// Errors of one document of `meshgate inject -f`.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("{kind} {name}: {source}")]
    Inject {
        kind: String,
        name: String,
        source: InjectError,
    },
    #[error("{kind} {name}: {message}")]
    Shape {
        kind: String,
        name: String,
        message: String,
    },
}

/// Injects the pod (template) of one Kubernetes object in place, the way the
/// webhook would inject the pods it creates. A namespace is taken as opted in
/// (you asked for injection); a pod annotated `disabled` is left alone.
pub fn inject_document(cfg: &InjectorConfig, doc: &mut Value) -> Result<DocOutcome, DocumentError> {
    let kind = doc["kind"].as_str().unwrap_or_default().to_string();
    let name = doc["metadata"]["name"]
        .as_str()
        .or_else(|| doc["metadata"]["generateName"].as_str())
        .unwrap_or("(unnamed)")
        .to_string();
    let shape = |message: String| DocumentError::Shape {
        kind: kind.clone(),
        name: name.clone(),
        message,
    };
    let Some(tokens) = template_path(&kind) else {
        return Ok(DocOutcome::NotApplicable);
    };
    let namespace = doc["metadata"]["namespace"].as_str().map(str::to_string);
    let prefix = PointerBuf::from_tokens(tokens.iter().copied());
    let template = prefix
        .resolve_mut(doc)
        .map_err(|e| shape(format!("no pod template at {prefix}: {e}")))?;
    let Some(obj) = template.as_object_mut() else {
        return Err(shape(format!("{prefix} is not an object")));
    };
    // A template may leave its metadata out; the status annotation needs it.
    obj.entry("metadata").or_insert_with(|| json!({}));
    if let Some(volumes) = obj.get_mut("spec").and_then(|s| s.get_mut("volumes")) {
        yaml11_file_modes(volumes);
    }
    let meta: ObjectMeta = serde_json::from_value(obj["metadata"].clone())
        .map_err(|e| shape(format!("pod metadata: {e}")))?;
    let spec: PodSpec = serde_json::from_value(obj.get("spec").cloned().unwrap_or(Value::Null))
        .map_err(|e| shape(format!("pod spec: {e}")))?;
    let labels = BTreeMap::from([(INJECT.to_string(), "enabled".to_string())]);
    let decision =
        plan(cfg, namespace.as_deref(), &labels, &meta, &spec, &prefix).map_err(|source| {
            DocumentError::Inject {
                kind: kind.clone(),
                name: name.clone(),
                source,
            }
        })?;
    match decision {
        PodOutcome::Skip(r) => Ok(DocOutcome::Skipped(r)),
        PodOutcome::Inject { patch, status } => {
            json_patch::patch(doc, &patch).map_err(|e| shape(format!("patch: {e}")))?;
            Ok(DocOutcome::Injected(status))
        }
    }
}

/// File modes written the YAML 1.1 way (`defaultMode: 0644`), as kubectl
/// reads them (octal), in a pod's volumes. serde_yaml_ng reads YAML 1.2,
/// where `0644` is neither an octal nor a decimal integer but a string; a
/// string of a leading 0 and octal digits under a `defaultMode` or `mode`
/// key becomes the number it means in YAML 1.1 (0644 = 420). YAML 1.2's
/// `0o644` is read as a number already.
pub(super) fn yaml11_file_modes(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                if k == "defaultMode" || k == "mode" {
                    if let Some(n) = x.as_str().and_then(yaml11_octal) {
                        *x = Value::from(n);
                        continue;
                    }
                }
                yaml11_file_modes(x);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(yaml11_file_modes),
        _ => {}
    }
}

/// `0644` -> 420; None for anything else (`644`, `0`, `0x1f`, `08`, `-0644`).
pub(super) fn yaml11_octal(s: &str) -> Option<u32> {
    let digits = s.strip_prefix('0')?;
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
}

/// Reads a stream of YAML (or JSON) documents, injects each, and writes them
/// back as YAML documents; a `List` has each of its items injected.
/// Each outcome comes with its document's `kind/name`.
pub fn inject_stream(
    cfg: &InjectorConfig,
    input: &str,
) -> Result<(String, Vec<(String, DocOutcome)>), StreamError> {
    let mut out = String::new();
    let mut outcomes = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(input).enumerate() {
        let mut doc = Value::deserialize(de).map_err(|e| StreamError::Parse {
            index: i + 1,
            message: e.to_string(),
        })?;
        if doc.is_null() {
            continue;
        }
        if doc["kind"] == "List" {
            if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
                for item in items {
                    let label = doc_label(item);
                    let o = inject_document(cfg, item).map_err(|source| StreamError::Document {
                        index: i + 1,
                        source,
                    })?;
                    outcomes.push((label, o));
                }
            }
        } else {
            let label = doc_label(&doc);
            let o = inject_document(cfg, &mut doc).map_err(|source| StreamError::Document {
                index: i + 1,
                source,
            })?;
            outcomes.push((label, o));
        }
        let yaml = serde_yaml_ng::to_string(&doc).map_err(|e| StreamError::Parse {
            index: i + 1,
            message: e.to_string(),
        })?;
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&yaml);
    }
    Ok((out, outcomes))
}

pub(super) fn doc_label(doc: &Value) -> String {
    let kind = doc["kind"].as_str().unwrap_or("(no kind)").to_lowercase();
    let name = doc["metadata"]["name"]
        .as_str()
        .or_else(|| doc["metadata"]["generateName"].as_str())
        .unwrap_or("(unnamed)");
    format!("{kind}/{name}")
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("document {index}: {message}")]
    Parse { index: usize, message: String },
    #[error("document {index}: {source}")]
    Document { index: usize, source: DocumentError },
}

//! The JSON Patch for a pod: the app told its new address, the rendered
//! sidecar and its volumes added, the pod marked as injected.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::PodSpec;
use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::plan::{resolve, Plan};
use super::render::{sidecar, status, volume};
use super::*;

pub(super) fn ptr(prefix: &PointerBuf, tokens: &[&str]) -> PointerBuf {
    let mut p = prefix.clone();
    for t in tokens {
        p.push_back(*t);
    }
    p
}

pub(super) fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

/// The patch for one pod: its settings resolved into a plan, the plan
/// rendered, and the operations that add what was rendered.
pub(super) fn build(
    cfg: &InjectorConfig,
    ann: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
    spec: &PodSpec,
    prefix: &PointerBuf,
) -> Result<(Vec<PatchOperation>, Status), InjectError> {
    let plan = resolve(cfg, ann, spec)?;
    let sc = &cfg.sidecar;
    let status = status(&plan, sc, spec);
    let mut ops = app_ops(&plan, prefix);
    ops.push(sidecar_op(&plan, sidecar(&plan, sc), spec, prefix));
    if plan.set_fs_group {
        ops.push(fs_group_op(sc.run_as_group, spec, prefix));
    }
    ops.extend(volume_ops(&plan, spec, prefix));
    ops.push(status_op(&status, ann, prefix));
    ops.push(label_op(labels, prefix));
    Ok((ops, status))
}

/// The app: its served port leaves it, it learns where to listen.
fn app_ops(plan: &Plan, prefix: &PointerBuf) -> Vec<PatchOperation> {
    let mut ops = Vec::new();
    let ci = plan.taken.container.to_string();
    ops.push(PatchOperation::Remove(RemoveOperation {
        path: ptr(
            prefix,
            &[
                "spec",
                "containers",
                &ci,
                "ports",
                &plan.taken.port_index.to_string(),
            ],
        ),
    }));
    let upstream_port = plan.upstream_port.to_string();
    let mut env = vec![
        (UPSTREAM_ADDR_ENV.to_string(), plan.upstream()),
        (UPSTREAM_PORT_ENV_NAME.to_string(), upstream_port.clone()),
    ];
    if let Some(name) = plan.upstream_env {
        env.push((name.to_string(), upstream_port));
    }
    match &plan.app.env {
        None => ops.push(add(
            ptr(prefix, &["spec", "containers", &ci, "env"]),
            Value::Array(
                env.iter()
                    .map(|(k, v)| json!({"name": k, "value": v}))
                    .collect(),
            ),
        )),
        Some(existing) => {
            for (k, v) in &env {
                match existing.iter().position(|e| &e.name == k) {
                    Some(i) => ops.push(PatchOperation::Replace(ReplaceOperation {
                        path: ptr(prefix, &["spec", "containers", &ci, "env", &i.to_string()]),
                        value: json!({"name": k, "value": v}),
                    })),
                    None => ops.push(add(
                        ptr(prefix, &["spec", "containers", &ci, "env", "-"]),
                        json!({"name": k, "value": v}),
                    )),
                }
            }
        }
    }
    ops
}

/// The sidecar: first among the init containers (so the others may use
/// the network through it), or last among the containers.
fn sidecar_op(plan: &Plan, sidecar: Value, spec: &PodSpec, prefix: &PointerBuf) -> PatchOperation {
    match plan.mode {
        Mode::Native => match &spec.init_containers {
            Some(_) => add(ptr(prefix, &["spec", "initContainers", "0"]), sidecar),
            None => add(ptr(prefix, &["spec", "initContainers"]), json!([sidecar])),
        },
        Mode::Container => add(ptr(prefix, &["spec", "containers", "-"]), sidecar),
    }
}

fn fs_group_op(group: i64, spec: &PodSpec, prefix: &PointerBuf) -> PatchOperation {
    let group = json!(group);
    match &spec.security_context {
        None => add(
            ptr(prefix, &["spec", "securityContext"]),
            json!({ "fsGroup": group }),
        ),
        Some(_) => add(ptr(prefix, &["spec", "securityContext", "fsGroup"]), group),
    }
}

fn volume_ops(plan: &Plan, spec: &PodSpec, prefix: &PointerBuf) -> Vec<PatchOperation> {
    let volumes = plan.volumes.iter().map(volume);
    match &spec.volumes {
        Some(_) => volumes
            .map(|v| add(ptr(prefix, &["spec", "volumes", "-"]), v))
            .collect(),
        None => vec![add(
            ptr(prefix, &["spec", "volumes"]),
            Value::Array(volumes.collect()),
        )],
    }
}

/// The `meshgate.io/injected` annotation.
fn status_op(
    status: &Status,
    ann: &BTreeMap<String, String>,
    prefix: &PointerBuf,
) -> PatchOperation {
    let status_json = serde_json::to_string(status).unwrap_or_default();
    if ann.is_empty() {
        add(
            ptr(prefix, &["metadata", "annotations"]),
            json!({ STATUS: status_json }),
        )
    } else {
        add(
            ptr(prefix, &["metadata", "annotations", STATUS]),
            Value::String(status_json),
        )
    }
}

/// The `meshgate.io/sidecar: injected` label.
fn label_op(labels: Option<&BTreeMap<String, String>>, prefix: &PointerBuf) -> PatchOperation {
    match labels {
        Some(l) if !l.is_empty() => add(
            ptr(prefix, &["metadata", "labels", SIDECAR_LABEL]),
            json!(SIDECAR_LABEL_VALUE),
        ),
        _ => add(
            ptr(prefix, &["metadata", "labels"]),
            json!({ SIDECAR_LABEL: SIDECAR_LABEL_VALUE }),
        ),
    }
}

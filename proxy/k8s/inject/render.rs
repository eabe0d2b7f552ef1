//! A [`Plan`] rendered as Kubernetes objects: the sidecar container, its
//! volumes, its configuration, and the status recorded on the pod.

use k8s_openapi::api::core::v1::PodSpec;
use serde_json::{json, Value};

use super::plan::{Plan, Source, Volume};
use super::*;

/// The sidecar's configuration (YAML), paths relative to [`WORKING_DIR`].
pub(super) fn sidecar_config(plan: &Plan) -> String {
    let rel = |dir: &str| dir.trim_start_matches('/').to_string();
    // Whether there is a domain policy ConfigMap, and its domain.
    let policies = plan.policy_configmap.map(|_| plan.policy_domain);
    let contracts = plan.contracts_dir();
    let mut y = format!(
        "listen: 0.0.0.0:{data_port}\nadmin: 0.0.0.0:{admin_port}\nupstream: http://{upstream}\nupstream_protocol: {protocol}\ntls:\n  cert: {id}/tls.crt\n  key: {id}/tls.key\n  client_ca: {id}/ca.crt\nlog:\n  level: {log}\n",
        data_port = plan.taken.number,
        admin_port = plan.admin_port,
        upstream = plan.upstream(),
        protocol = plan.protocol,
        id = rel(IDENTITY_DIR),
        log = yaml_string(plan.log_level),
    );
    let mesh = rel(MESH_DIR);
    y.push_str(&format!(
        "policy:\n  schema: {mesh}/schema.cedarschema\n  entities: {mesh}/entities.json\n  sources:\n    - {mesh}\n"
    ));
    match policies {
        None => {}
        Some(None) => y.push_str(&format!("    - {}\n", rel(POLICIES_DIR))),
        // The domain's ConfigMap speaks only for the domain.
        Some(Some(d)) => y.push_str(&format!(
            "    - {{ path: {}, domain: {} }}\n",
            rel(POLICIES_DIR),
            yaml_string(d)
        )),
    }
    match (contracts, policies.flatten()) {
        (None, _) => {}
        (Some(dir), None) => y.push_str(&format!("  contracts:\n    - {}\n", rel(dir))),
        // Only the domain's own contracts.
        (Some(dir), Some(d)) => y.push_str(&format!(
            "  contracts:\n    - {{ path: {}, domain: {} }}\n",
            rel(dir),
            yaml_string(d)
        )),
    }
    if plan.hash_key_secret.is_some() {
        // Watched where the kubelet swaps the Secret's files.
        y.push_str(&format!(
            "fields:\n  hash_key_file: {}/{HASH_KEY_FILE}\n",
            rel(HASH_KEY_DIR)
        ));
    }
    y
}

/// A YAML double-quoted scalar.
pub(super) fn yaml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A pod volume.
pub(super) fn volume(v: &Volume) -> Value {
    match v.source {
        Source::Csi { fs_group } => json!({"name": v.name, "csi": {
            "driver": CSI_DRIVER,
            "readOnly": true,
            "volumeAttributes": {CSI_FS_GROUP: fs_group.to_string()},
        }}),
        Source::Secret(s) => {
            json!({"name": v.name, "secret": {"secretName": s, "defaultMode": 0o440}})
        }
        Source::SecretKey { secret, key } => json!({"name": v.name, "secret": {
            "secretName": secret,
            "defaultMode": 0o440,
            "items": [{"key": key, "path": key}],
        }}),
        Source::ConfigMap(cm) => json!({"name": v.name, "configMap": {"name": cm}}),
    }
}

fn resources(plan: &Plan) -> Value {
    let map = |list: &[(&str, String)]| {
        list.iter()
            .map(|(field, q)| ((*field).to_string(), Value::String(q.clone())))
            .collect::<serde_json::Map<_, _>>()
    };
    let mut r = serde_json::Map::new();
    if !plan.resources.requests.is_empty() {
        r.insert(
            "requests".into(),
            Value::Object(map(&plan.resources.requests)),
        );
    }
    if !plan.resources.limits.is_empty() {
        r.insert("limits".into(), Value::Object(map(&plan.resources.limits)));
    }
    Value::Object(r)
}

/// The taken port as the app declared it, hostPort and hostIP included:
/// a pod published on a node port stays published, now through mTLS.
fn served_port(taken: &Taken) -> Value {
    let mut served_port = json!({
        "name": taken.name.clone().unwrap_or_else(|| "meshgate".into()),
        "containerPort": taken.number,
        "protocol": "TCP",
    });
    if let Some(h) = taken.host_port {
        served_port["hostPort"] = json!(h);
    }
    if let Some(ip) = &taken.host_ip {
        served_port["hostIP"] = json!(ip);
    }
    served_port
}

/// The sidecar container.
pub(super) fn sidecar(plan: &Plan, sc: &SidecarConfig) -> Value {
    let config = sidecar_config(plan);
    let mounts: Vec<Value> = plan
        .volumes
        .iter()
        .map(|v| json!({"name": v.name, "mountPath": v.mount, "readOnly": true}))
        .collect();
    let probe = |path: &str, period: i32, failures: i32| json!({"httpGet": {"path": path, "port": ADMIN_PORT_NAME}, "periodSeconds": period, "failureThreshold": failures, "timeoutSeconds": 1});
    let mut sidecar = json!({
        "name": CONTAINER,
        "image": sc.image,
        "imagePullPolicy": sc.image_pull_policy,
        "command": ["meshgate", "run"],
        "workingDir": WORKING_DIR,
        "env": [
            {"name": CONFIG_ENV, "value": config},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        ],
        "ports": [served_port(&plan.taken), {"name": ADMIN_PORT_NAME, "containerPort": plan.admin_port, "protocol": "TCP"}],
        "startupProbe": probe("/ready", 1, 120),
        "readinessProbe": probe("/ready", 5, 3),
        "livenessProbe": probe("/live", 10, 3),
        "resources": resources(plan),
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": sc.run_as_user,
            "runAsGroup": sc.run_as_group,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "privileged": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });
    if plan.mode == Mode::Native {
        sidecar["restartPolicy"] = json!("Always");
    }
    sidecar
}

/// What injection did, and advice for whoever created the pod.
pub(super) fn status(plan: &Plan, sc: &SidecarConfig, spec: &PodSpec) -> Status {
    let taken = &plan.taken;
    let mut status = Status {
        version: env!("CARGO_PKG_VERSION").into(),
        mode: match plan.mode {
            Mode::Native => "native",
            Mode::Container => "container",
        }
        .into(),
        port: match &taken.name {
            Some(n) => format!("{n}/{}", taken.number),
            None => taken.number.to_string(),
        },
        admin_port: plan.admin_port,
        upstream: plan.upstream(),
        upstream_env: plan.upstream_env.map(str::to_string),
        app: plan.app.name.clone(),
        identity: match plan.tls_secret {
            None => "csi".into(),
            Some(s) => format!("secret:{s}"),
        },
        mesh_configmap: sc.mesh_configmap.clone(),
        policy_configmap: plan.policy_configmap.map(str::to_string),
        policy_domain: plan.policy_domain.map(str::to_string),
        contract_configmap: plan.contract_configmap.map(str::to_string),
        hash_key_secret: plan.hash_key_secret.map(str::to_string),
        warnings: Vec::new(),
    };
    match (plan.policy_configmap, plan.contract_configmap) {
        (Some(_), _) if plan.policy_domain.is_none() => status.warnings.push(format!(
            "meshgate: the policy ConfigMap has no domain ({POLICY_DOMAIN}): its policies and contracts speak with the mesh baseline's authority, about any domain's products"
        )),
        (Some(_), _) => {}
        (None, None) => status.warnings.push(format!(
            "meshgate: no policy ConfigMap is named ({POLICY_CONFIGMAP}): the sidecar gets no contract, so no route, and every request would be answered 404 (no_route)"
        )),
        (None, Some(_)) => status.warnings.push(format!(
            "meshgate: no policy ConfigMap is named ({POLICY_CONFIGMAP}): the sidecar gets only the mesh baseline's policies, so every request the baseline does not permit would be answered 403"
        )),
    }
    if plan.mode == Mode::Container
        && matches!(spec.restart_policy.as_deref(), Some("Never" | "OnFailure"))
    {
        status.warnings.push(format!(
            "meshgate: a regular sidecar container keeps this run-to-completion pod running after its work is done; use {SIDECAR_MODE}: native"
        ));
    }
    status
}

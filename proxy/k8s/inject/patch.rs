//! The JSON Patch for a pod: the sidecar container, its volumes and configuration, the app told its new address.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::PodSpec;
use serde_json::{json, Value};
use std::collections::BTreeMap;

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

/// The sidecar's configuration (YAML), paths relative to [`WORKING_DIR`].
pub(super) fn sidecar_config(
    data_port: u16,
    admin_port: u16,
    upstream: &str,
    protocol: &str,
    log_level: &str,
    policies: bool,
    contracts: Option<&str>,
) -> String {
    let rel = |dir: &str| dir.trim_start_matches('/').to_string();
    let mut y = format!(
        "listen: 0.0.0.0:{data_port}\nadmin: 0.0.0.0:{admin_port}\nupstream: http://{upstream}\nupstream_protocol: {protocol}\ntls:\n  cert: {id}/tls.crt\n  key: {id}/tls.key\n  client_ca: {id}/ca.crt\nlog:\n  level: {log}\n",
        id = rel(IDENTITY_DIR),
        log = yaml_string(log_level),
    );
    let mesh = rel(MESH_DIR);
    y.push_str(&format!(
        "policy:\n  schema: {mesh}/schema.cedarschema\n  entities: {mesh}/entities.json\n  sources:\n    - {mesh}\n"
    ));
    if policies {
        y.push_str(&format!("    - {}\n", rel(POLICIES_DIR)));
    }
    if let Some(dir) = contracts {
        y.push_str(&format!("  contracts:\n    - {}\n", rel(dir)));
    }
    y
}

/// A YAML double-quoted scalar.
pub(super) fn yaml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

pub(super) fn build(
    cfg: &InjectorConfig,
    ann: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
    spec: &PodSpec,
    prefix: &PointerBuf,
) -> Result<(Vec<PatchOperation>, Status), InjectError> {
    let sc = &cfg.sidecar;
    if spec.containers.is_empty() {
        return Err(InjectError::NoContainers);
    }
    let mode = match annotation(ann, SIDECAR_MODE) {
        None | Some("native") => Mode::Native,
        Some("container") => Mode::Container,
        Some(other) => {
            return Err(InjectError::Annotation {
                annotation: SIDECAR_MODE,
                message: format!("`{other}` is neither `native` nor `container`"),
            })
        }
    };
    let taken = find_port(spec, annotation(ann, PORT))?;
    let app = &spec.containers[taken.container];
    check_probes(app, &taken)?;
    let admin_port = port_annotation(ann, ADMIN_PORT)?.unwrap_or(sc.admin_port);
    let upstream_port = match port_annotation(ann, UPSTREAM_PORT)? {
        Some(p) => p,
        None => taken
            .number
            .checked_add(sc.upstream_port_offset)
            .ok_or_else(|| {
                InjectError::Ports(format!(
                    "port {} + {} is past 65535; choose one with the {UPSTREAM_PORT} annotation",
                    taken.number, sc.upstream_port_offset
                ))
            })?,
    };
    if upstream_port == taken.number || upstream_port == admin_port || admin_port == taken.number {
        return Err(InjectError::Ports(format!(
            "the served port ({}), the app's loopback port ({upstream_port}) and the admin port ({admin_port}) must differ",
            taken.number
        )));
    }
    // Another declared port of the pod colliding with ours.
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for p in c.ports.iter().flatten() {
            if p.container_port == i32::from(admin_port)
                || (p.container_port == i32::from(upstream_port))
            {
                return Err(InjectError::Ports(format!(
                    "container `{}` already declares port {}, which the sidecar needs; choose others with {ADMIN_PORT} / {UPSTREAM_PORT}",
                    c.name, p.container_port
                )));
            }
            if p.name.as_deref() == Some(ADMIN_PORT_NAME) {
                return Err(InjectError::Ports(format!(
                    "container `{}` already has a port named {ADMIN_PORT_NAME}",
                    c.name
                )));
            }
        }
    }
    let protocol = match annotation(ann, UPSTREAM_PROTOCOL) {
        None => "http1",
        Some(p @ ("http1" | "h2c")) => p,
        Some(other) => {
            return Err(InjectError::Annotation {
                annotation: UPSTREAM_PROTOCOL,
                message: format!("`{other}` is neither `http1` nor `h2c`"),
            })
        }
    };
    let log_level = annotation(ann, LOG_LEVEL).unwrap_or(&sc.log_level);
    if tracing_subscriber::EnvFilter::try_new(log_level).is_err() {
        return Err(InjectError::Annotation {
            annotation: LOG_LEVEL,
            message: format!("`{log_level}` is not a log filter (e.g. info, info,meshgate=debug)"),
        });
    }
    let upstream_env = name_env(ann)?;
    let policy_cm = name_annotation(ann, POLICY_CONFIGMAP)?;
    let contract_cm = name_annotation(ann, CONTRACT_CONFIGMAP)?;
    let tls_secret = name_annotation(ann, TLS_SECRET)?;
    let resources = {
        let mut requests = serde_json::Map::new();
        let mut limits = serde_json::Map::new();
        for (key, default, field) in [
            (CPU_REQUEST, Some(sc.cpu_request.as_str()), "cpu"),
            (MEMORY_REQUEST, Some(sc.memory_request.as_str()), "memory"),
        ] {
            if let Some(q) = quantity(ann, key, default)? {
                requests.insert(field.into(), Value::String(q));
            }
        }
        for (key, default, field) in [
            (CPU_LIMIT, sc.cpu_limit.as_deref(), "cpu"),
            (MEMORY_LIMIT, sc.memory_limit.as_deref(), "memory"),
        ] {
            if let Some(q) = quantity(ann, key, default)? {
                limits.insert(field.into(), Value::String(q));
            }
        }
        let mut r = serde_json::Map::new();
        if !requests.is_empty() {
            r.insert("requests".into(), Value::Object(requests));
        }
        if !limits.is_empty() {
            r.insert("limits".into(), Value::Object(limits));
        }
        Value::Object(r)
    };

    let upstream = format!("127.0.0.1:{upstream_port}");
    let contracts_dir = match (contract_cm, policy_cm) {
        (Some(_), _) => Some(CONTRACTS_DIR),
        (None, Some(_)) => Some(POLICIES_DIR),
        (None, None) => None,
    };
    let config = sidecar_config(
        taken.number,
        admin_port,
        &upstream,
        protocol,
        log_level,
        policy_cm.is_some(),
        contracts_dir,
    );

    // Volumes and their mounts.
    // The certificate files must be readable by the sidecar's non-root
    // user: csi-driver-spiffe makes them so only for the group named by its
    // `fs-group` attribute; a Secret volume's files (0440) belong to the
    // pod's fsGroup, or to root when the pod has none (then it gets ours).
    let mut volumes = vec![match tls_secret {
        None => json!({"name": VOL_IDENTITY, "csi": {
            "driver": CSI_DRIVER,
            "readOnly": true,
            "volumeAttributes": {CSI_FS_GROUP: sc.run_as_group.to_string()},
        }}),
        Some(s) => json!({"name": VOL_IDENTITY, "secret": {"secretName": s, "defaultMode": 0o440}}),
    }];
    let pod_fs_group = spec.security_context.as_ref().and_then(|s| s.fs_group);
    let set_fs_group = tls_secret.is_some() && pod_fs_group.is_none();
    let mut mounts =
        vec![json!({"name": VOL_IDENTITY, "mountPath": IDENTITY_DIR, "readOnly": true})];
    volumes.push(json!({"name": VOL_MESH, "configMap": {"name": sc.mesh_configmap}}));
    mounts.push(json!({"name": VOL_MESH, "mountPath": MESH_DIR, "readOnly": true}));
    if let Some(cm) = policy_cm {
        volumes.push(json!({"name": VOL_POLICIES, "configMap": {"name": cm}}));
        mounts.push(json!({"name": VOL_POLICIES, "mountPath": POLICIES_DIR, "readOnly": true}));
    }
    if let Some(cm) = contract_cm {
        volumes.push(json!({"name": VOL_CONTRACTS, "configMap": {"name": cm}}));
        mounts.push(json!({"name": VOL_CONTRACTS, "mountPath": CONTRACTS_DIR, "readOnly": true}));
    }
    for v in &volumes {
        let name = v["name"].as_str().unwrap_or_default();
        if spec.volumes.iter().flatten().any(|x| x.name == name) {
            return Err(InjectError::Volume(name.to_string()));
        }
    }

    // The taken port as the app declared it, hostPort and hostIP included:
    // a pod published on a node port stays published, now through mTLS.
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
        "ports": [served_port, {"name": ADMIN_PORT_NAME, "containerPort": admin_port, "protocol": "TCP"}],
        "startupProbe": probe("/ready", 1, 120),
        "readinessProbe": probe("/ready", 5, 3),
        "livenessProbe": probe("/live", 10, 3),
        "resources": resources,
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
    if mode == Mode::Native {
        sidecar["restartPolicy"] = json!("Always");
    }

    let mut status = Status {
        version: env!("CARGO_PKG_VERSION").into(),
        mode: match mode {
            Mode::Native => "native",
            Mode::Container => "container",
        }
        .into(),
        port: match &taken.name {
            Some(n) => format!("{n}/{}", taken.number),
            None => taken.number.to_string(),
        },
        admin_port,
        upstream: upstream.clone(),
        app: app.name.clone(),
        identity: match tls_secret {
            None => "csi".into(),
            Some(s) => format!("secret:{s}"),
        },
        mesh_configmap: sc.mesh_configmap.clone(),
        policy_configmap: policy_cm.map(str::to_string),
        contract_configmap: contract_cm.map(str::to_string),
        warnings: Vec::new(),
    };
    if mode == Mode::Container
        && matches!(spec.restart_policy.as_deref(), Some("Never" | "OnFailure"))
    {
        status.warnings.push(format!(
            "meshgate: a regular sidecar container keeps this run-to-completion pod running after its work is done; use {SIDECAR_MODE}: native"
        ));
    }

    let mut ops = Vec::new();
    // The app: its served port leaves it, it learns where to listen.
    let ci = taken.container.to_string();
    ops.push(PatchOperation::Remove(RemoveOperation {
        path: ptr(
            prefix,
            &[
                "spec",
                "containers",
                &ci,
                "ports",
                &taken.port_index.to_string(),
            ],
        ),
    }));
    let mut env = vec![
        (UPSTREAM_ADDR_ENV.to_string(), upstream.clone()),
        (
            UPSTREAM_PORT_ENV_NAME.to_string(),
            upstream_port.to_string(),
        ),
    ];
    if let Some(name) = upstream_env {
        env.push((name.to_string(), upstream_port.to_string()));
    }
    match &app.env {
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
    // The sidecar: first among the init containers (so the others may use
    // the network through it), or last among the containers.
    match mode {
        Mode::Native => match &spec.init_containers {
            Some(_) => ops.push(add(ptr(prefix, &["spec", "initContainers", "0"]), sidecar)),
            None => ops.push(add(
                ptr(prefix, &["spec", "initContainers"]),
                json!([sidecar]),
            )),
        },
        Mode::Container => ops.push(add(ptr(prefix, &["spec", "containers", "-"]), sidecar)),
    }
    if set_fs_group {
        let group = json!(sc.run_as_group);
        match &spec.security_context {
            None => ops.push(add(
                ptr(prefix, &["spec", "securityContext"]),
                json!({ "fsGroup": group }),
            )),
            Some(_) => ops.push(add(
                ptr(prefix, &["spec", "securityContext", "fsGroup"]),
                group,
            )),
        }
    }
    match &spec.volumes {
        Some(_) => {
            for v in volumes {
                ops.push(add(ptr(prefix, &["spec", "volumes", "-"]), v));
            }
        }
        None => ops.push(add(
            ptr(prefix, &["spec", "volumes"]),
            Value::Array(volumes),
        )),
    }
    let status_json = serde_json::to_string(&status).unwrap_or_default();
    if ann.is_empty() {
        ops.push(add(
            ptr(prefix, &["metadata", "annotations"]),
            json!({ STATUS: status_json }),
        ));
    } else {
        ops.push(add(
            ptr(prefix, &["metadata", "annotations", STATUS]),
            Value::String(status_json),
        ));
    }
    match labels {
        Some(l) if !l.is_empty() => ops.push(add(
            ptr(prefix, &["metadata", "labels", SIDECAR_LABEL]),
            json!(SIDECAR_LABEL_VALUE),
        )),
        _ => ops.push(add(
            ptr(prefix, &["metadata", "labels"]),
            json!({ SIDECAR_LABEL: SIDECAR_LABEL_VALUE }),
        )),
    }
    Ok((ops, status))
}

/// The `meshgate.io/upstream-port-env` annotation: an environment variable name.
pub(super) fn name_env(ann: &BTreeMap<String, String>) -> Result<Option<&str>, InjectError> {
    let Some(v) = annotation(ann, UPSTREAM_PORT_ENV) else {
        return Ok(None);
    };
    let ok = v.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok || v == UPSTREAM_ADDR_ENV || v == UPSTREAM_PORT_ENV_NAME {
        return Err(InjectError::Annotation {
            annotation: UPSTREAM_PORT_ENV,
            message: format!("`{v}` is not a usable environment variable name"),
        });
    }
    Ok(Some(v))
}

//! Kubernetes sidecar injection: one pure function from a pod (its metadata
//! and spec, the namespace's labels and the injector's configuration) to a
//! JSON Patch, shared by the admission webhook (`meshgate inject serve`) and
//! the offline `meshgate inject -f FILE`.
//!
//! The patch is the only description of what injection does: the webhook
//! sends it, the offline command applies it to the pod template in place,
//! and the tests apply it with `json-patch` to see the pod the kubelet gets.
//! Fields the typed model does not know survive, because no operation
//! replaces a whole object.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Namespace label and pod annotation that opt in (`enabled`) or out (`disabled`).
pub const INJECT: &str = "meshgate.io/inject";
/// The annotation recording what injection did (JSON).
pub const STATUS: &str = "meshgate.io/injected";
/// `native` (default: an init container with `restartPolicy: Always`) or `container`.
pub const SIDECAR_MODE: &str = "meshgate.io/sidecar-mode";
/// The app port the sidecar takes over: a container port's name or number.
pub const PORT: &str = "meshgate.io/port";
/// The loopback port the app moves to (default: the port + `upstream_port_offset`).
pub const UPSTREAM_PORT: &str = "meshgate.io/upstream-port";
/// An app environment variable that is also set to the upstream port (e.g. `PORT`).
pub const UPSTREAM_PORT_ENV: &str = "meshgate.io/upstream-port-env";
/// `http1` (default) or `h2c`.
pub const UPSTREAM_PROTOCOL: &str = "meshgate.io/upstream-protocol";
/// The sidecar's admin port (`/live`, `/ready`, `/metrics`).
pub const ADMIN_PORT: &str = "meshgate.io/admin-port";
/// The ConfigMap with the domain's policies (`*.cedar`, `*.links.json`).
pub const POLICY_CONFIGMAP: &str = "meshgate.io/policy-configmap";
/// The ConfigMap with the product's ODCS contracts (default: the policy ConfigMap).
pub const CONTRACT_CONFIGMAP: &str = "meshgate.io/contract-configmap";
/// Workload certificates from this Secret (`tls.crt`, `tls.key`, `ca.crt`)
/// instead of the csi-driver-spiffe volume.
pub const TLS_SECRET: &str = "meshgate.io/tls-secret";
/// The sidecar's log filter.
pub const LOG_LEVEL: &str = "meshgate.io/log-level";
pub const CPU_REQUEST: &str = "meshgate.io/cpu-request";
pub const CPU_LIMIT: &str = "meshgate.io/cpu-limit";
pub const MEMORY_REQUEST: &str = "meshgate.io/memory-request";
pub const MEMORY_LIMIT: &str = "meshgate.io/memory-limit";

/// The label injected pods carry (`meshgate.io/sidecar: injected`), for
/// PodMonitors and `kubectl get pods -l`.
pub const SIDECAR_LABEL: &str = "meshgate.io/sidecar";
pub const SIDECAR_LABEL_VALUE: &str = "injected";

/// The environment variable holding the sidecar's YAML configuration.
pub const CONFIG_ENV: &str = "MESHGATE_CONFIG";
/// Set in the app container: where it must listen (`127.0.0.1:PORT`).
pub const UPSTREAM_ADDR_ENV: &str = "MESHGATE_UPSTREAM_ADDR";
/// Set in the app container: the port alone.
pub const UPSTREAM_PORT_ENV_NAME: &str = "MESHGATE_UPSTREAM_PORT";

/// The injected container's name.
pub const CONTAINER: &str = "meshgate";
/// The admin port's name in the pod.
pub const ADMIN_PORT_NAME: &str = "meshgate-admin";
/// Where the workload certificates are mounted (csi-driver-spiffe's layout).
pub const IDENTITY_DIR: &str = "/var/run/secrets/spiffe.io";
/// Where the mesh baseline ConfigMap is mounted.
pub const MESH_DIR: &str = "/etc/meshgate/mesh";
/// Where the domain policy ConfigMap is mounted.
pub const POLICIES_DIR: &str = "/etc/meshgate/policies";
/// Where a separate contract ConfigMap is mounted.
pub const CONTRACTS_DIR: &str = "/etc/meshgate/contracts";
/// The sidecar's working directory; the paths of its configuration are
/// relative to it, so the same configuration runs in a copy of the pod's
/// files laid out under any directory.
pub const WORKING_DIR: &str = "/";

/// The CSI driver of the workload certificates and its file-group attribute.
pub const CSI_DRIVER: &str = "spiffe.csi.cert-manager.io";
pub const CSI_FS_GROUP: &str = "spiffe.csi.cert-manager.io/fs-group";

const VOL_IDENTITY: &str = "meshgate-identity";
const VOL_MESH: &str = "meshgate-mesh";
const VOL_POLICIES: &str = "meshgate-policies";
const VOL_CONTRACTS: &str = "meshgate-contracts";

/// What `meshgate inject` and `meshgate inject serve` are configured with.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InjectorConfig {
    /// The injector's own namespace: never injected.
    pub namespace: String,
    /// Further namespaces never injected.
    pub skip_namespaces: Vec<String>,
    pub sidecar: SidecarConfig,
    /// The admission webhook server (`meshgate inject serve`).
    pub webhook: Option<WebhookConfig>,
}

impl Default for InjectorConfig {
    fn default() -> Self {
        InjectorConfig {
            namespace: "meshgate-system".into(),
            skip_namespaces: vec!["kube-system".into(), "kube-public".into()],
            sidecar: SidecarConfig::default(),
            webhook: None,
        }
    }
}

/// The injected sidecar's defaults (annotations override most of them per pod).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SidecarConfig {
    pub image: String,
    pub image_pull_policy: String,
    pub admin_port: u16,
    /// Default loopback port of the app: the taken port plus this.
    pub upstream_port_offset: u16,
    pub log_level: String,
    pub cpu_request: String,
    pub memory_request: String,
    /// None: no CPU limit (throttling a proxy hurts every request of the pod).
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
    /// The mesh baseline ConfigMap (schema, entities, baseline policies),
    /// which must exist in every injected namespace.
    pub mesh_configmap: String,
    pub run_as_user: i64,
    /// The sidecar's group: the group of its certificate files (the CSI
    /// volume's `fs-group` attribute; with a Secret, the pod's `fsGroup`
    /// when the pod sets none).
    pub run_as_group: i64,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        SidecarConfig {
            image: concat!("ghcr.io/meshgate/meshgate:", env!("CARGO_PKG_VERSION")).into(),
            image_pull_policy: "IfNotPresent".into(),
            admin_port: 9901,
            upstream_port_offset: 10000,
            log_level: "info".into(),
            cpu_request: "50m".into(),
            memory_request: "64Mi".into(),
            cpu_limit: None,
            memory_limit: Some("256Mi".into()),
            mesh_configmap: "meshgate-mesh".into(),
            run_as_user: 65532,
            run_as_group: 65532,
        }
    }
}

/// The webhook server's listeners and certificate.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub listen: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
    pub tls: WebhookTls,
    /// After SIGTERM, how long reviews are still served (with `/ready` at
    /// 503) so the endpoint leaves the Service before the port closes.
    #[serde(
        default = "default_shutdown_delay",
        deserialize_with = "crate::base::yaml::de_duration",
        serialize_with = "ser_duration"
    )]
    pub shutdown_delay: std::time::Duration,
}

fn default_shutdown_delay() -> std::time::Duration {
    std::time::Duration::from_secs(5)
}

fn ser_duration<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl InjectorConfig {
    /// Reads the YAML file; relative paths are resolved against its directory.
    pub fn load(path: &std::path::Path) -> Result<InjectorConfig, crate::base::yaml::ConfigError> {
        let mut cfg: InjectorConfig = crate::base::yaml::read_yaml(path)?;
        if let Some(w) = cfg.webhook.as_mut() {
            let base = crate::base::paths::dir_of(path);
            for p in [&mut w.tls.cert, &mut w.tls.key] {
                crate::base::paths::resolve(&base, p);
            }
        }
        Ok(cfg)
    }
}

/// Why a pod was left alone (a metric label and a log field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// The pod's annotation says `disabled`.
    Disabled,
    /// Neither the namespace label nor the pod annotation says `enabled`.
    NotEnabled,
    HostNetwork,
    AlreadyInjected,
    /// The injector's own namespace or a system namespace.
    ExcludedNamespace,
    /// Selected by its namespace only, and no container port to serve.
    NoPort,
    /// Selected by its namespace only, and `meshgate.io/port` names a port
    /// no container declares.
    UnknownPort,
    /// Selected by its namespace only, and an app probe targets the port
    /// the sidecar would take.
    ProbeOnServedPort,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Disabled => "disabled",
            SkipReason::NotEnabled => "not_enabled",
            SkipReason::HostNetwork => "host_network",
            SkipReason::AlreadyInjected => "already_injected",
            SkipReason::ExcludedNamespace => "excluded_namespace",
            SkipReason::NoPort => "no_port",
            SkipReason::UnknownPort => "unknown_port",
            SkipReason::ProbeOnServedPort => "probe_on_served_port",
        }
    }

    /// For a pod its namespace selected but that cannot be injected whole:
    /// what to tell whoever created it (an admission warning).
    pub fn advice(self) -> Option<&'static str> {
        match self {
            SkipReason::NoPort => Some(
                "meshgate: the sidecar was not injected: the pod declares no TCP container port to serve (declare one, or name it with meshgate.io/port)",
            ),
            SkipReason::UnknownPort => Some(
                "meshgate: the sidecar was not injected: no container declares the port named by meshgate.io/port",
            ),
            SkipReason::ProbeOnServedPort => Some(
                "meshgate: the sidecar was not injected: an app probe targets the port the sidecar would serve with mTLS (move the probe to another port)",
            ),
            _ => None,
        }
    }
}

impl InjectError {
    /// Why a pod that only its namespace selected is left alone rather than
    /// refused: it cannot be injected whole, and it never asked for it.
    fn skip_reason(&self) -> Option<SkipReason> {
        match self {
            InjectError::NoPort => Some(SkipReason::NoPort),
            InjectError::UnknownPort(_) => Some(SkipReason::UnknownPort),
            InjectError::ProbeOnServedPort { .. } => Some(SkipReason::ProbeOnServedPort),
            _ => None,
        }
    }
}

/// A pod that opted in but cannot be injected as asked. The webhook refuses
/// such a pod (never half-injects it); the offline command stops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("annotation {annotation}: {message}")]
    Annotation {
        annotation: &'static str,
        message: String,
    },
    #[error("the pod has no container port to serve; name one with the {PORT} annotation")]
    NoPort,
    #[error("{PORT}: no container declares a port named or numbered `{0}`; declare it in the app container's ports")]
    UnknownPort(String),
    #[error("container `{container}`: its {probe} probe targets port {port}, which the sidecar now serves with mTLS; move the probe to another port")]
    ProbeOnServedPort {
        container: String,
        probe: &'static str,
        port: String,
    },
    #[error("{0}")]
    Ports(String),
    #[error("the pod already has a volume named {0}")]
    Volume(String),
    #[error("the pod has no containers")]
    NoContainers,
}

/// What injection did, recorded in the `meshgate.io/injected` annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    /// `native` or `container`.
    pub mode: String,
    /// The port the sidecar serves with mTLS: `name/number` or `number`.
    pub port: String,
    pub admin_port: u16,
    /// Where the app now listens.
    pub upstream: String,
    /// The app container that moved to loopback.
    pub app: String,
    /// `csi` or `secret:NAME`.
    pub identity: String,
    pub mesh_configmap: String,
    pub policy_configmap: Option<String>,
    pub contract_configmap: Option<String>,
    /// Advice for whoever created the pod (not recorded in the annotation).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// The outcome for one pod.
#[derive(Debug, Clone)]
pub enum Decision {
    Inject {
        /// Operations on the pod object (paths under the prefix given).
        patch: Vec<PatchOperation>,
        status: Box<Status>,
    },
    Skip(SkipReason),
}

/// The sidecar mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Native,
    Container,
}

/// Decides and plans injection for one pod (or pod template).
///
/// `namespace`: the pod's namespace when known; `namespace_labels`: its
/// labels (the webhook passes the opt-in label, which its namespaceSelector
/// guarantees). `prefix` is the pointer of the pod object inside the
/// document being patched (empty for a Pod, `/spec/template` for a
/// Deployment).
pub fn plan(
    cfg: &InjectorConfig,
    namespace: Option<&str>,
    namespace_labels: &BTreeMap<String, String>,
    meta: &ObjectMeta,
    spec: &PodSpec,
    prefix: &PointerBuf,
) -> Result<Decision, InjectError> {
    let empty = BTreeMap::new();
    let ann = meta.annotations.as_ref().unwrap_or(&empty);
    if spec.host_network == Some(true) {
        return Ok(Decision::Skip(SkipReason::HostNetwork));
    }
    let has_sidecar = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == CONTAINER);
    if has_sidecar || ann.contains_key(STATUS) {
        return Ok(Decision::Skip(SkipReason::AlreadyInjected));
    }
    if let Some(ns) = namespace {
        if ns == cfg.namespace || cfg.skip_namespaces.iter().any(|s| s == ns) {
            return Ok(Decision::Skip(SkipReason::ExcludedNamespace));
        }
    }
    // The pod's own choice: its annotation, else its label (a label can be
    // matched by the webhook's objectSelector in namespaces not opted in).
    let pod_choice = ann
        .get(INJECT)
        .or_else(|| meta.labels.as_ref().and_then(|l| l.get(INJECT)));
    let explicit = match pod_choice.map(String::as_str) {
        Some("disabled") => return Ok(Decision::Skip(SkipReason::Disabled)),
        Some("enabled") => true,
        Some(other) => {
            return Err(InjectError::Annotation {
                annotation: INJECT,
                message: format!("`{other}` is neither `enabled` nor `disabled`"),
            })
        }
        None => {
            if namespace_labels.get(INJECT).map(String::as_str) != Some("enabled") {
                return Ok(Decision::Skip(SkipReason::NotEnabled));
            }
            false
        }
    };
    // A pod that asked for the sidecar itself and cannot have it whole is
    // refused; one its namespace selected is left alone, with the reason.
    match build(cfg, ann, meta.labels.as_ref(), spec, prefix) {
        Ok((patch, status)) => Ok(Decision::Inject {
            patch,
            status: Box::new(status),
        }),
        Err(e) => match e.skip_reason() {
            Some(reason) if !explicit => Ok(Decision::Skip(reason)),
            _ => Err(e),
        },
    }
}

fn annotation<'a>(ann: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    ann.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn port_annotation(
    ann: &BTreeMap<String, String>,
    key: &'static str,
) -> Result<Option<u16>, InjectError> {
    annotation(ann, key)
        .map(|v| match v.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(InjectError::Annotation {
                annotation: key,
                message: format!("`{v}` is not a port (1-65535)"),
            }),
        })
        .transpose()
}

/// A Kubernetes resource name (ConfigMap, Secret): DNS-1123 subdomain.
fn name_annotation<'a>(
    ann: &'a BTreeMap<String, String>,
    key: &'static str,
) -> Result<Option<&'a str>, InjectError> {
    let Some(v) = annotation(ann, key) else {
        return Ok(None);
    };
    let ok = v.len() <= 253
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(Some(v))
    } else {
        Err(InjectError::Annotation {
            annotation: key,
            message: format!("`{v}` is not a valid resource name"),
        })
    }
}

/// A resource quantity such as `100m`, `64Mi`, `1.5`, `2e3`.
fn quantity(
    ann: &BTreeMap<String, String>,
    key: &'static str,
    default: Option<&str>,
) -> Result<Option<String>, InjectError> {
    let Some(v) = annotation(ann, key) else {
        return Ok(default.map(str::to_string));
    };
    let digits = v.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &v[digits.len()..];
    let number_ok = !digits.is_empty()
        && digits
            .parse::<f64>()
            .is_ok_and(|n| n.is_finite() && n >= 0.0);
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    );
    if number_ok && suffix_ok {
        Ok(Some(v.to_string()))
    } else {
        Err(InjectError::Annotation {
            annotation: key,
            message: format!("`{v}` is not a resource quantity (e.g. 100m, 64Mi)"),
        })
    }
}

/// The app port the sidecar takes: its container, its index there, number,
/// name, and the node port it is published on (kept on the sidecar's port).
struct Taken {
    container: usize,
    port_index: usize,
    number: u16,
    name: Option<String>,
    host_port: Option<i32>,
    host_ip: Option<String>,
}

fn find_port(spec: &PodSpec, wanted: Option<&str>) -> Result<Taken, InjectError> {
    let declared = |c: usize, i: usize, p: &ContainerPort| -> Result<Taken, InjectError> {
        let number = u16::try_from(p.container_port)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                InjectError::Ports(format!(
                    "container port {} is out of range",
                    p.container_port
                ))
            })?;
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        if protocol != "TCP" {
            return Err(InjectError::Ports(format!(
                "container port {} is {protocol}; the sidecar serves TCP",
                p.container_port
            )));
        }
        Ok(Taken {
            container: c,
            port_index: i,
            number,
            name: p.name.clone(),
            host_port: p.host_port.filter(|h| *h > 0),
            host_ip: p.host_ip.clone().filter(|h| !h.is_empty()),
        })
    };
    let tcp = |p: &ContainerPort| p.protocol.as_deref().unwrap_or("TCP") == "TCP";
    let all = || {
        spec.containers.iter().enumerate().flat_map(|(c, k)| {
            k.ports
                .iter()
                .flatten()
                .enumerate()
                .map(move |(i, p)| (c, i, p))
        })
    };
    match wanted {
        None => {
            let (c, i, p) = all().find(|(_, _, p)| tcp(p)).ok_or(InjectError::NoPort)?;
            declared(c, i, p)
        }
        Some(w) => match w.parse::<u16>() {
            Ok(0) => Err(InjectError::Annotation {
                annotation: PORT,
                message: "port 0".into(),
            }),
            // A number must be declared too: it says which container is the
            // app, and an undeclared port may be no server's at all.
            Ok(n) => {
                let same = || all().filter(|(_, _, p)| p.container_port == i32::from(n));
                let (c, i, p) = same()
                    .find(|(_, _, p)| tcp(p))
                    .or_else(|| same().next())
                    .ok_or_else(|| InjectError::UnknownPort(n.to_string()))?;
                declared(c, i, p)
            }
            Err(_) => {
                let (c, i, p) = all()
                    .find(|(_, _, p)| p.name.as_deref() == Some(w))
                    .ok_or_else(|| InjectError::UnknownPort(w.to_string()))?;
                declared(c, i, p)
            }
        },
    }
}

fn probe_port(p: &Probe) -> Option<&IntOrString> {
    p.http_get
        .as_ref()
        .map(|h| &h.port)
        .or_else(|| p.tcp_socket.as_ref().map(|t| &t.port))
}

fn check_probes(c: &Container, taken: &Taken) -> Result<(), InjectError> {
    let probes = [
        ("startup", &c.startup_probe),
        ("readiness", &c.readiness_probe),
        ("liveness", &c.liveness_probe),
    ];
    for (kind, probe) in probes {
        let Some(probe) = probe else { continue };
        let hits = match probe_port(probe) {
            Some(IntOrString::Int(n)) => *n == i32::from(taken.number),
            Some(IntOrString::String(s)) => Some(s) == taken.name.as_ref(),
            None => probe
                .grpc
                .as_ref()
                .is_some_and(|g| g.port == i32::from(taken.number)),
        };
        if hits {
            return Err(InjectError::ProbeOnServedPort {
                container: c.name.clone(),
                probe: kind,
                port: taken
                    .name
                    .clone()
                    .unwrap_or_else(|| taken.number.to_string()),
            });
        }
    }
    Ok(())
}

fn ptr(prefix: &PointerBuf, tokens: &[&str]) -> PointerBuf {
    let mut p = prefix.clone();
    for t in tokens {
        p.push_back(*t);
    }
    p
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

/// The sidecar's configuration (YAML), paths relative to [`WORKING_DIR`].
fn sidecar_config(
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
fn yaml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn build(
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
fn name_env(ann: &BTreeMap<String, String>) -> Result<Option<&str>, InjectError> {
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

/// What happened to one document of `meshgate inject -f`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocOutcome {
    Injected(Box<Status>),
    Skipped(SkipReason),
    /// Not a kind that holds a pod (Service, ConfigMap, ...).
    NotApplicable,
}

/// Where a kind keeps its pod (template), as pointer tokens.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
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
        Decision::Skip(r) => Ok(DocOutcome::Skipped(r)),
        Decision::Inject { patch, status } => {
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
fn yaml11_file_modes(v: &mut Value) {
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
fn yaml11_octal(s: &str) -> Option<u32> {
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

fn doc_label(doc: &Value) -> String {
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

/// The webhook's answer to one AdmissionReview.
#[derive(Debug)]
pub struct Answer {
    /// The response to send back (allowed with a patch, allowed as is, or refused).
    pub response: kube_core::admission::AdmissionResponse,
    pub outcome: Outcome,
}

/// What the webhook did with one review (for metrics and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Injected(Box<Status>),
    Skipped(SkipReason),
    /// The pod opted in but cannot be injected as asked.
    Refused(String),
    /// A well-formed review the webhook does not handle (not a Pod CREATE,
    /// no object, a pod that does not parse): refused.
    Unsupported(String),
    /// A v1 review whose `request.uid` can be read but which does not parse
    /// as a review: refused with that uid (the API server needs the uid to
    /// take the answer), counted as invalid.
    Invalid(String),
}

/// A body that is not an AdmissionReview v1 with a readable request uid:
/// answered with 400.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("not an AdmissionReview: {0}")]
    Parse(String),
    #[error("`{0}`: only admission.k8s.io/v1 AdmissionReview is served")]
    Version(String),
    #[error("the review has no request")]
    NoRequest,
}

/// Which of the two webhooks a review came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected {
    /// `/inject`: its namespaceSelector only sends pods of namespaces
    /// labelled `meshgate.io/inject=enabled`, so the namespace is opted in.
    Namespace,
    /// `/inject-pod`: pods labelled `meshgate.io/inject=enabled` in other
    /// namespaces; only the pod's own choice counts.
    Pod,
}

/// The review's object must say it is a v1 Pod wherever it says anything
/// (the API server reads the patched object by its own type fields), and
/// have the metadata object the patch adds to. Read from the body itself:
/// the typed parse drops both type fields when one is missing, and makes up
/// empty metadata.
fn object_is_a_v1_pod(body: &[u8]) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Review {
        request: Request,
    }
    #[derive(serde::Deserialize)]
    struct Request {
        object: Types,
    }
    #[derive(serde::Deserialize)]
    struct Types {
        #[serde(rename = "apiVersion")]
        api_version: Option<Value>,
        kind: Option<Value>,
        metadata: Option<Value>,
    }
    let types = serde_json::from_slice::<Review>(body)
        .map_err(|e| format!("the object's type fields do not parse: {e}"))?
        .request
        .object;
    if !matches!(types.metadata, Some(Value::Object(_))) {
        return Err("the pod has no metadata object".into());
    }
    for (field, value, want) in [
        ("apiVersion", types.api_version, "v1"),
        ("kind", types.kind, "Pod"),
    ] {
        match value {
            None => {}
            Some(Value::String(s)) if s == want => {}
            Some(other) => return Err(format!("the object's {field} is {other}, not \"{want}\"")),
        }
    }
    Ok(())
}

/// Decides one AdmissionReview (JSON bytes).
pub fn review(
    cfg: &InjectorConfig,
    body: &[u8],
    selected: Selected,
) -> Result<Answer, ReviewError> {
    use kube_core::admission::{AdmissionResponse, AdmissionReview, Operation};
    use kube_core::DynamicObject;
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            // A review the API server could match to a request gets an
            // answer it can use: refused, with the uid.
            let Some(uid) = readable_uid(body) else {
                return Err(ReviewError::Parse(e.to_string()));
            };
            let why = format!("the review does not parse: {e}");
            let mut response = AdmissionResponse::invalid(format!("meshgate injection: {why}"));
            response.uid = uid;
            return Ok(Answer {
                response,
                outcome: Outcome::Invalid(why),
            });
        }
    };
    if review.types.api_version != "admission.k8s.io/v1" || review.types.kind != "AdmissionReview" {
        return Err(ReviewError::Version(format!(
            "{}, {}",
            review.types.api_version, review.types.kind
        )));
    }
    let mut req = review.request.ok_or(ReviewError::NoRequest)?;
    req.types = review.types.clone();
    let base = AdmissionResponse::from(&req);
    let refuse = |base: AdmissionResponse, why: String| Answer {
        response: base.deny(format!("meshgate injection: {why}")),
        outcome: Outcome::Unsupported(why),
    };
    if req.kind.kind != "Pod" || !req.kind.group.is_empty() || req.operation != Operation::Create {
        let why = format!(
            "only Pod CREATE is handled, not {} {:?}",
            req.kind.kind, req.operation
        );
        return Ok(refuse(base, why));
    }
    let Some(object) = req.object.as_ref() else {
        return Ok(refuse(base, "the request has no object".into()));
    };
    if let Err(why) = object_is_a_v1_pod(body) {
        return Ok(refuse(base, why));
    }
    let pod = serde_json::to_value(object)
        .and_then(serde_json::from_value::<k8s_openapi::api::core::v1::Pod>);
    let pod = match pod {
        Ok(p) => p,
        Err(e) => return Ok(refuse(base, format!("the pod does not parse: {e}"))),
    };
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(refuse(base, "the pod has no spec".into()));
    };
    let namespace = req.namespace.clone().or(pod.metadata.namespace.clone());
    let labels = match selected {
        Selected::Namespace => BTreeMap::from([(INJECT.to_string(), "enabled".to_string())]),
        Selected::Pod => BTreeMap::new(),
    };
    let planned = plan(
        cfg,
        namespace.as_deref(),
        &labels,
        &pod.metadata,
        spec,
        &PointerBuf::new(),
    );
    Ok(match planned {
        Ok(Decision::Inject { patch, status }) => {
            match base.clone().with_patch(json_patch::Patch(patch)) {
                Ok(mut response) => {
                    if !status.warnings.is_empty() {
                        response.warnings = Some(status.warnings.clone());
                    }
                    Answer {
                        response,
                        outcome: Outcome::Injected(status),
                    }
                }
                Err(e) => Answer {
                    response: base.deny(format!("meshgate injection: {e}")),
                    outcome: Outcome::Refused(e.to_string()),
                },
            }
        }
        Ok(Decision::Skip(reason)) => {
            let mut response = base;
            if let Some(advice) = reason.advice() {
                response.warnings = Some(vec![advice.to_string()]);
            }
            Answer {
                response,
                outcome: Outcome::Skipped(reason),
            }
        }
        Err(error) => Answer {
            response: base.deny(format!("meshgate injection: {error}")),
            outcome: Outcome::Refused(error.to_string()),
        },
    })
}

/// `request.uid` of a body that says it is an `admission.k8s.io/v1`
/// AdmissionReview, read leniently (a string, whatever else the body holds,
/// bytes that are not UTF-8 included: the typed parse skips unknown fields
/// without checking them, so this must not be stricter).
fn readable_uid(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_str(&String::from_utf8_lossy(body)).ok()?;
    if v.get("apiVersion")?.as_str()? != "admission.k8s.io/v1"
        || v.get("kind")?.as_str()? != "AdmissionReview"
    {
        return None;
    }
    Some(v.get("request")?.get("uid")?.as_str()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(v: Value) -> Value {
        let mut base = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "orders", "namespace": "sales"},
            "spec": {"containers": [{"name": "app", "image": "orders:1",
                      "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]}
        });
        json_patch::merge(&mut base, &v);
        base
    }

    fn enabled() -> BTreeMap<String, String> {
        BTreeMap::from([(INJECT.to_string(), "enabled".to_string())])
    }

    /// Plans for `v` in namespace `sales` with `labels`; returns the decision
    /// and, when injected, the pod with the patch applied.
    fn run(v: &Value, labels: &BTreeMap<String, String>) -> Result<(Decision, Value), InjectError> {
        let p: Pod = serde_json::from_value(v.clone()).expect("pod parses");
        let spec = p.spec.expect("spec");
        let d = plan(
            &InjectorConfig::default(),
            p.metadata.namespace.as_deref(),
            labels,
            &p.metadata,
            &spec,
            &PointerBuf::new(),
        )?;
        let mut out = v.clone();
        if let Decision::Inject { patch, .. } = &d {
            json_patch::patch(&mut out, patch).expect("patch applies");
        }
        Ok((d, out))
    }

    fn injected(v: &Value) -> Value {
        match run(v, &enabled()).expect("plans") {
            (Decision::Inject { .. }, out) => out,
            (other, _) => panic!("not injected: {other:?}"),
        }
    }

    fn skipped(v: &Value, labels: &BTreeMap<String, String>) -> SkipReason {
        match run(v, labels).expect("plans").0 {
            Decision::Skip(r) => r,
            other => panic!("injected: {other:?}"),
        }
    }

    #[test]
    fn injects_a_native_sidecar_that_takes_the_named_port() {
        let out = injected(&pod(json!({})));
        let init = &out["spec"]["initContainers"];
        assert_eq!(init.as_array().map(Vec::len), Some(1));
        let sc = &init[0];
        assert_eq!(sc["name"], "meshgate");
        assert_eq!(sc["restartPolicy"], "Always");
        assert_eq!(sc["command"], json!(["meshgate", "run"]));
        assert_eq!(
            sc["ports"][0],
            json!({"name": "http", "containerPort": 8080, "protocol": "TCP"})
        );
        assert_eq!(sc["ports"][1]["name"], ADMIN_PORT_NAME);
        assert_eq!(sc["ports"][1]["containerPort"], 9901);
        assert_eq!(sc["startupProbe"]["httpGet"]["path"], "/ready");
        assert_eq!(sc["readinessProbe"]["httpGet"]["path"], "/ready");
        assert_eq!(sc["livenessProbe"]["httpGet"]["path"], "/live");
        let sec = &sc["securityContext"];
        assert_eq!(sec["runAsNonRoot"], true);
        assert_eq!(sec["readOnlyRootFilesystem"], true);
        assert_eq!(sec["allowPrivilegeEscalation"], false);
        assert_eq!(sec["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(sec["seccompProfile"]["type"], "RuntimeDefault");
        assert_eq!(sc["resources"]["requests"]["cpu"], "50m");
        assert_eq!(sc["resources"]["limits"]["memory"], "256Mi");
        // The app lost its served port and learnt where to listen.
        let app = &out["spec"]["containers"][0];
        assert_eq!(app["ports"], json!([]));
        assert_eq!(
            app["env"],
            json!([{"name": "MESHGATE_UPSTREAM_ADDR", "value": "127.0.0.1:18080"},
                   {"name": "MESHGATE_UPSTREAM_PORT", "value": "18080"}])
        );
        // csi-driver-spiffe makes the files readable to the sidecar's group.
        assert_eq!(
            out["spec"]["volumes"][0],
            json!({"name": "meshgate-identity", "csi": {"driver": "spiffe.csi.cert-manager.io", "readOnly": true,
                   "volumeAttributes": {"spiffe.csi.cert-manager.io/fs-group": "65532"}}})
        );
        assert_eq!(sec["runAsGroup"], 65532);
        // The pod's own securityContext is left alone with the CSI volume.
        assert!(out["spec"].get("securityContext").is_none());
        assert_eq!(
            out["spec"]["volumes"][1]["configMap"]["name"],
            "meshgate-mesh"
        );
        let status: Status = serde_json::from_str(
            out["metadata"]["annotations"][STATUS]
                .as_str()
                .expect("status annotation"),
        )
        .expect("status json");
        assert_eq!(status.mode, "native");
        assert_eq!(status.port, "http/8080");
        assert_eq!(status.upstream, "127.0.0.1:18080");
        assert_eq!(status.identity, "csi");
        // The result is still a Pod.
        serde_json::from_value::<Pod>(out).expect("injected pod parses");
    }

    #[test]
    fn the_generated_config_is_a_valid_sidecar_config() {
        let out = injected(&pod(json!({"metadata": {"annotations": {
            POLICY_CONFIGMAP: "sales-policies", LOG_LEVEL: "info,meshgate=debug"}}})));
        let env = &out["spec"]["initContainers"][0]["env"][0];
        assert_eq!(env["name"], CONFIG_ENV);
        let text = env["value"].as_str().expect("config text");
        let cfg =
            crate::runtime::config::Config::parse(text, CONFIG_ENV).expect("sidecar config parses");
        assert_eq!(cfg.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(cfg.admin.to_string(), "0.0.0.0:9901");
        assert_eq!(cfg.upstream.authority.as_str(), "127.0.0.1:18080");
        assert_eq!(
            cfg.tls.cert,
            std::path::Path::new("var/run/secrets/spiffe.io/tls.crt")
        );
        assert_eq!(
            cfg.tls.client_ca,
            std::path::Path::new("var/run/secrets/spiffe.io/ca.crt")
        );
        assert_eq!(cfg.log.level.as_deref(), Some("info,meshgate=debug"));
        let policy = cfg.policy.expect("policy section");
        assert_eq!(policy.sources.len(), 2);
        assert_eq!(
            policy.contracts,
            vec![std::path::PathBuf::from("etc/meshgate/policies")]
        );
        assert_eq!(
            out["spec"]["volumes"][2]["configMap"]["name"],
            "sales-policies"
        );
        let mounts = &out["spec"]["initContainers"][0]["volumeMounts"];
        assert_eq!(mounts[2]["mountPath"], POLICIES_DIR);
    }

    #[test]
    fn a_regular_container_when_annotated() {
        let job = pod(
            json!({"metadata": {"annotations": {SIDECAR_MODE: "container"}},
            "spec": {"restartPolicy": "Never"}}),
        );
        match run(&job, &enabled()).expect("plans").0 {
            Decision::Inject { status, .. } => {
                assert_eq!(status.warnings.len(), 1);
                assert!(status.warnings[0].contains("run-to-completion"));
            }
            other => panic!("{other:?}"),
        }
        let out = injected(&pod(
            json!({"metadata": {"annotations": {SIDECAR_MODE: "container"}}}),
        ));
        assert!(out["spec"].get("initContainers").is_none());
        let sc = &out["spec"]["containers"][1];
        assert_eq!(sc["name"], "meshgate");
        assert!(sc.get("restartPolicy").is_none());
    }

    #[test]
    fn goes_first_among_existing_init_containers_and_keeps_unknown_fields() {
        let v = pod(json!({"spec": {
            "initContainers": [{"name": "migrate", "image": "m:1", "futureField": 1}],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "futureSpecField": {"x": 1}}}));
        let out = injected(&v);
        assert_eq!(out["spec"]["initContainers"][0]["name"], "meshgate");
        assert_eq!(out["spec"]["initContainers"][1]["futureField"], 1);
        assert_eq!(out["spec"]["futureSpecField"]["x"], 1);
        assert_eq!(out["spec"]["volumes"][0]["name"], "data");
        assert_eq!(out["spec"]["volumes"][1]["name"], "meshgate-identity");
    }

    #[test]
    fn annotations_choose_port_upstream_identity_and_resources() {
        let v = pod(json!({
            "metadata": {"annotations": {
                PORT: "api", UPSTREAM_PORT: "7000", UPSTREAM_PORT_ENV: "PORT", ADMIN_PORT: "9911",
                TLS_SECRET: "orders-tls", CONTRACT_CONFIGMAP: "orders-contract", POLICY_CONFIGMAP: "sales-policies",
                CPU_LIMIT: "1", MEMORY_REQUEST: "100Mi", UPSTREAM_PROTOCOL: "h2c"}},
            "spec": {"containers": [{"name": "app", "image": "orders:1",
                "env": [{"name": "PORT", "value": "9000"}, {"name": "OTHER", "value": "x"}],
                "ports": [{"name": "metrics", "containerPort": 9090}, {"name": "api", "containerPort": 9000}]}]}}));
        let out = injected(&v);
        let app = &out["spec"]["containers"][0];
        assert_eq!(
            app["ports"],
            json!([{"name": "metrics", "containerPort": 9090}])
        );
        assert_eq!(app["env"][0], json!({"name": "PORT", "value": "7000"}));
        assert_eq!(app["env"][1], json!({"name": "OTHER", "value": "x"}));
        assert_eq!(app["env"][2]["value"], "127.0.0.1:7000");
        let sc = &out["spec"]["initContainers"][0];
        assert_eq!(sc["ports"][0]["name"], "api");
        assert_eq!(sc["ports"][0]["containerPort"], 9000);
        assert_eq!(sc["ports"][1]["containerPort"], 9911);
        assert_eq!(sc["resources"]["limits"]["cpu"], "1");
        assert_eq!(sc["resources"]["requests"]["memory"], "100Mi");
        assert_eq!(
            out["spec"]["volumes"][0]["secret"]["secretName"],
            "orders-tls"
        );
        let text = sc["env"][0]["value"].as_str().expect("config");
        assert!(text.contains("upstream_protocol: h2c"), "{text}");
        assert!(text.contains("etc/meshgate/contracts"), "{text}");
        let names: Vec<&str> = out["spec"]["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "meshgate-identity",
                "meshgate-mesh",
                "meshgate-policies",
                "meshgate-contracts"
            ]
        );
    }

    #[test]
    fn a_secret_identity_is_readable_by_the_sidecar_group() {
        let secret = |extra: Value| {
            let mut v = pod(json!({"metadata": {"annotations": {TLS_SECRET: "orders-tls"}}}));
            json_patch::merge(&mut v, &extra);
            injected(&v)
        };
        // No securityContext at all: one is added with the sidecar's group.
        let out = secret(json!({}));
        assert_eq!(
            out["spec"]["volumes"][0],
            json!({"name": "meshgate-identity", "secret": {"secretName": "orders-tls", "defaultMode": 0o440}})
        );
        assert_eq!(out["spec"]["securityContext"], json!({"fsGroup": 65532}));
        // A securityContext without fsGroup: fsGroup is added, the rest kept.
        let out = secret(json!({"spec": {"securityContext": {"runAsNonRoot": true}}}));
        assert_eq!(
            out["spec"]["securityContext"],
            json!({"runAsNonRoot": true, "fsGroup": 65532})
        );
        // The pod's own fsGroup is kept: it is a supplementary group of every
        // container, the sidecar's too, so the files are readable.
        let out = secret(json!({"spec": {"securityContext": {"fsGroup": 2000}}}));
        assert_eq!(out["spec"]["securityContext"], json!({"fsGroup": 2000}));
        // The configured group is the one used.
        let mut cfg = InjectorConfig::default();
        cfg.sidecar.run_as_group = 1234;
        let v = pod(json!({"metadata": {"annotations": {TLS_SECRET: "orders-tls"}}}));
        let p: Pod = serde_json::from_value(v.clone()).expect("pod");
        let Decision::Inject { patch, .. } = plan(
            &cfg,
            Some("sales"),
            &enabled(),
            &p.metadata,
            p.spec.as_ref().expect("spec"),
            &PointerBuf::new(),
        )
        .expect("plans") else {
            panic!("not injected")
        };
        let mut out = v;
        json_patch::patch(&mut out, &patch).expect("applies");
        assert_eq!(out["spec"]["securityContext"]["fsGroup"], 1234);
        assert_eq!(
            out["spec"]["initContainers"][0]["securityContext"]["runAsGroup"],
            1234
        );
    }

    #[test]
    fn skip_rules() {
        let none = BTreeMap::new();
        assert_eq!(skipped(&pod(json!({})), &none), SkipReason::NotEnabled);
        assert_eq!(
            skipped(
                &pod(json!({"metadata": {"annotations": {INJECT: "disabled"}}})),
                &enabled()
            ),
            SkipReason::Disabled
        );
        assert_eq!(
            skipped(&pod(json!({"spec": {"hostNetwork": true}})), &enabled()),
            SkipReason::HostNetwork
        );
        assert_eq!(
            skipped(
                &pod(json!({"metadata": {"namespace": "meshgate-system"}})),
                &enabled()
            ),
            SkipReason::ExcludedNamespace
        );
        assert_eq!(
            skipped(
                &pod(json!({"metadata": {"namespace": "kube-system"}})),
                &enabled()
            ),
            SkipReason::ExcludedNamespace
        );
        // A pod may opt in where its namespace has not, by annotation or label,
        // and opt out by label too; the annotation wins over the label.
        let (d, _) = run(
            &pod(json!({"metadata": {"annotations": {INJECT: "enabled"}}})),
            &none,
        )
        .expect("plans");
        assert!(matches!(d, Decision::Inject { .. }));
        let (d, _) = run(
            &pod(json!({"metadata": {"labels": {INJECT: "enabled"}}})),
            &none,
        )
        .expect("plans");
        assert!(matches!(d, Decision::Inject { .. }));
        assert_eq!(
            skipped(
                &pod(json!({"metadata": {"labels": {INJECT: "disabled"}}})),
                &enabled()
            ),
            SkipReason::Disabled
        );
        assert_eq!(
            skipped(
                &pod(
                    json!({"metadata": {"labels": {INJECT: "enabled"}, "annotations": {INJECT: "disabled"}}})
                ),
                &none
            ),
            SkipReason::Disabled
        );
    }

    #[test]
    fn injection_is_idempotent() {
        let once = injected(&pod(json!({})));
        assert_eq!(skipped(&once, &enabled()), SkipReason::AlreadyInjected);
        // The sidecar alone (annotation stripped by someone) still counts.
        let mut stripped = once.clone();
        stripped["metadata"]["annotations"] = json!({});
        assert_eq!(skipped(&stripped, &enabled()), SkipReason::AlreadyInjected);
    }

    #[test]
    fn refuses_what_it_cannot_inject_whole() {
        let err = |v: Value| run(&v, &enabled()).expect_err("refused");
        assert!(matches!(
            err(pod(json!({"metadata": {"annotations": {INJECT: "yes"}}}))),
            InjectError::Annotation {
                annotation: INJECT,
                ..
            }
        ));
        // The pod opted in itself (annotation or label): refused.
        for opt_in in [
            json!({"metadata": {"annotations": {INJECT: "enabled"}}}),
            json!({"metadata": {"labels": {INJECT: "enabled"}}}),
        ] {
            let explicit = |v: Value| {
                let mut v = pod(v);
                json_patch::merge(&mut v, &opt_in);
                v
            };
            assert!(matches!(
                err(explicit(
                    json!({"metadata": {"annotations": {PORT: "grpc"}}})
                )),
                InjectError::UnknownPort(_)
            ));
            assert!(matches!(
                err(explicit(
                    json!({"spec": {"containers": [{"name": "app", "image": "x"}]}})
                )),
                InjectError::NoPort
            ));
            let probed = explicit(json!({"spec": {"containers": [{"name": "app", "image": "x",
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}}}]}}));
            assert!(matches!(
                err(probed),
                InjectError::ProbeOnServedPort {
                    probe: "readiness",
                    ..
                }
            ));
            // Without the namespace label too (the /inject-pod webhook).
            let none = BTreeMap::new();
            assert!(matches!(
                run(
                    &explicit(json!({"spec": {"containers": [{"name": "app", "image": "x"}]}})),
                    &none
                ),
                Err(InjectError::NoPort)
            ));
        }
        assert!(matches!(
            err(pod(
                json!({"metadata": {"annotations": {UPSTREAM_PORT: "8080"}}})
            )),
            InjectError::Ports(_)
        ));
        assert!(matches!(
            err(pod(
                json!({"metadata": {"annotations": {MEMORY_LIMIT: "lots"}}})
            )),
            InjectError::Annotation {
                annotation: MEMORY_LIMIT,
                ..
            }
        ));
        assert!(matches!(
            err(pod(
                json!({"metadata": {"annotations": {POLICY_CONFIGMAP: "Bad_Name"}}})
            )),
            InjectError::Annotation {
                annotation: POLICY_CONFIGMAP,
                ..
            }
        ));
        assert!(matches!(
            err(pod(
                json!({"metadata": {"annotations": {SIDECAR_MODE: "sidecar"}}})
            )),
            InjectError::Annotation {
                annotation: SIDECAR_MODE,
                ..
            }
        ));
    }

    #[test]
    fn a_pod_only_its_namespace_selected_is_skipped_when_it_cannot_be_injected_whole() {
        assert_eq!(
            skipped(
                &pod(json!({"spec": {"containers": [{"name": "app", "image": "x"}]}})),
                &enabled()
            ),
            SkipReason::NoPort
        );
        // Only UDP ports: nothing to serve either.
        assert_eq!(
            skipped(
                &pod(json!({"spec": {"containers": [{"name": "dns", "image": "x",
                    "ports": [{"containerPort": 53, "protocol": "UDP"}]}]}})),
                &enabled()
            ),
            SkipReason::NoPort
        );
        assert_eq!(
            skipped(
                &pod(json!({"metadata": {"annotations": {PORT: "grpc"}}})),
                &enabled()
            ),
            SkipReason::UnknownPort
        );
        for probe in [
            json!({"httpGet": {"path": "/", "port": "http"}}),
            json!({"httpGet": {"path": "/", "port": 8080}}),
            json!({"tcpSocket": {"port": 8080}}),
        ] {
            let probed = pod(json!({"spec": {"containers": [{"name": "app", "image": "x",
                "ports": [{"name": "http", "containerPort": 8080}],
                "livenessProbe": probe}]}}));
            assert_eq!(skipped(&probed, &enabled()), SkipReason::ProbeOnServedPort);
        }
        // A bad annotation is still refused: the pod's author asked for something.
        assert!(matches!(
            run(
                &pod(json!({"metadata": {"annotations": {MEMORY_LIMIT: "lots"}}})),
                &enabled()
            ),
            Err(InjectError::Annotation { .. })
        ));
        for r in [
            SkipReason::NoPort,
            SkipReason::UnknownPort,
            SkipReason::ProbeOnServedPort,
        ] {
            assert!(r.advice().is_some(), "{r:?}");
        }
        assert!(SkipReason::Disabled.advice().is_none());
        // The webhook allows such a pod unchanged, with the reason as a warning.
        let cfg = InjectorConfig::default();
        let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u3", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE", "userInfo": {}, "namespace": "sales",
            "object": pod(json!({"spec": {"containers": [{"name": "app", "image": "x"}]}}))}});
        let a = review(&cfg, body.to_string().as_bytes(), Selected::Namespace).expect("answered");
        assert!(a.response.allowed);
        assert!(a.response.patch.is_none());
        assert_eq!(a.outcome, Outcome::Skipped(SkipReason::NoPort));
        assert_eq!(
            a.response.warnings.as_deref(),
            SkipReason::NoPort
                .advice()
                .map(|w| vec![w.to_string()])
                .as_deref()
        );
        // Through /inject-pod the pod opted in itself: refused.
        let a = review(&cfg, body.to_string().as_bytes(), Selected::Pod).expect("answered");
        assert_eq!(a.outcome, Outcome::Skipped(SkipReason::NotEnabled));
        let mut labelled = body.clone();
        labelled["request"]["object"]["metadata"]["labels"] = json!({INJECT: "enabled"});
        let a = review(&cfg, labelled.to_string().as_bytes(), Selected::Pod).expect("answered");
        assert!(!a.response.allowed);
        assert!(matches!(a.outcome, Outcome::Refused(_)));
    }

    #[test]
    fn a_numeric_port_annotation_must_be_declared() {
        // Declared: the container that declares it is the app.
        let v = pod(json!({"metadata": {"annotations": {PORT: "9000"}},
            "spec": {"containers": [
                {"name": "logs", "image": "l", "ports": [{"containerPort": 7000}]},
                {"name": "job", "image": "x", "ports": [{"containerPort": 9000}]}]}}));
        let out = injected(&v);
        let sc = &out["spec"]["initContainers"][0];
        assert_eq!(sc["ports"][0]["name"], "meshgate");
        assert_eq!(sc["ports"][0]["containerPort"], 9000);
        assert_eq!(out["spec"]["containers"][1]["ports"], json!([]));
        assert_eq!(out["spec"]["containers"][1]["env"][1]["value"], "19000");
        assert_eq!(
            out["spec"]["containers"][0]["ports"][0]["containerPort"],
            7000
        );
        assert!(out["spec"]["containers"][0].get("env").is_none());
        // Not declared: refused when the pod opted in, skipped when only
        // its namespace did; containers[0] is never patched on a guess.
        let undeclared = json!({"metadata": {"annotations": {PORT: "8443"}},
            "spec": {"containers": [{"name": "job", "image": "x"}]}});
        assert_eq!(
            skipped(&pod(undeclared.clone()), &enabled()),
            SkipReason::UnknownPort
        );
        let mut asked = pod(undeclared);
        asked["metadata"]["annotations"][INJECT] = json!("enabled");
        let err = run(&asked, &BTreeMap::new()).expect_err("refused");
        assert_eq!(err, InjectError::UnknownPort("8443".into()));
        assert!(err.to_string().contains("no container declares"), "{err}");
        // A UDP port is not served.
        let udp = pod(
            json!({"metadata": {"annotations": {PORT: "53", INJECT: "enabled"}},
            "spec": {"containers": [{"name": "dns", "image": "x",
                "ports": [{"containerPort": 53, "protocol": "UDP"}]}]}}),
        );
        assert!(matches!(run(&udp, &enabled()), Err(InjectError::Ports(_))));
        // The same number over TCP and UDP: the TCP entry is taken.
        let both = pod(json!({"metadata": {"annotations": {PORT: "53"}},
            "spec": {"containers": [{"name": "dns", "image": "x",
                "ports": [{"name": "dns-udp", "containerPort": 53, "protocol": "UDP"},
                          {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}]}]}}));
        let out = injected(&both);
        assert_eq!(
            out["spec"]["initContainers"][0]["ports"][0]["name"],
            "dns-tcp"
        );
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([{"name": "dns-udp", "containerPort": 53, "protocol": "UDP"}])
        );
    }

    #[test]
    fn the_taken_port_keeps_its_host_port() {
        let v = pod(json!({"spec": {"containers": [{"name": "app", "image": "x",
            "ports": [{"name": "http", "containerPort": 8080, "hostPort": 30080, "hostIP": "10.0.0.1"}]}]}}));
        let out = injected(&v);
        assert_eq!(
            out["spec"]["initContainers"][0]["ports"][0],
            json!({"name": "http", "containerPort": 8080, "protocol": "TCP",
                   "hostPort": 30080, "hostIP": "10.0.0.1"})
        );
        assert_eq!(out["spec"]["containers"][0]["ports"], json!([]));
        // Without one, none is added.
        let out = injected(&pod(json!({})));
        assert!(out["spec"]["initContainers"][0]["ports"][0]
            .get("hostPort")
            .is_none());
    }

    #[test]
    fn documents_are_injected_by_kind_and_others_left_alone() {
        let input = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: orders\nspec:\n  selector:\n    matchLabels: {app: orders}\n  template:\n    metadata:\n      labels: {app: orders}\n    spec:\n      containers:\n      - name: app\n        image: orders:1\n        ports:\n        - containerPort: 8080\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: orders\nspec:\n  ports:\n  - port: 80\n    targetPort: 8080\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: nightly\n  annotations:\n    unrelated: x\nspec:\n  schedule: '@daily'\n  jobTemplate:\n    spec:\n      template:\n        metadata:\n          annotations:\n            meshgate.io/inject: disabled\n        spec:\n          restartPolicy: Never\n          containers:\n          - name: job\n            image: j:1\n";
        let (out, outcomes) = inject_stream(&InjectorConfig::default(), input).expect("injects");
        assert_eq!(outcomes[0].0, "deployment/orders");
        assert!(matches!(outcomes[0].1, DocOutcome::Injected(_)));
        assert_eq!(outcomes[1].1, DocOutcome::NotApplicable);
        assert_eq!(
            outcomes[2],
            (
                "cronjob/nightly".to_string(),
                DocOutcome::Skipped(SkipReason::Disabled)
            )
        );
        let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&out)
            .map(|d| Value::deserialize(d).expect("yaml out"))
            .collect();
        assert_eq!(docs.len(), 3);
        assert_eq!(
            docs[0]["spec"]["template"]["spec"]["initContainers"][0]["name"],
            "meshgate"
        );
        assert!(docs[0]["spec"]["template"]["metadata"]["annotations"][STATUS].is_string());
        let original: Vec<Value> = serde_yaml_ng::Deserializer::from_str(input)
            .map(|d| Value::deserialize(d).expect("yaml in"))
            .collect();
        assert_eq!(docs[1], original[1]);
        assert_eq!(docs[2], original[2]);
    }

    #[test]
    fn yaml_1_1_octal_file_modes_are_read_as_kubectl_reads_them() {
        assert_eq!(yaml11_octal("0644"), Some(0o644));
        assert_eq!(yaml11_octal("0400"), Some(0o400));
        assert_eq!(yaml11_octal("00"), Some(0));
        for not in ["644", "0", "0x1f", "08", "-0644", "0o644", "", "0644 "] {
            assert_eq!(yaml11_octal(not), None, "{not}");
        }
        let input = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: orders\nspec:\n  selector:\n    matchLabels: {app: orders}\n  template:\n    metadata:\n      labels: {app: orders}\n    spec:\n      containers:\n      - name: app\n        image: orders:1\n        ports:\n        - containerPort: 8080\n      volumes:\n      - name: conf\n        configMap:\n          name: conf\n          defaultMode: 0644\n          items:\n          - {key: a, path: a, mode: 0400}\n      - name: creds\n        projected:\n          defaultMode: 0o440\n          sources:\n          - secret:\n              name: s\n              items:\n              - {key: k, path: k, mode: 0600}\n      - name: plain\n        secret: {secretName: p, defaultMode: 420}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: conf\ndata:\n  mode: '0644'\n";
        let (out, outcomes) = inject_stream(&InjectorConfig::default(), input).expect("injects");
        assert!(matches!(outcomes[0].1, DocOutcome::Injected(_)));
        let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&out)
            .map(|d| Value::deserialize(d).expect("yaml out"))
            .collect();
        let volumes = &docs[0]["spec"]["template"]["spec"]["volumes"];
        assert_eq!(volumes[0]["configMap"]["defaultMode"], 0o644);
        assert_eq!(volumes[0]["configMap"]["items"][0]["mode"], 0o400);
        assert_eq!(volumes[1]["projected"]["defaultMode"], 0o440);
        assert_eq!(
            volumes[1]["projected"]["sources"][0]["secret"]["items"][0]["mode"],
            0o600
        );
        assert_eq!(volumes[2]["secret"]["defaultMode"], 420);
        // Not a pod's volume: left as written.
        assert_eq!(docs[1]["data"]["mode"], "0644");
    }

    /// Found by the `admission_review` fuzz target
    /// (fuzz/regressions/admission_review/uid-only.json): a v1 review whose
    /// uid could be read but which did not parse got no response at all.
    #[test]
    fn a_malformed_review_with_a_readable_uid_is_refused_with_that_uid() {
        let cfg = InjectorConfig::default();
        // Not UTF-8 in a field the typed parse would skip unchecked.
        let mut not_utf8 = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"uid-only","x":"?"}}"#.to_vec();
        let at = not_utf8.iter().rposition(|b| *b == b'?').expect("?");
        not_utf8[at] = 0x82;
        for body in [
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"uid-only"}}"#.to_vec(),
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"uid-only","operation":"EXPLODE"}}"#.to_vec(),
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","uid":"uid-only"}}"#.to_vec(),
            not_utf8,
        ] {
            let a = review(&cfg, &body, Selected::Namespace).expect("answered");
            let shown = String::from_utf8_lossy(&body);
            assert_eq!(a.response.uid, "uid-only", "{shown}");
            assert!(!a.response.allowed);
            assert!(a.response.patch.is_none());
            assert!(matches!(a.outcome, Outcome::Invalid(_)), "{:?}", a.outcome);
            assert!(
                a.response
                    .result
                    .message
                    .starts_with("meshgate injection: the review does not parse"),
                "{:?}",
                a.response.result
            );
        }
        // No uid to answer with: still an error (400).
        for body in [
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}"#,
            r#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u"}}"#,
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"Other","request":{"uid":"u"}}"#,
        ] {
            assert!(
                matches!(
                    review(&cfg, body.as_bytes(), Selected::Namespace),
                    Err(ReviewError::Parse(_))
                ),
                "{body}"
            );
        }
    }

    /// An object that says it is not a v1 Pod, or has no metadata, is
    /// refused, even when it parses as a pod; found by the admission_review
    /// fuzz target (an object of apiVersion "v0" without a kind was
    /// injected; one without metadata got a patch that does not apply).
    #[test]
    fn an_object_that_is_not_a_v1_pod_is_refused() {
        let cfg = InjectorConfig::default();
        let review_of = |object: Value| {
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
                "uid": "u9", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE", "userInfo": {}, "namespace": "sales", "object": object}})
        };
        let mut v0 = pod(json!({"apiVersion": "v0"}));
        v0.as_object_mut().map(|o| o.remove("kind"));
        for (object, why) in [
            (v0, "the object's apiVersion is \"v0\", not \"v1\""),
            (
                pod(json!({"kind": "Deployment"})),
                "the object's kind is \"Deployment\", not \"Pod\"",
            ),
            (
                pod(json!({"kind": 7})),
                "the object's kind is 7, not \"Pod\"",
            ),
        ] {
            let body = review_of(object).to_string();
            let a = review(&cfg, body.as_bytes(), Selected::Namespace).expect("answered");
            assert_eq!(a.response.uid, "u9");
            assert!(!a.response.allowed);
            assert_eq!(a.outcome, Outcome::Unsupported(why.to_string()));
        }
        let mut no_metadata = pod(json!({}));
        no_metadata.as_object_mut().map(|o| o.remove("metadata"));
        let body = review_of(no_metadata).to_string();
        let a = review(&cfg, body.as_bytes(), Selected::Namespace).expect("answered");
        assert_eq!(
            a.outcome,
            Outcome::Unsupported("the pod has no metadata object".into())
        );
        // Without type fields the object is read as the Pod the request names.
        let mut untyped = pod(json!({}));
        untyped.as_object_mut().map(|o| {
            o.remove("kind");
            o.remove("apiVersion")
        });
        let body = review_of(untyped).to_string();
        let a = review(&cfg, body.as_bytes(), Selected::Namespace).expect("answered");
        assert!(matches!(a.outcome, Outcome::Injected(_)), "{:?}", a.outcome);
    }

    #[test]
    fn malformed_reviews_are_errors_not_panics() {
        let cfg = InjectorConfig::default();
        for body in [&b""[..], b"{", b"[]", b"{\"kind\":\"AdmissionReview\"}", b"{\"apiVersion\":\"admission.k8s.io/v1beta1\",\"kind\":\"AdmissionReview\",\"request\":{}}"] {
            assert!(review(&cfg, body, Selected::Namespace).is_err(), "{}", String::from_utf8_lossy(body));
        }
        let no_request = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
        assert!(matches!(
            review(&cfg, no_request, Selected::Namespace),
            Err(ReviewError::NoRequest)
        ));
        let delete = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "DELETE", "userInfo": {}, "oldObject": pod(json!({}))}});
        let a = review(&cfg, delete.to_string().as_bytes(), Selected::Namespace).expect("answered");
        assert!(!a.response.allowed);
        assert_eq!(a.response.uid, "u1");
        assert!(matches!(a.outcome, Outcome::Unsupported(_)));
        let garbage_pod = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u2", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE", "userInfo": {},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": "nope"}}}});
        let a = review(
            &cfg,
            garbage_pod.to_string().as_bytes(),
            Selected::Namespace,
        )
        .expect("answered");
        assert!(!a.response.allowed);
        assert!(
            a.response.result.message.contains("does not parse"),
            "{:?}",
            a.response.result
        );
    }
}

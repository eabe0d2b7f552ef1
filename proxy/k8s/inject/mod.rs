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

mod document;
mod patch;
mod plan;
mod render;
mod review;

pub use document::*;
use patch::*;
pub use review::*;

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::PatchOperation;
use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

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
/// The domain that policy ConfigMap belongs to: its policies and grants may
/// then speak only about that domain's resources (without it they carry the
/// mesh baseline's authority, as before).
pub const POLICY_DOMAIN: &str = "meshgate.io/policy-domain";
/// The ConfigMap with the product's ODCS contracts (default: the policy ConfigMap).
pub const CONTRACT_CONFIGMAP: &str = "meshgate.io/contract-configmap";
/// Workload certificates from this Secret (`tls.crt`, `tls.key`, `ca.crt`)
/// instead of the csi-driver-spiffe volume.
pub const TLS_SECRET: &str = "meshgate.io/tls-secret";
/// The Secret holding the mesh's key for `hash`-masked fields (key
/// [`HASH_KEY_FILE`]), mounted read-only and named in the sidecar's
/// `fields.hash_key_file` (default: the injector's `sidecar.hash_key_secret`).
pub const HASH_KEY_SECRET: &str = "meshgate.io/hash-key-secret";
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
/// Where the hash key's Secret is mounted.
pub const HASH_KEY_DIR: &str = "/etc/meshgate/hash-key";
/// The hash key's Secret key, and its file's name in [`HASH_KEY_DIR`].
pub const HASH_KEY_FILE: &str = "hash.key";
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
const VOL_HASH_KEY: &str = "meshgate-hash-key";

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
    /// The Secret holding the mesh's hash key (key `hash.key`), mounted in
    /// every injected pod (the `meshgate.io/hash-key-secret` annotation
    /// names another per pod); it must then exist in every injected
    /// namespace. None: no key unless a pod names one.
    pub hash_key_secret: Option<String>,
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
            hash_key_secret: None,
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
        if let Some(name) = cfg.sidecar.hash_key_secret.as_deref() {
            if !resource_name(name) {
                return Err(crate::base::yaml::ConfigError::Invalid {
                    file: path.display().to_string(),
                    field: "sidecar.hash_key_secret",
                    message: format!("`{name}` is not a valid Secret name"),
                });
            }
        }
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
    /// A container named `meshgate` runs the sidecar's image.
    AlreadyInjected,
    /// A container named `meshgate` runs another image: a name clash or a
    /// stand-in, never the sidecar; not injected (names must be unique).
    ForeignSidecar,
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
            SkipReason::ForeignSidecar => "foreign_sidecar",
            SkipReason::ExcludedNamespace => "excluded_namespace",
            SkipReason::NoPort => "no_port",
            SkipReason::UnknownPort => "unknown_port",
            SkipReason::ProbeOnServedPort => "probe_on_served_port",
        }
    }

    /// For a pod that was to be injected but was left alone: what to tell
    /// whoever created it (an admission warning).
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
            SkipReason::ForeignSidecar => Some(
                "meshgate: the sidecar was not injected: a container is named `meshgate` but does not run the sidecar's image (rename it)",
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
            InjectError::ForeignSidecar(_) => Some(SkipReason::ForeignSidecar),
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
    #[error("container `{CONTAINER}` runs `{0}`, not the sidecar's image; rename it")]
    ForeignSidecar(String),
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
    /// Where the app is told to listen (`MESHGATE_UPSTREAM_ADDR`).
    pub upstream: String,
    /// A further app variable told the upstream port
    /// (`meshgate.io/upstream-port-env`; not recorded in the annotation).
    #[serde(skip)]
    pub upstream_env: Option<String>,
    /// The app container that moved to loopback.
    pub app: String,
    /// `csi` or `secret:NAME`.
    pub identity: String,
    pub mesh_configmap: String,
    pub policy_configmap: Option<String>,
    /// The domain whose authority the policy ConfigMap speaks with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_domain: Option<String>,
    pub contract_configmap: Option<String>,
    /// The Secret of the mesh's hash key, when one is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key_secret: Option<String>,
    /// Advice for whoever created the pod (not recorded in the annotation).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// The outcome for one pod.
#[derive(Debug, Clone)]
pub enum PodOutcome {
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
) -> Result<PodOutcome, InjectError> {
    let empty = BTreeMap::new();
    let ann = meta.annotations.as_ref().unwrap_or(&empty);
    if spec.host_network == Some(true) {
        return Ok(PodOutcome::Skip(SkipReason::HostNetwork));
    }
    // A container of the sidecar's name is never joined by a second one (the
    // API server would refuse the pod). It counts as the sidecar only when it
    // runs the sidecar's image (any tag or digest); anything else of that
    // name is skipped as foreign, which `--strict` and a warning report. The
    // annotation alone proves nothing: a pod carrying it without the
    // container (copied, or forged to pass for injected) is injected.
    let named_sidecar = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == CONTAINER);
    let foreign = match named_sidecar {
        Some(c)
            if c.image
                .as_deref()
                .is_some_and(|i| image_repository(i) == image_repository(&cfg.sidecar.image)) =>
        {
            return Ok(PodOutcome::Skip(SkipReason::AlreadyInjected))
        }
        Some(c) => Some(c.image.clone().unwrap_or_default()),
        None => None,
    };
    if let Some(ns) = namespace {
        if ns == cfg.namespace || cfg.skip_namespaces.iter().any(|s| s == ns) {
            return Ok(PodOutcome::Skip(SkipReason::ExcludedNamespace));
        }
    }
    // The pod's own choice: its annotation, else its label (a label can be
    // matched by the webhook's objectSelector in namespaces not opted in).
    let pod_choice = ann
        .get(INJECT)
        .or_else(|| meta.labels.as_ref().and_then(|l| l.get(INJECT)));
    let explicit = match pod_choice.map(String::as_str) {
        Some("disabled") => return Ok(PodOutcome::Skip(SkipReason::Disabled)),
        Some("enabled") => true,
        Some(other) => {
            return Err(InjectError::Annotation {
                annotation: INJECT,
                message: format!("`{other}` is neither `enabled` nor `disabled`"),
            })
        }
        None => {
            if namespace_labels.get(INJECT).map(String::as_str) != Some("enabled") {
                return Ok(PodOutcome::Skip(SkipReason::NotEnabled));
            }
            false
        }
    };
    // A pod that asked for the sidecar itself and cannot have it whole is
    // refused; one its namespace selected is left alone, with the reason.
    let built = match foreign {
        Some(image) => Err(InjectError::ForeignSidecar(image)),
        None => build(cfg, ann, meta.labels.as_ref(), spec, prefix),
    };
    match built {
        Ok((patch, status)) => Ok(PodOutcome::Inject {
            patch,
            status: Box::new(status),
        }),
        Err(e) => match e.skip_reason() {
            Some(reason) if !explicit => Ok(PodOutcome::Skip(reason)),
            _ => Err(e),
        },
    }
}

/// An image reference without its tag and digest: `reg:5000/a/b:1@sha256:…`
/// is `reg:5000/a/b` (a colon before the last slash is a registry's port).
fn image_repository(image: &str) -> &str {
    let image = image.trim();
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    let last = image.rfind('/').map_or(0, |i| i + 1);
    match image[last..].find(':') {
        Some(colon) => &image[..last + colon],
        None => image,
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
    if resource_name(v) {
        Ok(Some(v))
    } else {
        Err(InjectError::Annotation {
            annotation: key,
            message: format!("`{v}` is not a valid resource name"),
        })
    }
}

/// Whether `v` is a Kubernetes resource name (DNS-1123 subdomain).
fn resource_name(v: &str) -> bool {
    v.len() <= 253
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric())
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

#[cfg(test)]
mod hash_key_tests;
#[cfg(test)]
mod tests;

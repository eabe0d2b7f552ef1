//! The injection settings of one pod, resolved from its annotations and the
//! injector's configuration into a typed [`Plan`]: every annotation checked,
//! every port and volume name known not to collide with the pod's. Nothing
//! is rendered here; a pod that gets a plan can be injected.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::*;

/// What injection will do to one pod.
pub(super) struct Plan<'a> {
    pub(super) mode: Mode,
    /// The app port the sidecar serves.
    pub(super) taken: Taken,
    /// The container that declared it (the app).
    pub(super) app: &'a Container,
    pub(super) admin_port: u16,
    /// The loopback port the app moves to.
    pub(super) upstream_port: u16,
    /// A further app variable set to the upstream port.
    pub(super) upstream_env: Option<&'a str>,
    /// `http1` or `h2c`.
    pub(super) protocol: &'static str,
    pub(super) log_level: &'a str,
    pub(super) policy_configmap: Option<&'a str>,
    /// The domain the policy ConfigMap belongs to.
    pub(super) policy_domain: Option<&'a str>,
    pub(super) contract_configmap: Option<&'a str>,
    /// The Secret of the workload certificates; none: the CSI driver.
    pub(super) tls_secret: Option<&'a str>,
    /// The Secret of the mesh's hash key; none: no key.
    pub(super) hash_key_secret: Option<&'a str>,
    pub(super) resources: Resources,
    /// The sidecar's volumes, in the order they are added to the pod.
    pub(super) volumes: Vec<Volume<'a>>,
    /// The pod gets the sidecar's group as its `fsGroup` (a Secret's files
    /// belong to root when the pod sets none).
    pub(super) set_fs_group: bool,
}

impl Plan<'_> {
    /// Where the app now listens.
    pub(super) fn upstream(&self) -> String {
        format!("127.0.0.1:{}", self.upstream_port)
    }

    /// The directory the sidecar reads contracts from: their own ConfigMap,
    /// else the policy ConfigMap, else none.
    pub(super) fn contracts_dir(&self) -> Option<&'static str> {
        match (self.contract_configmap, self.policy_configmap) {
            (Some(_), _) => Some(CONTRACTS_DIR),
            (None, Some(_)) => Some(POLICIES_DIR),
            (None, None) => None,
        }
    }
}

/// The sidecar's resource requests and limits: `(cpu|memory, quantity)`.
pub(super) struct Resources {
    pub(super) requests: Vec<(&'static str, String)>,
    pub(super) limits: Vec<(&'static str, String)>,
}

/// One volume of the sidecar and where it is mounted.
pub(super) struct Volume<'a> {
    pub(super) name: &'static str,
    pub(super) source: Source<'a>,
    pub(super) mount: &'static str,
}

pub(super) enum Source<'a> {
    /// csi-driver-spiffe, its files readable by this group.
    Csi {
        fs_group: i64,
    },
    Secret(&'a str),
    /// One key of a Secret, as a file of the same name.
    SecretKey {
        secret: &'a str,
        key: &'static str,
    },
    ConfigMap(&'a str),
}

/// Resolves the pod's annotations and the injector's configuration, in the
/// order a pod's mistakes are reported: mode, port, probes, ports, protocol,
/// log filter, names, resources, volumes.
pub(super) fn resolve<'a>(
    cfg: &'a InjectorConfig,
    ann: &'a BTreeMap<String, String>,
    spec: &'a PodSpec,
) -> Result<Plan<'a>, InjectError> {
    let sc = &cfg.sidecar;
    if spec.containers.is_empty() {
        return Err(InjectError::NoContainers);
    }
    let mode = mode(ann)?;
    let taken = find_port(spec, annotation(ann, PORT))?;
    let app = &spec.containers[taken.container];
    check_probes(app, &taken)?;
    let (admin_port, upstream_port) = ports(sc, ann, spec, &taken)?;
    let protocol = protocol(ann)?;
    let log_level = log_level(sc, ann)?;
    let upstream_env = name_env(ann)?;
    let policy_configmap = name_annotation(ann, POLICY_CONFIGMAP)?;
    let policy_domain = policy_domain(ann, policy_configmap)?;
    let contract_configmap = name_annotation(ann, CONTRACT_CONFIGMAP)?;
    let tls_secret = name_annotation(ann, TLS_SECRET)?;
    let hash_key_secret = name_annotation(ann, HASH_KEY_SECRET)?.or(sc.hash_key_secret.as_deref());
    let resources = resources(sc, ann)?;
    let mut volumes = volumes(sc, tls_secret, policy_configmap, contract_configmap);
    if let Some(secret) = hash_key_secret {
        // Only the key, read-only: the Secret's other keys stay out.
        volumes.push(Volume {
            name: VOL_HASH_KEY,
            source: Source::SecretKey {
                secret,
                key: HASH_KEY_FILE,
            },
            mount: HASH_KEY_DIR,
        });
    }
    for v in &volumes {
        if spec.volumes.iter().flatten().any(|x| x.name == v.name) {
            return Err(InjectError::Volume(v.name.to_string()));
        }
    }
    let pod_fs_group = spec.security_context.as_ref().and_then(|s| s.fs_group);
    Ok(Plan {
        mode,
        taken,
        app,
        admin_port,
        upstream_port,
        upstream_env,
        protocol,
        log_level,
        policy_configmap,
        policy_domain,
        contract_configmap,
        tls_secret,
        hash_key_secret,
        resources,
        volumes,
        // A Secret's files are root's without a pod fsGroup.
        set_fs_group: (tls_secret.is_some() || hash_key_secret.is_some()) && pod_fs_group.is_none(),
    })
}

/// The policy ConfigMap's domain: a contract's `domain`, only beside a
/// policy ConfigMap.
fn policy_domain<'a>(
    ann: &'a BTreeMap<String, String>,
    policy_configmap: Option<&str>,
) -> Result<Option<&'a str>, InjectError> {
    let Some(domain) = annotation(ann, POLICY_DOMAIN) else {
        return Ok(None);
    };
    let refuse = |message: String| InjectError::Annotation {
        annotation: POLICY_DOMAIN,
        message,
    };
    if policy_configmap.is_none() {
        return Err(refuse(format!(
            "names the domain of the policy ConfigMap, and {POLICY_CONFIGMAP} names none"
        )));
    }
    if domain.chars().any(char::is_control) {
        return Err(refuse(format!("{domain:?} is not a domain id")));
    }
    Ok(Some(domain))
}

fn mode(ann: &BTreeMap<String, String>) -> Result<Mode, InjectError> {
    match annotation(ann, SIDECAR_MODE) {
        None | Some("native") => Ok(Mode::Native),
        Some("container") => Ok(Mode::Container),
        Some(other) => Err(InjectError::Annotation {
            annotation: SIDECAR_MODE,
            message: format!("`{other}` is neither `native` nor `container`"),
        }),
    }
}

/// The admin port and the app's loopback port: distinct from the served
/// port, from each other and from every port the pod declares.
fn ports(
    sc: &SidecarConfig,
    ann: &BTreeMap<String, String>,
    spec: &PodSpec,
    taken: &Taken,
) -> Result<(u16, u16), InjectError> {
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
    Ok((admin_port, upstream_port))
}

fn protocol(ann: &BTreeMap<String, String>) -> Result<&'static str, InjectError> {
    match annotation(ann, UPSTREAM_PROTOCOL) {
        None | Some("http1") => Ok("http1"),
        Some("h2c") => Ok("h2c"),
        Some(other) => Err(InjectError::Annotation {
            annotation: UPSTREAM_PROTOCOL,
            message: format!("`{other}` is neither `http1` nor `h2c`"),
        }),
    }
}

fn log_level<'a>(
    sc: &'a SidecarConfig,
    ann: &'a BTreeMap<String, String>,
) -> Result<&'a str, InjectError> {
    let from_pod = annotation(ann, LOG_LEVEL);
    let log_level = from_pod.unwrap_or(&sc.log_level);
    // A pod's own filter: plain directives only (a field filter's value is
    // a regular expression, which an annotation could make the webhook
    // compile into an automaton of any size). The injector's own setting
    // is the operator's.
    if from_pod.is_some_and(|f| !plain_log_filter(f))
        || tracing_subscriber::EnvFilter::try_new(log_level).is_err()
    {
        return Err(InjectError::Annotation {
            annotation: LOG_LEVEL,
            message: format!("`{log_level}` is not a log filter of levels and targets (e.g. info, info,meshgate=debug)"),
        });
    }
    Ok(log_level)
}

/// `LEVEL` or `TARGET=LEVEL`, comma-separated, at most 256 bytes: a target
/// is a Rust module path (letters, digits, `_`, `::`, `-`, `.`).
pub(super) fn plain_log_filter(filter: &str) -> bool {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let level = |l: &str| LEVELS.iter().any(|k| k.eq_ignore_ascii_case(l));
    let target = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-' | b'.'))
    };
    !filter.is_empty()
        && filter.len() <= 256
        && filter.split(',').all(|d| match d.split_once('=') {
            Some((t, l)) => target(t) && level(l),
            None => level(d) || target(d),
        })
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

/// Requests and limits: the annotation, else the configured default.
fn resources(sc: &SidecarConfig, ann: &BTreeMap<String, String>) -> Result<Resources, InjectError> {
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    for (key, default, field) in [
        (CPU_REQUEST, Some(sc.cpu_request.as_str()), "cpu"),
        (MEMORY_REQUEST, Some(sc.memory_request.as_str()), "memory"),
    ] {
        if let Some(q) = quantity(ann, key, default)? {
            requests.push((field, q));
        }
    }
    for (key, default, field) in [
        (CPU_LIMIT, sc.cpu_limit.as_deref(), "cpu"),
        (MEMORY_LIMIT, sc.memory_limit.as_deref(), "memory"),
    ] {
        if let Some(q) = quantity(ann, key, default)? {
            limits.push((field, q));
        }
    }
    Ok(Resources { requests, limits })
}

/// The certificates, the mesh baseline, and the domain's policies and
/// contracts when the pod names their ConfigMaps.
fn volumes<'a>(
    sc: &'a SidecarConfig,
    tls_secret: Option<&'a str>,
    policy_configmap: Option<&'a str>,
    contract_configmap: Option<&'a str>,
) -> Vec<Volume<'a>> {
    // The certificate files must be readable by the sidecar's non-root
    // user: csi-driver-spiffe makes them so only for the group named by its
    // `fs-group` attribute; a Secret volume's files (0440) belong to the
    // pod's fsGroup, or to root when the pod has none (then it gets ours).
    let identity = match tls_secret {
        None => Source::Csi {
            fs_group: sc.run_as_group,
        },
        Some(s) => Source::Secret(s),
    };
    let mut volumes = vec![
        Volume {
            name: VOL_IDENTITY,
            source: identity,
            mount: IDENTITY_DIR,
        },
        Volume {
            name: VOL_MESH,
            source: Source::ConfigMap(&sc.mesh_configmap),
            mount: MESH_DIR,
        },
    ];
    if let Some(cm) = policy_configmap {
        volumes.push(Volume {
            name: VOL_POLICIES,
            source: Source::ConfigMap(cm),
            mount: POLICIES_DIR,
        });
    }
    if let Some(cm) = contract_configmap {
        volumes.push(Volume {
            name: VOL_CONTRACTS,
            source: Source::ConfigMap(cm),
            mount: CONTRACTS_DIR,
        });
    }
    volumes
}

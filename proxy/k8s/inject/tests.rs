use super::*;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

pub(super) fn pod(v: Value) -> Value {
    let mut base = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orders", "namespace": "sales"},
        "spec": {"containers": [{"name": "app", "image": "orders:1",
                  "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]}
    });
    json_patch::merge(&mut base, &v);
    base
}

pub(super) fn enabled() -> BTreeMap<String, String> {
    BTreeMap::from([(INJECT.to_string(), "enabled".to_string())])
}

/// Plans for `v` in namespace `sales` with `labels`; returns the decision
/// and, when injected, the pod with the patch applied.
pub(super) fn run(
    v: &Value,
    labels: &BTreeMap<String, String>,
) -> Result<(PodOutcome, Value), InjectError> {
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
    if let PodOutcome::Inject { patch, .. } = &d {
        json_patch::patch(&mut out, patch).expect("patch applies");
    }
    Ok((d, out))
}

pub(super) fn injected(v: &Value) -> Value {
    match run(v, &enabled()).expect("plans") {
        (PodOutcome::Inject { .. }, out) => out,
        (other, _) => panic!("not injected: {other:?}"),
    }
}

fn skipped(v: &Value, labels: &BTreeMap<String, String>) -> SkipReason {
    match run(v, labels).expect("plans").0 {
        PodOutcome::Skip(r) => r,
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
        vec![std::path::PathBuf::from("etc/meshgate/policies").into()]
    );
    assert_eq!(
        out["spec"]["volumes"][2]["configMap"]["name"],
        "sales-policies"
    );
    let mounts = &out["spec"]["initContainers"][0]["volumeMounts"];
    assert_eq!(mounts[2]["mountPath"], POLICIES_DIR);
    assert!(cfg.fields.is_none());
    // With the hash key's Secret: its file, relative like the others.
    let out = injected(&pod(
        json!({"metadata": {"annotations": {HASH_KEY_SECRET: "mesh-hash-key"}}}),
    ));
    let text = out["spec"]["initContainers"][0]["env"][0]["value"]
        .as_str()
        .expect("config text");
    let cfg = crate::runtime::config::Config::parse(text, CONFIG_ENV).expect("parses");
    assert_eq!(
        cfg.fields.expect("fields").hash_key_file,
        std::path::Path::new("etc/meshgate/hash-key/hash.key")
    );
}

#[test]
fn a_regular_container_when_annotated() {
    let job = pod(
        json!({"metadata": {"annotations": {SIDECAR_MODE: "container"}},
        "spec": {"restartPolicy": "Never"}}),
    );
    match run(&job, &enabled()).expect("plans").0 {
        PodOutcome::Inject { status, .. } => {
            assert_eq!(status.warnings.len(), 2, "{:?}", status.warnings);
            assert!(status.warnings[0].contains("no policy ConfigMap is named"));
            assert!(status.warnings[1].contains("run-to-completion"));
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
    let PodOutcome::Inject { patch, .. } = plan(
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
    assert!(matches!(d, PodOutcome::Inject { .. }));
    let (d, _) = run(
        &pod(json!({"metadata": {"labels": {INJECT: "enabled"}}})),
        &none,
    )
    .expect("plans");
    assert!(matches!(d, PodOutcome::Inject { .. }));
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
    // Another tag or a digest of the sidecar's image is still the sidecar.
    let mut other_tag = once.clone();
    other_tag["spec"]["initContainers"][0]["image"] =
        json!("ghcr.io/meshgate/meshgate:0.0.1@sha256:0123");
    assert_eq!(skipped(&other_tag, &enabled()), SkipReason::AlreadyInjected);
}

#[test]
fn only_the_sidecar_itself_counts_as_injected() {
    // The annotation alone, copied or forged, proves nothing: injected.
    let forged = pod(json!({"metadata": {"annotations": {STATUS: "{}"}}}));
    let out = injected(&forged);
    assert_eq!(out["spec"]["initContainers"][0]["name"], CONTAINER);
    assert_ne!(out["metadata"]["annotations"][STATUS], "{}");
    // A stand-in of the sidecar's name is not the sidecar: skipped (a second
    // container of that name would be refused by the API server) with a
    // reason `--strict` and the admission warning report.
    let stand_in = pod(json!({"spec": {"containers": [
        {"name": "app", "image": "orders:1", "ports": [{"containerPort": 8080}]},
        {"name": CONTAINER, "image": "busybox:1.36"}]}}));
    assert_eq!(skipped(&stand_in, &enabled()), SkipReason::ForeignSidecar);
    // One that asked for the sidecar itself is refused.
    let mut asked = stand_in.clone();
    asked["metadata"]["annotations"] = json!({INJECT: "enabled"});
    assert!(matches!(
        run(&asked, &enabled()),
        Err(InjectError::ForeignSidecar(image)) if image == "busybox:1.36"
    ));
    assert!(SkipReason::ForeignSidecar.advice().is_some());
    // A pod that is not to be injected anyway says why, not this.
    assert_eq!(skipped(&stand_in, &BTreeMap::new()), SkipReason::NotEnabled);
    for (image, repo) in [
        ("ghcr.io/meshgate/meshgate:1.2", "ghcr.io/meshgate/meshgate"),
        ("localhost:5000/meshgate", "localhost:5000/meshgate"),
        (
            "localhost:5000/meshgate:2@sha256:ab",
            "localhost:5000/meshgate",
        ),
        ("meshgate@sha256:ab", "meshgate"),
    ] {
        assert_eq!(image_repository(image), repo);
    }
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

#[test]
fn a_policy_domain_annotation_makes_the_configmap_a_domain_source() {
    let out = injected(&pod(json!({"metadata": {"annotations": {
        POLICY_CONFIGMAP: "sales-policies", POLICY_DOMAIN: "sales"}}})));
    let text = out["spec"]["initContainers"][0]["env"][0]["value"]
        .as_str()
        .expect("config text");
    let cfg =
        crate::runtime::config::Config::parse(text, CONFIG_ENV).expect("sidecar config parses");
    let policy = cfg.policy.expect("policy section");
    let sources = policy.sources;
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0].domain, None, "the mesh baseline is no domain's");
    assert_eq!(
        sources[1].path,
        std::path::Path::new("etc/meshgate/policies")
    );
    assert_eq!(sources[1].domain.as_deref(), Some("sales"));
    // Its contracts are the domain's only.
    let domains: Vec<Option<&str>> = policy
        .contracts
        .iter()
        .map(|c| c.domain.as_deref())
        .collect();
    assert_eq!(domains, [Some("sales")]);
    let status: Status = serde_json::from_str(
        out["metadata"]["annotations"][STATUS]
            .as_str()
            .expect("status"),
    )
    .expect("status json");
    assert_eq!(status.policy_domain.as_deref(), Some("sales"));

    // A domain without a policy ConfigMap to belong to is refused.
    assert!(matches!(
        run(
            &pod(json!({"metadata": {"annotations": {POLICY_DOMAIN: "sales"}}})),
            &enabled()
        ),
        Err(InjectError::Annotation {
            annotation: POLICY_DOMAIN,
            ..
        })
    ));
}

#[test]
fn a_pod_without_a_policy_configmap_is_warned_what_it_will_answer() {
    let warnings = |v: Value| match run(&pod(v), &enabled()).expect("plans").0 {
        PodOutcome::Inject { status, .. } => status.warnings,
        other => panic!("{other:?}"),
    };
    let none = warnings(json!({}));
    assert_eq!(none.len(), 1, "{none:?}");
    assert!(none[0].contains(POLICY_CONFIGMAP), "{none:?}");
    assert!(
        none[0].contains("every request would be answered 404"),
        "{none:?}"
    );
    let contracts_only =
        warnings(json!({"metadata": {"annotations": {CONTRACT_CONFIGMAP: "sales-contracts"}}}));
    assert_eq!(contracts_only.len(), 1, "{contracts_only:?}");
    assert!(contracts_only[0].contains("403"), "{contracts_only:?}");
    // A policy ConfigMap with no domain speaks with the mesh's authority.
    let named =
        warnings(json!({"metadata": {"annotations": {POLICY_CONFIGMAP: "sales-policies"}}}));
    assert_eq!(named.len(), 1, "{named:?}");
    assert!(
        named[0].contains(POLICY_DOMAIN) && named[0].contains("the mesh baseline's authority"),
        "{named:?}"
    );
    let owned = warnings(json!({"metadata": {"annotations": {
        POLICY_CONFIGMAP: "sales-policies", POLICY_DOMAIN: "sales"}}}));
    assert!(owned.is_empty(), "{owned:?}");
}

#[test]
fn a_log_level_annotation_is_levels_and_targets_only() {
    use super::plan::plain_log_filter;
    for ok in [
        "info",
        "INFO",
        "info,meshgate=debug",
        "meshgate::pipeline=trace,warn",
        "hyper",
    ] {
        assert!(plain_log_filter(ok), "{ok}");
    }
    // Span and field filters are regular expressions the webhook would
    // compile: refused before EnvFilter sees them.
    let automaton = format!("[{{f={}}}]=info", "(a|b)".repeat(24));
    for bad in [
        "",
        automaton.as_str(),
        "[span]=info",
        "meshgate[x]=debug",
        "info,=debug",
        "meshgate=loud",
        &"a".repeat(257),
    ] {
        assert!(!plain_log_filter(bad), "{bad}");
    }
}

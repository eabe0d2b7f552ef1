//! deploy/: every manifest kustomize builds is valid Kubernetes 1.33
//! (kubernetes-validate, strict), the webhook is configured as the README
//! says, the example product injects into a valid pod whose volumes exist,
//! and the PrometheusRule carries the generated SLO rules.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde::Deserialize;
use serde_json::Value;

const CRDS: &[&str] = &["Certificate", "Issuer", "PodMonitor", "PrometheusRule"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The rest of the first line of `file` (a repository file) that starts
/// with `prefix`.
fn line_after(file: &str, prefix: &str) -> String {
    std::fs::read_to_string(root().join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("{file} has no `{prefix}` line"))
        .to_string()
}

/// `kubectl kustomize DIR` (plain, no load-restrictor flags).
fn kustomize(dir: &str) -> Option<String> {
    if !require_tool("kubectl") {
        return None;
    }
    let out = output_within(
        Command::new("kubectl")
            .arg("kustomize")
            .arg(root().join(dir)),
    );
    assert!(
        out.status.success(),
        "{dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).to_string())
}

fn validate(name: &str, text: &str, expected: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&file, text).expect("write");
    // Whenever the tool ran, exactly the expected resources passed.
    if let Some(passed) = kubernetes_validate(&file, CRDS) {
        assert_eq!(passed, expected, "{name}: {passed} of {expected} validated");
    }
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(name))
        })
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn base_is_valid_and_configures_the_webhook_as_documented() {
    let Some(text) = kustomize("deploy/base") else {
        return;
    };
    let all = docs(&text);
    validate(
        "base",
        &text,
        all.iter()
            .filter(|d| !CRDS.contains(&d["kind"].as_str().unwrap_or("")))
            .count(),
    );

    check_webhooks(&all);
    let deploy = find(&all, "Deployment", "meshgate-injector");
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert!(deploy["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"].is_object());
    let pdb = find(&all, "PodDisruptionBudget", "meshgate-injector");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    check_serving_certificate(&all, deploy);
    check_config_maps(&all, deploy);
    let rules = injector_network_policy(&all, deploy);
    assert!(
        rules[0].get("from").is_none(),
        "the base's webhook port is open to every source (the API server's addresses differ by cluster)"
    );
}

/// The injector's NetworkPolicy: it selects the injector's pods and lets
/// in exactly their two ports, by number: the webhook port (its rule
/// first, returned with the rest) and the admin port from the monitoring
/// namespace only.
fn injector_network_policy<'a>(all: &'a [Value], deploy: &Value) -> &'a [Value] {
    let policy = find(all, "NetworkPolicy", "meshgate-injector");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        deploy["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress"])
    );
    let port = |name: &str| -> u64 {
        deploy["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("the injector's {name} port"))
    };
    let rules = policy["spec"]["ingress"].as_array().expect("ingress");
    assert_eq!(rules.len(), 2, "{rules:?}");
    let only_port = |rule: &Value| -> u64 {
        let ports = rule["ports"].as_array().expect("ports");
        assert_eq!(ports.len(), 1, "{rule}");
        assert_eq!(ports[0]["protocol"], "TCP");
        ports[0]["port"].as_u64().expect("a numbered port")
    };
    assert_eq!(only_port(&rules[0]), port("https"), "the webhook port");
    assert_eq!(only_port(&rules[1]), port("admin"), "the admin port");
    assert_eq!(
        rules[1]["from"],
        serde_json::json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]),
        "the admin port is open to the monitoring namespace only"
    );
    rules
}

/// deploy/examples/injector: the base with the webhook port narrowed to the
/// API server's addresses (an example range), everything else as in the base.
#[test]
fn the_injector_example_opens_the_webhook_port_to_the_api_server_only() {
    let (Some(text), Some(base)) = (
        kustomize("deploy/examples/injector"),
        kustomize("deploy/base"),
    ) else {
        return;
    };
    let all = docs(&text);
    validate(
        "injector",
        &text,
        all.iter()
            .filter(|d| !CRDS.contains(&d["kind"].as_str().unwrap_or("")))
            .count(),
    );
    let deploy = find(&all, "Deployment", "meshgate-injector");
    let rules = injector_network_policy(&all, deploy);
    assert_eq!(
        rules[0]["from"],
        serde_json::json!([{"ipBlock": {"cidr": "192.0.2.0/24"}}])
    );
    // Nothing else differs from the base.
    let policy = |docs: &[Value]| find(docs, "NetworkPolicy", "meshgate-injector").clone();
    let mut narrowed = policy(&all);
    narrowed["spec"]["ingress"][0]
        .as_object_mut()
        .map(|r| r.remove("from"));
    assert_eq!(narrowed, policy(&docs(&base)));
    assert_eq!(all.len(), docs(&base).len());
}

/// The two webhooks of the base: namespaces labelled for injection
/// (system namespaces excluded) and pods labelled in other namespaces,
/// both failing closed, with the CA bundle cert-manager injects.
fn check_webhooks(all: &[Value]) {
    let hook = find(all, "MutatingWebhookConfiguration", "meshgate-injector");
    assert_eq!(
        hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "meshgate-system/meshgate-injector-ca",
        "the caBundle is the CA's, stable across serving certificate renewals"
    );
    let w = &hook["webhooks"][0];
    assert_eq!(w["failurePolicy"], "Fail");
    assert_eq!(w["sideEffects"], "None");
    assert_eq!(w["timeoutSeconds"], 5);
    assert_eq!(w["reinvocationPolicy"], "IfNeeded");
    assert_eq!(w["admissionReviewVersions"], serde_json::json!(["v1"]));
    assert_eq!(w["clientConfig"]["service"]["namespace"], "meshgate-system");
    assert_eq!(w["clientConfig"]["service"]["path"], "/inject");
    assert_eq!(w["rules"][0]["operations"], serde_json::json!(["CREATE"]));
    assert_eq!(w["rules"][0]["resources"], serde_json::json!(["pods"]));
    let exprs = w["namespaceSelector"]["matchExpressions"]
        .as_array()
        .expect("selector");
    assert!(exprs.iter().any(|e| e["key"] == "meshgate.io/inject"
        && e["operator"] == "In"
        && e["values"] == serde_json::json!(["enabled"])));
    let excluded = exprs
        .iter()
        .find(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
        .expect("namespace exclusion");
    for ns in ["kube-system", "meshgate-system"] {
        assert!(excluded["values"]
            .as_array()
            .expect("values")
            .contains(&Value::from(ns)));
    }

    // The second webhook: pods labelled for injection in other namespaces.
    let w2 = &hook["webhooks"][1];
    assert_eq!(w2["clientConfig"]["service"]["path"], "/inject-pod");
    assert_eq!(
        w2["objectSelector"]["matchLabels"]["meshgate.io/inject"],
        "enabled"
    );
    assert_eq!(w2["failurePolicy"], "Fail");
    assert_eq!(w2["reinvocationPolicy"], "IfNeeded");
    assert_eq!(
        w2["namespaceSelector"]["matchExpressions"][0]["operator"],
        "NotIn"
    );
}

/// cert-manager's chain for the injector's serving certificate: selfSigned
/// Issuer -> CA Certificate -> CA Issuer -> serving Certificate, mounted by
/// the injector's Deployment `deploy`.
fn check_serving_certificate(all: &[Value], deploy: &Value) {
    // selfSigned Issuer -> CA Certificate -> CA Issuer -> serving Certificate.
    let named = |kind: &str, name: &str| -> &Value {
        all.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let selfsigned = named("Issuer", "meshgate-injector-selfsigned");
    assert!(selfsigned["spec"]["selfSigned"].is_object());
    let ca = named("Certificate", "meshgate-injector-ca");
    assert_eq!(ca["metadata"]["namespace"], "meshgate-system");
    assert_eq!(ca["spec"]["isCA"], true);
    assert_eq!(
        ca["spec"]["issuerRef"]["name"],
        "meshgate-injector-selfsigned"
    );
    assert_eq!(ca["spec"]["privateKey"]["rotationPolicy"], "Never");
    let ca_issuer = named("Issuer", "meshgate-injector-ca");
    assert_eq!(
        ca_issuer["spec"]["ca"]["secretName"],
        ca["spec"]["secretName"]
    );
    let cert = named("Certificate", "meshgate-injector");
    assert_eq!(cert["spec"]["issuerRef"]["kind"], "Issuer");
    assert_eq!(cert["spec"]["issuerRef"]["name"], "meshgate-injector-ca");
    assert!(cert["spec"]["isCA"].is_null());
    // The injector mounts the serving certificate's Secret.
    assert!(deploy["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .any(|v| v["secret"]["secretName"] == cert["spec"]["secretName"]));
    assert!(cert["spec"]["dnsNames"]
        .as_array()
        .expect("dnsNames")
        .contains(&Value::from("meshgate-injector.meshgate-system.svc")));
}

/// The injector's configuration (a generated ConfigMap, mounted by
/// `deploy`) and the mesh baseline ConfigMap.
fn check_config_maps(all: &[Value], deploy: &Value) {
    // The injector's configuration (a generated ConfigMap) is a valid one,
    // and the Deployment mounts that ConfigMap under its hashed name.
    let cm = find(all, "ConfigMap", "meshgate-injector");
    let cm_name = cm["metadata"]["name"].as_str().expect("name");
    let volumes = deploy["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes");
    assert!(volumes.iter().any(|v| v["configMap"]["name"] == cm_name));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("injector.yaml");
    std::fs::write(
        &cfg,
        cm["data"]["injector.yaml"].as_str().expect("injector.yaml"),
    )
    .expect("write");
    meshgate::InjectorConfig::load(&cfg).expect("the shipped injector configuration loads");
    // The mesh baseline, from policies/ as it is.
    let mesh = find(all, "ConfigMap", "meshgate-mesh");
    assert_eq!(
        mesh["metadata"]["name"], "meshgate-mesh",
        "no hash: pods name it"
    );
    for (key, file) in [
        ("baseline.cedar", "policies/mesh/baseline.cedar"),
        ("schema.cedarschema", "policies/schema.cedarschema"),
        ("entities.json", "policies/entities.json"),
    ] {
        let want = std::fs::read_to_string(root().join(file)).expect("policy file");
        assert_eq!(mesh["data"][key], want.as_str(), "{key}");
    }
}

#[test]
fn the_sales_example_is_valid_before_and_after_injection() {
    let Some(text) = kustomize("deploy/examples/sales") else {
        return;
    };
    let all = docs(&text);
    validate("sales", &text, all.len());
    let ns = find(&all, "Namespace", "sales");
    assert_eq!(ns["metadata"]["labels"]["meshgate.io/inject"], "enabled");

    // What the webhook makes of the product's pods, with the shipped injector
    // configuration.
    let out = output_fed(
        Command::new(bin())
            .args(["inject", "-f", "-", "--config"])
            .arg(root().join("deploy/base/injector.yaml")),
        Some(text.as_bytes()),
        EXIT_DEADLINE,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let injected_text = String::from_utf8_lossy(&out.stdout).to_string();
    let injected = docs(&injected_text);
    validate("sales-injected", &injected_text, injected.len());

    let orders = find(&injected, "Deployment", "orders");
    let pod = &orders["spec"]["template"]["spec"];
    assert_eq!(pod["initContainers"][0]["name"], "meshgate");
    assert_eq!(
        pod["initContainers"][0]["image"],
        "ghcr.io/meshgate/meshgate:0.1.0"
    );
    // Every ConfigMap the sidecar mounts is part of the example.
    for v in pod["volumes"].as_array().expect("volumes") {
        if let Some(cm) = v["configMap"]["name"].as_str() {
            find(&injected, "ConfigMap", cm);
        }
    }
    // The Service's named target port is now the sidecar's.
    let svc = find(&injected, "Service", "orders");
    let target = svc["spec"]["ports"][0]["targetPort"]
        .as_str()
        .expect("named port");
    assert!(pod["initContainers"][0]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .any(|p| p["name"] == target));
    assert!(!pod["containers"][0]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .any(|p| p["name"] == target));
    network_policy_admits_the_sidecars_ports_only(&injected, orders, pod);
}

/// The NetworkPolicy lets in exactly the sidecar's ports (served and admin),
/// by number, and nothing else of the product's pods; the admin port only
/// from the monitoring namespace (any pod could otherwise reach /metrics
/// and /policy).
fn network_policy_admits_the_sidecars_ports_only(injected: &[Value], orders: &Value, pod: &Value) {
    let policy = find(injected, "NetworkPolicy", "orders-ingress");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        orders["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress"])
    );
    let rules = policy["spec"]["ingress"].as_array().expect("ingress");
    assert_eq!(rules.len(), 2);
    let ports_of = |rule: &Value| -> Vec<(u64, String)> {
        rule["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| {
                (
                    p["port"].as_u64().expect("a numbered port"),
                    p["protocol"].as_str().unwrap_or("TCP").to_string(),
                )
            })
            .collect()
    };
    let admin_port = pod["initContainers"][0]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == "meshgate-admin")
        .and_then(|p| p["containerPort"].as_u64())
        .expect("the admin port");
    for rule in rules {
        let admin = ports_of(rule).iter().any(|(p, _)| *p == admin_port);
        if admin {
            assert_eq!(
                ports_of(rule).len(),
                1,
                "the admin port has a rule of its own"
            );
            assert_eq!(
                rule["from"],
                serde_json::json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]),
                "the admin port is open to the monitoring namespace only"
            );
        } else {
            assert!(rule.get("from").is_none(), "the served port is open to all");
        }
    }
    let mut allowed: Vec<(u64, &str)> = rules
        .iter()
        .flat_map(|r| r["ports"].as_array().expect("ports"))
        .map(|p| {
            (
                p["port"].as_u64().expect("a numbered port"),
                p["protocol"].as_str().unwrap_or("TCP"),
            )
        })
        .collect();
    let mut sidecar: Vec<(u64, &str)> = pod["initContainers"][0]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["containerPort"].as_u64().expect("port"),
                p["protocol"].as_str().unwrap_or("TCP"),
            )
        })
        .collect();
    allowed.sort_unstable();
    sidecar.sort_unstable();
    assert_eq!(allowed, sidecar);
}

/// deploy/monitoring holds Prometheus Operator kinds, which
/// kubernetes-validate has no schema for; so each is checked here against
/// what it must point at: exactly the two PodMonitors and the
/// PrometheusRule, every field one the operator's CRDs define, each
/// PodMonitor selecting pods that exist (an injected pod, the injector's
/// Deployment in deploy/base) by a port those pods name, and the rules
/// passing `promtool check rules` and equal to the generated file.
#[test]
fn monitoring_resources_select_real_pods_and_ports_and_carry_checked_rules() {
    let (Some(text), Some(base)) = (kustomize("deploy/monitoring"), kustomize("deploy/base"))
    else {
        return;
    };
    let all = docs(&text);
    validate("monitoring", &text, 0);
    let mut kinds: Vec<(String, String)> = all
        .iter()
        .map(|d| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (s(&d["kind"]), s(&d["metadata"]["name"]))
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("PodMonitor".into(), "meshgate-injector".into()),
            ("PodMonitor".into(), "meshgate-sidecars".into()),
            ("PrometheusRule".into(), "meshgate-slo".into()),
        ]
    );
    for d in &all {
        assert_eq!(d["apiVersion"], "monitoring.coreos.com/v1", "{d}");
        assert_eq!(d["metadata"]["namespace"], "meshgate-system", "{d}");
    }
    for name in ["meshgate-sidecars", "meshgate-injector"] {
        pod_monitor_fields_are_the_crds(find(&all, "PodMonitor", name));
    }

    // The sidecars: the label the injector sets, the admin port it names.
    let monitor = find(&all, "PodMonitor", "meshgate-sidecars");
    assert_eq!(
        monitor["spec"]["podMetricsEndpoints"][0]["port"],
        meshgate::ADMIN_PORT_NAME
    );
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"][meshgate::SIDECAR_LABEL],
        meshgate::SIDECAR_LABEL_VALUE
    );
    assert_eq!(monitor["spec"]["namespaceSelector"]["any"], true);

    // The injector: its selector matches the Deployment's pod labels, and
    // the port it scrapes is one the injector container names.
    let monitor = find(&all, "PodMonitor", "meshgate-injector");
    let base = docs(&base);
    let deployment = find(&base, "Deployment", "meshgate-injector");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(&pod_labels[k], v, "the injector's pods lack {k}={v}");
    }
    let port = &monitor["spec"]["podMetricsEndpoints"][0]["port"];
    let named: Vec<&Value> = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .map(|p| &p["name"])
        .collect();
    assert!(named.contains(&port), "no container port {port}: {named:?}");

    // The rules: promtool accepts them as Prometheus would load them.
    let rule = find(&all, "PrometheusRule", "meshgate-slo");
    if require_tool("promtool") {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("rules.yml");
        let groups = serde_json::json!({ "groups": rule["spec"]["groups"] });
        std::fs::write(&file, serde_yaml_ng::to_string(&groups).expect("yaml")).expect("write");
        let out = output_within(Command::new("promtool").args(["check", "rules"]).arg(&file));
        assert!(
            out.status.success(),
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    prometheus_rule_holds_the_generated_groups();
}

/// Every field of a PodMonitor is one the Prometheus Operator's CRD
/// (monitoring.coreos.com/v1) defines, with the type it has there: a
/// misspelt field would be dropped by the API server without a word.
fn pod_monitor_fields_are_the_crds(monitor: &Value) {
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .unwrap_or_else(|| panic!("an object: {v}"))
            .keys()
            .cloned()
            .collect()
    };
    let within = |v: &Value, allowed: &[&str]| {
        for k in keys(v) {
            assert!(allowed.contains(&k.as_str()), "unknown field {k} in {v}");
        }
    };
    within(monitor, &["apiVersion", "kind", "metadata", "spec"]);
    let spec = &monitor["spec"];
    within(
        spec,
        &[
            "jobLabel",
            "namespaceSelector",
            "podMetricsEndpoints",
            "podTargetLabels",
            "sampleLimit",
            "selector",
        ],
    );
    within(&spec["selector"], &["matchLabels", "matchExpressions"]);
    if !spec["namespaceSelector"].is_null() {
        within(&spec["namespaceSelector"], &["any", "matchNames"]);
    }
    let endpoints = spec["podMetricsEndpoints"].as_array().expect("endpoints");
    assert!(!endpoints.is_empty());
    for e in endpoints {
        within(
            e,
            &[
                "interval",
                "metricRelabelings",
                "path",
                "port",
                "relabelings",
                "scheme",
                "scrapeTimeout",
            ],
        );
        assert!(e["port"].is_string(), "a named port: {e}");
        assert!(
            e["path"].as_str().is_some_and(|p| p.starts_with('/')),
            "{e}"
        );
        let interval = e["interval"].as_str().expect("interval");
        assert!(humantime::parse_duration(interval).is_ok(), "{interval}");
        for r in e["relabelings"].as_array().into_iter().flatten() {
            within(
                r,
                &[
                    "action",
                    "modulus",
                    "regex",
                    "replacement",
                    "separator",
                    "sourceLabels",
                    "targetLabel",
                ],
            );
        }
    }
}

fn prometheus_rule_holds_the_generated_groups() {
    let rules_path = root().join("deploy/prometheus/meshgate-slo.yml");
    let rules: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&rules_path).expect("rules"))
            .expect("rules yaml");
    let cr_path = root().join("deploy/monitoring/prometheusrule.yaml");
    let cr_text = std::fs::read_to_string(&cr_path).expect("PrometheusRule");
    let cr: Value = serde_yaml_ng::from_str(&cr_text).expect("PrometheusRule yaml");
    if cr["spec"]["groups"] != rules["groups"] {
        let header: String = cr_text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        let mut fresh = cr.clone();
        fresh["spec"]["groups"] = rules["groups"].clone();
        let body = serde_yaml_ng::to_string(&fresh).expect("yaml");
        regenerate_if_asked(&cr_path, &(header + &body));
    }
    assert_eq!(
        cr["spec"]["groups"], rules["groups"],
        "deploy/monitoring/prometheusrule.yaml is stale: MESHGATE_REGENERATE=1 cargo test --test deploy"
    );
}

/// The docker build context is an allowlist, and every file the Dockerfile
/// copies from the context is on it (no key material, no target/).
#[test]
fn dockerignore_lets_in_exactly_what_the_dockerfile_copies() {
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).expect(".dockerignore");
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        rules.first(),
        Some(&"*"),
        "an allowlist: everything out first"
    );
    let allowed: Vec<&str> = rules
        .iter()
        .filter_map(|r| r.strip_prefix('!'))
        .map(|r| r.trim_end_matches('/'))
        .collect();
    for denied in ["**/*.pem", "**/*.key"] {
        assert!(rules.contains(&denied), "{denied}");
    }
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let mut sources = Vec::new();
    for line in dockerfile.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"COPY") || words.iter().any(|w| w.starts_with("--from")) {
            continue;
        }
        // COPY SRC... DEST
        sources.extend(words[1..words.len() - 1].iter().copied());
    }
    assert!(sources.len() >= 5, "{sources:?}");
    for src in sources {
        let src = src.trim_end_matches('/');
        assert!(
            allowed
                .iter()
                .any(|a| src == *a || src.starts_with(&format!("{a}/"))),
            "the Dockerfile copies {src}, which .dockerignore keeps out"
        );
        assert!(root().join(src).exists(), "{src}");
    }
    for kept_out in ["target", "certs", ".git", "tests", "deploy"] {
        assert!(!allowed.contains(&kept_out), "{kept_out}");
    }
}

/// The Dockerfile's first build step compiles the dependencies alone, with
/// stubs for the sources; Cargo refuses a manifest any of whose targets has
/// no source, so the stubs must cover every target Cargo.toml declares (a
/// bench added without its stub broke `docker build`). The step's own
/// commands, but the build, are run beside a copy of the manifest, and
/// Cargo then loads it (asked for a binary that does not exist, so that it
/// stops right after reading the manifest, before compiling anything).
#[test]
fn dockerfile_dependency_step_stubs_every_target_of_the_manifest() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let mut lines = dockerfile
        .lines()
        .skip_while(|l| !l.starts_with("RUN mkdir proxy benches"));
    let mut step = String::new();
    for line in lines.by_ref() {
        step.push_str(line.trim_end_matches('\\'));
        if !line.ends_with('\\') {
            break;
        }
    }
    let step = step
        .strip_prefix("RUN ")
        .expect("the Dockerfile's dependency step");
    let stubs: Vec<&str> = step
        .split("&&")
        .map(str::trim)
        .filter(|c| !c.starts_with("cargo ") && !c.starts_with("rm "))
        .collect();
    assert!(
        stubs.len() >= 3 && step.contains("cargo build"),
        "the dependency step: {step}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["Cargo.toml", "Cargo.lock"] {
        std::fs::copy(root().join(f), dir.path().join(f)).expect(f);
    }
    let out = output_within(
        Command::new("sh")
            .arg("-c")
            .arg(stubs.join(" && "))
            .current_dir(dir.path()),
    );
    assert!(
        out.status.success(),
        "{stubs:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = output_within(
        Command::new(env!("CARGO"))
            .args(["check", "--locked", "--offline", "--bin", "no-such-binary"])
            .env("CARGO_TARGET_DIR", dir.path().join("target"))
            .current_dir(dir.path()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no bin target named `no-such-binary`"),
        "Cargo does not accept the Dockerfile's stubs for Cargo.toml:\n{stderr}"
    );
}

/// The image is built with the committed profile (`benches/image.profdata`,
/// made by `IMAGE=1 bash benches/pgo.sh`, with the build's own function
/// order, `benches/image-link-order.txt`): the Dockerfile copies it
/// and names it in `RUSTFLAGS`; the toolchain that made it is the one the
/// Dockerfile builds with, for the target it builds (a profile's format is
/// its LLVM's, and its functions are the target's symbols); and rustc reads
/// it in an optimised build without a complaint, where it names a file that
/// is not a profile it can read (shown with a damaged copy).
#[test]
fn the_image_is_built_with_the_committed_profile_of_its_toolchain_and_target() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let copied = line_after("Dockerfile", "COPY benches/image.profdata ");
    let flags = line_after("Dockerfile", "ENV RUSTFLAGS=");
    assert!(
        flags.contains(&format!("-Cprofile-use={copied}")),
        "{flags} does not use {copied}"
    );
    let made_by = line_after("benches/image.toolchain", "rustc ");
    let target = line_after("benches/image.toolchain", "target ");
    let from = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("rust:")))
        .and_then(|image| image.split('-').next())
        .expect("FROM rust:VERSION-...");
    assert_eq!(
        made_by.split(' ').next(),
        Some(from),
        "the profile was made by rustc {made_by}, the image builds with rust:{from} \
         (cargo hashes the compiler's version into every symbol the profile names)"
    );
    let order = line_after("Dockerfile", "ENV MESHGATE_LINK_ORDER_FILE=/src/");
    let order = std::fs::read_to_string(root().join(order)).expect("the image's order file");
    assert!(
        order.starts_with(&format!("# made with rustc {made_by}\n")),
        "the image's order file was made by another rustc than its profile ({made_by})"
    );
    let built: Vec<&str> = dockerfile
        .split("--target ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert!(
        built.len() >= 2 && built.iter().all(|t| *t == target),
        "the profile is of {target}; the Dockerfile builds for {built:?}"
    );

    // Whether the profile is one LLVM reads: only the rustc that made it can
    // tell (another LLVM may not know its format version).
    let here = output_within(Command::new("rustc").arg("-V"));
    if String::from_utf8_lossy(&here.stdout).trim() != format!("rustc {made_by}") {
        eprintln!("not read back: this rustc is not {made_by}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("lib.rs");
    std::fs::write(
        &source,
        "pub fn next(x: u32) -> u32 { x.wrapping_add(1) }\n",
    )
    .expect("lib.rs");
    // rustc reports a profile LLVM cannot read as a warning naming the file
    // (and builds as without it); a failed build is a complaint too. (The
    // small crate's function is not in the profile: this shows the file is
    // readable, not that it fits the code.)
    let complaint = |profile: &std::path::Path| {
        let out = output_within(
            Command::new("rustc")
                .args(["--crate-type", "lib", "--edition", "2021", "-Copt-level=2"])
                .arg(format!("-Cprofile-use={}", profile.display()))
                .arg("--out-dir")
                .arg(dir.path())
                .arg(&source),
        );
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let name = profile.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        (!out.status.success() || stderr.contains(name)).then_some(stderr)
    };
    let profile = root().join("benches/image.profdata");
    assert_eq!(
        complaint(&profile),
        None,
        "rustc cannot read benches/image.profdata"
    );
    let bytes = std::fs::read(&profile).expect("benches/image.profdata");
    let mut damaged = bytes[..64.min(bytes.len())].to_vec();
    damaged[..8].copy_from_slice(b"notaprof");
    let damaged_path = dir.path().join("damaged.profdata");
    std::fs::write(&damaged_path, damaged).expect("damaged copy");
    assert!(
        complaint(&damaged_path).is_some(),
        "rustc took a damaged profile without a word: the check above proves nothing"
    );
}

/// `benches/image-build.sh` (the image's build without Docker, what the
/// benchmarks measure) runs cargo with the Dockerfile's target, `RUSTFLAGS`
/// and order file, the files the image copies in read from `benches/`
/// (shown with a `cargo` that records what it was given); it refuses a rustc
/// other than the profile's, settings that would change the build unseen,
/// and flags naming a path of the image it cannot map, rather than building
/// without the profile.
#[test]
fn the_image_build_script_builds_as_the_dockerfile_does() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let copied = line_after("Dockerfile", "COPY benches/image.profdata ");
    let flags = line_after("Dockerfile", "ENV RUSTFLAGS=")
        .trim_matches('"')
        .replace(
            &copied,
            &root().join("benches/image.profdata").display().to_string(),
        );
    let order = line_after("Dockerfile", "ENV MESHGATE_LINK_ORDER_FILE=/src/");
    let target = dockerfile
        .split("--target ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the Dockerfile builds with --target");
    let made_by = format!("rustc {}", line_after("benches/image.toolchain", "rustc "));
    let script = root().join("benches/image-build.sh");
    let bin = tempfile::tempdir().expect("tempdir");
    let record = bin.path().join("cargo.txt");
    let stub = |name: &str, body: &str| {
        let path = bin.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("stub");
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&path, mode).expect("chmod");
    };
    stub(
        "cargo",
        &format!(
            "printf '%s\\n' \"$*\" \"$RUSTFLAGS\" \"$MESHGATE_LINK_ORDER_FILE\" \"$CARGO_TARGET_DIR\" > {}",
            record.display()
        ),
    );
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |rustc: &str, extra: Option<(&str, &str)>| {
        stub("rustc", &format!("echo '{rustc}'"));
        let mut cmd = Command::new("bash");
        cmd.arg(&script).env("PATH", &path);
        for var in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_BUILD_RUSTFLAGS",
            "MESHGATE_LINK_ORDER",
            "MESHGATE_PACK_RELOCS",
            "RUSTC",
            "PRINT",
        ] {
            cmd.env_remove(var);
        }
        if let Some((name, value)) = extra {
            cmd.env(name, value);
        }
        output_within(&mut cmd)
    };
    let out = run(&made_by, None);
    assert!(out.status.success(), "{out:?}");
    let built = root().join(format!("target/image/{target}/release/meshgate"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        Some(built.display().to_string().as_str())
    );
    assert_eq!(
        std::fs::read_to_string(&record).expect("what cargo was given"),
        format!(
            "build --release --locked --target {target} --bin meshgate\n{flags}\n{}\n{}\n",
            root().join(&order).display(),
            root().join("target/image").display()
        )
    );
    for (rustc, extra, says) in [
        (
            "rustc 1.0.0 (000000000 2015-05-15)",
            None,
            "the image's profile was made by",
        ),
        (
            &made_by[..],
            Some(("MESHGATE_LINK_ORDER", "0")),
            "MESHGATE_LINK_ORDER is set",
        ),
        (
            &made_by[..],
            Some(("RUSTFLAGS", "-Copt-level=1")),
            "RUSTFLAGS is set",
        ),
    ] {
        let _ = std::fs::remove_file(&record);
        let out = run(rustc, extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "{out:?}");
        assert!(!record.exists(), "cargo ran despite: {stderr}");
    }
}

/// `benches/image-build.sh` refuses a Dockerfile whose flags name a file of
/// the image it cannot map to the repository (it maps only what the image
/// copies from `benches/`), rather than building without the profile.
#[test]
fn the_image_build_script_refuses_flags_it_cannot_map() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let copied = line_after("Dockerfile", "COPY benches/image.profdata ");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("benches")).expect("benches/");
    std::fs::copy(
        root().join("benches/image-build.sh"),
        dir.path().join("benches/image-build.sh"),
    )
    .expect("script");
    std::fs::write(
        dir.path().join("Dockerfile"),
        dockerfile.replace(
            &format!("-Cprofile-use={copied}"),
            "-Cprofile-use=/elsewhere/image.profdata",
        ),
    )
    .expect("Dockerfile");
    let out = output_within(
        Command::new("bash")
            .arg(dir.path().join("benches/image-build.sh"))
            .env("PRINT", "1")
            .env_remove("RUSTFLAGS"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("RUSTFLAGS names /elsewhere/image.profdata"),
        "{out:?}"
    );
}

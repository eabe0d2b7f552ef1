//! `meshgate inject -f`: real kubectl output in, injected manifests out,
//! validated against the Kubernetes 1.33 schemas; and the injected sidecar,
//! started exactly as its container spec says, serving a request.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use serde::Deserialize;
use serde_json::{json, Value};

fn inject_stdin(input: &str, extra: &[&str]) -> Output {
    output_fed(
        Command::new(bin()).args(["inject", "-f", "-"]).args(extra),
        Some(input.as_bytes()),
        EXIT_DEADLINE,
    )
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

fn to_yaml_stream(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| serde_yaml_ng::to_string(d).expect("yaml"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The workloads of the fixtures, plus a StatefulSet and a DaemonSet made
/// from the Deployment (kubectl cannot create those).
fn workloads() -> Vec<Value> {
    let deployment = k8s_fixture("deployment.json");
    let mut sts = deployment.clone();
    sts["kind"] = json!("StatefulSet");
    sts["metadata"]["name"] = json!("orders-store");
    sts["spec"]["serviceName"] = json!("orders-store");
    sts["spec"].as_object_mut().map(|s| s.remove("strategy"));
    sts.as_object_mut().map(|s| s.remove("status"));
    let mut ds = deployment.clone();
    ds["kind"] = json!("DaemonSet");
    ds["metadata"]["name"] = json!("orders-edge");
    ds["spec"].as_object_mut().map(|s| {
        s.remove("strategy");
        s.remove("replicas")
    });
    ds.as_object_mut().map(|s| s.remove("status"));
    // kubectl declares no port for a Job: the port the sidecar takes is
    // declared (an undeclared meshgate.io/port is not injected).
    let port = json!([{"containerPort": 8080, "protocol": "TCP"}]);
    let mut job = k8s_fixture("job.json");
    job["spec"]["template"]["metadata"]["annotations"] = json!({"meshgate.io/port": "8080"});
    job["spec"]["template"]["spec"]["containers"][0]["ports"] = port.clone();
    let mut cron = k8s_fixture("cronjob.json");
    let cron_pod = &mut cron["spec"]["jobTemplate"]["spec"]["template"];
    cron_pod["metadata"]["annotations"] =
        json!({"meshgate.io/port": "8080", "meshgate.io/sidecar-mode": "container"});
    cron_pod["spec"]["containers"][0]["ports"] = port;
    vec![
        deployment,
        k8s_fixture("service.json"),
        sts,
        ds,
        job,
        cron,
        k8s_fixture("pod-optout.json"),
        k8s_fixture("pod-hostnetwork.json"),
    ]
}

fn pod_spec(doc: &Value) -> &Value {
    match doc["kind"].as_str() {
        Some("Pod") => doc,
        Some("CronJob") => &doc["spec"]["jobTemplate"]["spec"]["template"],
        _ => &doc["spec"]["template"],
    }
}

#[test]
fn injects_every_workload_kind_of_a_multi_document_stream() {
    let input = workloads();
    let out = inject_stdin(&to_yaml_stream(&input), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let docs = yaml_docs(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(docs.len(), input.len());

    for (i, name) in [
        (0, "orders"),
        (2, "orders-store"),
        (3, "orders-edge"),
        (4, "orders-export"),
    ] {
        let pod = pod_spec(&docs[i]);
        let sidecar = &pod["spec"]["initContainers"][0];
        assert_eq!(sidecar["name"], "meshgate", "{name}");
        assert_eq!(sidecar["restartPolicy"], "Always", "{name}");
        assert_eq!(sidecar["ports"][0]["containerPort"], 8080, "{name}");
        assert_eq!(
            pod["metadata"]["labels"]["meshgate.io/sidecar"], "injected",
            "{name}"
        );
        assert!(pod["metadata"]["annotations"]["meshgate.io/injected"].is_string());
        let kind = docs[i]["kind"].as_str().unwrap_or_default().to_lowercase();
        assert!(
            stderr.contains(&format!("{kind}/{name} injected: native sidecar")),
            "{stderr}"
        );
    }
    // The CronJob asked for a regular container.
    let cron_pod = pod_spec(&docs[5]);
    assert_eq!(cron_pod["spec"]["containers"][1]["name"], "meshgate");
    assert!(cron_pod["spec"].get("initContainers").is_none());
    assert!(
        stderr.contains("cronjob/orders-nightly warning: meshgate: a regular sidecar container keeps this run-to-completion pod running"),
        "{stderr}"
    );
    // Untouched: the Service, the opted-out pod, the hostNetwork pod.
    assert_eq!(docs[1], input[1]);
    assert_eq!(docs[6], input[6]);
    assert_eq!(docs[7], input[7]);
    assert!(
        stderr.contains("pod/debug-6b8d- skipped: disabled"),
        "{stderr}"
    );
    assert!(
        stderr.contains("pod/node-agent-5f7c- skipped: host_network"),
        "{stderr}"
    );

    // Idempotent: injecting the output again changes nothing.
    let again = inject_stdin(&String::from_utf8_lossy(&out.stdout), &[]);
    assert!(again.status.success());
    assert_eq!(yaml_docs(&String::from_utf8_lossy(&again.stdout)), docs);
    assert!(String::from_utf8_lossy(&again.stderr)
        .contains("deployment/orders skipped: already_injected"));

    // Every document, injected or not, is valid Kubernetes 1.33.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("injected.yaml");
    // Pods named as the API server names them (kubernetes-validate needs a name).
    let named: Vec<Value> = docs
        .iter()
        .cloned()
        .map(|mut d| {
            if d["metadata"]["name"].is_null() {
                let generated = format!(
                    "{}x2x9z",
                    d["metadata"]["generateName"].as_str().unwrap_or("pod-")
                );
                d["metadata"]["name"] = json!(generated);
            }
            d
        })
        .collect();
    std::fs::write(&file, to_yaml_stream(&named)).expect("write");
    if let Some(passed) = kubernetes_validate(&file, &[]) {
        assert_eq!(passed, docs.len(), "{passed} of {} validated", docs.len());
    }
}

#[test]
fn reads_a_file_and_refuses_a_pod_it_cannot_inject_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("deploy.json");
    std::fs::write(&file, k8s_fixture("deployment.json").to_string()).expect("write");
    let out = output_within(Command::new(bin()).args(["inject", "-f"]).arg(&file));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = yaml_docs(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        pod_spec(&docs[0])["spec"]["initContainers"][0]["name"],
        "meshgate"
    );

    // A Job declares no port: there is nothing to serve. Selected by its
    // namespace only (as `inject -f` takes every pod to be), it is left
    // alone with the reason; when the pod asked for the sidecar itself, it
    // is refused and nothing is written.
    let job = k8s_fixture("job.json");
    let out = inject_stdin(&job.to_string(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("job/orders-export skipped: no_port"),
        "{stderr}"
    );
    assert!(
        stderr.contains("job/orders-export warning: meshgate: the sidecar was not injected"),
        "{stderr}"
    );
    assert_eq!(
        yaml_docs(&String::from_utf8_lossy(&out.stdout)),
        std::slice::from_ref(&job)
    );
    let mut asked = job;
    asked["spec"]["template"]["metadata"]["annotations"] = json!({"meshgate.io/inject": "enabled"});
    let out = inject_stdin(&asked.to_string(), &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Job orders-export: the pod has no container port to serve"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing half-written");

    // Not YAML at all.
    let out = inject_stdin("kind: [unclosed", &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("meshgate: -: document 1:"));
}

#[test]
fn the_injector_configuration_sets_the_sidecar() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("injector.yaml");
    std::fs::write(
        &cfg,
        "sidecar:\n  image: registry.example/meshgate:9\n  admin_port: 9911\n  mesh_configmap: mesh-v2\n",
    )
    .expect("write");
    let out = inject_stdin(
        &k8s_fixture("deployment.json").to_string(),
        &["--config", cfg.to_str().expect("utf-8 path")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = yaml_docs(&String::from_utf8_lossy(&out.stdout));
    let pod = pod_spec(&docs[0]);
    assert_eq!(
        pod["spec"]["initContainers"][0]["image"],
        "registry.example/meshgate:9"
    );
    assert_eq!(
        pod["spec"]["initContainers"][0]["ports"][1]["containerPort"],
        9911
    );
    assert_eq!(pod["spec"]["volumes"][1]["configMap"]["name"], "mesh-v2");

    std::fs::write(&cfg, "sidecar:\n  imgae: x\n").expect("write");
    let out = inject_stdin("{}", &["--config", cfg.to_str().expect("utf-8 path")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sidecar.imgae: unknown field"), "{stderr}");
}

/// The Deployment fixture with its policy ConfigMap named, and its domain.
fn deployment_with_policies() -> Value {
    let mut d = k8s_fixture("deployment.json");
    d["spec"]["template"]["metadata"]["annotations"] = json!({
        "meshgate.io/policy-configmap": "sales-policies",
        "meshgate.io/policy-domain": "sales",
    });
    d
}

#[test]
fn says_what_it_did_and_warns_when_no_policy_configmap_is_named() {
    let out = inject_stdin(&deployment_with_policies().to_string(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The app is told its new address; it is not moved.
    assert!(
        stderr.contains(
            "deployment/orders injected: native sidecar serves port 8080 with mTLS and forwards to 127.0.0.1:18080; container `sales-orders` is told that address through MESHGATE_UPSTREAM_ADDR and must listen there"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(!stderr.contains("moved to"), "{stderr}");

    // A policy ConfigMap of no domain: its policies could speak about any
    // domain's products; injected, with a warning.
    let mut mesh_wide = k8s_fixture("deployment.json");
    mesh_wide["spec"]["template"]["metadata"]["annotations"] =
        json!({"meshgate.io/policy-configmap": "sales-policies"});
    let out = inject_stdin(&mesh_wide.to_string(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("deployment/orders warning: meshgate: the policy ConfigMap has no domain (meshgate.io/policy-domain)"),
        "{stderr}"
    );

    // No policy ConfigMap: injected, with a warning naming the workload.
    let out = inject_stdin(&k8s_fixture("deployment.json").to_string(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("deployment/orders warning: meshgate: no policy ConfigMap is named (meshgate.io/policy-configmap)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("every request would be answered 404"),
        "{stderr}"
    );
    let docs = yaml_docs(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        pod_spec(&docs[0])["spec"]["initContainers"][0]["name"],
        "meshgate"
    );
}

#[test]
fn strict_writes_nothing_and_fails_when_a_workload_is_skipped_or_warned() {
    // Everything injected, nothing to warn about: written, exit 0; injecting
    // the output again (already injected) passes too.
    let out = inject_stdin(&deployment_with_policies().to_string(), &["--strict"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let injected = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(yaml_docs(&injected).len(), 1);
    let again = inject_stdin(&injected, &["--strict"]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        yaml_docs(&String::from_utf8_lossy(&again.stdout)),
        yaml_docs(&injected)
    );

    // A warned workload (no policy ConfigMap), a skipped one (no port) and
    // an opted-out one, beside a good one: exit 2, standard output empty
    // (so `| kubectl apply -f -` applies nothing), each one named.
    let mut job = k8s_fixture("job.json");
    job["spec"]["template"]["metadata"]["annotations"] =
        json!({"meshgate.io/policy-configmap": "sales-policies"});
    for (input, flagged) in [
        (
            vec![k8s_fixture("deployment.json")],
            vec!["deployment/orders"],
        ),
        (
            vec![deployment_with_policies(), job],
            vec!["job/orders-export"],
        ),
        (
            vec![deployment_with_policies(), k8s_fixture("pod-optout.json")],
            vec!["pod/debug-6b8d-"],
        ),
    ] {
        let out = inject_stdin(&to_yaml_stream(&input), &["--strict"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(out.stdout.is_empty(), "nothing written: {stderr}");
        let summary = format!(
            "error: --strict: {} workload(s) skipped or warned about ({}); nothing written",
            flagged.len(),
            flagged.join(", ")
        );
        assert!(stderr.contains(&summary), "{stderr}");
        // Without --strict the same stream is written, and exits 0.
        let out = inject_stdin(&to_yaml_stream(&input), &[]);
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(
            yaml_docs(&String::from_utf8_lossy(&out.stdout)).len(),
            input.len()
        );
    }

    // --help documents the flag and its exit code.
    let help = output_within(std::process::Command::new(bin()).args(["inject", "--help"]));
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--strict"), "{help}");
    assert!(help.contains("exit 2"), "{help}");
}

/// Writes a volume's files the way the kubelet does: a timestamped
/// directory, `..data` pointing at it, and one symlink per key.
fn kubelet_volume(dir: &Path, files: &BTreeMap<String, String>) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let stamp = "..2026_11_21_00_00_00.000000001";
    std::fs::create_dir_all(dir.join(stamp)).expect("mkdir");
    for (k, v) in files {
        std::fs::write(dir.join(stamp).join(k), v).expect("write");
        std::os::unix::fs::symlink(Path::new("..data").join(k), dir.join(k)).expect("symlink");
    }
    std::os::unix::fs::symlink(stamp, dir.join("..data")).expect("symlink");
}

/// Updates a volume as the kubelet does when its Secret or ConfigMap
/// changes: the new files in a new timestamped directory, a new link
/// renamed over `..data` (one atomic swap), the old directory removed.
fn kubelet_update(dir: &Path, files: &BTreeMap<String, String>) {
    let old = std::fs::read_link(dir.join("..data")).expect("..data");
    let stamp = "..2026_11_21_01_00_00.000000002";
    std::fs::create_dir_all(dir.join(stamp)).expect("mkdir");
    for (k, v) in files {
        std::fs::write(dir.join(stamp).join(k), v).expect("write");
    }
    std::os::unix::fs::symlink(stamp, dir.join("..data_tmp")).expect("symlink");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap ..data");
    std::fs::remove_dir_all(dir.join(old)).expect("remove the old files");
}

/// The sidecar of an injected pod, started from its container spec, with its
/// mounts laid out under a directory that stands for the container's root.
struct Started {
    meshgate: Meshgate,
    /// The injected document.
    injected: Value,
    /// Where each of the sidecar's volumes is mounted, under the root.
    mounts: BTreeMap<String, PathBuf>,
    _root: tempfile::TempDir,
}

fn field_ref(path: &str) -> &'static str {
    match path {
        "metadata.name" => "orders-7d9c5b6f4-x2x9z",
        "metadata.namespace" => "sales",
        "spec.nodeName" => "node-a",
        other => panic!("no value for fieldRef {other}"),
    }
}

/// The ConfigMaps as kustomize makes them for the sales namespace.
fn sales_configmaps() -> BTreeMap<String, BTreeMap<String, String>> {
    let kustomized = output_within(
        Command::new("kubectl")
            .args(["kustomize"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/sales")),
    );
    assert!(kustomized.status.success());
    yaml_docs(&String::from_utf8_lossy(&kustomized.stdout))
        .into_iter()
        .filter(|d| d["kind"] == "ConfigMap")
        .map(|d| {
            let name = d["metadata"]["name"].as_str().expect("name").to_string();
            let data = serde_json::from_value(d["data"].clone()).expect("data");
            (name, data)
        })
        .collect()
}

/// Injects `deployment` and starts its sidecar: the pod's volumes laid out
/// under a temporary root where they are mounted (the CSI volume holding
/// `pki`'s server certificate, ConfigMaps as kustomize makes them for the
/// sales namespace, Secrets from `secrets`), then the container's command
/// run in its working directory with its environment.
fn start_injected(
    pki: &Pki,
    deployment: &Value,
    secrets: &BTreeMap<&str, BTreeMap<String, String>>,
) -> Started {
    let out = inject_stdin(&deployment.to_string(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let injected = yaml_docs(&String::from_utf8_lossy(&out.stdout)).remove(0);
    let pod = &injected["spec"]["template"]["spec"];
    let sidecar = &pod["initContainers"][0];
    let configmaps = sales_configmaps();
    let root = tempfile::tempdir().expect("root");
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| Some((v["name"].as_str()?, v)))
        .collect();
    let mut mounts = BTreeMap::new();
    for mount in sidecar["volumeMounts"].as_array().expect("mounts") {
        let name = mount["name"].as_str().expect("mount name");
        assert_eq!(mount["readOnly"], true, "{mount}");
        let mount_path = mount["mountPath"].as_str().expect("path");
        let at = root.path().join(mount_path.trim_start_matches('/'));
        let volume = volumes[name];
        let files = if volume["csi"]["driver"] == "spiffe.csi.cert-manager.io" {
            // csi-driver-spiffe's files: the SVID, its key, the trust bundle.
            let read = |f: &str| std::fs::read_to_string(pki.path(f)).expect("pki file");
            BTreeMap::from([
                ("tls.crt".to_string(), read("server.pem")),
                ("tls.key".to_string(), read("server-key.pem")),
                ("ca.crt".to_string(), read("ca.pem")),
            ])
        } else if let Some(secret) = volume["secret"]["secretName"].as_str() {
            let data = secrets
                .get(secret)
                .unwrap_or_else(|| panic!("no Secret {secret} given"));
            // Only the keys the volume projects, when it lists them.
            match volume["secret"]["items"].as_array() {
                Some(items) => items
                    .iter()
                    .map(|i| {
                        let key = i["key"].as_str().expect("key");
                        let path = i["path"].as_str().expect("path").to_string();
                        (path, data[key].clone())
                    })
                    .collect(),
                None => data.clone(),
            }
        } else {
            let cm = volume["configMap"]["name"]
                .as_str()
                .expect("configMap volume");
            configmaps
                .get(cm)
                .unwrap_or_else(|| panic!("kustomize makes no ConfigMap {cm}"))
                .clone()
        };
        kubelet_volume(&at, &files);
        mounts.insert(name.to_string(), at);
    }
    let meshgate = spawn_from_spec(root.path(), sidecar);
    Started {
        meshgate,
        injected,
        mounts,
        _root: root,
    }
}

/// Runs the container `sidecar` as its spec says, under `root`.
fn spawn_from_spec(root: &Path, sidecar: &Value) -> Meshgate {
    let command: Vec<String> = sidecar["command"]
        .as_array()
        .expect("command")
        .iter()
        .chain(sidecar["args"].as_array().into_iter().flatten())
        .map(|v| v.as_str().expect("string").to_string())
        .collect();
    assert_eq!(command[0], "meshgate", "the image's binary, found on PATH");
    let workdir: PathBuf = root.join(
        sidecar["workingDir"]
            .as_str()
            .expect("workingDir")
            .trim_start_matches('/'),
    );
    let mut cmd = Command::new(bin());
    cmd.args(&command[1..])
        .current_dir(&workdir)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for e in sidecar["env"].as_array().expect("env") {
        let name = e["name"].as_str().expect("env name");
        let value = match e["value"].as_str() {
            Some(v) => v,
            None => field_ref(
                e["valueFrom"]["fieldRef"]["fieldPath"]
                    .as_str()
                    .expect("fieldRef"),
            ),
        };
        cmd.env(name, value);
    }
    Meshgate::spawn(cmd, PathBuf::new())
}

/// An admin endpoint's status code, as the kubelet's probe sees it.
fn probe(admin: u16, path: &str) -> String {
    plain_status(&format!("http://127.0.0.1:{admin}{path}"))
}

#[test]
fn the_injected_sidecar_starts_from_its_pod_spec_and_serves() {
    if !require_tool("kubectl") || !require_tool("curl") {
        return;
    }
    let pki = Pki::new();
    let upstream = Upstream::start();
    let port = unused_port();
    let admin = unused_port();

    // The sample product's Deployment, its port and the sidecar's ports
    // chosen free here.
    let mut deployment = k8s_fixture("deployment.json");
    let template = &mut deployment["spec"]["template"];
    template["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(port);
    template["metadata"]["annotations"] = json!({
        "meshgate.io/policy-configmap": "sales-policies",
        "meshgate.io/admin-port": admin.to_string(),
        "meshgate.io/upstream-port": upstream.addr.port().to_string(),
        "meshgate.io/log-level": "info,meshgate=debug",
    });
    let started = start_injected(&pki, &deployment, &BTreeMap::new());
    let pod = &started.injected["spec"]["template"]["spec"];
    let sidecar = &pod["initContainers"][0];
    // The app is told to listen where the sidecar forwards.
    let app_env: BTreeMap<&str, &str> = pod["containers"][0]["env"]
        .as_array()
        .expect("app env")
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    assert_eq!(app_env["MESHGATE_UPSTREAM_ADDR"], upstream.addr.to_string());
    let mg = &started.meshgate;
    assert_eq!(mg.data.port(), port);
    assert_eq!(mg.admin.port(), admin);

    // The kubelet's probes, as the spec writes them.
    for kind in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let get = &sidecar[kind]["httpGet"];
        assert_eq!(get["port"], "meshgate-admin");
        let path = get["path"].as_str().expect("path");
        assert_eq!(probe(admin, path), "200", "{kind}");
    }

    // A caller of the finance domain reads sales orders through the sidecar:
    // mTLS on the pod's port, the mesh baseline and the sales policies from
    // their ConfigMaps, the product on loopback.
    let url = format!("https://localhost:{port}/orders/SO-1001");
    let out = curl(&pki, Some("reporting"), &["-w", "\n%{http_code}", &url]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n200"), "{text}\n{}", mg.logs.dump());
    assert!(
        text.contains("\"upstream_path\":\"/orders/SO-1001\""),
        "{text}"
    );
    // Without a client certificate there is no way in.
    assert_eq!(status_of(&pki, None, &url), "000");
    // The policies in force are the ConfigMaps' (mesh baseline + sales).
    let policy = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            &format!("http://127.0.0.1:{admin}/policy"),
        ])
        .output()
        .expect("curl");
    let policy: Value = serde_json::from_slice(&policy.stdout).expect("policy json");
    assert_eq!(policy["mode"], "enforcing");
    assert!(policy["routes"].as_u64().unwrap_or(0) > 0, "{policy}");
}

const ANALYTICS: &str = "spiffe://mesh.local/ns/marketing/sa/analytics";

/// The customer e-mail of the orders `who` reads through `mg`.
fn email_seen(pki: &Pki, who: &str, url: &str) -> String {
    let (code, status, body) = common::fields::get(pki, who, &[], url);
    assert_eq!((code, status.as_str()), (0, "200"), "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v[0]["customer_email"]
        .as_str()
        .expect("a string")
        .to_string()
}

#[test]
fn the_injected_sidecar_reads_the_hash_key_from_its_secret_and_follows_its_rotation() {
    if !require_tool("kubectl") || !require_tool("curl") {
        return;
    }
    use common::fields::{pseudonym, KEY, RECORD};
    let pki = Pki::with_clients(&[("analytics", ANALYTICS)]);
    let up = common::json_upstream::FixedUpstream::start(vec![(
        "/orders",
        "application/json",
        format!("[{RECORD}]"),
    )]);
    let up_url = up.target_url();
    let up_port = up_url.rsplit(':').next().expect("a port");
    let (port, admin) = (unused_port(), unused_port());
    let mut deployment = deployment_with_policies();
    let template = &mut deployment["spec"]["template"];
    template["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(port);
    let annotations = template["metadata"]["annotations"]
        .as_object_mut()
        .expect("annotations");
    for (k, v) in [
        ("meshgate.io/admin-port", admin.to_string()),
        ("meshgate.io/upstream-port", up_port.to_string()),
        ("meshgate.io/hash-key-secret", "mesh-hash-key".to_string()),
    ] {
        annotations.insert(k.to_string(), json!(v));
    }
    // The Secret holds another key beside the hash key: only the hash key
    // is projected.
    let key_of = |key: &str| {
        BTreeMap::from([
            ("hash.key".to_string(), key.to_string()),
            ("unrelated".to_string(), "not for the sidecar".to_string()),
        ])
    };
    let secrets = BTreeMap::from([("mesh-hash-key", key_of(KEY))]);
    let started = start_injected(&pki, &deployment, &secrets);
    let key_dir = &started.mounts["meshgate-hash-key"];
    assert!(key_dir.join("hash.key").exists());
    assert!(!key_dir.join("unrelated").exists());
    validates(&started.injected);

    // Analytics sees the customer's e-mail as a pseudonym under the key.
    let mg = &started.meshgate;
    let url = format!("https://localhost:{port}/orders");
    let email = email_seen(&pki, "analytics", &url);
    assert_eq!(
        email,
        pseudonym(KEY, "ana@example.com"),
        "{}",
        mg.logs.dump()
    );

    // The Secret is rotated: the kubelet swaps the volume's `..data`; the
    // sidecar, whose configuration names the key by a relative path, sees
    // it and uses the new key from the next request on.
    let rotated = "the rotated mesh key, at least thirty-two bytes";
    kubelet_update(key_dir, &key_of(rotated));
    mg.wait_metric("meshgate_hash_key_reloads_total{result=\"ok\"}", 1.0);
    let email = email_seen(&pki, "analytics", &url);
    assert_eq!(email, pseudonym(rotated, "ana@example.com"));
    assert_eq!(
        mg.metric("meshgate_hash_key_reloads_total{result=\"error\"}"),
        0.0
    );
}

/// The injected document is valid Kubernetes (when kubernetes-validate is
/// installed).
fn validates(doc: &Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("injected.yaml");
    std::fs::write(&file, to_yaml_stream(std::slice::from_ref(doc))).expect("write");
    if let Some(passed) = kubernetes_validate(&file, &[]) {
        assert_eq!(passed, 1, "the injected document validates");
    }
}

#[test]
fn run_takes_its_configuration_from_meshgate_config() {
    let run = |config: Option<&str>| {
        let mut cmd = Command::new(bin());
        cmd.arg("run")
            .env_remove("MESHGATE_CONFIG")
            .env_remove("RUST_LOG");
        if let Some(c) = config {
            cmd.env("MESHGATE_CONFIG", c);
        }
        let out = output_within(&mut cmd);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let none = run(None);
    assert!(
        none.contains("give --config FILE or set MESHGATE_CONFIG to the YAML text"),
        "{none}"
    );
    let bad = run(Some(
        "listen: 0.0.0.0:8080\nupstream: http://127.0.0.1:18080\ntls:\n  kee: x\n",
    ));
    assert!(
        bad.starts_with("meshgate: MESHGATE_CONFIG:4:3: tls.kee: unknown field `kee`"),
        "{bad}"
    );
    // Relative paths are the working directory's (the message names the
    // absolute path looked for): here none of them exist.
    let missing = run(Some(
        "listen: 0.0.0.0:8080\nupstream: http://127.0.0.1:18080\ntls:\n  cert: var/run/secrets/spiffe.io/tls.crt\n  key: k\n  client_ca: c\n",
    ));
    let cwd = std::env::current_dir().expect("cwd");
    assert!(
        missing.contains(&format!(
            "MESHGATE_CONFIG: tls.cert: {}/var/run/secrets/spiffe.io/tls.crt:",
            cwd.display()
        )),
        "{missing}"
    );
}

//! `meshgate init domain` and `meshgate init product`: the skeleton, as
//! written, passes `validate` and `test`, a sidecar started from its local
//! configuration lets the domain's own service in and keeps another
//! domain's out, its kustomization makes the policy ConfigMap, and nothing
//! is ever overwritten. The path of docs/publish-your-first-data-product.md.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const OWN: &str = "spiffe://mesh.local/ns/logistics/sa/shipments";
const OTHER: &str = "spiffe://mesh.local/ns/sales/sa/reporting";

fn meshgate(dir: &Path, args: &[&str]) -> Output {
    output_within(Command::new(bin()).current_dir(dir).args(args))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// Runs and requires success; its stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = meshgate(dir, args);
    assert!(
        out.status.success(),
        "meshgate {args:?} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs and requires failure; its stderr.
fn refused(dir: &Path, args: &[&str]) -> String {
    let out = meshgate(dir, args);
    assert!(
        !out.status.success(),
        "meshgate {args:?} succeeded:\n{}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// A domain repository: the platform's baseline copied from policies/.
fn domain_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for f in ["schema.cedarschema", "entities.json", "mesh/baseline.cedar"] {
        let to = dir.path().join(f);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(policies.join(f), &to).expect("copy");
    }
    dir
}

/// `init domain logistics`, `init product logistics.shipments` and the dev
/// certificates of the local configuration, as the guide says.
fn scaffold(repo: &Path) -> PathBuf {
    let out = ok(repo, &["init", "domain", "logistics"]);
    assert!(
        out.contains("the platform team owns that file") && out.contains("\"id\": \"logistics\""),
        "{out}"
    );
    ok(repo, &["init", "product", "logistics.shipments"]);
    let local = repo.join("domains/logistics/local");
    ok(
        repo,
        &[
            "certs",
            "dev",
            "--out",
            "domains/logistics/local/certs",
            "--client",
            &format!("own={OWN}"),
            "--client",
            &format!("other={OTHER}"),
        ],
    );
    local
}

/// `N passed, M failed` of `meshgate test`.
fn counts(out: &str) -> (u32, u32) {
    let line = out
        .lines()
        .find(|l| l.ends_with(" failed"))
        .unwrap_or_else(|| panic!("no summary in {out}"));
    let n: Vec<u32> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
    (n[0], n[1])
}

#[test]
fn the_skeleton_passes_validate_and_test_as_written() {
    let repo = domain_repo();
    let repo = repo.path();
    scaffold(repo);
    let config = "domains/logistics/local/meshgate.yaml";

    // Clean even under --strict: no warnings (unknown keys, a missing SLA,
    // an undeclared domain) and the domain's sources held to its products.
    let v = ok(repo, &["validate", "--strict", "--config", config]);
    let written = std::fs::read_to_string(repo.join(config)).expect("config");
    assert!(
        written.contains("{ path: .., domain: logistics }"),
        "the domain's source is declared as the domain's: {written}"
    );
    assert!(v.contains(": ok (") && v.contains(" 5 routes,"), "{v}");
    let policies: u32 = v
        .split_once(": ok (")
        .and_then(|(_, r)| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{v}"));
    assert!(policies > 3, "the baseline's 3 and the product's: {v}");

    // Both test formats run: 6 HTTP cases and 2 Cedar tests.
    let t = ok(repo, &["test", "--config", config, "domains/logistics"]);
    assert_eq!(counts(&t), (8, 0), "{t}");
    let t = ok(
        repo,
        &[
            "test",
            "--config",
            config,
            "domains/logistics/tests/shipments.test.json",
        ],
    );
    assert_eq!(counts(&t), (2, 0), "{t}");

    // Once the platform team has added the entry to the mesh's
    // entities.json, the tree's own layout is enough (no --config).
    // Before, the domain's services belong to no domain: every case of its
    // own service allowed fails, the Cedar one too (its entities are the
    // snapshot's, not written out in the file).
    let before = meshgate(repo, &["test", "domains/logistics"]);
    assert!(!before.status.success());
    assert_eq!(
        counts(&text(&before.stdout)),
        (4, 4),
        "{}",
        text(&before.stdout)
    );
    std::fs::copy(
        repo.join("domains/logistics/local/entities.json"),
        repo.join("entities.json"),
    )
    .expect("copy");
    let t = ok(repo, &["test", "domains/logistics"]);
    assert_eq!(counts(&t), (8, 0), "{t}");

    // SLO rules from the contract's SLA.
    let rules = repo.join("slo.yml");
    let r = ok(
        repo,
        &[
            "slo-rules",
            "--config",
            config,
            "-o",
            rules.to_str().expect("utf-8"),
        ],
    );
    assert!(r.contains("SLOs for 1 products"), "{r}");
    let y = std::fs::read_to_string(&rules).expect("rules");
    assert!(y.contains("product: logistics.shipments"), "{y}");
    if require_tool("promtool") {
        let check = output_within(
            Command::new("promtool")
                .args(["check", "rules"])
                .arg(&rules),
        );
        assert!(check.status.success(), "{}", text(&check.stderr));
    }
}

#[test]
fn the_local_sidecar_lets_the_domain_in_and_keeps_others_out() {
    let repo = domain_repo();
    let local = scaffold(repo.path());
    let up = Upstream::start();

    // The generated configuration with OS-chosen ports, the test's upstream
    // and JSON logs (the harness reads the ready line); its policy section
    // and TLS files as written.
    let generated = std::fs::read_to_string(local.join("meshgate.yaml")).expect("read");
    let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&generated).expect("yaml");
    yaml["listen"] = "127.0.0.1:0".into();
    yaml["admin"] = "127.0.0.1:0".into();
    yaml["upstream"] = up.url().into();
    yaml["log"]["format"] = "json".into();
    let config = local.join("test-run.yaml");
    std::fs::write(&config, serde_yaml_ng::to_string(&yaml).expect("yaml")).expect("write");
    let mut cmd = Command::new(bin());
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mg = Meshgate::spawn(cmd, config.clone());

    let call = |who: &str, method: &str, path: &str| -> (String, String) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30", "-X", method])
            .arg("--cacert")
            .arg(local.join("certs/ca.pem"))
            .arg("--cert")
            .arg(local.join(format!("certs/{who}.pem")))
            .arg("--key")
            .arg(local.join(format!("certs/{who}-key.pem")))
            .args(["-w", "\n%{http_code}"])
            .arg(mg.url(path))
            .output()
            .expect("curl");
        let body = text(&out.stdout);
        let (body, status) = body.rsplit_once('\n').unwrap_or(("", &body));
        (status.to_string(), body.to_string())
    };

    let (status, body) = call("own", "GET", "/shipments/42");
    assert_eq!(status, "200", "{body}");
    assert!(
        body.contains("upstream_path") && body.contains("/shipments/42"),
        "{body}"
    );
    assert_eq!(up.count(), 1);
    assert_eq!(call("own", "POST", "/shipments").0, "200");

    let (status, body) = call("other", "GET", "/shipments");
    assert_eq!(status, "403", "{body}");
    assert!(body.contains("\"error\":\"forbidden\""), "{body}");
    assert_eq!(call("other", "POST", "/shipments").0, "403");
    assert_eq!(up.count(), 2, "nothing denied reached the product");
    assert_eq!(
        mg.metric(r#"meshgate_requests_total{product="logistics.shipments",action="read",decision="deny",class="4xx"}"#),
        1.0,
        "{}",
        mg.metrics()
    );
}

#[test]
fn the_kustomization_makes_the_domain_configmap() {
    if !require_tool("kubectl") {
        return;
    }
    let repo = domain_repo();
    let repo = repo.path();
    ok(repo, &["init", "domain", "logistics"]);
    let out = ok(repo, &["init", "product", "logistics.shipments"]);
    // The lines `init product` asks the user to add, added as asked.
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("      - ")).collect();
    assert_eq!(
        lines,
        ["      - shipments.odcs.yaml", "      - shipments.cedar"],
        "{out}"
    );
    let k = repo.join("domains/logistics/kustomization.yaml");
    let before = std::fs::read_to_string(&k).expect("read");
    let after = before.replacen(
        "      - grants.links.json\n",
        &format!("      - grants.links.json\n{}\n", lines.join("\n")),
        1,
    );
    assert_ne!(before, after);
    std::fs::write(&k, after).expect("write");

    let built = output_within(
        Command::new("kubectl")
            .arg("kustomize")
            .arg(repo.join("domains/logistics")),
    );
    assert!(built.status.success(), "{}", text(&built.stderr));
    let cm: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&built.stdout).expect("yaml");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "logistics-policies");
    let data = cm["data"].as_mapping().expect("data");
    let mut keys: Vec<&str> = data.keys().filter_map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "grants.links.json",
            "policies.cedar",
            "shipments.cedar",
            "shipments.odcs.yaml"
        ]
    );
    // Listed now: a second product's note names only its own files.
    let out = ok(repo, &["init", "product", "logistics.carriers"]);
    assert!(
        out.contains("      - carriers.odcs.yaml") && !out.contains("- shipments"),
        "{out}"
    );
}

#[test]
fn init_never_overwrites_and_refuses_bad_names() {
    let repo = domain_repo();
    let repo = repo.path();
    ok(repo, &["init", "domain", "logistics"]);
    ok(repo, &["init", "product", "logistics.shipments"]);
    let contract = repo.join("domains/logistics/shipments.odcs.yaml");
    std::fs::write(&contract, "# mine\n").expect("write");

    let e = refused(repo, &["init", "product", "logistics.shipments"]);
    assert_eq!(
        e.trim_end(),
        "meshgate: domains/logistics/shipments.odcs.yaml: already exists; meshgate init never overwrites a file (move it away or choose another name)"
    );
    assert_eq!(
        std::fs::read_to_string(&contract).expect("read"),
        "# mine\n"
    );
    let e = refused(repo, &["init", "domain", "logistics"]);
    assert!(
        e.starts_with("meshgate: domains/logistics/policies.cedar: already exists"),
        "{e}"
    );

    // Written whole or not at all: the other files of a refused product
    // were not written either.
    std::fs::remove_file(repo.join("domains/logistics/shipments.cedar")).expect("rm");
    refused(repo, &["init", "product", "logistics.shipments"]);
    assert!(!repo.join("domains/logistics/shipments.cedar").exists());

    let e = refused(repo, &["init", "product", "Logistics.shipments"]);
    assert!(
        e.starts_with(
            "meshgate: product id's domain `Logistics`: may hold only lower-case letters"
        ),
        "{e}"
    );
    let e = refused(repo, &["init", "domain", "../etc"]);
    assert!(e.starts_with("meshgate: domain name `../etc`:"), "{e}");
    let e = refused(repo, &["init", "product", "sales.orders"]);
    assert!(
        e.starts_with("meshgate: domains/sales: not found; run `meshgate init domain sales` first"),
        "{e}"
    );
    let empty = tempfile::tempdir().expect("tempdir");
    let e = refused(empty.path(), &["init", "domain", "logistics"]);
    assert!(
        e.starts_with("meshgate: schema.cedarschema: not found; copy the platform's mesh baseline"),
        "{e}"
    );
    assert!(!empty.path().join("domains").exists());
}

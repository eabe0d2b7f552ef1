//! The command line: config errors, `validate`, `certs dev`, `demo`.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// Runs meshgate, at most [`EXIT_DEADLINE`]: a `run` that should refuse its
/// configuration and serves instead fails the test rather than hanging it.
fn meshgate(args: &[&str]) -> std::process::Output {
    output_within(Command::new(bin()).args(args))
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn config_errors_name_the_file_and_field() {
    let pki = Pki::new();
    let good = Meshgate::builder(&pki, "http://127.0.0.1:8080").yaml();
    let file = pki.path("bad.yaml");
    let f = file.to_str().expect("utf-8");
    let cases: Vec<(String, &str)> = vec![
        (
            good.replace("  key:", "  kee:"),
            "tls.kee: unknown field `kee`",
        ),
        (
            format!("{good}timeouts:\n  idle: soon\n"),
            "timeouts.idle: `soon` is not a duration",
        ),
        (
            format!("{good}limits:\n  max_conns: 5\n"),
            "limits.max_conns: unknown field",
        ),
        (
            good.replace("listen: 127.0.0.1:0", "listen: nowhere"),
            "listen: invalid socket address",
        ),
        (
            good.replace(
                "upstream: http://127.0.0.1:8080",
                "upstream: http://10.1.2.3:80",
            ),
            "upstream: `http://10.1.2.3:80` is not on loopback",
        ),
        (
            good.replace("client_ca: ", "client_ca: /nonexistent"),
            "tls.client_ca: /nonexistent",
        ),
        (
            format!("{good}limits:\n  max_header_bytes: 100\n"),
            "limits.max_header_bytes: 100 is below the minimum",
        ),
        ("listen: [\n".to_string(), f),
    ];
    for (yaml, expected) in cases {
        std::fs::write(&file, &yaml).expect("write");
        for cmd in ["run", "validate"] {
            let out = meshgate(&[cmd, "--config", f]);
            assert!(!out.status.success(), "{cmd} accepted:\n{yaml}");
            let err = stderr(&out);
            assert!(err.starts_with(&format!("meshgate: {f}")), "{cmd}: {err}");
            assert!(
                err.contains(expected),
                "{cmd}: expected `{expected}` in: {err}"
            );
            assert_eq!(err.trim_end().lines().count(), 1, "one-line reason: {err}");
        }
    }
}

#[test]
fn unknown_field_error_carries_line_and_column() {
    let pki = Pki::new();
    let file = pki.path("bad.yaml");
    std::fs::write(
        &file,
        Meshgate::builder(&pki, "http://127.0.0.1:8080")
            .yaml()
            .replace("  key:", "  kee:"),
    )
    .expect("write");
    let out = meshgate(&["validate", "--config", file.to_str().expect("utf-8")]);
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:7:", file.display())), "{err}");
}

#[test]
fn validate_checks_tls_material_and_says_ok() {
    let pki = Pki::new();
    let file = pki.path("ok.yaml");
    std::fs::write(
        &file,
        Meshgate::builder(&pki, "http://127.0.0.1:8080").yaml(),
    )
    .expect("write");
    let f = file.to_str().expect("utf-8");
    let out = meshgate(&["validate", "--config", f]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{f}: ok (no policy section: authenticated mode)")
    );

    let (other, _) = pki.ca.issue(Leaf::server());
    pki.write("server.pem", &other);
    let out = meshgate(&["validate", "--config", f]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("tls.key:") && stderr(&out).contains("does not match"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn certs_dev_writes_ca_server_and_clients_with_private_keys_0600() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("certs");
    let out = meshgate(&[
        "certs",
        "dev",
        "--out",
        out_dir.to_str().expect("utf-8"),
        "--client",
        "reporting=spiffe://mesh.local/ns/finance/sa/reporting",
        "--client",
        "etl=spiffe://mesh.local/ns/sales/sa/etl",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for f in [
        "ca.pem",
        "server.pem",
        "server-key.pem",
        "reporting.pem",
        "reporting-key.pem",
        "etl.pem",
        "etl-key.pem",
    ] {
        let meta = std::fs::metadata(out_dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        if f.contains("key") {
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f}");
        }
    }
    let out = meshgate(&[
        "certs",
        "dev",
        "--out",
        out_dir.to_str().expect("utf-8"),
        "--client",
        "x=spiffe://Bad/ns",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("malformed SPIFFE id"),
        "{}",
        stderr(&out)
    );
}

/// The harness notices a process that exits before its ready line at once,
/// by its stderr closing, and fails the start with that stderr (before, it
/// waited out the 30 s ready deadline and said only "not ready").
#[test]
fn a_sidecar_that_exits_before_it_is_ready_fails_its_start_with_its_stderr() {
    let pki = Pki::new();
    let file = pki.path("bad.yaml");
    std::fs::write(&file, "listen: [\n").expect("write");
    let mut cmd = Command::new(bin());
    cmd.args(["run", "--config"])
        .arg(&file)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = std::panic::AssertUnwindSafe(|| Meshgate::spawn(cmd, file.clone()));
    let Err(panic) = std::panic::catch_unwind(start) else {
        panic!("meshgate started on an unreadable configuration");
    };
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("meshgate exited (exit status: ")
            && message.contains(&format!("meshgate: {}", file.display())),
        "{message}"
    );
}

/// The demo's orders as its three clients see them: reporting (`out`)
/// with the customers' e-mail and phone, analytics with both masked as the
/// banner says, campaigns refused.
fn check_demo_fields(
    banner: &[String],
    out: &std::process::Output,
    analytics: Option<(String, std::process::Output)>,
    campaigns: Option<(String, std::process::Output)>,
) {
    let reporting: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(reporting[0]["customer_email"], "buying@northwind.example");
    assert_eq!(reporting[0]["customer_phone"], "+44 20 7946 0958");
    let said = banner
        .iter()
        .find(|l| l.contains("spiffe://mesh.local/ns/marketing/sa/analytics"))
        .unwrap_or_else(|| panic!("no analytics line: {banner:?}"));
    assert!(said.contains("200") && said.contains("masked"), "{said}");
    let (_, analytics) = analytics.expect("a curl command for the analytics client");
    let orders: serde_json::Value = serde_json::from_slice(&analytics.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} {}",
            String::from_utf8_lossy(&analytics.stdout),
            String::from_utf8_lossy(&analytics.stderr)
        )
    });
    let orders = orders.as_array().expect("the order list");
    assert_eq!(orders.len(), 6);
    for o in orders {
        let email = o["customer_email"].as_str().unwrap_or_default();
        assert!(
            email.starts_with("hmac-sha256:") && email.len() == 76,
            "{o}"
        );
        let phone = o["customer_phone"].as_str().unwrap_or_default();
        assert!(phone.starts_with("****") && !phone.contains('+'), "{o}");
        assert!(o["amount"].is_number() && o["customer"].is_string(), "{o}");
    }
    assert_eq!(orders[0]["customer_phone"], "************0958");
    let (cmd, campaigns) = campaigns.expect("a curl command for campaigns");
    assert!(cmd.ends_with("/orders"), "{cmd}");
    let refused = String::from_utf8_lossy(&campaigns.stdout);
    assert!(refused.contains("\"forbidden\""), "{refused}");
}

/// `meshgate demo` running, its stderr read line by line; killed on drop.
struct Demo {
    child: std::process::Child,
    /// Its stderr up to the banner's last line (`Ctrl-C ...`).
    banner: Vec<String>,
    /// The banner's curl commands.
    commands: Vec<String>,
    /// The stderr lines after the banner.
    rest: mpsc::Receiver<String>,
}

impl Demo {
    /// Starts `meshgate demo > trail` writing its certificates to `certs`:
    /// only audit events on stdout; the banner and the logs on stderr,
    /// without colour codes when it is not a terminal.
    fn start(certs: &std::path::Path, trail: &std::path::Path) -> Demo {
        let mut child = Command::new(bin())
            .args([
                "demo",
                "--certs",
                certs.to_str().expect("utf-8"),
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
            ])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(trail).expect("trail"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn demo");
        let stderr_pipe = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut commands = Vec::new();
        let mut banner = Vec::new();
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
            if line.trim_start().starts_with("curl ") {
                commands.push(line.trim().to_string());
            }
            let done = line.starts_with("Ctrl-C");
            banner.push(line);
            if done {
                break;
            }
        }
        Demo {
            child,
            banner,
            commands,
            rest: rx,
        }
    }

    /// Runs the printed command containing `marker` through a shell, as a
    /// user pasting it would: the command and what it printed.
    fn paste(&self, marker: &str) -> Option<(String, std::process::Output)> {
        self.commands
            .iter()
            .find(|c| c.contains(marker))
            .map(|cmd| {
                (
                    cmd.clone(),
                    output_within(Command::new("sh").arg("-c").arg(format!("{cmd} -sS"))),
                )
            })
    }

    /// SIGTERM: the demo drains and writes the last events before it exits.
    /// The stderr lines it wrote after the banner.
    fn stop(&mut self) -> Vec<String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        wait_or_kill(&mut self.child, TERMINATE_DEADLINE, "meshgate demo");
        self.rest.try_iter().collect()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn demo_runs_with_no_setup_and_prints_working_curl_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let trail = dir.path().join("trail");
    let mut demo = Demo::start(&certs, &trail);
    let reporting = demo.paste("reporting.pem");
    // The order list as marketing's analytics (personal fields masked) and
    // campaigns (refused) see it.
    let analytics = demo.paste("analytics.pem");
    let campaigns = demo.paste("campaigns.pem");
    // The deprecated version 1, with its lifecycle headers shown (`-i`).
    let v1 = demo.paste("/v1/orders").map(|(_, out)| out);
    // The product's descriptor, for a caller who may describe but not read.
    let descriptor = demo.paste("/.well-known/data-product/").map(|(_, out)| out);
    let logs = demo.stop();
    let (reporting, out) = reporting.expect("a curl command for the reporting client");
    assert!(reporting.contains("https://localhost:"), "{reporting}");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("\"SO-1001\""),
        "{body} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_demo_fields(&demo.banner, &out, analytics, campaigns);
    check_demo_v1(v1.expect("a curl command for version 1"));
    check_demo_descriptor(descriptor.expect("a curl command for the descriptor"));
    assert!(
        !demo
            .banner
            .iter()
            .chain(&logs)
            .any(|l| l.contains('\u{1b}')),
        "colour codes on a stderr that is not a terminal: {:?}",
        demo.banner
    );
    let events = std::fs::read_to_string(&trail).expect("trail");
    assert!(
        !events.is_empty() && events.lines().all(|l| l.starts_with('{')),
        "stdout is the audit trail alone: {events}"
    );
    let verify = meshgate(&["audit", "verify", trail.to_str().expect("utf-8")]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    for f in [
        "ca.pem",
        "server.pem",
        "server-key.pem",
        "reporting-key.pem",
        "campaigns.pem",
        "campaigns-key.pem",
    ] {
        assert!(certs.join(f).is_file(), "{f} missing");
    }
}

/// The demo's deprecated version 1 as `curl -i` shows it: 200 with its
/// lifecycle headers.
fn check_demo_v1(v1: std::process::Output) {
    let v1_out = String::from_utf8_lossy(&v1.stdout).to_ascii_lowercase();
    for shown in [
        " 200",
        "deprecation: @1782777600",
        "sunset: tue, 31 dec 2030 00:00:00 gmt",
        "rel=\"successor-version\"",
        "\"sales.orders.v1\"",
    ] {
        assert!(
            v1_out.contains(shown),
            "{shown} not in {v1_out} {}",
            String::from_utf8_lossy(&v1.stderr)
        );
    }
}

/// The demo product's descriptor (ODPS) as marketing, who may describe
/// version 2 only, sees it.
fn check_demo_descriptor(descriptor: std::process::Output) {
    let odps: serde_json::Value = serde_json::from_slice(&descriptor.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} {}",
            String::from_utf8_lossy(&descriptor.stdout),
            String::from_utf8_lossy(&descriptor.stderr)
        )
    });
    assert_eq!(odps["kind"], "DataProduct", "{odps}");
    assert_eq!(odps["id"], "sales.orders", "{odps}");
    let ports: Vec<&str> = odps["outputPorts"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| p["contractId"].as_str())
                .collect()
        })
        .unwrap_or_default();
    // Marketing may describe version 2 only (`sales.orders.marketing-may-describe`).
    assert_eq!(ports, ["sales.orders"], "{odps}");
}

#[test]
fn policy_tests_of_the_example_domains_pass() {
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let out = meshgate(&["test", policies.to_str().expect("utf-8")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", stderr(&out));
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.ends_with(" passed, 0 failed"), "{stdout}");
    let passed: usize = last
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 20, "{stdout}");
}

#[test]
fn a_failing_policy_test_shows_expected_and_actual() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let root = dir.path().join("policies");
    std::fs::create_dir_all(root.join("domains/sales/tests")).expect("mkdir");
    for f in ["schema.cedarschema", "entities.json"] {
        std::fs::copy(src.join(f), root.join(f)).expect("copy");
    }
    std::fs::create_dir_all(root.join("mesh")).expect("mkdir");
    std::fs::copy(
        src.join("mesh/baseline.cedar"),
        root.join("mesh/baseline.cedar"),
    )
    .expect("copy");
    for f in [
        "policies.cedar",
        "orders.odcs.yaml",
        "orders-v1.odcs.yaml",
        "customers.odcs.yaml",
    ] {
        std::fs::copy(
            src.join("domains/sales").join(f),
            root.join("domains/sales").join(f),
        )
        .expect("copy");
    }
    let cases = root.join("domains/sales/tests/wrong.test.yaml");
    std::fs::write(
        &cases,
        "cases:\n  - name: wrongly expects marketing to read\n    principal: spiffe://mesh.local/ns/marketing/sa/campaigns\n    path: /orders\n    expect: { decision: allow, policies: [sales.orders.finance-may-read] }\n  - name: right\n    principal: spiffe://mesh.local/ns/finance/sa/reporting\n    path: /orders\n    expect: { status: 200 }\n",
    )
    .expect("write");
    let out = meshgate(&["test", root.to_str().expect("utf-8")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL ")
            && stdout
                .contains("wrongly expects marketing to read: expected decision allow, got deny"),
        "{stdout}"
    );
    assert!(
        stdout.contains("expected policies [\"sales.orders.finance-may-read\"], got []"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().last(), Some("1 passed, 1 failed"));
}

/// A Cedar test case without `entities` decides with the caller and the
/// resource as the snapshot makes them, so it follows the contracts: the
/// same case with hand-made entities keeps passing when the contract
/// changes under it, the filled-in one fails.
#[test]
fn cedar_test_cases_without_entities_follow_the_real_contracts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let root = dir.path().join("policies");
    std::fs::create_dir_all(root.join("domains/sales/tests")).expect("mkdir");
    std::fs::create_dir_all(root.join("mesh")).expect("mkdir");
    for f in [
        "schema.cedarschema",
        "entities.json",
        "mesh/baseline.cedar",
        "domains/sales/policies.cedar",
        "domains/sales/orders.odcs.yaml",
        "domains/sales/orders-v1.odcs.yaml",
        "domains/sales/customers.odcs.yaml",
    ] {
        std::fs::copy(src.join(f), root.join(f)).expect("copy");
    }
    let case = |entities: &str| {
        format!(
            r#"{{
  "name": "finance reads orders",
  "request": {{
    "principal": "Mesh::Service::\"spiffe://mesh.local/ns/finance/sa/reporting\"",
    "action": "Mesh::Action::\"read\"",
    "resource": "Mesh::Dataset::\"sales.orders/orders\"",
    "context": {{ "method": "GET", "path": "/orders",
      "source_ip": {{ "__extn": {{ "fn": "ip", "arg": "10.0.0.7" }} }},
      "time": {{ "__extn": {{ "fn": "datetime", "arg": "2026-11-20T10:00:00Z" }} }},
      "tls": {{ "version": "TLSv1.3" }}, "has_user": false }}
  }},
  {entities}
  "decision": "allow",
  "reason": ["sales.orders.finance-may-read"]
}}"#
        )
    };
    // The hand-made entities: what the contract said when they were written.
    let hand_made = r#""entities": [
    { "uid": { "type": "Mesh::Domain", "id": "sales" }, "attrs": { "namespaces": ["sales"] }, "parents": [] },
    { "uid": { "type": "Mesh::Domain", "id": "finance" }, "attrs": { "namespaces": ["finance"] }, "parents": [] },
    { "uid": { "type": "Mesh::Service", "id": "spiffe://mesh.local/ns/finance/sa/reporting" },
      "attrs": { "kind": "spiffe", "name": "spiffe://mesh.local/ns/finance/sa/reporting", "trust_domain": "mesh.local", "namespace": "finance" },
      "parents": [ { "type": "Mesh::Domain", "id": "finance" } ] },
    { "uid": { "type": "Mesh::DataProduct", "id": "sales.orders" },
      "attrs": { "product_id": "sales.orders", "domain": "sales", "owning_domain": { "__entity": { "type": "Mesh::Domain", "id": "sales" } },
        "owner": "sales-data-team@acme.example", "classification": "internal", "version": "2.0.0", "status": "active",
        "tags": ["sales", "orders"], "allowed_purposes": ["reporting", "fulfilment"] },
      "parents": [ { "type": "Mesh::Domain", "id": "sales" } ] },
    { "uid": { "type": "Mesh::Dataset", "id": "sales.orders/orders" },
      "attrs": { "product_id": "sales.orders", "name": "orders", "domain": "sales", "owning_domain": { "__entity": { "type": "Mesh::Domain", "id": "sales" } },
        "classification": "internal", "version": "2.0.0", "status": "active", "allowed_purposes": ["reporting", "fulfilment"] },
      "parents": [ { "type": "Mesh::DataProduct", "id": "sales.orders" } ] }
  ],"#;
    let tests = root.join("domains/sales/tests");
    std::fs::write(tests.join("filled.test.json"), format!("[{}]", case(""))).expect("write");
    std::fs::write(
        tests.join("hand-made.test.json"),
        format!("[{}]", case(hand_made)),
    )
    .expect("write");
    let run = || {
        let out = meshgate(&["test", root.to_str().expect("utf-8")]);
        (
            out.status.code(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out)),
        )
    };
    let (code, text) = run();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("2 passed, 0 failed"), "{text}");

    // The product turns restricted: the baseline now wants a purpose.
    let contract = root.join("domains/sales/orders.odcs.yaml");
    let before = std::fs::read_to_string(&contract).expect("read");
    // (the product's and its dataset's classification)
    let after = before.replace("internal", "restricted");
    assert_eq!(after.matches("restricted").count(), 2, "{after}");
    std::fs::write(&contract, after).expect("write");
    let (code, text) = run();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("1 passed, 1 failed"), "{text}");
    let failed: Vec<&str> = text.lines().filter(|l| l.contains("FAIL ")).collect();
    assert_eq!(failed.len(), 1, "{text}");
    assert!(
        failed[0].contains("filled.test.json")
            && failed[0].contains("expected decision allow, got deny"),
        "{text}"
    );

    // A principal that is not a service cannot be made up: a clear error.
    std::fs::write(
        tests.join("filled.test.json"),
        format!("[{}]", case("")).replace(
            "Mesh::Service::\\\"spiffe://mesh.local/ns/finance/sa/reporting\\\"",
            "Mesh::Group::\\\"finance-staff\\\"",
        ),
    )
    .expect("write");
    let (_, text) = run();
    assert!(
        text.contains(
            "only a Mesh::Service is built from the snapshot; give the case its own entities"
        ),
        "{text}"
    );
}

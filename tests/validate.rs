//! `meshgate validate`: every mistake at its position, warnings on their
//! own channel, exit codes 0 (clean), 1 (errors), 2 (`--strict`, warnings).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const CLIENTS: &[(&str, &str)] = &[("reporting", "spiffe://mesh.local/ns/finance/sa/reporting")];

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn validate(config: &Path, strict: bool) -> Out {
    let mut cmd = Command::new(bin());
    cmd.arg("validate").arg("--config").arg(config);
    if strict {
        cmd.arg("--strict");
    }
    let out = output_within(&mut cmd);
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// A sidecar with the example policy tree copied (to edit) and its
/// configuration written; the path of that configuration.
fn with_policies(pki: &Pki) -> (Sidecar, PathBuf) {
    let sidecar = Meshgate::builder(pki, "http://127.0.0.1:8080").policies();
    let config = pki.path("meshgate.yaml");
    std::fs::write(&config, sidecar.yaml()).expect("write config");
    (sidecar, config)
}

fn edit(pki: &Pki, file: &str, from: &str, to: &str) {
    let path = pki.path(file);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(from), "{file} has no `{from}`");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
}

#[test]
fn the_example_tree_is_clean() {
    let pki = Pki::with_clients(CLIENTS);
    let (_, config) = with_policies(&pki);
    let out = validate(&config, true);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    assert!(out.stdout.contains(": ok ("), "{}", out.stdout);
}

#[test]
fn every_contract_error_is_reported_at_its_position_and_run_refuses_them() {
    let pki = Pki::with_clients(CLIENTS);
    let (sidecar, config) = with_policies(&pki);
    let orders = "policies/domains/sales/orders.odcs.yaml";
    edit(&pki, orders, "kind: DataContract", "kind: DataContrakt");
    edit(&pki, orders, "unit: ms", "unit: fortnights");
    edit(
        &pki,
        orders,
        "{ method: POST, path: /orders/search, action: query, dataset: orders }",
        "{ method: POST, path: /orders/search, action: query, dataset: order }",
    );
    edit(
        &pki,
        orders,
        "property: allowedPurposes",
        "property: meshgateRoute",
    );
    let out = validate(&config, false);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let file = pki.path(orders).display().to_string();
    for expected in [
        format!("{file}:3:7: kind: `DataContrakt`: expected `DataContract`"),
        format!("{file}:31:33: slaProperties[1]: latency: unit `fortnights`: use ms, s or m"),
        format!("{file}:39:15: customProperties[2].property: `meshgateRoute` is not a property meshgate reads: did you mean `meshgateRoutes`?"),
        format!("{file}:47:71: customProperties.meshgateRoutes[2].dataset: `order` is not a schema object of this contract"),
    ] {
        assert!(
            out.stderr.lines().any(|l| l == expected),
            "no line `{expected}` in:\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr.ends_with(&format!(
            "meshgate: {}: 4 errors, 0 warnings\n",
            config.display()
        )),
        "{}",
        out.stderr
    );
    // `run` refuses the same files: the first error, and how many more.
    for (cmd, err) in sidecar.refusals("meshgate.yaml") {
        assert!(err.contains(&format!("{file}:3:7: kind:")), "{cmd}: {err}");
        if cmd == "run" {
            assert!(err.contains("(and 3 more errors)"), "{err}");
        }
    }
}

#[test]
fn warnings_pass_but_fail_under_strict_and_the_run_logs_them() {
    let pki = Pki::with_clients(CLIENTS);
    let (sidecar, config) = with_policies(&pki);
    let orders = "policies/domains/sales/orders.odcs.yaml";
    edit(
        &pki,
        orders,
        "tenant: acme",
        "tenant: acme\nreviewBoard: data-council",
    );
    let file = pki.path(orders).display().to_string();
    let warning =
        format!("{file}:11:1: warning: reviewBoard: not an ODCS v3 key: meshgate ignores it");

    let out = validate(&config, false);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stderr.trim_end(), warning);
    assert!(
        out.stdout.trim_end().ends_with("; 1 warning)"),
        "{}",
        out.stdout
    );

    let out = validate(&config, true);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(out.stderr.trim_end(), warning);

    // The sidecar serves, and says what it ignores.
    let mg = sidecar.start();
    let logged = mg
        .logs
        .wait_for(0, Duration::from_secs(10), |l| {
            l.contains("policy input warning") && l.contains("reviewBoard")
        })
        .unwrap_or_else(|| panic!("no warning logged:\n{}", mg.logs.dump()));
    assert!(logged.contains(&format!("{file}:11:1")), "{logged}");
}

#[test]
fn undeclared_domains_in_policies_and_contracts_are_warnings() {
    let pki = Pki::with_clients(CLIENTS);
    let (_, config) = with_policies(&pki);
    // The domains' sources under the mesh's authority: a domain's own could
    // not name another domain, or move its product to another (see
    // tests/federation.rs); what is checked here is the names.
    let text = std::fs::read_to_string(&config).expect("config");
    let mesh_wide = text
        .replace("{ path: ", "")
        .replace(", domain: sales }", "")
        .replace(", domain: finance }", "");
    assert!(!mesh_wide.contains("domain:"), "{mesh_wide}");
    std::fs::write(&config, mesh_wide).expect("config");
    let read = "action == Mesh::Action::\"read\"";
    std::fs::write(
        pki.path("policies/domains/sales/logistics.cedar"),
        format!(
            "// Shipping reads orders.\n@id(\"sales.logistics-read\")\npermit (principal in Mesh::Domain::\"logistics\", {read}, resource in Mesh::Domain::\"sales\");\n\
             @id(\"treasury-read\")\npermit (principal in Mesh::Domain::\"finance\", {read}, resource in Mesh::Domain::\"treasury\");\n\
             @id(\"shipping-read\")\npermit (principal in Mesh::Domain::\"finance\", {read}, resource in Mesh::Domain::\"shipping\");\n"
        ),
    )
    .expect("write");
    // The ledger moves to a domain entities.json does not declare.
    edit(
        &pki,
        "policies/domains/finance/ledger.odcs.yaml",
        "domain: finance",
        "domain: treasury",
    );
    let out = validate(&config, false);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let policy = pki
        .path("policies/domains/sales/logistics.cedar")
        .display()
        .to_string();
    let ledger = pki
        .path("policies/domains/finance/ledger.odcs.yaml")
        .display()
        .to_string();
    let line = |l: usize| format!("{ledger}:{l}:9: warning: domain: ");
    let domain_line = std::fs::read_to_string(&ledger)
        .expect("read")
        .lines()
        .position(|l| l == "domain: treasury")
        .expect("domain line")
        + 1;
    let mut warnings: Vec<&str> = out.stderr.lines().collect();
    warnings.sort_unstable();
    assert_eq!(warnings.len(), 3, "{}", out.stderr);
    assert!(
        warnings.contains(&format!("{policy}:2:1: warning: @id(\"sales.logistics-read\") principal: Mesh::Domain::\"logistics\" is not declared in entities.json: the scope matches nothing").as_str()),
        "{}",
        out.stderr
    );
    // A resource is in its contract's domain, declared or not: `treasury`
    // is not reported on the resource side, `shipping` is.
    assert!(
        warnings.contains(&format!("{policy}:6:1: warning: @id(\"shipping-read\") resource: Mesh::Domain::\"shipping\" is not declared in entities.json and is no contract's domain: the scope matches nothing").as_str()),
        "{}",
        out.stderr
    );
    assert!(
        warnings.iter().any(|w| w.starts_with(&line(domain_line))
            && w.contains("Mesh::Domain::\"treasury\" is not declared in entities.json: no caller is in this domain")),
        "{}",
        out.stderr
    );
    assert_eq!(validate(&config, true).code, Some(2));
}

#[test]
fn an_entities_error_names_the_entity_and_attribute_at_its_line() {
    let pki = Pki::with_clients(CLIENTS);
    let (sidecar, config) = with_policies(&pki);
    edit(
        &pki,
        "policies/entities.json",
        "\"namespaces\": [\"finance\", \"finance-batch\"]",
        "\"namespaces\": \"finance\"",
    );
    // A service without its required `name`.
    edit(
        &pki,
        "policies/entities.json",
        "\"attrs\": { \"kind\": \"spiffe\", \"name\": \"spiffe://mesh.local/ns/finance/sa/reporting\" }",
        "\"attrs\": { \"kind\": \"spiffe\" }",
    );
    let out = validate(&config, false);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let file = pki.path("policies/entities.json").display().to_string();
    assert!(
        out.stderr.lines().any(|l| l.starts_with(&format!("{file}:11:"))
            && l.contains("entity Mesh::Service::\"spiffe://mesh.local/ns/finance/sa/reporting\", attribute `name`:")),
        "{}",
        out.stderr
    );
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with(&format!("{file}:3:")))
        .unwrap_or_else(|| panic!("no line at entities.json:3:\n{}", out.stderr));
    assert!(
        line.contains("entity Mesh::Domain::\"finance\", attribute `namespaces`:"),
        "{line}"
    );
    for (cmd, err) in sidecar.refusals("meshgate.yaml") {
        assert!(err.contains("attribute `namespaces`"), "{cmd}: {err}");
    }
}

#[test]
fn a_duplicate_id_names_both_positions() {
    let pki = Pki::with_clients(CLIENTS);
    let (_, config) = with_policies(&pki);
    std::fs::write(
        pki.path("policies/domains/sales/again.cedar"),
        "\n@id(\"mesh.foreign-trust-domain\")\npermit (principal, action, resource);\n",
    )
    .expect("write");
    let out = validate(&config, false);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let again = pki.path("policies/domains/sales/again.cedar");
    let baseline = pki.path("policies/mesh/baseline.cedar");
    let expected = format!(
        "{}:2:1: @id(\"mesh.foreign-trust-domain\") is already used in {}:17:1",
        again.display(),
        baseline.display()
    );
    assert!(out.stderr.lines().any(|l| l == expected), "{}", out.stderr);
}

#[test]
fn an_unquoted_pattern_gets_a_hint() {
    let pki = Pki::with_clients(CLIENTS);
    let (_, config) = with_policies(&pki);
    edit(
        &pki,
        "policies/domains/sales/orders.odcs.yaml",
        "path: \"/orders/{id}\"",
        "path: /orders/{id}",
    );
    let out = validate(&config, false);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("must be quoted: path: \"/orders/{id}\")"),
        "{}",
        out.stderr
    );
}

#[test]
fn validate_checks_the_audit_file_as_run_would_open_it() {
    let pki = Pki::with_clients(CLIENTS);
    let config = pki.path("audit.yaml");
    let missing = pki.path("no-such-dir/audit.log");
    let sidecar = Meshgate::builder(&pki, "http://127.0.0.1:8080").audit_file(&missing);
    std::fs::write(&config, sidecar.yaml()).expect("write");
    let out = validate(&config, false);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "audit.file: {}: directory {} does not exist",
            missing.display(),
            pki.path("no-such-dir").display()
        )),
        "{}",
        out.stderr
    );

    // A file that is not an audit trail would not be appended to either.
    let foreign = pki.path("notes.txt");
    std::fs::write(&foreign, "shopping list\n").expect("write");
    let sidecar = Meshgate::builder(&pki, "http://127.0.0.1:8080").audit_file(&foreign);
    std::fs::write(&config, sidecar.yaml()).expect("write");
    let out = validate(&config, false);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("its last line is not a meshgate audit event"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&foreign).expect("read"),
        "shopping list\n",
        "validate wrote to the file"
    );

    // A directory that exists: clean, and nothing is left in it.
    let fine = pki.path("trail/audit.log");
    std::fs::create_dir_all(pki.path("trail")).expect("mkdir");
    let sidecar = Meshgate::builder(&pki, "http://127.0.0.1:8080").audit_file(&fine);
    std::fs::write(&config, sidecar.yaml()).expect("write");
    let out = validate(&config, false);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let left: Vec<_> = std::fs::read_dir(pki.path("trail"))
        .expect("read dir")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The configurations the benchmarks write (`benches/sidecar-config.sh`:
/// the example policies with an audit trail, and the passthrough one;
/// `benches/masking.sh`'s field rule added to the first) are clean, so that
/// a script that drifts from the configuration's fields fails here rather
/// than when someone next measures with it.
#[test]
fn the_benchmarks_sidecar_configurations_are_clean() {
    let pki = Pki::new();
    let dir = pki.path("benches");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches");
    let (root, d, certs) = (
        root.display(),
        dir.display(),
        pki.path("").display().to_string(),
    );
    let script = format!(
        "set -e; source '{root}/sidecar-config.sh'; source '{root}/masking.sh'
         sidecar_config '{d}/full.yaml' 9001 9002 9003 '{certs}' '{d}/audit.log' ''
         sidecar_config '{d}/masked.yaml' 9001 9002 9003 '{certs}' '{d}/audit.log' 'retain: 5'
         masking_config '{d}/m' '{d}/masked.yaml' bench-hash-key-0123456789abcdef0123
         passthrough_config '{d}/passthrough.yaml' 9001 9002 9003 '{certs}'"
    );
    let out = output_within(Command::new("bash").arg("-c").arg(&script));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let policies = |name: &str| -> usize {
        let out = validate(&dir.join(format!("{name}.yaml")), true);
        assert_eq!(out.code, Some(0), "{name}: {}{}", out.stdout, out.stderr);
        assert!(!out.stderr.contains("warning"), "{name}: {}", out.stderr);
        let summary = out.stdout.split(": ok (").nth(1).unwrap_or_default();
        if summary.starts_with("no policy section") {
            return 0;
        }
        summary
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name}: {}", out.stdout))
    };
    let full = policies("full");
    assert!(full > 0, "the example policies are loaded");
    // The field rule is one policy more, and its key is configured.
    assert_eq!(policies("masked"), full + 1);
    let masked = std::fs::read_to_string(dir.join("masked.yaml")).expect("read");
    assert!(masked.contains("hash_key_file"), "{masked}");
    // Passthrough: no policy and no audit trail.
    assert_eq!(policies("passthrough"), 0);
    let passthrough = std::fs::read_to_string(dir.join("passthrough.yaml")).expect("read");
    assert!(
        passthrough.contains("audit: { sink: off }"),
        "{passthrough}"
    );
}

/// A JWKS file with a key meshgate cannot use (an `alg` no one defines):
/// the key is ignored, as RFC 7517 §5 says, but `validate` warns naming
/// the file, the key's kid and the reason, and so does the sidecar each
/// time it reads the file. A JWKS that does not parse names its file.
/// Before, the key was dropped silently: `validate` said ok and tokens of
/// that kid were refused as `unknown_kid` with nothing to say why.
#[test]
fn a_jwks_key_meshgate_cannot_use_is_a_warning_naming_file_kid_and_reason() {
    use common::tokens::Signer;
    let pki = Pki::with_clients(CLIENTS);
    let good = Signer::new(jsonwebtoken::Algorithm::ES256, "good");
    let mut bad = serde_json::to_value(&Signer::new(jsonwebtoken::Algorithm::ES256, "typo").jwk)
        .expect("jwk");
    bad["alg"] = "RS265".into();
    let jwks = pki.path("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::json!({ "keys": [good.jwk, bad] }).to_string(),
    )
    .expect("write jwks");
    let sidecar = Meshgate::builder(&pki, "http://127.0.0.1:8080")
        .policies()
        .issuer(&format!(
            "issuer: https://idp.test\naudiences: [meshgate]\njwks_file: {}\nmin_refresh: 0s",
            jwks.display()
        ));
    let config = pki.path("meshgate.yaml");
    std::fs::write(&config, sidecar.yaml()).expect("write config");

    let out = validate(&config, false);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.stderr.trim_end(),
        format!(
            "{}: warning: keys[1] (kid `typo`): ignored: its alg `RS265` is not a signing algorithm meshgate supports",
            jwks.display()
        )
    );
    assert_eq!(validate(&config, true).code, Some(2));

    let mg = sidecar.start();
    let logged = mg
        .logs
        .wait_for(0, Duration::from_secs(10), |l| {
            l.contains("a signing key of the JWKS is ignored")
        })
        .unwrap_or_else(|| panic!("no warning logged:\n{}", mg.logs.dump()));
    for part in [&jwks.display().to_string(), "typo", "RS265"] {
        assert!(logged.contains(part), "{part}: {logged}");
    }
    drop(mg);

    std::fs::write(&jwks, r#"{"keys": 3}"#).expect("break jwks");
    let out = validate(&config, false);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "users.issuers[0].jwks_file: {}: not a JWKS",
            jwks.display()
        )),
        "{}",
        out.stderr
    );
}

/// A server certificate outside its validity period, or an expired CA,
/// is a warning: `run` starts with them (and picks up the renewal), but
/// clients would refuse every handshake, or every chain through the CA.
#[test]
fn validate_warns_of_an_expired_server_certificate_and_ca() {
    let pki = Pki::with_clients(CLIENTS);
    let (_, config) = with_policies(&pki);
    let mut leaf = Leaf::server();
    leaf.valid_from = -time::Duration::days(10);
    leaf.valid_until = -time::Duration::days(1);
    let (c, k) = pki.ca.issue(leaf);
    pki.write("server.pem", &c);
    pki.write("server-key.pem", &k);
    let out = validate(&config, false);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("warning: tls.cert: the server certificate is valid from")
            && out
                .stderr
                .contains("not now: clients will refuse every handshake"),
        "{}",
        out.stderr
    );
    assert_eq!(validate(&config, true).code, Some(2));

    // A fresh certificate, and a bundle holding an expired CA beside the
    // mesh's own.
    let (c, k) = pki.ca.issue(Leaf::server());
    pki.write("server.pem", &c);
    pki.write("server-key.pem", &k);
    let old = expired_ca("retired CA");
    pki.write("ca.pem", &format!("{}{}", pki.ca.pem, old));
    let out = validate(&config, false);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("client_ca:CN=retired CA: this CA expired on"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("tls.cert"), "{}", out.stderr);
}

/// A self-signed CA certificate that expired yesterday.
fn expired_ca(name: &str) -> String {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(30);
    p.not_after = now - time::Duration::days(1);
    p.self_signed(&key).expect("self-signed").pem()
}

/// What a careless or hostile contract wrote that meshgate read as more
/// open than written: a classification set twice (the first won), `tags:
/// pii` (the field was not personal, and shown), a setting of meshgate's at
/// the top level (ignored). Each is an error where it is written, and `run`
/// refuses them.
#[test]
fn a_contract_that_would_read_more_open_than_written_is_refused() {
    let pki = Pki::with_clients(CLIENTS);
    let (sidecar, config) = with_policies(&pki);
    let orders = "policies/domains/sales/orders.odcs.yaml";
    edit(
        &pki,
        orders,
        "customProperties:\n  - property: classification\n    value: internal\n",
        "customProperties:\n  - property: classification\n    value: public\n  - property: classification\n    value: restricted\n",
    );
    edit(
        &pki,
        orders,
        "tags: [pii], customProperties: [{ property: meshgateMask, value: hash }]",
        "tags: pii, customProperties: [{ property: meshgateMask, value: hash }]",
    );
    edit(
        &pki,
        orders,
        "tenant: acme",
        "tenant: acme\nmeshgateUndeclared: refuse",
    );
    let out = validate(&config, true);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let file = pki.path(orders).display().to_string();
    for expected in [
        format!("{file}:11:1: meshgateUndeclared: `meshgateUndeclared` is read only under `customProperties`"),
        format!("{file}:26:90: schema[0].properties[7].tags: customer_email: tags are a list: `tags: [pii]`, not `tags: pii`"),
        format!("{file}:38:15: customProperties[1].property: `classification` is set twice: first at {file}:36:15 (customProperties[0])"),
    ] {
        assert!(
            out.stderr.lines().any(|l| l.starts_with(&expected)),
            "no line `{expected}` in:\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr.contains(": 3 errors, 0 warnings"),
        "{}",
        out.stderr
    );
    for (cmd, err) in sidecar.refusals("meshgate.yaml") {
        assert!(
            err.contains(&format!("{file}:11:1: meshgateUndeclared:")),
            "{cmd}: {err}"
        );
    }
}

/// A domain's rule moved into a subdirectory, or saved as `fields.Cedar`,
/// is not read: an error naming the file, where it was dropped unseen.
/// Editors' files beside the policies stay silent.
#[test]
fn a_policy_file_its_source_would_not_read_is_refused() {
    let pki = Pki::with_clients(CLIENTS);
    let (sidecar, config) = with_policies(&pki);
    let sales = pki.path("policies/domains/sales");
    for editor in [".policies.cedar.swp", "policies.cedar~", "#policies.cedar#"] {
        std::fs::write(sales.join(editor), "junk").expect("write");
    }
    let out = validate(&config, true);
    assert_eq!(out.code, Some(0), "editor files: {}", out.stderr);
    std::fs::create_dir_all(sales.join("rules")).expect("mkdir");
    std::fs::rename(sales.join("fields.cedar"), sales.join("rules/fields.cedar")).expect("move");
    std::fs::copy(sales.join("policies.cedar"), sales.join("more.Cedar")).expect("copy");
    let out = validate(&config, true);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let p = |f: &str| sales.join(f).display().to_string();
    for expected in [
        format!("{}: not read: policy files end in `.cedar`, in lower case; rename it `more.cedar`", p("more.Cedar")),
        format!("{}: not read: a policy source reads only the files directly in its directory {}, not its subdirectories", p("rules/fields.cedar"), sales.display()),
    ] {
        assert!(
            out.stderr.lines().any(|l| l.starts_with(&expected)),
            "no line `{expected}` in:\n{}",
            out.stderr
        );
    }
    for (cmd, err) in sidecar.refusals("meshgate.yaml") {
        assert!(err.contains(&p("more.Cedar")), "{cmd}: {err}");
    }
}

/// A sales permit named as a baseline exception loaded, and `authorize`
/// and the audit named a `mesh.` policy as the one that allowed.
#[test]
fn a_domain_policy_with_an_id_not_its_own_is_refused() {
    let pki = Pki::with_clients(CLIENTS);
    let (sidecar, config) = with_policies(&pki);
    let file = pki.path("policies/domains/sales/exception.cedar");
    std::fs::write(
        &file,
        "// An exception.\n@id(\"mesh.baseline-approved-exception\")\npermit (principal in Mesh::Domain::\"marketing\", action, resource in Mesh::Domain::\"sales\");\n",
    )
    .expect("write");
    let out = validate(&config, false);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let expected = format!(
        "{}:2:1: policy `mesh.baseline-approved-exception` of domain `sales` is refused: its id lies in the mesh baseline's namespace (`mesh.`); a domain's ids begin with `sales.`",
        file.display()
    );
    assert!(
        out.stderr.lines().any(|l| l == expected),
        "no line `{expected}` in:\n{}",
        out.stderr
    );
    for (cmd, err) in sidecar.refusals("meshgate.yaml") {
        assert!(
            err.contains("`mesh.baseline-approved-exception` of domain `sales` is refused"),
            "{cmd}: {err}"
        );
    }
}

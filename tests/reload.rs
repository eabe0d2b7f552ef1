//! Hot reload with relative paths, as the injector writes them: the sidecar is
//! started in a directory standing for the container's root, its
//! configuration names every file relative to it, and edits to policies,
//! contracts, TLS material and the JWKS file are picked up without SIGHUP.
//! Three launches: `--config sidecar.yaml`, `--config ./conf/sidecar.yaml`
//! and `MESHGATE_CONFIG` over kubelet-style volumes (`..data` swapped).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::json;

use common::tokens::Signer;
use common::*;

const CAMPAIGNS: &str = "spiffe://mesh.local/ns/marketing/sa/campaigns";
const ISSUER: &str = "https://idp.reload.test";

/// How the sidecar is told its configuration.
#[derive(Clone, Copy)]
enum Launch {
    /// `--config PATH`, PATH relative to the working directory; files are
    /// edited in place.
    File(&'static str),
    /// `MESHGATE_CONFIG` (what the injector sets); every directory is a
    /// kubelet volume, updated by swapping its `..data` link.
    EnvOverKubeletVolumes,
}

/// The sidecar's files under `root`, the working directory.
struct Pod {
    root: tempfile::TempDir,
    launch: Launch,
    /// Where the configuration file lives (its paths are relative to it).
    conf: PathBuf,
    versions: usize,
}

impl Pod {
    fn new(launch: Launch) -> Pod {
        let root = tempfile::tempdir().expect("root");
        let conf = match launch {
            Launch::File(path) => root
                .path()
                .join(Path::new(path).parent().unwrap_or(Path::new(""))),
            Launch::EnvOverKubeletVolumes => root.path().to_path_buf(),
        };
        std::fs::create_dir_all(&conf).expect("mkdir conf");
        Pod {
            root,
            launch,
            conf,
            versions: 0,
        }
    }

    /// Writes (or replaces) the files of the directory `dir` (relative to
    /// the configuration): in place, or as the kubelet updates a volume.
    fn write(&mut self, dir: &str, files: &BTreeMap<&str, String>) {
        let at = self.conf.join(dir);
        std::fs::create_dir_all(&at).expect("mkdir");
        match self.launch {
            Launch::File(_) => {
                for (name, text) in files {
                    // Written beside, then renamed over: what editors and
                    // config-management tools do.
                    let tmp = at.join(format!(".{name}.tmp"));
                    std::fs::write(&tmp, text).expect("write");
                    std::fs::rename(&tmp, at.join(name)).expect("rename");
                }
            }
            Launch::EnvOverKubeletVolumes => {
                self.versions += 1;
                let stamp = format!("..2026_12_03_00_00_00.{:09}", self.versions);
                std::fs::create_dir(at.join(&stamp)).expect("mkdir version");
                for (name, text) in files {
                    std::fs::write(at.join(&stamp).join(name), text).expect("write");
                    let link = at.join(name);
                    if std::fs::symlink_metadata(&link).is_err() {
                        std::os::unix::fs::symlink(Path::new("..data").join(name), &link)
                            .expect("symlink");
                    }
                }
                let tmp = at.join("..data_tmp");
                std::os::unix::fs::symlink(&stamp, &tmp).expect("symlink");
                std::fs::rename(&tmp, at.join("..data")).expect("atomic swap");
            }
        }
    }

    /// Starts the sidecar, forwarding to `upstream`.
    fn start(&self, upstream: &str) -> Meshgate {
        let yaml = &"listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nupstream: UPSTREAM\ntls:\n  cert: certs/tls.crt\n  key: certs/tls.key\n  client_ca: certs/ca.crt\npolicy:\n  schema: mesh/schema.cedarschema\n  entities: mesh/entities.json\n  sources:\n    - mesh\n    - policies\n  contracts:\n    - policies\nusers:\n  issuers:\n    - issuer: ISSUER\n      audiences: [meshgate]\n      jwks_file: idp/jwks.json\n      algorithms: [ES256]\n      min_refresh: 0s\nlog:\n  level: info,meshgate=debug\n  format: json\n"
            .replace("UPSTREAM", upstream)
            .replace("ISSUER", ISSUER);
        let mut cmd = Command::new(bin());
        cmd.current_dir(self.root.path())
            .env_remove("RUST_LOG")
            .env_remove("MESHGATE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let config_path = match self.launch {
            Launch::File(path) => {
                std::fs::write(self.root.path().join(path), yaml).expect("config");
                cmd.args(["run", "--config", path]);
                PathBuf::from(path)
            }
            Launch::EnvOverKubeletVolumes => {
                cmd.arg("run").env("MESHGATE_CONFIG", yaml);
                PathBuf::new()
            }
        };
        Meshgate::spawn(cmd, config_path)
    }
}

fn repo_file(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn jwks(signer: &Signer) -> BTreeMap<&'static str, String> {
    BTreeMap::from([("jwks.json", json!({ "keys": [signer.jwk] }).to_string())])
}

fn token(signer: &Signer) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    signer.sign(
        &json!({ "iss": ISSUER, "sub": "alice", "aud": "meshgate", "iat": now, "exp": now + 600 }),
    )
}

/// Status of a GET as `who`, with `args` before the URL.
fn status(pki: &Pki, who: &str, args: &[&str], url: &str) -> String {
    let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    all.extend_from_slice(args);
    all.push(url);
    String::from_utf8_lossy(&curl(pki, Some(who), &all).stdout).to_string()
}

/// Waits for a log line containing `needle` written after line `from`.
fn wait_log(mg: &Meshgate, from: usize, needle: &str) {
    mg.logs
        .wait_for(from, Duration::from_secs(30), |l| l.contains(needle))
        .unwrap_or_else(|| panic!("no `{needle}` line:\n{}", mg.logs.dump()));
}

/// The mesh baseline's files.
fn mesh() -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        (
            "schema.cedarschema",
            repo_file("policies/schema.cedarschema"),
        ),
        ("entities.json", repo_file("policies/entities.json")),
        ("baseline.cedar", repo_file("policies/mesh/baseline.cedar")),
    ])
}

/// The sales domain's policies and contracts, with a policy and a route
/// added.
fn sales(extra_policy: &str, extra_route: &str) -> BTreeMap<&'static str, String> {
    let contract = repo_file("policies/domains/sales/orders.odcs.yaml");
    BTreeMap::from([
        (
            "policies.cedar",
            repo_file("policies/domains/sales/policies.cedar") + extra_policy,
        ),
        (
            "grants.links.json",
            repo_file("policies/domains/sales/grants.links.json"),
        ),
        (
            "customers.odcs.yaml",
            repo_file("policies/domains/sales/customers.odcs.yaml"),
        ),
        ("orders.odcs.yaml", contract + extra_route),
    ])
}

/// Marketing may read orders.
const MARKETING_MAY_READ: &str = "\n@id(\"sales.orders.marketing-may-read\")\npermit (principal in Mesh::Domain::\"marketing\", action == Mesh::Action::\"read\", resource in Mesh::DataProduct::\"sales.orders\");\n";

/// Starts a sidecar as `launch` says and edits each kind of file it watches.
async fn every_kind_of_file_reloads(launch: Launch) {
    let pki = Pki::new();
    pki.client("campaigns", Leaf::client_spiffe(CAMPAIGNS));
    let up = Upstream::start();
    let mut pod = Pod::new(launch);

    let certs = |pod: &mut Pod| {
        let (cert, key) = pki.ca.issue(Leaf::server());
        pod.write(
            "certs",
            &BTreeMap::from([
                ("tls.crt", cert.clone()),
                ("tls.key", key),
                ("ca.crt", pki.ca.pem.clone()),
            ]),
        );
        cert
    };
    let first_cert = certs(&mut pod);
    pod.write("mesh", &mesh());
    pod.write("policies", &sales("", ""));
    let old_key = Signer::new(Algorithm::ES256, "2026-11");
    pod.write("idp", &jwks(&old_key));

    let mg = pod.start(&up.url());
    let orders = mg.url("/orders");
    let stats = mg.url("/orders/_stats/daily");
    assert_eq!(status(&pki, "reporting", &[], &orders), "200");
    assert_eq!(status(&pki, "campaigns", &[], &orders), "403");
    assert_eq!(status(&pki, "reporting", &[], &stats), "404");

    // 1. A policy edit: marketing may now read orders.
    let from = mg.logs.len();
    pod.write("policies", &sales(MARKETING_MAY_READ, ""));
    wait_log(&mg, from, "policy snapshot reloaded");
    assert_eq!(status(&pki, "campaigns", &[], &orders), "200");

    // 2. A contract edit: a new route, read on behalf of a person.
    let from = mg.logs.len();
    pod.write(
        "policies",
        &sales(
            "",
            "      - { method: GET, path: /orders/_stats/daily, action: read, dataset: orders, userToken: required }\n",
        ),
    );
    wait_log(&mg, from, "policy snapshot reloaded");
    assert_eq!(status(&pki, "campaigns", &[], &orders), "403");
    let bearer = |s: &Signer| format!("Authorization: Bearer {}", token(s));
    assert_eq!(status(&pki, "reporting", &[], &stats), "401");
    assert_eq!(
        status(&pki, "reporting", &["-H", &bearer(&old_key)], &stats),
        "200"
    );

    // 3. The JWKS file: the identity provider's key rotated. A token naming
    // the new key makes the sidecar read the file again.
    let new_key = Signer::new(Algorithm::ES256, "2026-12");
    pod.write("idp", &jwks(&new_key));
    assert_eq!(
        status(&pki, "reporting", &["-H", &bearer(&new_key)], &stats),
        "200",
        "{}",
        mg.logs.dump()
    );
    assert_eq!(
        status(&pki, "reporting", &["-H", &bearer(&old_key)], &stats),
        "401"
    );

    // 4. The certificate rotated: new handshakes get the new one.
    let from = mg.logs.len();
    let second_cert = certs(&mut pod);
    wait_log(&mg, from, "tls material reloaded");
    let (mut fresh, served) = h1_client(&pki, "reporting", mg.data).await;
    use rustls_pki_types::pem::PemObject;
    let expected =
        rustls_pki_types::CertificateDer::from_pem_slice(second_cert.as_bytes()).expect("pem");
    assert_eq!(served, expected.to_vec());
    assert_ne!(first_cert, second_cert);
    assert_eq!(get_on(&mut fresh, "/orders").await.0, 200);
    assert!(mg.metric("meshgate_tls_reloads_total{result=\"ok\"}") >= 1.0);
    assert_eq!(mg.metric("meshgate_policy_last_reload_successful"), 1.0);
}

#[tokio::test]
async fn a_relative_config_file_reloads_policies_contracts_jwks_and_certificates() {
    every_kind_of_file_reloads(Launch::File("sidecar.yaml")).await;
}

#[tokio::test]
async fn a_config_in_a_relative_subdirectory_reloads_every_kind_of_file() {
    every_kind_of_file_reloads(Launch::File("./conf/sidecar.yaml")).await;
}

#[tokio::test]
async fn meshgate_config_over_kubelet_volumes_reloads_on_each_data_swap() {
    every_kind_of_file_reloads(Launch::EnvOverKubeletVolumes).await;
}

/// A policy directory removed (`rm -rf`), put back, then edited: the
/// removal fails the reload, the copy put back clears the failure, the
/// edit after is enforced. Before, the directory was watched by the
/// removed inode only: the copy and every later edit went unseen and
/// `last_error` stayed. And an identical rewrite is read and hashed, not
/// built again.
#[tokio::test]
async fn a_policy_directory_removed_and_put_back_is_watched_again() {
    let pki = Pki::new();
    pki.client("campaigns", Leaf::client_spiffe(CAMPAIGNS));
    let up = Upstream::start();
    let mut pod = Pod::new(Launch::File("sidecar.yaml"));
    let (cert, key) = pki.ca.issue(Leaf::server());
    pod.write(
        "certs",
        &BTreeMap::from([
            ("tls.crt", cert),
            ("tls.key", key),
            ("ca.crt", pki.ca.pem.clone()),
        ]),
    );
    pod.write("mesh", &mesh());
    pod.write("policies", &sales("", ""));
    pod.write("idp", &jwks(&Signer::new(Algorithm::ES256, "2026-11")));
    let mg = pod.start(&up.url());
    let orders = mg.url("/orders");
    assert_eq!(status(&pki, "campaigns", &[], &orders), "403");

    let from = mg.logs.len();
    pod.write("policies", &sales("", ""));
    wait_log(
        &mg,
        from,
        "policy files unchanged; the snapshot in force is kept, not rebuilt",
    );

    let from = mg.logs.len();
    std::fs::remove_dir_all(pod.conf.join("policies")).expect("rm -rf");
    wait_log(&mg, from, "policy reload failed");
    assert_eq!(mg.metric("meshgate_policy_last_reload_successful"), 0.0);

    let from = mg.logs.len();
    pod.write("policies", &sales("", ""));
    mg.logs
        .wait_for(from, Duration::from_secs(30), |l| {
            l.contains("the reload failure is cleared") || l.contains("policy snapshot reloaded")
        })
        .unwrap_or_else(|| panic!("the copy put back was not seen:\n{}", mg.logs.dump()));
    assert_eq!(mg.metric("meshgate_policy_last_reload_successful"), 1.0);

    let from = mg.logs.len();
    pod.write("policies", &sales(MARKETING_MAY_READ, ""));
    wait_log(&mg, from, "policy snapshot reloaded");
    assert_eq!(status(&pki, "campaigns", &[], &orders), "200");
}

//! The data path, end to end: the real binary, real certificates, real clients.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use rcgen::{ExtendedKeyUsagePurpose, SanType};

fn headers_seen(body: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["headers"]
        .as_array()
        .expect("headers list")
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap_or_default().to_string(),
                p[1].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn streams_a_10mb_download_and_upload_byte_for_byte() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).start();
    let total: u64 = 10 * 1024 * 1024;
    let expected: Vec<u8> = (0..total).map(pattern_byte).collect();

    let file = pki.path("download.bin");
    let out = curl(
        &pki,
        Some("reporting"),
        &[
            "-o",
            file.to_str().expect("utf-8 path"),
            "-w",
            "%{http_code}",
            &mg.url(&format!("/bytes/{total}")),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = std::fs::read(&file).expect("downloaded file");
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "downloaded bytes differ");

    let upload = pki.path("upload.bin");
    std::fs::write(&upload, &expected).expect("write upload");
    let out = curl(
        &pki,
        Some("reporting"),
        &[
            "--data-binary",
            &format!("@{}", upload.display()),
            &mg.url("/upload"),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{total} {}", sha256_hex(&expected))
    );
}

#[test]
fn a_100mb_download_is_streamed_not_buffered() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).start();
    let hwm = || -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", mg.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    };
    // Warm up the connection path so its one-time allocations are not counted.
    assert_eq!(
        status_of(&pki, Some("reporting"), &mg.url("/bytes/1000")),
        "200"
    );
    let before = hwm();
    let out = curl(
        &pki,
        Some("reporting"),
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            &mg.url("/bytes/104857600"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 104857600");
    let grown_kb = hwm().saturating_sub(before);
    assert!(
        grown_kb < 32 * 1024,
        "peak RSS grew by {grown_kb} kB for a 100 MB body"
    );
}

#[test]
fn upstream_connections_are_reused_and_an_abandoned_response_closes_its_own() {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).start();
    let connections = || up.connections.load(Ordering::SeqCst);
    // The body discarded, what curl's `-w` writes about the exchange.
    let written = |args: &[&str], what: &str| {
        let mut all = vec!["-o", "/dev/null", "-w", what];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&curl(&pki, Some("reporting"), &all).stdout).to_string()
    };
    // One request after another, of every body shape: one upstream connection.
    for round in 0..3 {
        assert_eq!(
            status_of(&pki, Some("reporting"), &mg.url(&format!("/get/{round}"))),
            "200"
        );
        assert_eq!(
            written(&["-I", &mg.url("/bytes/10")], "%{http_code}"),
            "200",
            "HEAD"
        );
        let big = written(&[&mg.url("/bytes/300000")], "%{http_code} %{size_download}");
        assert_eq!(big, "200 300000");
        let upload = written(
            &["--data-binary", "0123456789", &mg.url("/upload")],
            "%{http_code}",
        );
        assert_eq!(upload, "200", "upload");
    }
    assert_eq!(
        connections(),
        1,
        "sequential requests share one upstream connection"
    );

    // A client that goes away mid-body: its upstream connection, still
    // carrying the rest of the body, is closed, never handed to the next request.
    let mut cmd = curl_command(
        &pki,
        Some("reporting"),
        &["-sS", &mg.url("/bytes/200000000")],
    );
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("curl");
    let mut first = vec![0u8; 100_000];
    child
        .stdout
        .as_mut()
        .expect("stdout")
        .read_exact(&mut first)
        .expect("the start of the body");
    let _ = child.kill();
    let _ = child.wait();
    let out = curl(
        &pki,
        Some("reporting"),
        &["-w", " %{http_code}", &mg.url("/after")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with(" 200") && text.contains("/after"), "{text}");
    assert_eq!(connections(), 2, "the abandoned connection was not reused");
}

#[test]
fn http2_is_negotiated_by_alpn() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).start();
    let out = curl(
        &pki,
        Some("reporting"),
        &["--http2", "-w", "\n%{http_version}", &mg.url("/headers")],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, version) = text.rsplit_once('\n').expect("version line");
    assert_eq!(version, "2");
    let h = headers_seen(body);
    assert_eq!(header_values(&h, "x-meshgate-principal"), vec![REPORTING]);
    // The original authority reaches the upstream as Host.
    assert_eq!(
        header_values(&h, "host"),
        vec![format!("localhost:{}", mg.data.port()).as_str()]
    );

    let out = curl(
        &pki,
        Some("reporting"),
        &[
            "--http1.1",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            &mg.url("/headers"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1.1");
}

#[test]
fn denies_spoofed_identity_headers() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).start();
    for proto in ["--http1.1", "--http2"] {
        let out = curl(
            &pki,
            Some("reporting"),
            &[
                proto,
                "-H", "x-forwarded-client-cert: By=spiffe://evil;URI=spiffe://mesh.local/ns/admin/sa/root",
                "-H", "X-Meshgate-Principal: spiffe://mesh.local/ns/admin/sa/root",
                "-H", "x-meshgate-principal: spiffe://evil",
                "-H", "x-meshgate-user: root",
                "-H", "x_meshgate_principal: spiffe://mesh.local/ns/admin/sa/root",
                "-H", "x-forwarded-for: 6.6.6.6",
                "-H", "x-forwarded-host: evil.example",
                "-H", "forwarded: for=6.6.6.6;host=evil.example",
                "-H", "x-request-id: spoofed",
                "-H", "Connection: keep-alive, x-custom",
                "-H", "x-custom: should-be-dropped",
                "-H", "x-end-to-end: kept",
                &mg.url("/headers?q=1"),
            ],
        );
        let body = String::from_utf8_lossy(&out.stdout).to_string();
        let h = headers_seen(&body);
        assert_eq!(
            header_values(&h, "x-meshgate-principal"),
            vec![REPORTING],
            "{proto}: {body}"
        );
        assert!(
            header_values(&h, "x-meshgate-user").is_empty(),
            "{proto}: {body}"
        );
        assert!(
            header_values(&h, "x_meshgate_principal").is_empty(),
            "{proto}: {body}"
        );
        assert_eq!(
            header_values(&h, "x-forwarded-for"),
            vec!["127.0.0.1"],
            "{proto}"
        );
        assert!(
            header_values(&h, "x-forwarded-host").is_empty(),
            "{proto}: {body}"
        );
        assert_eq!(
            header_values(&h, "forwarded"),
            vec!["for=127.0.0.1;proto=https"],
            "{proto}: {body}"
        );
        let xfcc = header_values(&h, "x-forwarded-client-cert");
        assert_eq!(xfcc.len(), 1, "{proto}: {body}");
        assert!(xfcc[0].starts_with("Hash="), "{}", xfcc[0]);
        assert!(
            xfcc[0].contains(&format!(";URI={REPORTING}")),
            "{}",
            xfcc[0]
        );
        assert!(
            !xfcc[0].contains("evil") && !xfcc[0].contains("admin"),
            "{}",
            xfcc[0]
        );
        if proto == "--http1.1" {
            // (HTTP/2 has no Connection header: curl drops it, so x-custom is end to end there.)
            assert!(
                header_values(&h, "x-custom").is_empty(),
                "{proto}: Connection-named header forwarded"
            );
        }
        assert!(header_values(&h, "connection")
            .iter()
            .all(|v| !v.contains("x-custom")));
        assert_eq!(header_values(&h, "x-end-to-end"), vec!["kept"]);
        assert_eq!(header_values(&h, "x-forwarded-proto"), vec!["https"]);
        let ids = header_values(&h, "x-request-id");
        assert!(ids.len() == 1 && ids[0].len() == 32, "{proto}: {ids:?}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["uri"], "/headers?q=1", "method, path and query preserved");
    }
}

#[test]
fn refuses_bad_client_certificates_at_the_handshake() {
    if !require_tool("openssl") {
        return;
    }
    let pki = Pki::new();
    let other = common::Ca::new("some other CA");
    pki.foreign_client("foreign", &other, Leaf::client_spiffe(REPORTING));
    let mut expired = Leaf::client_spiffe(REPORTING);
    expired.valid_from = -time::Duration::days(10);
    expired.valid_until = -time::Duration::days(1);
    pki.client("expired", expired);
    let mut future = Leaf::client_spiffe(REPORTING);
    future.valid_from = time::Duration::days(1);
    future.valid_until = time::Duration::days(10);
    pki.client("future", future);
    let mut server_only = Leaf::client_spiffe(REPORTING);
    server_only.eku = vec![ExtendedKeyUsagePurpose::ServerAuth];
    pki.client("serveronly", server_only);

    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).start();
    let cases = [
        (None, "no_client_cert"),
        (Some("foreign"), "untrusted"),
        (Some("expired"), "expired"),
        (Some("future"), "not_yet_valid"),
        (Some("serveronly"), "bad_usage"),
    ];
    for (who, reason) in cases {
        let sample = format!("meshgate_tls_handshake_failures_total{{reason=\"{reason}\"}}");
        let before = mg.counter(&sample);
        // curl (TLS 1.3): no HTTP response at all.
        assert_eq!(
            status_of(&pki, who, &mg.url("/headers")),
            "000",
            "{who:?} got an HTTP response"
        );
        // openssl s_client (TLS 1.2): the handshake itself fails.
        let mut cmd = Command::new("openssl");
        cmd.args([
            "s_client",
            "-tls1_2",
            "-connect",
            &mg.data.to_string(),
            "-servername",
            "localhost",
            "-CAfile",
        ])
        .arg(pki.path("ca.pem"));
        if let Some(w) = who {
            cmd.arg("-cert")
                .arg(pki.path(&format!("{w}.pem")))
                .arg("-key")
                .arg(pki.path(&format!("{w}-key.pem")));
        }
        let out = output_within(&mut cmd);
        assert!(
            !out.status.success(),
            "{who:?}: openssl handshake succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let after = mg.metric(&sample);
        assert_eq!(after - before, 2.0, "{sample} counted {before} -> {after}");
    }
    // The good client still gets through, over TLS 1.2 and 1.3.
    assert_eq!(
        status_of(&pki, Some("reporting"), &mg.url("/headers")),
        "200"
    );
    let out = curl(
        &pki,
        Some("reporting"),
        &[
            "--tls-max",
            "1.2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &mg.url("/headers"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}

#[test]
fn identity_falls_back_from_spiffe_to_dns_to_cn_and_refuses_ambiguous_ids() {
    let pki = Pki::new();
    let mut dns = Leaf::client_spiffe(REPORTING);
    dns.sans = vec![
        SanType::URI("https://not-spiffe.example/x".try_into().expect("ia5")),
        SanType::DnsName("reporting.finance.svc".try_into().expect("ia5")),
    ];
    pki.client("dns", dns);
    let mut cn = Leaf::client_spiffe(REPORTING);
    cn.sans = vec![];
    cn.cn = Some("legacy-batch".into());
    pki.client("cn", cn);
    let mut two = Leaf::client_spiffe(REPORTING);
    two.sans.push(SanType::URI(
        "spiffe://mesh.local/ns/admin/sa/root"
            .try_into()
            .expect("ia5"),
    ));
    pki.client("two", two);
    let mut bad = Leaf::client_spiffe(REPORTING);
    bad.sans = vec![
        SanType::URI("spiffe://mesh.local/ns/../sa/x".try_into().expect("ia5")),
        SanType::DnsName("fallback.example".try_into().expect("ia5")),
    ];
    pki.client("badspiffe", bad);

    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).start();
    let principal = |who: &str| {
        let out = curl(&pki, Some(who), &[&mg.url("/headers")]);
        let h = headers_seen(&String::from_utf8_lossy(&out.stdout));
        header_values(&h, "x-meshgate-principal")
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(principal("reporting"), vec![REPORTING.to_string()]);
    assert_eq!(
        principal("dns"),
        vec!["dns:reporting.finance.svc".to_string()]
    );
    assert_eq!(principal("cn"), vec!["cn:legacy-batch".to_string()]);
    for who in ["two", "badspiffe"] {
        assert_eq!(
            status_of(&pki, Some(who), &mg.url("/headers")),
            "000",
            "{who} was let in"
        );
    }
    assert_eq!(
        mg.metric("meshgate_tls_handshake_failures_total{reason=\"bad_identity\"}"),
        2.0
    );
}

#[test]
fn upstream_down_is_502_with_a_request_id() {
    let pki = Pki::new();
    let port = unused_port();
    let mg = Meshgate::builder(&pki, &format!("http://127.0.0.1:{port}")).start();
    let out = curl(
        &pki,
        Some("reporting"),
        &["-w", "\n%{http_code}", &mg.url("/anything")],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').expect("status line");
    assert_eq!(status, "502");
    let v: serde_json::Value = serde_json::from_str(body).expect("json body");
    assert_eq!(v["error"], "upstream_unavailable");
    assert_eq!(v["request_id"].as_str().map(str::len), Some(32));
}

#[test]
fn slow_upstream_is_504() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .timeout("upstream_response: 300ms")
        .start();
    let out = curl(
        &pki,
        Some("reporting"),
        &["-w", "\n%{http_code}", &mg.url("/orders/1?hold=slow")],
    );
    // Held at the upstream until now: the 504 came from the timeout alone.
    up.release("slow");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').expect("status line");
    assert_eq!(status, "504", "{body}");
    assert!(body.contains("\"error\":\"upstream_timeout\""), "{body}");
    assert_eq!(
        mg.metric(
            "meshgate_requests_total{product=\"\",action=\"\",decision=\"allow\",class=\"5xx\"}"
        ),
        1.0
    );
}

#[test]
fn sigterm_drains_an_in_flight_request() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mut mg = Meshgate::builder(&pki, &up)
        .timeout("shutdown_grace: 20s")
        .start();
    let url = mg.url("/slow/1500");
    let ca = pki.path("ca.pem");
    let cert = pki.path("reporting.pem");
    let key = pki.path("reporting-key.pem");
    let client = std::thread::spawn(move || {
        Command::new("curl")
            .args(["-sS", "--max-time", "30", "-w", " %{http_code}"])
            .arg("--cacert")
            .arg(ca)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg(url)
            .output()
            .expect("curl")
    });
    up.wait_arrival();
    let kill = Command::new("kill")
        .args(["-TERM", &mg.pid().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let out = client.join().expect("client thread");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "slow done 200");
    let status = wait_or_kill(&mut mg.child, EXIT_DEADLINE, "meshgate after SIGTERM");
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        mg.logs.dump()
    );
    assert!(mg
        .logs
        .wait_for(0, Duration::from_secs(5), |l| l.contains("\"drained\""))
        .is_some());
}

/// How long a connection lasted: from just before the client connected
/// (the sidecar's timers cannot start earlier, so a correct close is never
/// before `bound`) until the sidecar closed it (at most 20 s). A close
/// before the bound, an immediate one included, fails.
async fn closed_after(
    bound: Duration,
    started: std::time::Instant,
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut buf)).await;
    let lasted = started.elapsed();
    assert!(
        read.is_ok(),
        "connection still open 20 s after a {bound:?} timeout"
    );
    assert!(
        lasted >= bound,
        "closed after {lasted:?}, before the {bound:?} timeout"
    );
    String::from_utf8_lossy(&buf).to_string()
}

#[tokio::test]
async fn slow_loris_is_cut_off_at_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let pki = Pki::new();
    let up = Upstream::start();
    // The idle timeout is far away: only the header timeout can close this connection.
    let mg = Meshgate::builder(&pki, &up)
        .timeout("header_read: 1s")
        .timeout("idle: 120s")
        .start();
    let started = std::time::Instant::now();
    let mut tls = tls_connect(&pki, "reporting", mg.data).await;
    tls.write_all(b"GET /headers HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1")
        .await
        .expect("write");
    tls.flush().await.expect("flush");
    let text = closed_after(Duration::from_secs(1), started, &mut tls).await;
    assert!(!text.contains("200 OK"), "{text}");
    assert_eq!(up.count(), 0, "the unfinished request reached the upstream");
}

#[tokio::test]
async fn idle_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).timeout("idle: 1s").start();
    // One request served on the connection, then nothing: it is closed no
    // sooner than a second after (the idle time starts after the response).
    let started = std::time::Instant::now();
    let mut tls = tls_connect(&pki, "reporting", mg.data).await;
    tls.write_all(b"GET /headers HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    tls.flush().await.expect("flush");
    let text = closed_after(Duration::from_secs(1), started, &mut tls).await;
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");

    // HTTP/2 alike: a client answers every PING a server sends, so none
    // may keep the connection from its idle end.
    let started = std::time::Instant::now();
    let tls = tls_connect_alpn(&pki, "reporting", mg.data, &[b"h2"]).await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2 handshake");
    let driver = tokio::spawn(conn);
    let req = http::Request::get(mg.url("/headers"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    drop(resp);
    let ended = tokio::time::timeout(Duration::from_secs(20), driver).await;
    let lasted = started.elapsed();
    assert!(
        ended.is_ok(),
        "HTTP/2 connection still open 20 s after a 1 s idle timeout"
    );
    assert!(lasted >= Duration::from_secs(1), "closed after {lasted:?}");
}

#[tokio::test]
async fn certificate_rotation_keeps_open_connections_and_serves_the_new_one() {
    // The kubelet / csi-driver layout: files are symlinks through `..data`,
    // which is swapped atomically to a new timestamped directory.
    let pki = Pki::new();
    let certs = pki.path("mounted");
    std::fs::create_dir(&certs).expect("mkdir");
    let stage = |version: &str, cert: &str, key: &str| {
        let d = certs.join(version);
        std::fs::create_dir(&d).expect("mkdir version");
        std::fs::write(d.join("tls.crt"), cert).expect("cert");
        std::fs::write(d.join("tls.key"), key).expect("key");
        std::fs::write(d.join("ca.crt"), &pki.ca.pem).expect("ca");
        let tmp = certs.join("..data_tmp");
        std::os::unix::fs::symlink(version, &tmp).expect("symlink");
        std::fs::rename(&tmp, certs.join("..data")).expect("atomic swap");
    };
    let (c1, k1) = pki.ca.issue(Leaf::server());
    stage("..v1", &c1, &k1);
    for f in ["tls.crt", "tls.key", "ca.crt"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), certs.join(f)).expect("symlink");
    }
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .tls("mounted/tls.crt", "mounted/tls.key", "mounted/ca.crt")
        .default_workers()
        .default_log_level()
        .start();

    let (mut open, first_cert) = h1_client(&pki, "reporting", mg.data).await;
    assert_eq!(get_on(&mut open, "/headers").await.0, 200);

    let from = mg.logs.len();
    let (c2, k2) = pki.ca.issue(Leaf::server());
    stage("..v2", &c2, &k2);
    mg.logs
        .wait_for(from, Duration::from_secs(20), |l| {
            l.contains("tls material reloaded")
        })
        .unwrap_or_else(|| panic!("no reload:\n{}", mg.logs.dump()));

    // The open connection keeps working.
    assert_eq!(get_on(&mut open, "/headers").await.0, 200);
    // A new handshake gets the new certificate.
    let (mut fresh, second_cert) = h1_client(&pki, "reporting", mg.data).await;
    assert_ne!(first_cert, second_cert);
    let expected = rustls_pki_types::CertificateDer::from_pem_slice(c2.as_bytes()).expect("pem");
    assert_eq!(second_cert, expected.to_vec());
    assert_eq!(get_on(&mut fresh, "/headers").await.0, 200);
    assert_eq!(mg.metric("meshgate_tls_reloads_total{result=\"ok\"}"), 1.0);
}

use rustls_pki_types::pem::PemObject;

#[tokio::test]
async fn corrupt_or_mismatched_replacement_keeps_the_old_certificate() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).start();
    let (_, original) = h1_client(&pki, "reporting", mg.data).await;

    // 1. garbage certificate
    let from = mg.logs.len();
    pki.write(
        "server.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    );
    let line = mg
        .logs
        .wait_for(from, Duration::from_secs(20), |l| {
            l.contains("tls reload failed")
        })
        .unwrap_or_else(|| panic!("no reload failure logged:\n{}", mg.logs.dump()));
    assert!(line.contains("tls.cert"), "{line}");
    let (mut c, served) = h1_client(&pki, "reporting", mg.data).await;
    assert_eq!(served, original);
    assert_eq!(get_on(&mut c, "/headers").await.0, 200);

    // 2. a valid certificate whose key does not match the key file
    let from = mg.logs.len();
    let (other_cert, _) = pki.ca.issue(Leaf::server());
    pki.write("server.pem", &other_cert);
    let line = mg
        .logs
        .wait_for(from, Duration::from_secs(20), |l| {
            l.contains("tls reload failed")
        })
        .unwrap_or_else(|| panic!("no reload failure logged:\n{}", mg.logs.dump()));
    assert!(line.contains("does not match"), "{line}");
    let (mut c, served) = h1_client(&pki, "reporting", mg.data).await;
    assert_eq!(served, original);
    assert_eq!(get_on(&mut c, "/headers").await.0, 200);
    assert!(mg.metric("meshgate_tls_reloads_total{result=\"error\"}") >= 2.0);
}

#[test]
fn admin_port_reports_liveness_readiness_and_metrics() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).start();
    assert_eq!(
        status_of(&pki, Some("reporting"), &mg.url("/headers")),
        "200"
    );
    for (path, code) in [("/live", "200"), ("/ready", "200"), ("/nope", "404")] {
        let status = plain_status(&format!("http://{}{path}", mg.admin));
        assert_eq!(status, code, "{path}");
    }
    let m = mg.metrics();
    assert_eq!(
        metric_value(
            &m,
            "meshgate_requests_total{product=\"\",action=\"\",decision=\"allow\",class=\"2xx\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "meshgate_request_duration_seconds_count{product=\"\",decision=\"allow\"}"
        ),
        1.0,
        "{m}"
    );
    assert!(m.contains("meshgate_open_connections "), "{m}");
    assert!(
        m.contains("meshgate_certificate_expiry_timestamp_seconds{cert=\"server\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn grpc_trailers_pass_through_to_an_h2c_upstream() {
    use http_body_util::BodyExt;
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .extra("upstream_protocol: h2c\n")
        .start();
    let tls = tls_connect_alpn(&pki, "reporting", mg.data, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::post(mg.url("/trailers"))
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"\0\0\0\0\0",
        )))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("x-seen-te").map(|v| v.as_bytes()),
        Some(&b"trailers"[..])
    );
    let collected = resp.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers arrive");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert_eq!(
        trailers.get("grpc-message").map(|v| v.as_bytes()),
        Some(&b"all good"[..])
    );
    assert_eq!(collected.to_bytes().len(), 5);
}

#[test]
fn oversized_request_headers_are_refused() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .limit("max_header_bytes: 16384")
        .start();
    let big = format!("x-big: {}", "a".repeat(20_000));
    let out = curl(
        &pki,
        Some("reporting"),
        &[
            "--http1.1",
            "-H",
            &big,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &mg.url("/headers"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "431");
    let small = format!("x-big: {}", "a".repeat(4_000));
    let out = curl(
        &pki,
        Some("reporting"),
        &[
            "--http1.1",
            "-H",
            &small,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &mg.url("/headers"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    // HTTP/2: the header list limit refuses the stream; it never reaches the upstream.
    let out = curl(
        &pki,
        Some("reporting"),
        &[
            "--http2",
            "-H",
            &big,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &mg.url("/headers"),
        ],
    );
    let code = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        code == "431" || code == "000",
        "HTTP/2 oversized headers answered {code}"
    );
}

//! One sidecar per class of attack, the probes that run against it, and
//! what their outcomes mean.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

pub(crate) const CAMPAIGNS: &str = "spiffe://mesh.local/ns/marketing/sa/campaigns";
/// campaigns may describe the orders product...
pub(crate) const PUBLIC: &str = "/orders/_schema";
/// ...and may not read its rows.
pub(crate) const PROTECTED: &str = "/orders/SO-1";

/// A sidecar enforcing the example policies, writing its audit trail to a file.
pub(crate) struct Env {
    pub(crate) pki: Pki,
    pub(crate) up: Upstream,
    pub(crate) mg: Meshgate,
    pub(crate) audit: PathBuf,
    /// Sentinel requests sent so far (see `arrivals`).
    pub(crate) sentinels: std::cell::Cell<u32>,
}

/// The sidecar of [`Env`]; `clients` issues more clients, `limits` are
/// lines of its `limits` section.
pub(crate) fn env(clients: impl FnOnce(&Pki), limits: &[&str]) -> Env {
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    clients(&pki);
    let up = Upstream::start();
    let audit = pki.path("audit.log");
    let mut sidecar = Meshgate::builder(&pki, &up).policies().audit_file(&audit);
    for l in limits {
        sidecar = sidecar.limit(l);
    }
    let mg = sidecar.start();
    Env {
        pki,
        up,
        mg,
        audit,
        sentinels: Default::default(),
    }
}

impl Env {
    /// curl over HTTP/2 as `who`: "<status> <http version>".
    pub(crate) fn h2_status(&self, who: &str, path: &str) -> String {
        let out = curl(
            &self.pki,
            Some(who),
            &[
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
                &self.mg.url(path),
            ],
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// The well-behaved client, right after an attack: served as usual.
    pub(crate) fn assert_still_serving(&self) {
        assert_eq!(
            self.h2_status("campaigns", &format!("{PUBLIC}?slow=0")),
            "200 2"
        );
        assert_eq!(
            self.h2_status("campaigns", &format!("{PROTECTED}?slow=0")),
            "403 2"
        );
    }

    /// A sample's value; 0 for a labelled counter not counted yet (see
    /// [`Meshgate::counter`]), a failure for a name the sidecar lacks.
    pub(crate) fn metric(&self, sample: &str) -> f64 {
        self.mg.counter(sample)
    }

    /// Every path that reached the upstream so far. Waits until no client
    /// connection is open, then sends a sentinel request (reporting may read
    /// orders) and collects arrivals until the sentinel's.
    pub(crate) fn arrivals(&self) -> Vec<String> {
        wait_until("no open client connection", || {
            self.metric("meshgate_open_connections") == 0.0
        });
        self.sentinels.set(self.sentinels.get() + 1);
        let sentinel = &self.sentinel();
        assert_eq!(
            status_of(
                &self.pki,
                Some("reporting"),
                &self.mg.url(&format!("{sentinel}?slow=0"))
            ),
            "200"
        );
        let mut seen = Vec::new();
        loop {
            let path = self.up.wait_arrival();
            if path == *sentinel {
                return seen;
            }
            seen.push(path);
        }
    }

    /// The path of the last sentinel request.
    pub(crate) fn sentinel(&self) -> String {
        format!("/orders/sentinel-{}", self.sentinels.get())
    }

    /// The audit events written so far, once the one for `path` is there.
    pub(crate) fn audit_events_through(&self, path: &str) -> Vec<Value> {
        let mut events = Vec::new();
        wait_until("the audit event of the last request", || {
            let text = std::fs::read_to_string(&self.audit).unwrap_or_default();
            // Whole lines only: the writer may be in the middle of one.
            let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            events = whole
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect::<Vec<Value>>();
            events.iter().any(|e| e["path"] == path)
        });
        events
    }

    /// Arrivals and audit events after an attack: the protected path never
    /// reached the upstream and was never allowed; returns how many requests
    /// for the public path reached the upstream.
    pub(crate) fn assert_protected_never_arrived(&self) -> usize {
        let arrived = self.arrivals();
        assert!(
            !arrived.iter().any(|p| p == PROTECTED),
            "the protected path reached the upstream"
        );
        let events = self.audit_events_through(&self.sentinel());
        for e in &events {
            if e["path"] == PROTECTED {
                assert_ne!(e["decision"], "allow", "{e}");
            }
        }
        arrived.iter().filter(|p| *p == PUBLIC).count()
    }
}

/// Polls `cond` until it holds, for at most 60 s (a bound on a wait for an
/// event, not a window), parking 1 ms at first and up to 50 ms between looks.
pub(crate) fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pause = Duration::from_millis(1);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::park_timeout(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

// --- HTTP/2: the Python prober --------------------------------------------

/// Python 3 with the `h2` package; under CI their absence fails the test.
pub(crate) fn require_python_h2() -> bool {
    if !require_tool("python3") {
        return false;
    }
    let ok = Command::new("python3")
        .args(["-c", "import h2, hpack"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        skip("python3 package h2");
    }
    ok
}

/// Runs one case of h2probe.py as campaigns; its JSON report.
pub(crate) fn probe(env: &Env, case: &str, args: &[&str]) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/h2/h2probe.py");
    // The probe bounds each of its own waits; this bounds the process.
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg(case)
        .arg("--port")
        .arg(env.mg.data.port().to_string())
        .arg("--ca")
        .arg(env.pki.path("ca.pem"))
        .arg("--cert")
        .arg(env.pki.path("campaigns.pem"))
        .arg("--key")
        .arg(env.pki.path("campaigns-key.pem"))
        .arg("--public")
        .arg(format!("{PUBLIC}?slow=0"))
        .arg("--protected")
        .arg(format!("{PROTECTED}?slow=0"))
        .args(args);
    let out = output_within_limit(&mut cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "h2probe {case} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    eprintln!("h2probe {case} {args:?}: {v}");
    v
}

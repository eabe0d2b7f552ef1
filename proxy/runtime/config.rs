//! The sidecar's one YAML configuration file: parsing, defaults and validation.
//!
//! Every error names the file and the field (`tls.cert`), and for syntax errors
//! the line and column, so an operator can fix it without guessing.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use http::uri::{Authority, Uri};
use serde::{Deserialize, Deserializer};

pub use crate::base::yaml::{de_duration, de_opt_duration, parse_yaml, ConfigError};
pub use crate::transport::tls::TlsPaths;
pub use crate::transport::upstream::UpstreamProtocol;

/// The whole sidecar configuration (see README "Configuration").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Data listener (mTLS).
    pub listen: SocketAddr,
    /// Admin listener (plain HTTP): /live /ready /metrics.
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
    /// The data product's own server, on loopback: `http://127.0.0.1:PORT`.
    #[serde(deserialize_with = "de_upstream")]
    pub upstream: UpstreamUrl,
    /// How to speak to the upstream: `http1` (default) or `h2c` (HTTP/2 cleartext, e.g. gRPC).
    #[serde(default)]
    pub upstream_protocol: UpstreamProtocol,
    pub tls: TlsPaths,
    /// Runtime worker threads. Absent: `TOKIO_WORKER_THREADS`, else one per CPU.
    #[serde(default)]
    pub workers: Option<usize>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub log: LogConfig,
    /// Header hygiene: more override headers to remove before forwarding.
    #[serde(default)]
    pub headers: crate::pipeline::overrides::HeadersConfig,
    /// Cedar authorization. Absent: authenticated mode (any verified client passes).
    #[serde(default)]
    pub policy: Option<crate::decision::authz::PolicyConfig>,
    /// Trusted issuers of end-user tokens (JWT), for routes with `userToken`.
    #[serde(default)]
    pub users: Option<crate::decision::jwt::UsersConfig>,
    /// SLA quotas per consumer and product (needs `policy`: products come
    /// from its contracts).
    #[serde(default)]
    pub quotas: Option<crate::decision::quota::QuotasConfig>,
    /// The audit trail (default: JSON lines on stdout, `when_full: block`).
    #[serde(default)]
    pub audit: crate::observe::audit::AuditConfig,
    /// Optional per-consumer metric labels.
    #[serde(default)]
    pub metrics: crate::observe::metrics::MetricsConfig,
    /// Field masking: the hash key (`fields.hash_key_file`).
    #[serde(default)]
    pub fields: Option<crate::pipeline::mask::FieldsConfig>,
    /// Contract conformance of responses, mesh-wide: `sample` (0 to 1,
    /// default 0.01) and `mode` (`observe`, the default, or `enforce`); a
    /// product's `meshgateConformance` wins over it, setting by setting.
    #[serde(default)]
    pub conformance: crate::decision::fields::ConformanceSettings,
    /// OpenTelemetry spans (`tracing.otlp`); absent: off.
    #[serde(default)]
    pub tracing: crate::observe::trace::TracingConfig,
}

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9901))
}

/// The upstream's scheme-less address, validated to be loopback.
#[derive(Debug, Clone)]
pub struct UpstreamUrl {
    pub authority: Authority,
}

fn de_upstream<'de, D: Deserializer<'de>>(d: D) -> Result<UpstreamUrl, D::Error> {
    let s = String::deserialize(d)?;
    parse_upstream(&s).map_err(serde::de::Error::custom)
}

/// Parses `http://HOST:PORT[/]` where HOST is a loopback address or `localhost`.
pub fn parse_upstream(s: &str) -> Result<UpstreamUrl, String> {
    let uri: Uri = s.parse().map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "`{s}`: the upstream is reached over plain http on loopback (http://127.0.0.1:PORT)"
        ));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("`{s}` has no host"))?;
    if authority.port_u16().is_none() {
        return Err(format!("`{s}` needs an explicit port"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!("`{s}` must not have a path or query"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false);
    if !loopback {
        return Err(format!(
            "`{s}` is not on loopback: a sidecar forwards only to its own pod (127.0.0.1, ::1 or localhost)"
        ));
    }
    Ok(UpstreamUrl { authority })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Whole TLS handshake.
    #[serde(deserialize_with = "de_duration")]
    pub tls_handshake: Duration,
    /// Reading one request's headers (slow-loris protection).
    #[serde(deserialize_with = "de_duration")]
    pub header_read: Duration,
    /// A connection with no bytes moving either way for this long is closed.
    #[serde(deserialize_with = "de_duration")]
    pub idle: Duration,
    /// HTTP/2: a response frame the client has not taken for this long (its
    /// window stays shut, or it does not read) ends the connection.
    #[serde(deserialize_with = "de_duration")]
    pub send: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub upstream_connect: Duration,
    /// Until the upstream's response headers arrive; the body then streams.
    #[serde(deserialize_with = "de_duration")]
    pub upstream_response: Duration,
    /// After SIGTERM: how long in-flight requests may take to finish.
    #[serde(deserialize_with = "de_duration")]
    pub shutdown_grace: Duration,
    /// A client connection older than this (±10% jitter) is closed
    /// gracefully; absent: no limit but its client certificate's notAfter.
    #[serde(deserialize_with = "de_opt_duration")]
    pub max_connection_age: Option<Duration>,
    /// How long a connection closed gracefully for its age or its client
    /// certificate's notAfter may take to finish its requests before it is
    /// cut; absent: `shutdown_grace`.
    #[serde(deserialize_with = "de_opt_duration")]
    pub max_connection_age_grace: Option<Duration>,
    /// A product whose contract promises a `latency` gets this many times it
    /// as its upstream response timeout (at most `upstream_response`); 0: off.
    pub latency_factor: f64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tls_handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(300),
            send: Duration::from_secs(30),
            upstream_connect: Duration::from_secs(1),
            upstream_response: Duration::from_secs(15),
            shutdown_grace: Duration::from_secs(20),
            max_connection_age: None,
            max_connection_age_grace: None,
            latency_factor: 4.0,
        }
    }
}

/// The shortest `timeouts.max_connection_age`: below it clients would spend
/// more on handshakes than on requests.
pub const MIN_CONNECTION_AGE: Duration = Duration::from_secs(1);

impl Timeouts {
    /// How long a connection closed at the end of its life (its age, its
    /// client certificate's notAfter) may take to finish its requests.
    pub fn close_grace(&self) -> Duration {
        self.max_connection_age_grace.unwrap_or(self.shutdown_grace)
    }

    /// The first field out of its range, and why.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if !(self.latency_factor >= 0.0 && self.latency_factor.is_finite()) {
            return Err((
                "timeouts.latency_factor",
                format!("{} is not a factor >= 0", self.latency_factor),
            ));
        }
        match self.max_connection_age {
            Some(age) if age < MIN_CONNECTION_AGE => Err((
                "timeouts.max_connection_age",
                format!(
                    "{} is below the minimum of {} (leave it out for no limit)",
                    humantime::format_duration(age),
                    humantime::format_duration(MIN_CONNECTION_AGE)
                ),
            )),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request header block accepted (HTTP/1.1 read buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Open client connections; past this the listener stops accepting until one closes.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per client connection.
    pub max_h2_streams: u32,
    /// HTTP/2 streams a client may open and reset before they were accepted
    /// (rapid reset, CVE-2023-44487); past it the connection gets GOAWAY
    /// ENHANCE_YOUR_CALM.
    pub max_h2_pending_resets: usize,
    /// HTTP/2 streams meshgate may reset for a client's protocol errors
    /// (streams past `max_h2_streams`, malformed headers) on one connection;
    /// past it the connection gets GOAWAY ENHANCE_YOUR_CALM.
    pub max_h2_error_resets: usize,
    /// HTTP/2 streams a client may reset (or otherwise give up) after they
    /// were accepted and before their response was out, on one connection;
    /// at this many, when they are also half or more of its streams, the
    /// connection is closed.
    pub max_h2_premature_resets: u32,
    /// Response bytes buffered per HTTP/2 stream for a client that does not
    /// read them.
    pub max_h2_send_buffer_bytes: usize,
    /// Requests being handled at once (until the response body has ended);
    /// past it, 503 at once.
    pub max_in_flight: usize,
    /// The body of an HTTP/2 request answered before forwarding: read and
    /// discarded up to these bounds, so that the client sees the answer.
    pub linger: crate::pipeline::linger::LingerConfig,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_connections: 10_000,
            max_h2_streams: 128,
            max_h2_pending_resets: 20,
            max_h2_error_resets: 1024,
            max_h2_premature_resets: 100,
            max_h2_send_buffer_bytes: 400 * 1024,
            max_in_flight: 10_000,
            linger: Default::default(),
        }
    }
}

impl Limits {
    /// The first field out of its range, and why.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_header_bytes < 8192 {
            return Err((
                "limits.max_header_bytes",
                format!("{} is below the minimum of 8192", self.max_header_bytes),
            ));
        }
        for (field, value) in [
            ("limits.max_in_flight", self.max_in_flight),
            ("limits.max_connections", self.max_connections),
            ("limits.max_h2_streams", self.max_h2_streams as usize),
            ("limits.max_h2_pending_resets", self.max_h2_pending_resets),
            ("limits.max_h2_error_resets", self.max_h2_error_resets),
            (
                "limits.max_h2_premature_resets",
                self.max_h2_premature_resets as usize,
            ),
            (
                "limits.max_h2_send_buffer_bytes",
                self.max_h2_send_buffer_bytes,
            ),
        ] {
            if value == 0 {
                return Err((field, "must be at least 1".into()));
            }
        }
        let errors = self.linger.check();
        if !errors.is_empty() {
            return Err(("limits.linger", errors.join("; ")));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `RUST_LOG`-style filter; the `RUST_LOG` environment variable wins when set.
    pub level: Option<String>,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

impl Config {
    /// Reads, parses and validates `path`. Relative paths inside the file are
    /// resolved against the file's own directory, made absolute.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = crate::base::paths::read_file(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::from_text(&text, &file, &crate::base::paths::dir_of(path))
    }

    /// Parses and validates configuration text that came from somewhere else
    /// than a file (`MESHGATE_CONFIG`); `name` is used in error messages and
    /// relative paths are resolved against `base` (an empty `base`: the
    /// working directory), and every path is made absolute so that the file
    /// watcher can match its events (they carry absolute paths).
    pub fn from_text(text: &str, name: &str, base: &Path) -> Result<Config, ConfigError> {
        let file = name.to_string();
        let base = &crate::base::paths::absolute_dir(base);
        let mut config = Config::parse(text, &file)?;
        config.tls.resolve(base);
        if let Some(p) = config.policy.as_mut() {
            p.resolve(base);
        }
        if let Some(u) = config.users.as_mut() {
            u.resolve(base);
        }
        config.audit.resolve(base);
        config.tracing.resolve(base);
        if let Some(f) = config.fields.as_mut() {
            f.resolve(base);
        }
        config.validate(&file)?;
        Ok(config)
    }

    /// Parses YAML text; `file` is only used in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        parse_yaml(text, file)
    }

    /// Checks that need more than one field or more than the type system.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |field, message: String| ConfigError::Invalid {
            file: file.to_string(),
            field,
            message,
        };
        if let Err((field, message)) = self.limits.check() {
            return Err(invalid(field, message));
        }
        if let Err((field, message)) = self.tracing.check() {
            return Err(invalid(field, message));
        }
        if let Err((field, message)) = self.timeouts.check() {
            return Err(invalid(field, message));
        }
        if self.workers == Some(0) {
            return Err(invalid("workers", "must be at least 1".into()));
        }
        if let Some(users) = &self.users {
            let errors = users.check();
            if !errors.is_empty() {
                return Err(invalid("users", errors.join("; ")));
            }
        }
        let errors = self.audit.check();
        if !errors.is_empty() {
            return Err(invalid("audit", errors.join("; ")));
        }
        if let Err(message) = self.metrics.check_buckets() {
            return Err(invalid("metrics.duration_buckets", message));
        }
        if self.metrics.consumer_label == crate::observe::metrics::ConsumerLabel::Service
            && self.metrics.max_consumers == 0
        {
            return Err(invalid(
                "metrics.max_consumers",
                "must be at least 1 with consumer_label: service".into(),
            ));
        }
        if let Some(quotas) = &self.quotas {
            if self.policy.is_none() {
                return Err(invalid(
                    "quotas",
                    "quotas need a policy section (products come from its contracts)".into(),
                ));
            }
            let errors = quotas.check();
            if !errors.is_empty() {
                return Err(invalid("quotas", errors.join("; ")));
            }
        }
        if self.listen == self.admin && self.listen.port() != 0 {
            return Err(invalid(
                "admin",
                format!("{} is also the data listener's address", self.admin),
            ));
        }
        for (field, p) in self.tls.files() {
            if let Err(e) = std::fs::metadata(p) {
                return Err(invalid(field, format!("{}: {e}", p.display())));
            }
        }
        if let Some(p) = &self.policy {
            let named = [("policy.schema", &p.schema)]
                .into_iter()
                .chain(p.entities.iter().map(|e| ("policy.entities", e)))
                .chain(p.sources.iter().map(|s| ("policy.sources", &s.path)))
                .chain(p.contracts.iter().map(|c| ("policy.contracts", &c.path)))
                .chain(p.shadow.iter().map(|c| ("policy.shadow", &c.path)));
            for (field, path) in named {
                if let Err(e) = std::fs::metadata(path) {
                    return Err(invalid(field, format!("{}: {e}", path.display())));
                }
            }
            if p.sources.is_empty() {
                return Err(invalid(
                    "policy.sources",
                    "name at least one policy file or directory".into(),
                ));
            }
        }
        Ok(())
    }

    /// Worker threads: the `workers` field, else `TOKIO_WORKER_THREADS`, else one per CPU.
    pub fn worker_threads(&self) -> Result<usize, String> {
        if let Some(n) = self.workers {
            return Ok(n);
        }
        match std::env::var("TOKIO_WORKER_THREADS") {
            Ok(v) => match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!(
                    "TOKIO_WORKER_THREADS=`{v}` is not a positive whole number"
                )),
            },
            Err(_) => Ok(std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "listen: 127.0.0.1:8443\nadmin: 127.0.0.1:9901\nupstream: http://127.0.0.1:8080\ntls:\n  cert: certs/server.pem\n  key: certs/server-key.pem\n  client_ca: certs/ca.pem\n";

    #[test]
    fn minimal_file_parses_with_defaults() {
        let c = Config::parse(MINIMAL, "m.yaml").expect("minimal config parses");
        assert_eq!(c.listen.port(), 8443);
        assert_eq!(c.upstream.authority.as_str(), "127.0.0.1:8080");
        assert_eq!(c.upstream_protocol, UpstreamProtocol::Http1);
        assert_eq!(c.timeouts.header_read, Duration::from_secs(10));
        assert_eq!(c.workers, None);
        assert_eq!(c.limits.max_h2_pending_resets, 20);
        assert_eq!(c.limits.max_h2_error_resets, 1024);
        assert_eq!(c.limits.max_h2_premature_resets, 100);
        assert_eq!(c.timeouts.send, Duration::from_secs(30));
        assert_eq!(c.limits.max_h2_send_buffer_bytes, 400 * 1024);
    }

    #[test]
    fn http2_abuse_limits_cannot_be_zero() {
        for field in [
            "max_h2_streams",
            "max_h2_pending_resets",
            "max_h2_error_resets",
            "max_h2_premature_resets",
            "max_h2_send_buffer_bytes",
        ] {
            let text = format!("{MINIMAL}limits:\n  {field}: 0\n");
            let config = Config::parse(&text, "m.yaml").expect("parses");
            let err = config.validate("m.yaml").unwrap_err().to_string();
            assert!(err.contains(&format!("limits.{field}")), "{err}");
            assert!(err.contains("must be at least 1"), "{err}");
        }
    }

    #[test]
    fn max_connection_age_is_off_by_default_and_at_least_a_second() {
        let c = Config::parse(MINIMAL, "m.yaml").expect("parses");
        assert_eq!(c.timeouts.max_connection_age, None);
        assert_eq!(c.timeouts.max_connection_age_grace, None);
        // The grace defaults to the shutdown's.
        assert_eq!(c.timeouts.close_grace(), Duration::from_secs(20));
        let text = format!(
            "{MINIMAL}timeouts:\n  max_connection_age: 1h\n  max_connection_age_grace: 30s\n"
        );
        let c = Config::parse(&text, "m.yaml").expect("parses");
        assert_eq!(c.timeouts.check(), Ok(()));
        assert_eq!(
            c.timeouts.max_connection_age,
            Some(Duration::from_secs(3600))
        );
        assert_eq!(c.timeouts.close_grace(), Duration::from_secs(30));
        let text = format!("{MINIMAL}timeouts:\n  max_connection_age: 500ms\n");
        let config = Config::parse(&text, "m.yaml").expect("parses");
        let err = config.validate("m.yaml").unwrap_err().to_string();
        assert!(
            err.contains("timeouts.max_connection_age: 500ms is below the minimum of 1s"),
            "{err}"
        );
        for (field, value, says) in [
            (
                "max_connection_age",
                "0s",
                "a timeout of zero is not allowed",
            ),
            (
                "max_connection_age_grace",
                "soon",
                "`soon` is not a duration",
            ),
            // Added to the clock, this panicked the connection's task.
            (
                "idle",
                "500000000000years",
                "above the longest duration accepted, 100 years",
            ),
            (
                "send",
                "101y",
                "above the longest duration accepted, 100 years",
            ),
        ] {
            let text = format!("{MINIMAL}timeouts:\n  {field}: {value}\n");
            let err = Config::parse(&text, "m.yaml").unwrap_err().to_string();
            assert!(err.contains(&format!("timeouts.{field}")), "{err}");
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn linger_has_bounded_defaults_and_refuses_more() {
        let c = Config::parse(MINIMAL, "m.yaml").expect("parses");
        assert_eq!(c.limits.linger.bytes, 256 * 1024);
        assert_eq!(c.limits.linger.time, Duration::from_secs(1));
        let off = format!("{MINIMAL}limits:\n  linger: {{ bytes: 0 }}\n");
        let c = Config::parse(&off, "m.yaml").expect("parses");
        assert_eq!(c.limits.linger.bytes, 0);
        assert_eq!(c.limits.linger.time, Duration::from_secs(1));
        // `0` for the time turns lingering off, as the README says.
        for zero in ["0", "0s"] {
            let off = format!("{MINIMAL}limits:\n  linger: {{ time: {zero} }}\n");
            let c = Config::parse(&off, "m.yaml").expect("parses");
            assert_eq!(c.limits.linger.time, Duration::ZERO);
            assert_eq!(c.limits.linger.check(), Vec::<String>::new());
        }
        for (line, says) in [
            (
                "{ bytes: 16777217 }",
                "bytes: 16777217 is above the maximum",
            ),
            ("{ time: 61s }", "time: 61s is above the maximum of 60s"),
        ] {
            let text = format!("{MINIMAL}limits:\n  linger: {line}\n");
            let config = Config::parse(&text, "m.yaml").expect("parses");
            let err = config.validate("m.yaml").unwrap_err().to_string();
            assert!(err.contains("limits.linger"), "{err}");
            assert!(err.contains(says), "{err}");
        }
        let text = format!("{MINIMAL}limits:\n  linger:\n    byte: 1\n");
        let err = Config::parse(&text, "m.yaml").unwrap_err().to_string();
        assert!(err.starts_with("m.yaml:10:"), "{err}");
        assert!(err.contains("limits.linger.byte"), "{err}");
    }

    #[test]
    fn unknown_field_is_named_with_its_path_and_line() {
        let text = MINIMAL.replace("  key:", "  kee:");
        let err = Config::parse(&text, "m.yaml").unwrap_err().to_string();
        assert!(err.starts_with("m.yaml:6:"), "{err}");
        assert!(err.contains("tls.kee"), "{err}");
        assert!(err.contains("unknown field `kee`"), "{err}");
    }

    /// Found by the `config` fuzz target (fuzz/regressions/config/):
    /// an empty key left the error's field empty (`m.yaml:1:1: : unknown…`).
    #[test]
    fn an_empty_key_is_named_as_the_document() {
        for text in ["! : \n", "\"\": 1\n"] {
            let err = Config::parse(text, "m.yaml").unwrap_err();
            let ConfigError::Syntax { field, .. } = &err else {
                panic!("{err}");
            };
            assert_eq!(field, "(document)");
            assert!(
                err.to_string()
                    .starts_with("m.yaml:1:1: (document): unknown field ``"),
                "{err}"
            );
        }
    }

    #[test]
    fn bad_duration_names_the_field() {
        let text = format!("{MINIMAL}timeouts:\n  idle: forever\n");
        let err = Config::parse(&text, "m.yaml").unwrap_err().to_string();
        assert!(err.contains("timeouts.idle"), "{err}");
        assert!(err.contains("`forever` is not a duration"), "{err}");
    }

    #[test]
    fn upstream_must_be_loopback_http_with_port() {
        assert!(parse_upstream("http://127.0.0.1:8080").is_ok());
        assert!(parse_upstream("http://[::1]:8080/").is_ok());
        assert!(parse_upstream("http://localhost:1").is_ok());
        for bad in [
            "https://127.0.0.1:8080",
            "http://10.0.0.1:8080",
            "http://example.com:80",
            "http://127.0.0.1",
            "http://127.0.0.1:8080/api",
            "127.0.0.1:8080",
        ] {
            assert!(parse_upstream(bad).is_err(), "{bad} accepted");
        }
    }
}

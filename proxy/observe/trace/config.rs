//! The `tracing` section: where spans go (`tracing.otlp`), how they are
//! sampled and how much the export queue holds. Absent: no spans, and the
//! request path pays one branch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// OpenTelemetry spans over OTLP; absent: off.
    #[serde(default)]
    pub otlp: Option<OtlpConfig>,
}

/// OTLP's two transports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    /// OTLP/gRPC (`opentelemetry.proto.collector.trace.v1.TraceService/Export`).
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with binary protobuf bodies (`POST …/v1/traces`).
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector: `http://host:4318/v1/traces` (http/protobuf: the
    /// whole URL, path included) or `http://host:4317` (grpc); `https://`
    /// is verified against the system's roots and `ca`.
    pub endpoint: String,
    /// PEM: more CA certificates trusted for an `https://` endpoint (a
    /// mesh's own collector); relative to the configuration file.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub protocol: Protocol,
    /// The resource's `service.name`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// More resource attributes (`deployment.environment.name`, `k8s.pod.name`, …).
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
    /// Headers (HTTP) or metadata (gRPC) sent with every export, e.g. a
    /// collector's API key.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// One export's time limit (retries included); its spans are dropped
    /// and counted after it.
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::base::yaml::de_duration"
    )]
    pub timeout: Duration,
    #[serde(default)]
    pub sampler: SamplerConfig,
    #[serde(default)]
    pub queue: QueueConfig,
}

fn default_service_name() -> String {
    "meshgate".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Parent-based ratio sampling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplerConfig {
    /// The share of new traces (no valid incoming `traceparent`) sampled,
    /// 0 to 1, decided on the trace id (as every ratio sampler of the trace
    /// decides alike).
    pub ratio: f64,
    /// A continued trace follows its caller's sampled flag (the default);
    /// `false`: the ratio decides every trace.
    pub parent_based: bool,
    /// Requests per second (per process, bursts of as many) sampled on
    /// their caller's word alone: continued traces whose caller asked for
    /// it (its sampled flag; not parent-based, the ratio on the trace id it
    /// chose) that meshgate's own draw at `ratio` would not have sampled.
    /// Past it the own draw decides, and
    /// `meshgate_trace_parent_rate_limited_total` counts them. 0: the
    /// caller never raises sampling above the ratio.
    pub parent_rate: u32,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            ratio: 1.0,
            parent_based: true,
            parent_rate: DEFAULT_PARENT_RATE,
        }
    }
}

/// The bounded queue between the request path and the exporter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Spans waiting for export (and at most 1 KiB each on average); past
    /// it, new ones are dropped and counted.
    pub max_spans: usize,
    /// Spans sent in one export.
    pub max_batch: usize,
    /// How long a batch gathers after its first span before it is sent.
    #[serde(deserialize_with = "crate::base::yaml::de_duration")]
    pub delay: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_spans: 4096,
            max_batch: 512,
            delay: Duration::from_secs(1),
        }
    }
}

/// `sampler.parent_rate`'s default, and its largest.
const DEFAULT_PARENT_RATE: u32 = 100;
const MAX_PARENT_RATE: u32 = 1_000_000;

/// Longest `timeout` and `queue.delay` (zero is refused as every duration is).
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Largest `queue.max_spans`: the queue holds at most 1 KiB per span
/// (`export::QUEUE_BYTES_PER_SPAN`), so 1 GiB.
const MAX_QUEUE: usize = 1 << 20;

impl TracingConfig {
    /// Makes `otlp.ca` absolute, against the configuration's directory.
    pub fn resolve(&mut self, base: &Path) {
        if let Some(ca) = self.otlp.as_mut().and_then(|o| o.ca.as_mut()) {
            crate::base::paths::resolve(base, ca);
        }
    }

    /// The first field out of its range, and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let Some(o) = &self.otlp else {
            return Ok(());
        };
        check_endpoint(&o.endpoint, o.protocol).map_err(|m| ("tracing.otlp.endpoint", m))?;
        if let Some(ca) = &o.ca {
            if !o.endpoint.starts_with("https:") {
                return Err(("tracing.otlp.ca", "only used with an https endpoint".into()));
            }
            if let Err(e) = std::fs::metadata(ca) {
                return Err(("tracing.otlp.ca", format!("{}: {e}", ca.display())));
            }
        }
        if o.service_name.trim().is_empty() {
            return Err(("tracing.otlp.service_name", "must not be empty".into()));
        }
        if let Some(k) = o.resource.keys().find(|k| k.trim().is_empty()) {
            return Err((
                "tracing.otlp.resource",
                format!("`{k}` is not an attribute name"),
            ));
        }
        for (k, v) in &o.headers {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err((
                    "tracing.otlp.headers",
                    format!("`{k}` is not a header name"),
                ));
            }
            if http::HeaderValue::from_str(v).is_err() {
                return Err((
                    "tracing.otlp.headers",
                    format!("the value of `{k}` is not a header value"),
                ));
            }
        }
        if o.timeout > MAX_WAIT {
            return Err((
                "tracing.otlp.timeout",
                format!("{:?} is above the maximum of 60s", o.timeout),
            ));
        }
        let r = o.sampler.ratio;
        if !(0.0..=1.0).contains(&r) {
            return Err((
                "tracing.otlp.sampler.ratio",
                format!("{r} is not a ratio from 0 to 1"),
            ));
        }
        if o.sampler.parent_rate > MAX_PARENT_RATE {
            return Err((
                "tracing.otlp.sampler.parent_rate",
                format!(
                    "{} is above the maximum of {MAX_PARENT_RATE}",
                    o.sampler.parent_rate
                ),
            ));
        }
        let q = &o.queue;
        // A request makes two spans, queued together.
        if q.max_spans < 2 || q.max_spans > MAX_QUEUE {
            return Err((
                "tracing.otlp.queue.max_spans",
                format!(
                    "{} is outside 2 (a request's two spans) to {MAX_QUEUE}",
                    q.max_spans
                ),
            ));
        }
        if q.max_batch == 0 || q.max_batch > q.max_spans {
            return Err((
                "tracing.otlp.queue.max_batch",
                format!(
                    "{} is outside 1 to queue.max_spans ({})",
                    q.max_batch, q.max_spans
                ),
            ));
        }
        if q.delay > MAX_WAIT {
            return Err((
                "tracing.otlp.queue.delay",
                format!("{:?} is above the maximum of 60s", q.delay),
            ));
        }
        Ok(())
    }
}

/// An absolute `http://` or `https://` URL with a host; for gRPC, no path.
fn check_endpoint(endpoint: &str, protocol: Protocol) -> Result<(), String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("`{endpoint}` is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!("`{endpoint}`: the scheme must be http or https"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{endpoint}` has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("`{endpoint}` must not have a query"));
    }
    match protocol {
        Protocol::Grpc if !matches!(uri.path(), "" | "/") => Err(format!(
            "`{endpoint}`: a grpc endpoint has no path (the service's path is fixed)"
        )),
        Protocol::HttpProtobuf if matches!(uri.path(), "" | "/") => Err(format!(
            "`{endpoint}`: name the whole URL for http/protobuf, path included (usually …/v1/traces)"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<(), (&'static str, String)> {
        let c: TracingConfig = serde_yaml_ng::from_str(yaml).expect("parses");
        c.check()
    }

    #[test]
    fn defaults_are_parent_based_all_over_http_protobuf() {
        let c: TracingConfig =
            serde_yaml_ng::from_str("otlp: {endpoint: 'http://127.0.0.1:4318/v1/traces'}")
                .expect("parses");
        let o = c.otlp.as_ref().expect("otlp");
        assert_eq!(o.protocol, Protocol::HttpProtobuf);
        assert_eq!(o.service_name, "meshgate");
        assert_eq!(o.sampler.ratio, 1.0);
        assert!(o.sampler.parent_based);
        assert_eq!(o.sampler.parent_rate, 100);
        assert!(c.check().is_ok());
        assert!(TracingConfig::default().check().is_ok());
    }

    #[test]
    fn each_bad_field_is_named() {
        let base = "otlp:\n  endpoint: 'http://127.0.0.1:4318/v1/traces'\n";
        for (extra, field, says) in [
            ("", "", ""),
            (
                "  sampler: {ratio: 1.5}\n",
                "tracing.otlp.sampler.ratio",
                "1.5 is not a ratio",
            ),
            (
                "  sampler: {ratio: -0.1}\n",
                "tracing.otlp.sampler.ratio",
                "not a ratio",
            ),
            (
                "  sampler: {parent_rate: 1000001}\n",
                "tracing.otlp.sampler.parent_rate",
                "1000001 is above the maximum of 1000000",
            ),
            (
                "  queue: {max_spans: 1}\n",
                "tracing.otlp.queue.max_spans",
                "1 is outside 2 (a request's two spans) to",
            ),
            (
                "  queue: {max_batch: 9000}\n",
                "tracing.otlp.queue.max_batch",
                "9000 is outside",
            ),
            (
                "  queue: {delay: 61s}\n",
                "tracing.otlp.queue.delay",
                "61s is above the maximum of 60s",
            ),
            (
                "  timeout: 2m\n",
                "tracing.otlp.timeout",
                "120s is above the maximum of 60s",
            ),
            (
                "  service_name: ' '\n",
                "tracing.otlp.service_name",
                "must not be empty",
            ),
            (
                "  headers: {'a b': x}\n",
                "tracing.otlp.headers",
                "`a b` is not a header name",
            ),
            (
                "  resource: {'': x}\n",
                "tracing.otlp.resource",
                "is not an attribute name",
            ),
        ] {
            let got = check(&format!("{base}{extra}"));
            if field.is_empty() {
                assert!(got.is_ok(), "{got:?}");
                continue;
            }
            let (f, m) = got.expect_err(extra);
            assert_eq!(f, field);
            assert!(m.contains(says), "{m}");
        }
        for (endpoint, protocol, says) in [
            (
                "127.0.0.1:4318",
                "http/protobuf",
                "the scheme must be http or https",
            ),
            ("ftp://c:1/v1/traces", "http/protobuf", "scheme must be"),
            ("http://c:4318", "http/protobuf", "path included"),
            (
                "http://c:4317/v1/traces",
                "grpc",
                "a grpc endpoint has no path",
            ),
            (
                "http://c:4318/v1/traces?x=1",
                "http/protobuf",
                "must not have a query",
            ),
        ] {
            let yaml = format!("otlp: {{endpoint: '{endpoint}', protocol: {protocol}}}");
            let (f, m) = check(&yaml).expect_err(endpoint);
            assert_eq!(f, "tracing.otlp.endpoint");
            assert!(m.contains(says), "{endpoint}: {m}");
        }
        assert!(check("otlp: {endpoint: 'https://c:4317', protocol: grpc}").is_ok());
        let (f, m) = check("otlp: {endpoint: 'http://c:4317', protocol: grpc, ca: /x.pem}")
            .expect_err("ca without https");
        assert_eq!(
            (f, m.as_str()),
            ("tracing.otlp.ca", "only used with an https endpoint")
        );
        let (f, m) = check("otlp: {endpoint: 'https://c:4317', protocol: grpc, ca: /no/such.pem}")
            .expect_err("missing ca");
        assert_eq!(f, "tracing.otlp.ca");
        assert!(m.starts_with("/no/such.pem: "), "{m}");
        let err = serde_yaml_ng::from_str::<TracingConfig>(
            "otlp: {endpoint: 'http://c:4317', protocol: thrift}",
        )
        .expect_err("unknown protocol");
        assert!(err.to_string().contains("grpc"), "{err}");
    }
}

//! The span queue and its exporter: the request path hands a finished span
//! to a bounded queue without waiting (a full queue drops it, counted); one
//! task gathers batches (`queue.max_batch` spans, or what came within
//! `queue.delay` of a batch's first span) and sends them with the official
//! OTLP exporter, each export bounded by `timeout`. A slow or unreachable
//! collector therefore fills the queue and loses spans, never time on a
//! request.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::config::{OtlpConfig, Protocol, QueueConfig};
use crate::observe::metrics::TraceMetrics;

enum Item {
    Span(Box<SpanData>),
    /// Export everything queued before this, then answer.
    Flush(oneshot::Sender<()>),
}

/// The request path's end of the queue.
pub(super) struct Queue {
    tx: mpsc::Sender<Item>,
    metrics: TraceMetrics,
}

impl Queue {
    /// Queues a finished span, or counts it dropped: never waits.
    pub(super) fn push(&self, span: SpanData) {
        if self.tx.try_send(Item::Span(Box::new(span))).is_err() {
            self.metrics.dropped_queue_full.inc();
        }
    }

    /// Exports what is queued, waiting at most `within`.
    pub(super) async fn flush(&self, within: Duration) -> bool {
        let (done, exported) = oneshot::channel();
        let flushed = async {
            self.tx.send(Item::Flush(done)).await.ok()?;
            exported.await.ok()
        };
        matches!(tokio::time::timeout(within, flushed).await, Ok(Some(())))
    }
}

/// Builds the exporter for `config` and spawns the task that feeds it.
pub(super) fn spawn(config: &OtlpConfig, metrics: TraceMetrics) -> Result<Queue, String> {
    let mut exporter = exporter(config).map_err(|e| format!("tracing.otlp: {e}"))?;
    exporter.set_resource(&resource(config));
    let (tx, rx) = mpsc::channel(config.queue.max_spans);
    tokio::spawn(run(
        exporter,
        rx,
        config.queue.clone(),
        config.timeout,
        metrics.clone(),
    ));
    Ok(Queue { tx, metrics })
}

fn exporter(config: &OtlpConfig) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let headers: HashMap<String, String> = config.headers.clone().into_iter().collect();
    let built = match config.protocol {
        Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(config.endpoint.clone())
            .with_timeout(config.timeout)
            .with_headers(headers)
            .with_http_client(http_client(config.timeout, config.ca.as_deref())?)
            .build(),
        Protocol::Grpc => {
            let mut map = http::HeaderMap::new();
            for (k, v) in &headers {
                let name = http::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|e| format!("headers: `{k}`: {e}"))?;
                let value =
                    http::HeaderValue::from_str(v).map_err(|e| format!("headers: `{k}`: {e}"))?;
                map.insert(name, value);
            }
            let metadata =
                opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(map);
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_protocol(opentelemetry_otlp::Protocol::Grpc)
                .with_endpoint(config.endpoint.clone())
                .with_timeout(config.timeout)
                .with_metadata(metadata);
            if config.endpoint.starts_with("https:") {
                use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
                let mut tls = ClientTlsConfig::new().with_native_roots();
                if let Some(ca) = &config.ca {
                    let pem =
                        std::fs::read(ca).map_err(|e| format!("ca: {}: {e}", ca.display()))?;
                    tls = tls.ca_certificate(Certificate::from_pem(pem));
                }
                builder = builder.with_tls_config(tls);
            }
            builder.build()
        }
    };
    built.map_err(|e| e.to_string())
}

/// OTLP/HTTP over hyper with rustls (aws-lc-rs, the system's roots and
/// `ca`): the crypto provider of the rest of meshgate.
fn http_client(
    timeout: Duration,
    ca: Option<&Path>,
) -> Result<opentelemetry_http::hyper::HyperClient<HttpsConnector>, String> {
    let roots = crate::base::fetch::roots(ca).map_err(|e| format!("ca: {e}"))?;
    let tls = crate::base::fetch::client_config(roots)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(opentelemetry_http::hyper::HyperClient::new(
        connector, timeout, None,
    ))
}

type HttpsConnector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// `service.name` and the configured attributes, over what the SDK detects
/// (`telemetry.sdk.*`, `OTEL_RESOURCE_ATTRIBUTES`).
fn resource(config: &OtlpConfig) -> Resource {
    let mut builder = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    builder = builder.with_attributes(
        config
            .resource
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    );
    builder
        .with_service_name(config.service_name.clone())
        .build()
}

/// Gathers batches and exports them until every sender is gone.
async fn run(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<Item>,
    queue: QueueConfig,
    timeout: Duration,
    metrics: TraceMetrics,
) {
    let mut items = Vec::with_capacity(queue.max_batch);
    let mut batch = Vec::with_capacity(queue.max_batch);
    let mut flushes = Vec::new();
    let mut failing = false;
    loop {
        if rx.recv_many(&mut items, queue.max_batch).await == 0 {
            return;
        }
        let deadline = Instant::now() + queue.delay;
        loop {
            for item in items.drain(..) {
                match item {
                    Item::Span(span) => batch.push(*span),
                    Item::Flush(done) => flushes.push(done),
                }
            }
            let room = queue.max_batch - batch.len();
            if !flushes.is_empty() || room == 0 {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut items, room)).await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        if !batch.is_empty() {
            let spans = std::mem::replace(&mut batch, Vec::with_capacity(queue.max_batch));
            failing = export(&exporter, spans, timeout, &metrics, failing).await;
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Sends one batch; counts it exported or dropped. Returns whether the
/// collector is failing, so that a dead collector is logged once, and its
/// recovery too, rather than once per batch.
async fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    spans: Vec<SpanData>,
    timeout: Duration,
    metrics: &TraceMetrics,
    failing: bool,
) -> bool {
    let n = spans.len() as u64;
    let error = match tokio::time::timeout(timeout, exporter.export(spans)).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {timeout:?}")),
    };
    match error {
        None => {
            metrics.exported.inc_by(n);
            if failing {
                tracing::info!("span export recovered");
            }
            false
        }
        Some(error) => {
            metrics.dropped_export_failed.inc_by(n);
            if !failing {
                tracing::warn!(%error, spans = n, "span export failed; spans are dropped (meshgate_trace_spans_dropped_total) until the collector answers");
            }
            true
        }
    }
}

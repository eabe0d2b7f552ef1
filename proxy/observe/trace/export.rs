//! The span queue and its exporter: the request path hands a finished span
//! to a bounded queue without waiting (a full queue drops it, counted); one
//! task gathers batches (`queue.max_batch` spans, or what came within
//! `queue.delay` of a batch's first span) and sends them (`send.rs`), each
//! export bounded by `timeout`. A request's spans arrive encoded (`wire.rs`),
//! together; an export is one copy of them behind the resource. A slow or unreachable
//! collector therefore fills the queue and loses spans, never time on a
//! request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::config::{OtlpConfig, QueueConfig};
use super::send::Sender;
use super::wire::Envelope;
use crate::observe::metrics::TraceMetrics;

enum Item {
    /// A request's spans (one or two), encoded as `ScopeSpans.spans`.
    Spans(Vec<u8>, usize),
    /// Export everything queued before this, then answer.
    Flush(oneshot::Sender<()>),
}

/// The request path's end of the queue.
pub(super) struct Queue {
    tx: mpsc::Sender<Item>,
    /// Spans queued, bounded by `queue.max_spans`.
    queued: Arc<AtomicUsize>,
    max_spans: usize,
    metrics: TraceMetrics,
}

impl Queue {
    /// Queues a request's `n` encoded spans, or counts them dropped: never
    /// waits.
    pub(super) fn push(&self, spans: Vec<u8>, n: usize) {
        if self.queued.fetch_add(n, Ordering::Relaxed) + n > self.max_spans {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.metrics.dropped_queue_full.inc_by(n as u64);
            return;
        }
        if self.tx.try_send(Item::Spans(spans, n)).is_err() {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.metrics.dropped_queue_full.inc_by(n as u64);
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

/// Builds the transport for `config` and spawns the task that feeds it.
pub(super) fn spawn(config: &OtlpConfig, metrics: TraceMetrics) -> Result<Queue, String> {
    let sender = Sender::new(config).map_err(|e| format!("tracing.otlp: {e}"))?;
    let envelope = Envelope::new(&resource(config), "meshgate", env!("CARGO_PKG_VERSION"));
    let max_spans = config.queue.max_spans;
    // A request's spans are one item: the atomic count bounds the spans.
    let (tx, rx) = mpsc::channel(max_spans);
    let queued = Arc::new(AtomicUsize::new(0));
    let exporter = Exporter {
        sender,
        envelope,
        queued: queued.clone(),
        timeout: config.timeout,
        metrics: metrics.clone(),
        failing: false,
    };
    tokio::spawn(exporter.run(rx, config.queue.clone()));
    Ok(Queue {
        tx,
        queued,
        max_spans,
        metrics,
    })
}

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

/// The task's side: gathers batches and sends them.
struct Exporter {
    sender: Sender,
    envelope: Envelope,
    queued: Arc<AtomicUsize>,
    timeout: Duration,
    metrics: TraceMetrics,
    /// Exports are failing: logged once, and the recovery too.
    failing: bool,
}

impl Exporter {
    /// Gathers batches and exports them until every sender is gone.
    async fn run(mut self, mut rx: mpsc::Receiver<Item>, queue: QueueConfig) {
        let mut items = Vec::with_capacity(queue.max_batch);
        let room = self.envelope.room();
        let mut batch: Vec<u8> = vec![0; room];
        let mut flushes = Vec::new();
        loop {
            // A request's spans travel together: a batch takes items of at
            // most two spans while they fit (one at least).
            if rx.recv_many(&mut items, (queue.max_batch / 2).max(1)).await == 0 {
                return;
            }
            let deadline = Instant::now() + queue.delay;
            let mut spans = 0;
            loop {
                for item in items.drain(..) {
                    match item {
                        Item::Spans(bytes, n) => {
                            self.queued.fetch_sub(n, Ordering::Relaxed);
                            batch.extend_from_slice(&bytes);
                            spans += n;
                        }
                        Item::Flush(done) => flushes.push(done),
                    }
                }
                let fits = queue.max_batch.saturating_sub(spans) / 2;
                if !flushes.is_empty() || fits == 0 {
                    break;
                }
                match tokio::time::timeout_at(deadline, rx.recv_many(&mut items, fits)).await {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
            if spans > 0 {
                let full = std::mem::replace(&mut batch, vec![0; room]);
                let body = self.envelope.request(full);
                self.export(body, spans as u64).await;
            }
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
    }

    /// Sends one batch; counts it exported or dropped. A dead collector is
    /// logged once, and its recovery too, rather than once per batch.
    async fn export(&mut self, body: bytes::Bytes, n: u64) {
        let error = match tokio::time::timeout(self.timeout, self.sender.send(body)).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("no answer within {:?}", self.timeout)),
        };
        match error {
            None => {
                self.metrics.exported.inc_by(n);
                if self.failing {
                    tracing::info!("span export recovered");
                }
                self.failing = false;
            }
            Some(error) => {
                self.metrics.dropped_export_failed.inc_by(n);
                if !self.failing {
                    tracing::warn!(%error, spans = n, "span export failed; spans are dropped (meshgate_trace_spans_dropped_total) until the collector answers");
                }
                self.failing = true;
            }
        }
    }
}

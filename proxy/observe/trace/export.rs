//! The span queue and its exporter: the request path hands a finished span
//! to a bounded queue without waiting (a full queue drops it, counted); one
//! task gathers batches (`queue.max_batch` spans, or what came within
//! `queue.delay` of a batch's first span) and sends them (`send.rs`), each
//! export bounded by `timeout`. A request's spans arrive encoded (`wire.rs`),
//! together; an export is one copy of them behind the resource. A slow or unreachable
//! collector therefore fills the queue and loses spans, never time on a
//! request.
//!
//! Both ends are bounded by bytes as well as spans: the queue holds at most
//! [`QUEUE_BYTES_PER_SPAN`] per span of `queue.max_spans` (spans are about
//! half of it, a request's two spans at most `span::MAX_REQUEST_SPANS`),
//! and a batch is closed before its export request would pass
//! [`MAX_EXPORT_BYTES`], the OTel Collector's default OTLP/gRPC limit.

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

/// What the queue holds, in bytes, per span of `queue.max_spans`: a span
/// is about 0.5 KiB encoded (a request's server span about 0.9 KiB, its
/// client span 0.3), one that carries long request values up to about
/// 10 KiB (`span::MAX_REQUEST_SPANS`); the queue takes no more in all.
pub(super) const QUEUE_BYTES_PER_SPAN: usize = 1024;

/// The largest export request: the OpenTelemetry Collector's OTLP/gRPC
/// receiver refuses a message over 4 MiB by default
/// (`max_recv_msg_size_mib`), and with it every span of the batch.
pub(super) const MAX_EXPORT_BYTES: usize = 4 << 20;

// A request's spans, at most this, always fit a batch well within it.
const _: () = assert!(super::span::MAX_REQUEST_SPANS < MAX_EXPORT_BYTES / 64);

pub(super) enum Item {
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
    /// Their bytes, bounded by `max_spans` × [`QUEUE_BYTES_PER_SPAN`].
    queued_bytes: Arc<AtomicUsize>,
    /// Spans taken off the queue, not yet exported nor counted dropped.
    sending: Arc<AtomicUsize>,
    metrics: TraceMetrics,
}

impl Queue {
    /// Queues a request's `n` encoded spans, or counts them dropped: never
    /// waits.
    pub(super) fn push(&self, spans: Vec<u8>, n: usize) {
        let len = spans.len();
        // Never less than one request's spans at their largest (a small
        // `max_spans` must not turn away every request with long values).
        let max_bytes = (self.max_spans.saturating_mul(QUEUE_BYTES_PER_SPAN))
            .max(super::span::MAX_REQUEST_SPANS);
        let dropped = || {
            self.metrics.dropped_queue_full.inc_by(n as u64);
        };
        if self.queued.fetch_add(n, Ordering::Relaxed) + n > self.max_spans {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            return dropped();
        }
        if self.queued_bytes.fetch_add(len, Ordering::Relaxed) + len > max_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.queued.fetch_sub(n, Ordering::Relaxed);
            return dropped();
        }
        if self.tx.try_send(Item::Spans(spans, n)).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.queued.fetch_sub(n, Ordering::Relaxed);
            dropped();
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

    /// Counts the spans still queued or being exported as dropped at
    /// shutdown (`reason="shutdown"`), and returns how many: called when
    /// [`Queue::flush`] did not finish and the process is exiting.
    pub(super) fn abandon(&self) -> u64 {
        let left = self.queued.load(Ordering::Relaxed) + self.sending.swap(0, Ordering::Relaxed);
        self.metrics.dropped_shutdown.inc_by(left as u64);
        left as u64
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
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let sending = Arc::new(AtomicUsize::new(0));
    let exporter = Exporter {
        sender,
        envelope,
        queued: queued.clone(),
        queued_bytes: queued_bytes.clone(),
        sending: sending.clone(),
        timeout: config.timeout,
        metrics: metrics.clone(),
        failing: false,
    };
    tokio::spawn(exporter.run(rx, config.queue.clone()));
    Ok(Queue {
        tx,
        queued,
        max_spans,
        queued_bytes,
        sending,
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
    queued_bytes: Arc<AtomicUsize>,
    /// Spans taken from the queue into the batch being gathered or
    /// exported (for [`Queue::abandon`]).
    sending: Arc<AtomicUsize>,
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
        let budget = batch_budget(room);
        let mut batch: Vec<u8> = vec![0; room];
        let mut flushes = Vec::new();
        loop {
            // A request's spans travel together: a batch takes items of at
            // most two spans while they fit (one at least). Items a full
            // batch left over start the next one.
            if items.is_empty() && rx.recv_many(&mut items, (queue.max_batch / 2).max(1)).await == 0
            {
                return;
            }
            let deadline = Instant::now() + queue.delay;
            let (mut spans, mut bytes) = (0, 0);
            loop {
                let take = fitting(&items, bytes, budget);
                let full = take < items.len();
                for item in items.drain(..take) {
                    match item {
                        Item::Spans(encoded, n) => {
                            self.queued.fetch_sub(n, Ordering::Relaxed);
                            self.queued_bytes
                                .fetch_sub(encoded.len(), Ordering::Relaxed);
                            self.sending.fetch_add(n, Ordering::Relaxed);
                            batch.extend_from_slice(&encoded);
                            spans += n;
                            bytes += encoded.len();
                        }
                        Item::Flush(done) => flushes.push(done),
                    }
                }
                let fits = queue.max_batch.saturating_sub(spans) / 2;
                if full || !flushes.is_empty() || fits == 0 {
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
        self.sending.store(0, Ordering::Relaxed);
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

/// The bytes of spans a batch may hold: its export request (the spans, and
/// the envelope written around them, at most twice its `room`) stays
/// within [`MAX_EXPORT_BYTES`], with a margin for the transport's framing.
fn batch_budget(room: usize) -> usize {
    MAX_EXPORT_BYTES.saturating_sub(2 * room + 1024)
}

/// How many of `items`, from the first, a batch holding `bytes` of spans
/// takes within `budget`: up to the first that would pass it, and always
/// the first into an empty batch (a request's spans, at most
/// `span::MAX_REQUEST_SPANS`, are never split).
fn fitting(items: &[Item], mut bytes: usize, budget: usize) -> usize {
    for (i, item) in items.iter().enumerate() {
        if let Item::Spans(encoded, _) = item {
            if bytes > 0 && bytes + encoded.len() > budget {
                return i;
            }
            bytes += encoded.len();
        }
    }
    items.len()
}

#[cfg(test)]
impl Queue {
    /// A queue nothing exports: what is pushed waits in the receiver.
    pub(super) fn unexported(max_spans: usize) -> (Queue, mpsc::Receiver<Item>) {
        let (tx, rx) = mpsc::channel(max_spans);
        let metrics = TraceMetrics {
            exported: Default::default(),
            dropped_queue_full: Default::default(),
            dropped_export_failed: Default::default(),
            dropped_shutdown: Default::default(),
            parent_rate_limited: Default::default(),
        };
        let queue = Queue {
            tx,
            queued: Arc::default(),
            max_spans,
            queued_bytes: Arc::default(),
            sending: Arc::default(),
            metrics,
        };
        (queue, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(len: usize) -> Item {
        Item::Spans(vec![7; len], 2)
    }

    #[test]
    fn a_batch_is_closed_before_its_export_passes_4_mib() {
        let budget = batch_budget(300);
        // Requests of the largest spans: a batch of 512 of them would be
        // about 6 MiB; it is cut into requests within the limit.
        let big = super::super::span::MAX_REQUEST_SPANS;
        let mut items: Vec<Item> = (0..512).map(|_| spans(big)).collect();
        let mut batches = Vec::new();
        while !items.is_empty() {
            let take = fitting(&items, 0, budget);
            assert!(take > 0);
            let bytes: usize = items
                .drain(..take)
                .map(|i| match i {
                    Item::Spans(b, _) => b.len(),
                    Item::Flush(_) => 0,
                })
                .sum();
            assert!(
                bytes <= budget && 2 * 300 + bytes < MAX_EXPORT_BYTES,
                "{bytes}"
            );
            batches.push(bytes);
        }
        assert_eq!(batches.len(), 2, "{batches:?}");
        // A batch already holding spans stops before the one that passes;
        // an empty batch takes even an oversized one.
        assert_eq!(fitting(&[spans(10), spans(budget)], 0, budget), 1);
        assert_eq!(fitting(&[spans(budget + 1)], 0, budget), 1);
        assert_eq!(fitting(&[spans(10)], budget - 5, budget), 0);
    }

    #[test]
    fn the_queue_holds_a_kib_per_span_at_most() {
        let (queue, mut rx) = Queue::unexported(16);
        // Two requests of large spans fill 16 KiB; the third is dropped.
        queue.push(vec![0; 7000], 2);
        queue.push(vec![0; 7000], 2);
        queue.push(vec![0; 7000], 2);
        assert_eq!(queue.metrics.dropped_queue_full.get(), 2);
        assert_eq!(queue.queued_bytes.load(Ordering::Relaxed), 14000);
        // Small ones fit up to the span bound.
        for _ in 0..7 {
            queue.push(vec![0; 100], 2);
        }
        assert_eq!(queue.metrics.dropped_queue_full.get(), 4);
        assert_eq!(queue.queued.load(Ordering::Relaxed), 16);
        let mut held = 0;
        while let Ok(Item::Spans(b, _)) = rx.try_recv() {
            held += b.len();
        }
        assert_eq!(held, 14600);
        assert_eq!(queue.queued_bytes.load(Ordering::Relaxed), 14600);
        // A queue of fewer spans still takes one request's largest spans.
        let (tiny, _rx) = Queue::unexported(2);
        tiny.push(vec![0; super::super::span::MAX_REQUEST_SPANS], 2);
        assert_eq!(tiny.metrics.dropped_queue_full.get(), 0);
    }
}

//! Lingering after an early answer over HTTP/2, as nginx's lingering close
//! does for HTTP/1.1.
//!
//! A request refused before forwarding (401, 403, 404, 429, ...) is answered
//! while its body may still be on the way. When every handle on an HTTP/2
//! stream is gone and the request body has not ended, h2 resets the stream
//! (`RST_STREAM(NO_ERROR)`, RFC 9113 8.1); a client still sending then often
//! reports the reset rather than the answer it has already received (curl
//! 7.88: `(92) Stream error`). So the refused request's body is handed to a
//! task of its own that reads and discards it, up to `limits.linger.bytes`
//! and for at most `limits.linger.time`, keeping the stream open meanwhile:
//! the answer goes out at once, and a client that finishes sending within
//! the bound sees a stream that simply ends. Past either bound the body is
//! dropped and the stream reset, as without lingering.
//!
//! A gRPC refusal is different: it is an HTTP 200 (trailers-only), and a
//! client that reads a complete 2xx answer before its upload has ended may
//! go on sending and never notice that the exchange is over. curl 7.88 does
//! exactly that: its HTTP/2 upload finishes ("We are completely uploaded
//! and fine"), the stream is then closed on both sides, and the transfer
//! waits for a frame that never comes (a 5-byte message: 1 to 2 calls in
//! 200 in a loop, 1 run in 5 of a test in tests/grpc.rs with three such
//! calls). An error status is not affected: curl stops its upload on one.
//! The sidecar's frames are right (HEADERS with END_STREAM, then nothing:
//! the lingered body ended, so no reset; `tests/h2/h2probe.py late-body`).
//! So a refused gRPC call whose body declares a length within
//! `limits.linger.bytes` has that body read first, within
//! `limits.linger.time`, and its answer goes out after ([`read_first`]): the
//! client has finished sending when it learns the call is over. The audit
//! place is held meanwhile. A body of unknown length (what gRPC libraries
//! send; a streaming call may wait for the answer before it sends more) is
//! answered at once and lingers.
//!
//! Nothing the decision holds is kept: the task owns only the body (an
//! HTTP/2 stream, which still counts against `limits.max_h2_streams` of its
//! connection until it ends). HTTP/1.1 is left as it was: hyper reads what is
//! already buffered and closes the connection after the answer.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;

use crate::base::yaml::de_duration_or_zero;
use crate::observe::metrics::ResultLabels;

/// `limits.linger`: how much of a refused HTTP/2 request's body is read
/// and discarded, and for how long, before its stream is reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LingerConfig {
    /// Request body bytes read at most (0: reset at once). A body whose
    /// Content-Length is larger is reset at once, unread; one of unknown
    /// length is read until it ends or the DATA frame that takes it past
    /// this (a frame is at most 16 KiB, the HTTP/2 default
    /// `SETTINGS_MAX_FRAME_SIZE`).
    pub bytes: usize,
    /// How long the body is read at most, from the answer (0: reset at once).
    #[serde(deserialize_with = "de_duration_or_zero")]
    pub time: Duration,
}

/// Largest `limits.linger.bytes` accepted.
pub const MAX_LINGER_BYTES: usize = 16 * 1024 * 1024;
/// Longest `limits.linger.time` accepted.
pub const MAX_LINGER_TIME: Duration = Duration::from_secs(60);

impl Default for LingerConfig {
    fn default() -> Self {
        LingerConfig {
            bytes: 256 * 1024,
            time: Duration::from_secs(1),
        }
    }
}

impl LingerConfig {
    /// What is wrong with the section, as `field: message` lines.
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.bytes > MAX_LINGER_BYTES {
            errors.push(format!(
                "bytes: {} is above the maximum of {MAX_LINGER_BYTES}",
                self.bytes
            ));
        }
        if self.time > MAX_LINGER_TIME {
            errors.push(format!(
                "time: {:?} is above the maximum of {MAX_LINGER_TIME:?}",
                self.time
            ));
        }
        errors
    }

    fn off(&self) -> bool {
        self.bytes == 0 || self.time.is_zero()
    }
}

/// How a lingering read ended (the `result` of
/// `meshgate_request_body_lingers_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lingered {
    /// The client finished its body within the bounds: the stream ended
    /// without a reset.
    Complete,
    /// The body went past `limits.linger.bytes`, or its Content-Length
    /// says it would: reset.
    Bytes,
    /// The body was still coming after `limits.linger.time`: reset.
    Time,
    /// The client broke the body off (reset the stream, or ended it short
    /// of its Content-Length, as curl does once it has the answer), or the
    /// connection closed.
    Error,
}

impl Lingered {
    pub fn as_str(self) -> &'static str {
        match self {
            Lingered::Complete => "complete",
            Lingered::Bytes => "bytes",
            Lingered::Time => "time",
            Lingered::Error => "error",
        }
    }
}

/// Hands the body of a request answered before forwarding to a task that
/// reads and discards it within the bounds, when it is an HTTP/2 body that
/// has not ended; otherwise drops it at once (as before).
pub(super) fn linger(
    config: &LingerConfig,
    version: http::Version,
    body: Incoming,
    counter: &Family<ResultLabels, Counter>,
) {
    if version != http::Version::HTTP_2 || config.off() || http_body::Body::is_end_stream(&body) {
        return;
    }
    let (bytes, time) = (config.bytes, config.time);
    // A declared Content-Length past the bound cannot end within it:
    // reset at once rather than read what would be thrown away anyway.
    let declared = http_body::Body::size_hint(&body).exact();
    if declared.is_some_and(|n| n > bytes as u64) {
        count(counter, Lingered::Bytes);
        return;
    }
    let counter = counter.clone();
    tokio::spawn(async move {
        let result = tokio::time::timeout(time, discard(body, bytes))
            .await
            .unwrap_or(Lingered::Time);
        tracing::debug!(result = result.as_str(), "refused request body lingered");
        count(&counter, result);
        // The body is dropped here: a stream that has not ended is reset.
    });
}

/// For an answer a client may not read as the end of the exchange while it
/// is still sending (a gRPC refusal, an HTTP 200): reads and discards an
/// HTTP/2 body that declares a length within `limits.linger.bytes`, until
/// it ends or `limits.linger.time` has passed, before the answer goes out.
/// Returns the body when it is not such a body (it then lingers after the
/// answer, [`linger`]); `None` when it was read (and counted), whatever the
/// result: the answer follows, and a stream that did not end is reset once
/// it is sent (`RST_STREAM(NO_ERROR)`).
pub(super) async fn read_first(
    config: &LingerConfig,
    version: http::Version,
    body: Incoming,
    counter: &Family<ResultLabels, Counter>,
) -> Option<Incoming> {
    if version != http::Version::HTTP_2 || config.off() || http_body::Body::is_end_stream(&body) {
        return Some(body);
    }
    let declared = http_body::Body::size_hint(&body).exact();
    let Some(declared) = declared.filter(|n| *n <= config.bytes as u64) else {
        return Some(body);
    };
    tracing::debug!(
        declared,
        "refused request body to be read before the answer"
    );
    let result = tokio::time::timeout(config.time, discard(body, config.bytes))
        .await
        .unwrap_or(Lingered::Time);
    tracing::debug!(
        result = result.as_str(),
        "refused request body read before the answer"
    );
    count(counter, result);
    None
}

fn count(counter: &Family<ResultLabels, Counter>, result: Lingered) {
    counter
        .get_or_create(&ResultLabels {
            result: result.as_str(),
        })
        .inc();
}

/// Reads and discards `body` until it ends or would pass `max` bytes.
async fn discard(mut body: Incoming, max: usize) -> Lingered {
    let mut read = 0usize;
    loop {
        match body.frame().await {
            None => return Lingered::Complete,
            Some(Err(_)) => return Lingered::Error,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read = read.saturating_add(data.len());
                    if read > max {
                        return Lingered::Bytes;
                    }
                }
            }
        }
        if http_body::Body::is_end_stream(&body) {
            return Lingered::Complete;
        }
    }
}

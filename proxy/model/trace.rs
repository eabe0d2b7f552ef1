//! W3C Trace Context (`traceparent`): an incoming trace is continued, a new one
//! started when the header is absent or invalid. meshgate is one hop of the
//! trace: the upstream receives the caller's trace id with meshgate's own span
//! id as its parent.
//!
//! What passes on is only what W3C Trace Context lets a hop propagate, with
//! or without `tracing.otlp`: of the trace flags, the two it defines
//! (`sampled`, 0x01, and level 2's `random`, 0x02), the others zeroed; and a
//! `tracestate` only when it parses as W3C list-members (OpenTelemetry's
//! `TraceState`) within 32 members and 512 bytes, re-serialised, else none.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::base::hex::{hex_into, unhex};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The trace flags a hop may propagate: `sampled` (0x01) and level 2's
/// `random` (0x02); the others are zeroed, as W3C Trace Context asks of
/// flags a hop does not know.
pub const KNOWN_FLAGS: u8 = 0x03;

/// W3C's bounds of a `tracestate`: list-members and bytes.
pub const TRACESTATE_MEMBERS: usize = 32;
pub const TRACESTATE_BYTES: usize = 512;

/// A `tracestate` longer than this (its lines joined, whitespace included)
/// is not parsed at all.
const TRACESTATE_RAW: usize = 4 * TRACESTATE_BYTES;

/// The trace a request belongs to and meshgate's span in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// meshgate's span: the parent id the upstream sees (with
    /// `tracing.otlp`, a sampled request's client span).
    pub span_id: [u8; 8],
    /// The caller's span, when the trace was continued.
    pub parent_id: Option<[u8; 8]>,
    pub flags: u8,
}

thread_local! {
    static TRACE_RNG: std::cell::RefCell<Option<rand::rngs::StdRng>> =
        std::cell::RefCell::new(rand::SeedableRng::try_from_os_rng().ok());
}

impl TraceContext {
    /// Continues the trace of a valid `traceparent`, else starts a new one.
    /// Exactly one `traceparent` is accepted; two are ambiguous and restart
    /// the trace, as the W3C specification asks.
    pub fn from_headers(headers: &HeaderMap) -> TraceContext {
        // A per-thread CSPRNG seeded from the OS: a call into aws-lc's RNG
        // per request cost about 0.5 µs. If the OS cannot seed it the draw
        // is zeros, replaced below by always-valid ids: a request never
        // fails for it.
        let random: [u8; 24] =
            TRACE_RNG.with(|rng| rng.borrow_mut().as_mut().map_or([0; 24], rand::Rng::random));
        let mut span_id = [0u8; 8];
        span_id.copy_from_slice(&random[16..]);
        if span_id == [0; 8] {
            span_id = [0, 0, 0, 0, 0, 0, 0, 1];
        }
        let mut values = headers.get_all(TRACEPARENT).iter();
        if let (Some(v), None) = (values.next(), values.next()) {
            if let Some((trace_id, parent_id, flags)) = parse_traceparent(v.as_bytes()) {
                return TraceContext {
                    trace_id,
                    span_id,
                    parent_id: Some(parent_id),
                    flags: flags & KNOWN_FLAGS,
                };
            }
        }
        let mut trace_id = [0u8; 16];
        trace_id.copy_from_slice(&random[..16]);
        if trace_id == [0; 16] {
            trace_id[15] = 1;
        }
        TraceContext {
            trace_id,
            span_id,
            parent_id: None,
            flags: 0,
        }
    }

    #[cfg(test)]
    pub fn trace_id_hex(&self) -> String {
        crate::base::hex::hex(&self.trace_id)
    }

    /// The `traceparent` for the upstream: same trace, meshgate's span as parent.
    pub fn header(&self) -> HeaderValue {
        let mut v = [b'-'; 55];
        v[..2].copy_from_slice(b"00");
        hex_into(&self.trace_id, &mut v[3..35]);
        hex_into(&self.span_id, &mut v[36..52]);
        hex_into(&[self.flags], &mut v[53..55]);
        // Hex digits and dashes only: always a valid header value.
        HeaderValue::from_bytes(&v).unwrap_or(HeaderValue::from_static(
            "00-00000000000000000000000000000001-0000000000000001-00",
        ))
    }

    /// Replaces the request's trace headers with ours. `tracestate` belongs to
    /// the trace: when the trace is continued it goes on as [`tracestate`]
    /// makes it (valid, re-serialised) or not at all; it is dropped when the
    /// trace is restarted.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let state = self.parent_id.and_then(|_| tracestate(headers));
        match state.and_then(|s| HeaderValue::try_from(s).ok()) {
            Some(v) => {
                headers.insert(TRACESTATE, v);
            }
            None => {
                headers.remove(TRACESTATE);
            }
        }
        // New for every request: never indexed by HPACK (see
        // `pipeline::ids::unindexed`).
        let mut v = self.header();
        v.set_sensitive(true);
        headers.insert(TRACEPARENT, v);
    }
}

/// Shows the trace id (32 hex digits), formatted only when used.
impl std::fmt::Display for TraceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.trace_id {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The request's `tracestate` as it may go on: its lines joined (W3C: one
/// list split over several lines), parsed as list-members by
/// OpenTelemetry's `TraceState` (keys and values checked), each key once,
/// at most [`TRACESTATE_MEMBERS`] members, re-serialised without
/// whitespace and empty members within [`TRACESTATE_BYTES`]. `None` when
/// absent or any of that fails: an invalid or oversized list is dropped
/// whole rather than passed on or cut.
pub fn tracestate(headers: &HeaderMap) -> Option<String> {
    let mut raw = String::new();
    for v in headers.get_all(TRACESTATE) {
        let v = v.to_str().ok()?;
        if !raw.is_empty() {
            raw.push(',');
        }
        raw.push_str(v);
        if raw.len() > TRACESTATE_RAW {
            return None;
        }
    }
    // `TraceState` keeps the first 32 members without looking at the rest:
    // more is refused here.
    let members = raw
        .split(',')
        .filter(|m| !m.trim_matches([' ', '\t']).is_empty())
        .count();
    if members == 0 || members > TRACESTATE_MEMBERS {
        return None;
    }
    let state: opentelemetry::trace::TraceState = raw.parse().ok()?;
    let mut keys: Vec<&str> = Vec::with_capacity(members);
    for (k, v) in &state {
        // W3C: a value is one printable character at least, never a tab;
        // a key appears once.
        if v.is_empty() || v.contains('\t') || keys.contains(&k) {
            return None;
        }
        keys.push(k);
    }
    let out = state.header();
    (!out.is_empty() && out.len() <= TRACESTATE_BYTES).then_some(out)
}

/// `version-traceid-parentid-flags`, lowercase hex. Version `ff` is invalid;
/// a later version may append fields after a dash, which are ignored.
fn parse_traceparent(v: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    if v.len() < 55 {
        return None;
    }
    let version = unhex::<1>(&v[0..2])?[0];
    if version == 0xff || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    if version == 0 && v.len() != 55 {
        return None;
    }
    if v.len() > 55 && v[55] != b'-' {
        return None;
    }
    let trace_id = unhex::<16>(&v[3..35])?;
    let parent_id = unhex::<8>(&v[36..52])?;
    let flags = unhex::<1>(&v[53..55])?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some((trace_id, parent_id, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(values: &[&str]) -> TraceContext {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(TRACEPARENT, HeaderValue::from_str(v).expect("value"));
        }
        TraceContext::from_headers(&h)
    }

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn continues_a_valid_trace_with_a_new_span() {
        let t = ctx(&[VALID]);
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.parent_id.map(|p| crate::base::hex::hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(t.flags, 1);
        let out = t.header();
        let out = out.to_str().expect("ascii");
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(out.ends_with("-01"), "{out}");
        assert!(
            !out.contains("00f067aa0ba902b7"),
            "meshgate's own span: {out}"
        );
        assert_eq!(out.len(), 55);
    }

    #[test]
    fn starts_a_new_trace_when_absent_or_invalid() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for v in bad {
            let t = if v.is_empty() { ctx(&[]) } else { ctx(&[v]) };
            assert_eq!(t.parent_id, None, "{v:?}");
            assert_ne!(
                t.trace_id_hex(),
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "{v:?}"
            );
            assert_eq!(t.flags, 0);
        }
        // Two headers are ambiguous.
        assert_eq!(ctx(&[VALID, VALID]).parent_id, None);
        // New traces differ.
        assert_ne!(ctx(&[]).trace_id, ctx(&[]).trace_id);
    }

    #[test]
    fn later_versions_may_carry_more_fields() {
        let t = ctx(&["01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-abc"]);
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(t.header().as_bytes().starts_with(b"00-"));
    }

    #[test]
    fn tracestate_follows_the_trace() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        h.insert(TRACESTATE, HeaderValue::from_static("vendor=1"));
        let t = TraceContext::from_headers(&h);
        t.apply(&mut h);
        assert!(h.contains_key(TRACESTATE));
        let mut h2 = HeaderMap::new();
        h2.insert(TRACESTATE, HeaderValue::from_static("vendor=1"));
        let t = TraceContext::from_headers(&h2);
        t.apply(&mut h2);
        assert!(!h2.contains_key(TRACESTATE));
        assert_eq!(h2.get_all(TRACEPARENT).iter().count(), 1);
    }

    #[test]
    fn only_the_flags_w3c_defines_go_on() {
        for (sent, kept) in [("ff", 0x03), ("01", 0x01), ("02", 0x02), ("fc", 0x00)] {
            let t = ctx(&[&format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{sent}"
            )]);
            assert_eq!(t.flags, kept, "{sent}");
            let mut h = HeaderMap::new();
            t.apply(&mut h);
            let out = h.get(TRACEPARENT).expect("traceparent");
            assert!(
                out.as_bytes().ends_with(format!("-{kept:02x}").as_bytes()),
                "{sent}: {out:?}"
            );
        }
    }

    /// What `apply` leaves of the `tracestate` lines sent with a continued trace.
    fn forwarded(lines: &[&str]) -> Option<String> {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        for l in lines {
            h.append(TRACESTATE, HeaderValue::from_str(l).expect("value"));
        }
        let t = TraceContext::from_headers(&h);
        t.apply(&mut h);
        let mut all = h.get_all(TRACESTATE).iter();
        let first = all.next().map(|v| v.to_str().expect("ascii").to_string());
        assert!(all.next().is_none(), "one line at most");
        first
    }

    #[test]
    fn a_tracestate_goes_on_only_valid_reserialised_and_within_w3c_bounds() {
        // Valid: re-serialised, lines joined, whitespace and empty members gone.
        assert_eq!(forwarded(&["a=1"]).as_deref(), Some("a=1"));
        assert_eq!(
            forwarded(&["a=1 ,, b@v=x y", "c=3"]).as_deref(),
            Some("a=1,b@v=x y,c=3")
        );
        let max: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        assert_eq!(forwarded(&[&max.join(",")]), Some(max.join(",")));
        // Invalid, or beyond the bounds: dropped whole.
        let over: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        let long: Vec<String> = (0..3)
            .map(|i| format!("k{i}={}", "v".repeat(200)))
            .collect();
        for bad in [
            "noequals".to_string(),
            "UPPER=1".to_string(),
            "a=1,a=2".to_string(),
            "a=".to_string(),
            "a=b\tc".to_string(),
            ",".to_string(),
            over.join(","),
            long.join(","),
            format!("a={}", "x".repeat(5000)),
        ] {
            assert_eq!(forwarded(&[&bad]), None, "{bad}");
        }
        // A tracestate with no continued trace never goes on.
        let mut h = HeaderMap::new();
        h.insert(TRACESTATE, HeaderValue::from_static("a=1"));
        TraceContext::from_headers(&h).apply(&mut h);
        assert!(!h.contains_key(TRACESTATE));
    }
}

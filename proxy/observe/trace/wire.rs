//! OTLP's protobuf, written straight from what a request learned: a span's
//! attributes are encoded as they are learned, its fields when it ends,
//! and an export is the pre-encoded resource and scope around the spans
//! of a batch, copied once (`ExportTraceServiceRequest` →
//! `ResourceSpans` → `ScopeSpans` → `Span`; the field numbers are those
//! of `opentelemetry/proto/trace/v1/trace.proto` and
//! `common/v1/common.proto`, and the tests decode every shape with the
//! official `opentelemetry-proto` types).
//!
//! This replaces the SDK's path (a `SpanData` per span, converted by the
//! exporter into `opentelemetry-proto` structs, grouped by scope in a hash
//! map, then encoded by prost, which recomputes each nested message's
//! length at every level): that path cost about 34,000 instructions per
//! request of two spans, this one a tenth of it (README, "OpenTelemetry
//! spans").

use std::fmt::{self, Display, Write as _};

const VARINT: u32 = 0;
const I64: u32 = 1;
const LEN: u32 = 2;
const I32: u32 = 5;

/// `Span.attributes`.
pub(super) const SPAN_ATTRIBUTES: u32 = 9;
/// `ScopeSpans.spans`.
const SCOPE_SPANS_SPANS: u32 = 2;

#[inline]
fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline]
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
fn key(buf: &mut Vec<u8>, field: u32, wire: u32) {
    varint(buf, u64::from((field << 3) | wire));
}

#[inline]
fn bytes(buf: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(buf, field, LEN);
    varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

#[inline]
fn uint(buf: &mut Vec<u8>, field: u32, v: u64) {
    key(buf, field, VARINT);
    varint(buf, v);
}

#[inline]
fn fixed64(buf: &mut Vec<u8>, field: u32, v: u64) {
    key(buf, field, I64);
    buf.extend_from_slice(&v.to_le_bytes());
}

#[inline]
fn fixed32(buf: &mut Vec<u8>, field: u32, v: u32) {
    key(buf, field, I32);
    buf.extend_from_slice(&v.to_le_bytes());
}

/// A length-delimited field whose length is known once it is written: one
/// byte is reserved for the length, and the content moved along when the
/// length needs more.
fn nested(buf: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    key(buf, field, LEN);
    let at = buf.len();
    buf.push(0);
    write(buf);
    patch_len(buf, at, 1);
}

/// Writes the length of what follows `width` bytes reserved at `at`,
/// moving it when the length takes another width.
fn patch_len(buf: &mut Vec<u8>, at: usize, width: usize) {
    let end = buf.len();
    let len = (end - at - width) as u64;
    let n = varint_len(len);
    if n != width {
        if n > width {
            buf.resize(end + n - width, 0);
        }
        buf.copy_within(at + width..end, at + n);
        buf.truncate(end + n - width);
    }
    let mut v = len;
    for b in &mut buf[at..at + n] {
        *b = (v as u8 & 0x7f) | if v >= 0x80 { 0x80 } else { 0 };
        v >>= 7;
    }
}

/// Appends what `Display` writes, without an intermediate string.
struct Appender<'a>(&'a mut Vec<u8>);

impl fmt::Write for Appender<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// An attribute's value (`AnyValue`).
pub(super) enum Val<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Strs(&'a [String]),
}

impl From<&'static str> for Val<'static> {
    fn from(s: &'static str) -> Self {
        Val::Str(s)
    }
}

impl From<i64> for Val<'_> {
    fn from(v: i64) -> Self {
        Val::Int(v)
    }
}

impl From<bool> for Val<'_> {
    fn from(v: bool) -> Self {
        Val::Bool(v)
    }
}

/// One `KeyValue` as field `field` (a span's or a resource's attributes).
/// A string, an integer or a boolean is written in one pass, its lengths
/// computed first.
pub(super) fn attribute(buf: &mut Vec<u8>, field: u32, name: &str, value: Val<'_>) {
    // `AnyValue`'s field and its payload: a string's bytes, or a varint.
    let mut scalar = [0u8; 10];
    let (tag, payload): (u8, &[u8]) = match value {
        Val::Str(s) => (0x0a, s.as_bytes()),
        Val::Int(v) => (0x18, varint_into(&mut scalar, v as u64)),
        Val::Bool(v) => (0x10, varint_into(&mut scalar, u64::from(v))),
        Val::Strs(list) => {
            return attribute_list(buf, field, name, list.iter().map(String::as_str))
        }
    };
    let any = if tag == 0x0a {
        1 + varint_len(payload.len() as u64) + payload.len()
    } else {
        1 + payload.len()
    };
    let kv = 1 + varint_len(name.len() as u64) + name.len() + 1 + varint_len(any as u64) + any;
    buf.reserve(kv + 6);
    key(buf, field, LEN);
    varint(buf, kv as u64);
    buf.push(0x0a);
    varint(buf, name.len() as u64);
    buf.extend_from_slice(name.as_bytes());
    buf.push(0x12);
    varint(buf, any as u64);
    buf.push(tag);
    if tag == 0x0a {
        varint(buf, payload.len() as u64);
    }
    buf.extend_from_slice(payload);
}

/// `v` as a varint in `out`: the bytes written.
fn varint_into(out: &mut [u8; 10], mut v: u64) -> &[u8] {
    let mut n = 0;
    while v >= 0x80 {
        out[n] = (v as u8 & 0x7f) | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    &out[..=n]
}

/// A `KeyValue` of a list of strings (`ArrayValue`).
pub(super) fn attribute_list<'s>(
    buf: &mut Vec<u8>,
    field: u32,
    name: &str,
    list: impl IntoIterator<Item = &'s str>,
) {
    nested(buf, field, |b| {
        bytes(b, 1, name.as_bytes());
        nested(b, 2, |b| {
            nested(b, 5, |b| {
                for s in list {
                    nested(b, 1, |b| bytes(b, 1, s.as_bytes()));
                }
            });
        });
    });
}

/// An SDK attribute value (the resource's), as `AnyValue`.
fn otel_value(b: &mut Vec<u8>, value: &opentelemetry::Value) {
    use opentelemetry::{Array, Value};
    let list = |b: &mut Vec<u8>, each: &mut dyn FnMut(&mut Vec<u8>)| nested(b, 5, each);
    match value {
        Value::Bool(v) => uint(b, 2, u64::from(*v)),
        Value::I64(v) => uint(b, 3, *v as u64),
        Value::F64(v) => fixed64(b, 4, v.to_bits()),
        Value::Array(Array::Bool(vs)) => list(b, &mut |b| {
            vs.iter()
                .for_each(|v| nested(b, 1, |b| uint(b, 2, u64::from(*v))));
        }),
        Value::Array(Array::I64(vs)) => list(b, &mut |b| {
            vs.iter()
                .for_each(|v| nested(b, 1, |b| uint(b, 3, *v as u64)));
        }),
        Value::Array(Array::F64(vs)) => list(b, &mut |b| {
            vs.iter()
                .for_each(|v| nested(b, 1, |b| fixed64(b, 4, v.to_bits())));
        }),
        Value::Array(Array::String(vs)) => list(b, &mut |b| {
            vs.iter()
                .for_each(|v| nested(b, 1, |b| bytes(b, 1, v.as_str().as_bytes())));
        }),
        // A later kind of value: its text.
        other => bytes(b, 1, other.as_str().as_bytes()),
    }
}

/// `Span.kind`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Server = 2,
    Client = 3,
}

/// `SpanFlags`: the context's is-remote bit is known.
const FLAGS_HAS_IS_REMOTE: u32 = 0x100;
const FLAGS_IS_REMOTE: u32 = 0x200;

/// A span's fields other than its attributes.
pub(super) struct Fields<'a> {
    pub trace_id: &'a [u8; 16],
    pub span_id: &'a [u8; 8],
    pub trace_state: Option<&'a str>,
    pub parent: Option<&'a [u8; 8]>,
    /// The parent is the caller's (a continued trace's server span).
    pub parent_is_remote: bool,
    pub name: &'a str,
    pub kind: Kind,
    /// Unix nanoseconds.
    pub start: u64,
    pub end: u64,
    /// An error status's message; `None`: unset.
    pub error: Option<&'a dyn Display>,
}

/// Starts a span (`ScopeSpans.spans`) in `buf`: its attributes follow
/// (fields [`SPAN_ATTRIBUTES`]), then [`close_span`] with what `open_span`
/// returned. A span's length is reserved two bytes (128 to 16383 bytes:
/// every span but an odd one, which is moved).
pub(super) fn open_span(buf: &mut Vec<u8>) -> usize {
    key(buf, SCOPE_SPANS_SPANS, LEN);
    let at = buf.len();
    buf.extend_from_slice(&[0, 0]);
    at
}

/// Ends the span begun at `at` with its other fields.
pub(super) fn close_span(buf: &mut Vec<u8>, at: usize, f: &Fields<'_>) {
    let b = &mut *buf;
    bytes(b, 1, f.trace_id);
    bytes(b, 2, f.span_id);
    if let Some(state) = f.trace_state.filter(|s| !s.is_empty()) {
        bytes(b, 3, state.as_bytes());
    }
    if let Some(parent) = f.parent {
        bytes(b, 4, parent);
    }
    bytes(b, 5, f.name.as_bytes());
    uint(b, 6, f.kind as u64);
    fixed64(b, 7, f.start);
    fixed64(b, 8, f.end);
    // `Status`: message 2, code 3 (2: error); unset is empty.
    nested(b, 15, |b| {
        if let Some(message) = f.error {
            nested(b, 2, |b| {
                let _ = write!(Appender(b), "{message}");
            });
            uint(b, 3, 2);
        }
    });
    let remote = if f.parent_is_remote {
        FLAGS_IS_REMOTE
    } else {
        0
    };
    // The W3C flags (sampled) and whether the parent is remote.
    fixed32(b, 16, 1 | FLAGS_HAS_IS_REMOTE | remote);
    patch_len(buf, at, 2);
}

/// What surrounds every export's spans: the resource and the scope,
/// encoded once at start-up.
pub(super) struct Envelope {
    /// `ResourceSpans.resource`.
    resource: Vec<u8>,
    /// `ScopeSpans.scope`.
    scope: Vec<u8>,
    /// `ResourceSpans.schema_url`, when the resource has one.
    schema_url: Vec<u8>,
}

impl Envelope {
    pub(super) fn new(resource: &opentelemetry_sdk::Resource, scope: &str, version: &str) -> Self {
        let mut r = Vec::new();
        nested(&mut r, 1, |b| {
            for (k, v) in resource.iter() {
                nested(b, 1, |b| {
                    bytes(b, 1, k.as_str().as_bytes());
                    nested(b, 2, |b| otel_value(b, v));
                });
            }
        });
        let mut s = Vec::new();
        nested(&mut s, 1, |b| {
            bytes(b, 1, scope.as_bytes());
            bytes(b, 2, version.as_bytes());
        });
        let mut schema_url = Vec::new();
        if let Some(url) = resource.schema_url().filter(|u| !u.is_empty()) {
            bytes(&mut schema_url, 3, url.as_bytes());
        }
        Envelope {
            resource: r,
            scope: s,
            schema_url,
        }
    }

    /// The bytes a batch reserves in front of its spans for
    /// [`Envelope::request`].
    pub(super) fn room(&self) -> usize {
        self.resource.len() + self.scope.len() + self.schema_url.len() + 2 * (1 + 10)
    }

    /// An `ExportTraceServiceRequest` of the spans (encoded by
    /// [`open_span`] and [`close_span`]) that follow [`Envelope::room`]
    /// bytes in `batch`: written in front of them, without moving them.
    pub(super) fn request(&self, mut batch: Vec<u8>) -> bytes::Bytes {
        let room = self.room();
        let spans = batch.len().saturating_sub(room);
        let scope_spans = self.scope.len() + spans;
        let resource_spans = self.resource.len()
            + 1
            + varint_len(scope_spans as u64)
            + scope_spans
            + self.schema_url.len();
        let mut head = Vec::with_capacity(room);
        key(&mut head, 1, LEN);
        varint(&mut head, resource_spans as u64);
        head.extend_from_slice(&self.resource);
        key(&mut head, 2, LEN);
        varint(&mut head, scope_spans as u64);
        head.extend_from_slice(&self.scope);
        let start = room - head.len();
        batch[start..room].copy_from_slice(&head);
        // `schema_url` is a field of `ResourceSpans`: after the scope's.
        batch.extend_from_slice(&self.schema_url);
        bytes::Bytes::from(batch).slice(start..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use prost::Message;

    #[test]
    fn varints_and_nested_lengths_match_prost() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut ours = Vec::new();
            varint(&mut ours, v);
            let mut theirs = Vec::new();
            prost::encoding::encode_varint(v, &mut theirs);
            assert_eq!(ours, theirs, "{v}");
            assert_eq!(varint_len(v), theirs.len(), "{v}");
        }
        // Contents of 0, 127, 128 and 20000 bytes: the length is moved along.
        for n in [0usize, 127, 128, 20_000] {
            let mut ours = vec![9u8];
            nested(&mut ours, 1, |b| b.extend(std::iter::repeat_n(7u8, n)));
            let mut theirs = vec![9u8];
            prost::encoding::bytes::encode(1, &vec![7u8; n], &mut theirs);
            assert_eq!(ours, theirs, "{n}");
        }
    }

    #[test]
    fn an_export_decodes_with_the_official_types() {
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_attributes([
                opentelemetry::KeyValue::new("service.name", "orders"),
                opentelemetry::KeyValue::new("n", 7),
                opentelemetry::KeyValue::new("f", 0.5),
            ])
            .build();
        let envelope = Envelope::new(&resource, "meshgate", "1.2.3");
        let mut spans = vec![0; envelope.room()];
        let ids = ["p1".to_string(), "p2".to_string()];
        let long = "x".repeat(300);
        let fields = Fields {
            trace_id: &[1; 16],
            span_id: &[2; 8],
            trace_state: Some("vendor=1"),
            parent: Some(&[3; 8]),
            parent_is_remote: true,
            name: "GET",
            kind: Kind::Server,
            start: 1_000,
            end: 2_000,
            error: Some(&"upstream_timeout"),
        };
        let at = open_span(&mut spans);
        let b = &mut spans;
        attribute(b, SPAN_ATTRIBUTES, "url.path", Val::Str(&long));
        attribute(b, SPAN_ATTRIBUTES, "client.port", Val::Int(-5));
        attribute(b, SPAN_ATTRIBUTES, "meshgate.complete", Val::Bool(false));
        attribute(b, SPAN_ATTRIBUTES, "ids", Val::Strs(&ids));
        attribute(b, SPAN_ATTRIBUTES, "addr", Val::Str("10.0.0.1"));
        close_span(&mut spans, at, &fields);
        let client = Fields {
            span_id: &[4; 8],
            parent: Some(&[2; 8]),
            parent_is_remote: false,
            trace_state: None,
            kind: Kind::Client,
            error: None,
            ..fields
        };
        // Shorter than 128 bytes: its length is moved into one byte.
        let at = open_span(&mut spans);
        close_span(&mut spans, at, &client);
        let req = ExportTraceServiceRequest::decode(envelope.request(spans)).expect("decodes");
        assert_eq!(req.resource_spans.len(), 1);
        let rs = &req.resource_spans[0];
        let attrs = &rs.resource.as_ref().expect("resource").attributes;
        // The SDK's resource is a map: its order is its own.
        let mut names: Vec<&str> = attrs.iter().map(|a| a.key.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["f", "n", "service.name"]);
        assert_eq!(rs.scope_spans.len(), 1);
        let scope = rs.scope_spans[0].scope.as_ref().expect("scope");
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("meshgate", "1.2.3")
        );
        let [server, client] = &rs.scope_spans[0].spans[..] else {
            panic!("two spans: {:?}", rs.scope_spans[0].spans);
        };
        assert_eq!(server.trace_id, [1; 16]);
        assert_eq!(server.span_id, [2; 8]);
        assert_eq!(server.parent_span_id, [3; 8]);
        assert_eq!(server.trace_state, "vendor=1");
        assert_eq!((server.name.as_str(), server.kind), ("GET", 2));
        assert_eq!(
            (server.start_time_unix_nano, server.end_time_unix_nano),
            (1_000, 2_000)
        );
        assert_eq!(server.flags, 0x301);
        let status = server.status.as_ref().expect("status");
        assert_eq!(
            (status.code, status.message.as_str()),
            (2, "upstream_timeout")
        );
        let value = |i: usize| {
            server.attributes[i]
                .value
                .as_ref()
                .and_then(|v| v.value.clone())
        };
        assert_eq!(server.attributes[0].key, "url.path");
        assert_eq!(value(0), Some(Any::StringValue(long)));
        assert_eq!(value(1), Some(Any::IntValue(-5)));
        assert_eq!(value(2), Some(Any::BoolValue(false)));
        let Some(Any::ArrayValue(list)) = value(3) else {
            panic!("array: {:?}", value(3));
        };
        assert_eq!(list.values.len(), 2);
        assert_eq!(value(4), Some(Any::StringValue("10.0.0.1".into())));
        assert_eq!(
            (client.kind, client.flags, client.parent_span_id.as_slice()),
            (3, 0x101, &[2u8; 8][..])
        );
        assert!(client.attributes.is_empty());
        assert_eq!(client.status.as_ref().map(|s| s.code), Some(0));
    }
}

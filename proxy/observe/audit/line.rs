//! One audit line: the event's members written in order, ASCII only, and
//! the hash that chains it to the line before.

use serde::Serialize;
use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use super::*;

/// Compact JSON with every non-ASCII character written as a `\uXXXX`
/// escape (serde_json already escapes control characters, `"` and `\`).
/// An audit line is then plain ASCII: no reader finds a line break inside it
/// (U+2028, U+2029 and U+0085 are line breaks to some, e.g. Python's
/// `splitlines`), whatever a client put in a path, a token or a certificate.
pub(super) struct AsciiJson;

impl serde_json::ser::Formatter for AsciiJson {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if fragment.is_ascii() {
            return writer.write_all(fragment.as_bytes());
        }
        for c in fragment.chars() {
            if c.is_ascii() {
                writer.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{u:04x}")?;
                }
            }
        }
        Ok(())
    }
}

pub(super) fn chain_hash(prev: &str, event: &[u8]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(prev.as_bytes());
    ctx.update(event);
    crate::base::hex::hex(ctx.finish().as_ref())
}

/// What the writer chains next.
pub(super) enum Line<'a> {
    /// A request's members, as [`write_request_members`] wrote them.
    Request(&'a [u8]),
    /// Events lost before this line (queue full or write failure in mode `drop`).
    Dropped(u64),
}

#[derive(Serialize)]
pub(super) struct DroppedLine<'a> {
    pub(super) seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) prev: Option<&'a str>,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) time: String,
    pub(super) count: u64,
    pub(super) node: &'a str,
}

pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(super) fn verdict(allowed: bool) -> &'static str {
    if allowed {
        "allow"
    } else {
        "deny"
    }
}

/// Writes a request's line, `{"seq":…,"prev":…,"type":"request",…}`: the
/// three parts below, as the writer joins them.
#[cfg(test)]
pub(super) fn write_request(
    out: &mut Vec<u8>,
    seq: u64,
    prev: Option<&str>,
    e: &Event,
    node: &str,
    pod: Option<&str>,
) -> serde_json::Result<()> {
    let mut members = Vec::new();
    write_request_members(&mut members, e)?;
    let mut end = Vec::new();
    write_line_end(&mut end, node, pod)?;
    write_line_start(out, seq, prev)?;
    out.extend_from_slice(&members);
    out.extend_from_slice(&end);
    Ok(())
}

/// A line's first members, the writer's: `{"seq":…` and, on the first line
/// of a chain or a file, `,"prev":…`.
pub(super) fn write_line_start(
    out: &mut Vec<u8>,
    seq: u64,
    prev: Option<&str>,
) -> serde_json::Result<()> {
    let mut o = Members::open(out);
    o.num("seq", seq);
    if let Some(prev) = prev {
        o.str("prev", prev)?;
    }
    Ok(())
}

/// A line's last members, the same on every line of the process:
/// `,"node":…,"pod":…}`.
pub(super) fn write_line_end(
    out: &mut Vec<u8>,
    node: &str,
    pod: Option<&str>,
) -> serde_json::Result<()> {
    let mut o = Members::after(out);
    o.str("node", node)?;
    o.opt_str("pod", pod)?;
    o.close();
    Ok(())
}

/// A request's own members, `,"type":"request",…,"policy_version":…`:
/// written by the request's thread when its event is sent, so that the
/// writer thread only chains and writes (and the event is dropped on the
/// sending thread). Written member by member rather than derived with serde: the
/// keys are ours and need no escaping, and most values need none either.
pub(super) fn write_request_members(out: &mut Vec<u8>, e: &Event) -> serde_json::Result<()> {
    pub(super) const NONE: &[String] = &[];
    let outcome = e.outcome.as_deref();
    let mut o = Members::after(out);
    o.str("type", "request")?;
    o.key("time");
    // Neither the time nor the socket address below can hold a quote, a
    // backslash, a control or a non-ASCII character: written as they are.
    o.out.push(b'"');
    write_time(o.out, e.time)?;
    o.out.push(b'"');
    o.str("request_id", e.request_id.to_str().unwrap_or(""))?;
    let mut trace_id = [0u8; 32];
    crate::base::hex::hex_into(&e.trace_id, &mut trace_id);
    o.str("trace_id", std::str::from_utf8(&trace_id).unwrap_or(""))?;
    // The connection's members, written once per connection.
    let (principal, source) = e.conn.audited(|out| write_connection(out, &e.conn))?;
    o.out.extend_from_slice(principal);
    o.opt_str("user", e.user.as_deref().map(|u| u.id.as_str()))?;
    o.opt_str("tier", e.tier.as_deref())?;
    o.opt_str("product", outcome.map(|o| &*o.product))?;
    o.opt_str("action", outcome.map(|o| o.action.as_str()))?;
    o.opt_str("resource", outcome.map(|o| &*o.resource))?;
    o.str("method", e.method.as_str())?;
    o.str("path", &e.path)?;
    o.str("decision", e.decision)?;
    o.strs("policies", outcome.map_or(NONE, |o| &o.decision.policies))?;
    o.strs("errors", outcome.map_or(NONE, |o| &o.decision.errors))?;
    o.key("shadow");
    write_shadow(o.out, outcome)?;
    // The fields the caller's plan hid: only on requests it hid some of.
    // (Written once per plan: the same for every request it applies to.)
    if let Some(plan) = outcome.and_then(|o| o.fields.as_ref()) {
        if !plan.hidden.is_empty() {
            o.key("hidden");
            let text = plan.audited_hidden(|out| write_hidden(out, &plan.hidden))?;
            o.out.extend_from_slice(text);
        }
    }
    // The kinds of contract violation: only on responses that showed some.
    if !e.violations.is_empty() {
        o.key("violations");
        o.out.push(b'[');
        for (i, kind) in e.violations.iter().enumerate() {
            if i > 0 {
                o.out.push(b',');
            }
            o.out.push(b'"');
            o.out.extend_from_slice(kind.as_str().as_bytes());
            o.out.push(b'"');
        }
        o.out.push(b']');
    }
    o.num("status", u64::from(e.status));
    // Only on gRPC calls: an HTTP request's line is as it was.
    if let Some(code) = e.grpc_status {
        o.num("grpc_status", u64::from(code));
    }
    o.opt_str("error", e.error)?;
    o.opt_str("reason", e.reason)?;
    o.opt_num("upstream_us", e.upstream.map(micros));
    o.num("duration_us", micros(e.duration));
    o.num("bytes_in", e.bytes_in);
    o.num("bytes_out", e.bytes_out);
    o.bool("complete", e.complete);
    o.out.extend_from_slice(source);
    o.opt_str(
        "policy_version",
        e.policy_version
            .as_deref()
            .or(outcome.map(|o| &*o.policy_version)),
    )?;
    Ok(())
}

/// A connection's members of its requests' lines, in two parts: `principal`
/// (`,"principal":{…}`), then `source` and `tls_version`. Returns where the
/// second part begins.
fn write_connection(
    out: &mut Vec<u8>,
    conn: &crate::model::connection::ConnInfo,
) -> serde_json::Result<usize> {
    let mut o = Members::after(out);
    o.key("principal");
    let mut principal = Members::open(o.out);
    principal.str("type", "Mesh::Service")?;
    // The header form is made from a `str`: this borrows it whole,
    // non-ASCII (a UTF-8 subject CN) included.
    principal.str(
        "id",
        &String::from_utf8_lossy(conn.identity.principal_header.as_bytes()),
    )?;
    principal.close();
    let at = o.out.len();
    o.str("source", &conn.peer_text)?;
    o.str("tls_version", conn.tls_version)?;
    Ok(at)
}

/// The `hidden` member's value: each field the plan hides, how, and the
/// policies that decided it.
fn write_hidden(
    out: &mut Vec<u8>,
    hidden: &[crate::decision::fields::Hidden],
) -> serde_json::Result<()> {
    out.push(b'[');
    for (i, h) in hidden.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut f = Members::open(out);
        f.str("field", &h.path)?;
        f.str("mask", h.mask.as_str())?;
        f.strs("policies", &h.policies)?;
        f.close();
    }
    out.push(b']');
    Ok(())
}

/// The most fields a `shadow` member lists; the rest are counted in its
/// `fields_left_off`.
pub(super) const SHADOW_FIELDS: usize = 32;

/// The `shadow` member's value: the shadow set's decision and policies,
/// and the fields its plan would hide or show otherwise than the enforced
/// plan (only where it differs); `null` without a shadow set.
fn write_shadow(out: &mut Vec<u8>, outcome: Option<&AuthzOutcome>) -> serde_json::Result<()> {
    let Some(s) = outcome.and_then(|o| o.shadow.as_ref()) else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    let mut shadow = Members::open(out);
    shadow.str("decision", verdict(s.allowed))?;
    shadow.strs("policies", &s.policies)?;
    let differs = outcome
        .and_then(|o| o.fields.as_ref())
        .map_or(&[][..], |p| &p.shadow_differs[..]);
    if !differs.is_empty() {
        shadow.key("fields");
        shadow.out.push(b'[');
        for (i, d) in differs.iter().take(SHADOW_FIELDS).enumerate() {
            if i > 0 {
                shadow.out.push(b',');
            }
            let mut f = Members::open(shadow.out);
            f.str("field", &d.path)?;
            f.str("would", d.would())?;
            f.str("mask", d.mask.as_str())?;
            f.strs("policies", &d.policies)?;
            f.close();
        }
        shadow.out.push(b']');
        if differs.len() > SHADOW_FIELDS {
            shadow.num("fields_left_off", (differs.len() - SHADOW_FIELDS) as u64);
        }
    }
    shadow.close();
    Ok(())
}

/// Writes a `dropped` line: `count` events lost before it.
pub(super) fn write_dropped(
    out: &mut Vec<u8>,
    seq: u64,
    prev: Option<&str>,
    count: u64,
    node: &str,
) -> serde_json::Result<()> {
    let line = DroppedLine {
        seq,
        prev,
        kind: "dropped",
        time: rfc3339_micros(SystemTime::now())?.to_string(),
        count,
        node,
    };
    line.serialize(&mut serde_json::Serializer::with_formatter(out, AsciiJson))
}

/// [`rfc3339_micros`], with the text up to the second made once per second
/// on each thread (requests in the same second share it) and the
/// microseconds written after it.
pub(super) fn write_time(out: &mut Vec<u8>, t: SystemTime) -> serde_json::Result<()> {
    use std::cell::RefCell;
    /// `YYYY-MM-DDTHH:MM:SS.`
    const PREFIX: usize = 20;
    thread_local! {
        static SECOND: RefCell<Option<(u64, [u8; PREFIX])>> = const { RefCell::new(None) };
    }
    let since = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| serde::ser::Error::custom("the clock is outside the years 1970 to 9999"))?;
    let secs = since.as_secs();
    let prefix = match SECOND.with_borrow(|s| s.filter(|(at, _)| *at == secs)) {
        Some((_, prefix)) => prefix,
        None => {
            let second = SystemTime::UNIX_EPOCH
                .checked_add(Duration::from_secs(secs))
                .unwrap_or(t);
            let whole = rfc3339_micros(second)?;
            let text = whole.to_string();
            let prefix = text
                .as_bytes()
                .get(..PREFIX)
                .and_then(|p| <[u8; PREFIX]>::try_from(p).ok())
                .ok_or_else(|| serde::ser::Error::custom("an RFC 3339 time of another form"))?;
            SECOND.set(Some((secs, prefix)));
            prefix
        }
    };
    out.extend_from_slice(&prefix);
    // Six digits, zero-padded: 1_000_000 + µs written, its leading 1 left out.
    let mut digits = itoa::Buffer::new();
    let micros = digits.format(1_000_000 + since.subsec_micros());
    out.extend_from_slice(micros.as_bytes().get(1..).unwrap_or_default());
    out.push(b'Z');
    Ok(())
}

/// RFC 3339 with microseconds. humantime writes the years 1970 to 9999 only
/// (and its `Display` fails, or panics before 1970, otherwise): a clock
/// outside them is an error, not a crash of the writer thread.
pub(super) fn rfc3339_micros(t: SystemTime) -> serde_json::Result<humantime::Rfc3339Timestamp> {
    pub(super) const YEAR_10000: u64 = 253_402_300_800;
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) if d.as_secs() < YEAR_10000 => Ok(humantime::format_rfc3339_micros(t)),
        _ => Err(serde::ser::Error::custom(
            "the clock is outside the years 1970 to 9999",
        )),
    }
}

/// The members of a JSON object being written. Keys are meshgate's own
/// (plain ASCII, written as they are); string values go through
/// [`json_string`].
pub(super) struct Members<'a> {
    pub(super) out: &'a mut Vec<u8>,
    pub(super) first: bool,
}

impl<'a> Members<'a> {
    pub(super) fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Members { out, first: true }
    }

    /// Members that continue an object already opened, with members
    /// before them.
    pub(super) fn after(out: &'a mut Vec<u8>) -> Self {
        Members { out, first: false }
    }

    pub(super) fn close(self) {
        self.out.push(b'}');
    }

    pub(super) fn key(&mut self, key: &str) {
        self.out
            .extend_from_slice(if self.first { b"\"" } else { b",\"" });
        self.first = false;
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    pub(super) fn str(&mut self, key: &str, value: &str) -> serde_json::Result<()> {
        self.key(key);
        json_string(self.out, value)
    }

    pub(super) fn opt_str(&mut self, key: &str, value: Option<&str>) -> serde_json::Result<()> {
        match value {
            Some(v) => self.str(key, v),
            None => {
                self.key(key);
                self.out.extend_from_slice(b"null");
                Ok(())
            }
        }
    }

    pub(super) fn num(&mut self, key: &str, value: u64) {
        self.key(key);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    pub(super) fn opt_num(&mut self, key: &str, value: Option<u64>) {
        match value {
            Some(v) => self.num(key, v),
            None => {
                self.key(key);
                self.out.extend_from_slice(b"null");
            }
        }
    }

    pub(super) fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    pub(super) fn strs(&mut self, key: &str, values: &[String]) -> serde_json::Result<()> {
        self.key(key);
        self.out.push(b'[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            json_string(self.out, v)?;
        }
        self.out.push(b']');
        Ok(())
    }
}

/// A JSON string in the trail's ASCII-only form: printable ASCII without
/// `"` or `\\` is copied as it is; anything else is escaped by serde_json
/// with [`AsciiJson`].
pub(super) fn json_string(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    let escaped = |b: u8| !(b' '..=b'~').contains(&b) | (b == b'"') | (b == b'\\');
    if crate::base::bytes::find(s.as_bytes(), escaped) == s.len() {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        use serde::Serializer as _;
        serde_json::Serializer::with_formatter(out, AsciiJson).serialize_str(s)
    }
}

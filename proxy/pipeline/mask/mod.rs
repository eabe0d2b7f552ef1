//! Field masking on the wire: the response stage's transform for a request
//! whose field plan hides something (or does not pass undeclared fields).
//!
//! It needs a body it can read as records: `application/json` (or a
//! `+json` type), NDJSON (`application/x-ndjson`, `application/jsonl`) or
//! CSV with a header row (`text/csv`); a successful response of another
//! type, or one of these types it cannot read (another charset) whatever
//! its status, is refused before its head is sent (502
//! `unmaskable_response`); an error or redirect of another type keeps its
//! status and head, and its body is withheld (the sidecar answers its own,
//! `body_withheld`). Every response of a masked route, a 304's or 204's
//! too, loses what describes the upstream's bytes and is kept from shared
//! caches ([`Audience::Masked`]); one of a route whose plan hides nothing
//! from this caller is kept from them too ([`Audience::Caller`]). JSON
//! and NDJSON go through [`scan::Scanner`], CSV through
//! [`csv::CsvMasker`]: a body that is not of its type, a value a method
//! cannot make, an undeclared field under `undeclared: refuse`, or a
//! hidden field under a name written otherwise (`Customer_Email`), cuts
//! the stream. A compressed body (`gzip`, `deflate`, `br`, `zstd`, though
//! the request asked for `identity`) is decoded as it streams
//! ([`decode`]) and sent as identity.

mod caller;
pub mod conform;
pub mod csv;
pub mod decode;
mod key;
mod member;
mod methods;
mod run;
pub mod scan;
pub use crate::decision::fields::tree;
mod watch;

use std::sync::Arc;

use bytes::Bytes;

use crate::decision::fields::{FieldPlan, HiddenCounters, Mask, PlanCounters};
use crate::model::conformance::Kinds;
use crate::model::response::{Audience, BodyTransform, ResponseTransform, Shaped, TransformError};

use crate::observe::metrics::{DatasetLabels, FieldMetrics, HiddenLabels};
pub use key::{hashed_fields, HashKey, HashKeys};

/// The transform's name in its errors; `pipeline/error.rs` answers its
/// refusals as `unmaskable_response`.
pub const MASKING: &str = "field masking";

/// The `fields` section: what field masking needs besides the contracts.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldsConfig {
    /// The mesh's key for `hash`-masked fields (at least 32 bytes; the same
    /// file on every node, so that pseudonyms join; reloaded when it
    /// changes). Without it, a plan that hashes a field cuts the response.
    pub hash_key_file: std::path::PathBuf,
}

impl FieldsConfig {
    pub fn resolve(&mut self, base: &std::path::Path) {
        crate::base::paths::resolve(base, &mut self.hash_key_file);
    }
}

/// Masks the responses of one request by its field plan, after the route's
/// own transform (lifecycle headers), if it has one.
pub struct FieldMasking {
    tree: Arc<tree::Level>,
    key: Option<HashKey>,
    inner: Option<Arc<dyn ResponseTransform>>,
    /// `meshgate_fields_hidden_total` of the plan's product and dataset,
    /// by mask, and how many fields of each a masked response hides, and
    /// its `meshgate_fields_withheld_bodies_total` (kept with the plan).
    hidden: HiddenCounters,
    /// Checked against the contract as well (a sampled response).
    conformance: Option<conform::Sampled>,
}

/// What the transform of one request is made from.
pub struct Masking<'a> {
    pub plan: Option<&'a FieldPlan>,
    pub product: &'a Arc<str>,
    /// The mesh's key, when configured: its current key masks the response.
    pub key: Option<&'a HashKeys>,
    pub metrics: &'a FieldMetrics,
    /// The response is checked against its contract (sampled).
    pub conformance: Option<conform::Sampled>,
}

impl FieldMasking {
    /// The transform for `m.plan`: when the plan changes nothing for this
    /// caller, the route's own, its answers marked as the caller's (and
    /// the body watched when it is checked against the contract).
    pub fn for_plan(
        m: Masking<'_>,
        inner: Option<Arc<dyn ResponseTransform>>,
    ) -> Option<Arc<dyn ResponseTransform>> {
        // No plan (a route naming no dataset, a dataset of no fields): the
        // route's own transform, its lifecycle headers with it.
        let Some(plan) = m.plan else {
            return inner;
        };
        if !plan.rewrites() {
            // Another caller's answer from the same URL may be masked.
            return Some(match m.conformance {
                Some(sampled) => watch::Watching::transform(plan, sampled, inner),
                None => caller::PerCaller::transform(inner),
            });
        }
        let hidden = plan.hidden_counters(|| {
            let dataset = &plan.specs.dataset;
            let hidden = Mask::ALL
                .into_iter()
                .filter_map(|mask| {
                    let n = plan.hidden.iter().filter(|h| h.mask == mask).count() as u64;
                    (n > 0).then(|| {
                        let labels = HiddenLabels {
                            product: m.product.clone(),
                            dataset: dataset.clone(),
                            mask: mask.as_str(),
                        };
                        (m.metrics.hidden.get_or_create(&labels).clone(), n)
                    })
                })
                .collect();
            let labels = DatasetLabels {
                product: m.product.clone(),
                dataset: dataset.clone(),
            };
            let withheld = m.metrics.withheld.get_or_create(&labels).clone();
            Arc::new(PlanCounters { hidden, withheld })
        });
        let tree = match m.conformance {
            Some(_) => plan.checked_tree(),
            None => plan.tree(),
        };
        Some(Arc::new(FieldMasking {
            tree,
            key: m.key.map(HashKeys::current),
            inner,
            hidden,
            conformance: m.conformance,
        }))
    }
}

/// Counts and logs an allowed request whose field plan the shadow policy
/// set would make otherwise (as a shadow decision that disagrees is).
pub fn shadow_plan(
    metrics: &FieldMetrics,
    principal: &dyn std::fmt::Display,
    product: &Arc<str>,
    plan: &FieldPlan,
) {
    if !plan.shadow_disagrees() {
        return;
    }
    metrics
        .shadow_disagreements
        .get_or_create(&DatasetLabels {
            product: product.clone(),
            dataset: plan.specs.dataset.clone(),
        })
        .inc();
    let enforced: Vec<&str> = plan.hidden.iter().map(|h| &*h.path).collect();
    let shadow: Vec<&str> = plan.shadow_hidden.iter().flatten().map(|p| &**p).collect();
    tracing::info!(
        principal = %principal,
        dataset = %plan.dataset,
        enforced_hidden = ?enforced,
        shadow_hidden = ?shadow,
        "shadow field policies disagree"
    );
}

fn refused(reason: impl Into<String>) -> TransformError {
    TransformError {
        transform: MASKING,
        reason: reason.into(),
    }
}

/// The formats a body is masked in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// `application/json` or a `+json` type: one value.
    Json,
    /// `application/x-ndjson`, `application/jsonl`: a value per line.
    Lines,
    /// `text/csv` with a header row.
    Csv,
}

/// The format of a response by its `Content-Type`, or why it cannot be
/// masked. (Compared without case, and without a lower-cased copy: it is
/// read for every masked response.) Only one `Content-Type`, and only
/// UTF-8 text (`charset` absent, `utf-8` or `us-ascii`): a body in
/// another charset (UTF-16, UTF-7) is bytes the scanner would misread,
/// where a hidden name or value could pass unseen.
pub(super) fn format(head: &http::response::Parts) -> Result<Format, NotRead> {
    use NotRead::{OtherType, Unreadable};
    let mut types = head.headers.get_all(http::header::CONTENT_TYPE).iter();
    let value = types
        .next()
        .ok_or(OtherType("the response names no content type"))?
        .as_bytes();
    // Bytes, not `str::split`: its char searcher cost more than the rest.
    let (essence, params) = match value.iter().position(|b| *b == b';') {
        Some(at) => (&value[..at], &value[at + 1..]),
        None => (value, &[][..]),
    };
    // The type first: what the stage does not read passes as another type
    // whatever its parameters say (an HTML page in Latin-1).
    let format = essence_format(essence.trim_ascii())
        .ok_or(OtherType("the response is not JSON, NDJSON or CSV"))?;
    if types.next().is_some() {
        return Err(Unreadable("the response names more than one content type"));
    }
    let mut no_header_row = false;
    for param in Params(params) {
        let (name, value) = param.map_err(Unreadable)?;
        if name.eq_ignore_ascii_case(b"charset") {
            let utf8 = ["utf-8", "utf8", "us-ascii"]
                .iter()
                .any(|c| value.eq_ignore_ascii_case(c.as_bytes()));
            if !utf8 {
                return Err(Unreadable("a charset other than UTF-8"));
            }
        } else if name.eq_ignore_ascii_case(b"header") {
            // RFC 4180's `header` parameter.
            no_header_row = value.eq_ignore_ascii_case(b"absent");
        }
    }
    match format {
        // Without a header row the columns have no names.
        Format::Csv if no_header_row => Err(Unreadable("a CSV response without a header row")),
        format => Ok(format),
    }
}

/// The format a media type's essence (`type/subtype`, trimmed) names.
fn essence_format(essence: &[u8]) -> Option<Format> {
    let is = |name: &str| essence.eq_ignore_ascii_case(name.as_bytes());
    let starts = |prefix: &str| {
        essence
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()))
    };
    let ends = |suffix: &str| {
        essence
            .len()
            .checked_sub(suffix.len())
            .and_then(|at| essence.get(at..))
            .is_some_and(|s| s.eq_ignore_ascii_case(suffix.as_bytes()))
    };
    if is("application/json") {
        Some(Format::Json)
    } else if is("application/x-ndjson") || is("application/jsonl") {
        Some(Format::Lines)
    } else if is("text/csv") {
        Some(Format::Csv)
    } else if starts("application/") && ends("+json") && !starts("application/grpc") {
        // gRPC's JSON (`application/grpc+json`) is framed in gRPC
        // messages, not one JSON value: it cannot be masked as JSON.
        Some(Format::Json)
    } else {
        None
    }
}

/// Why a response's body is not read by the masker or the watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotRead {
    /// Not a type they read (none, or not JSON, NDJSON or CSV).
    OtherType(&'static str),
    /// A type they read in a form they cannot: another charset, two
    /// content types, parameters that do not parse, a CSV without a
    /// header row. Conformance under `enforce` refuses it too.
    Unreadable(&'static str),
}

impl std::fmt::Display for NotRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotRead::OtherType(why) | NotRead::Unreadable(why) => f.write_str(why),
        }
    }
}

/// A media type's parameters (RFC 9110 5.6.6): `name=value` pairs split at
/// `;`, whitespace around them ignored, a value a token or a quoted string
/// (its `\\` escapes taken). Empty parameters (`;;`) are skipped. Anything
/// else is an error, never read past: a parameter without `=` (`x;
/// charset=utf-16` must not read as one parameter named `x; charset`),
/// a name that is not a token, an unterminated quote, or text after a
/// closing quote before the next `;`.
struct Params<'a>(&'a [u8]);

impl<'a> Iterator for Params<'a> {
    type Item = Result<(&'a [u8], std::borrow::Cow<'a, [u8]>), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.read()?;
        if item.is_err() {
            self.0 = &[];
        }
        Some(item)
    }
}

impl<'a> Params<'a> {
    fn read(&mut self) -> Option<<Self as Iterator>::Item> {
        const MALFORMED: &str = "a malformed content type parameter";
        let token = |t: &[u8]| {
            !t.is_empty()
                && t.iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
        };
        let rest = loop {
            let rest = self.0.trim_ascii_start();
            match rest.strip_prefix(b";") {
                Some(after) => self.0 = after,
                None if rest.is_empty() => return None,
                None => break rest,
            }
        };
        // The segment up to the next `;` holds the name and `=`.
        let segment_end = rest.iter().position(|b| *b == b';').unwrap_or(rest.len());
        let Some(eq) = rest[..segment_end].iter().position(|b| *b == b'=') else {
            return Some(Err(MALFORMED));
        };
        let name = rest[..eq].trim_ascii();
        if !token(name) {
            return Some(Err(MALFORMED));
        }
        let after = rest[eq + 1..].trim_ascii_start();
        let Some(quoted) = after.strip_prefix(b"\"") else {
            let stop = after.iter().position(|b| *b == b';').unwrap_or(after.len());
            self.0 = &after[stop..];
            let value = after[..stop].trim_ascii();
            // A token, or at least visible ASCII without a quote (servers
            // send `profile=https://…` unquoted).
            let visible =
                |v: &[u8]| !v.is_empty() && v.iter().all(|b| b.is_ascii_graphic() && *b != b'"');
            return Some(if token(value) || visible(value) {
                Ok((name, std::borrow::Cow::Borrowed(value)))
            } else {
                Err(MALFORMED)
            });
        };
        let mut value = Vec::new();
        let mut escaped = false;
        let mut end = None;
        for (i, b) in quoted.iter().enumerate() {
            match (escaped, *b) {
                (false, b'\\') => escaped = true,
                (false, b'"') => {
                    end = Some(i);
                    break;
                }
                (_, b) => {
                    value.push(b);
                    escaped = false;
                }
            }
        }
        let Some(end) = end else {
            return Some(Err(MALFORMED));
        };
        let tail = quoted[end + 1..].trim_ascii_start();
        if !(tail.is_empty() || tail.starts_with(b";")) {
            return Some(Err(MALFORMED));
        }
        self.0 = tail;
        Some(Ok((name, std::borrow::Cow::Owned(value))))
    }
}

/// A response with no body to mask: 204, 304, or a declared length of 0.
pub(super) fn empty(head: &http::response::Parts) -> bool {
    matches!(head.status.as_u16(), 204 | 304)
        || head
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0")
}

impl std::fmt::Debug for FieldMasking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldMasking")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl ResponseTransform for FieldMasking {
    fn rewrites_body(&self) -> bool {
        true
    }

    fn refuses_grpc(&self) -> Option<TransformError> {
        Some(refused(
            "a gRPC call's messages are not read, and a field plan applies",
        ))
    }

    fn audience(&self) -> Audience {
        Audience::Masked
    }

    fn head(&self, head: &mut http::response::Parts) -> Result<Shaped, TransformError> {
        if let Some(inner) = &self.inner {
            if !matches!(inner.head(head)?, Shaped::Passed) {
                return Err(refused("the route's own transform rewrites the body too"));
            }
        }
        if empty(head) {
            return Ok(Shaped::Passed);
        }
        let format = match format(head) {
            Ok(f) => f,
            // An error or redirect of a type that holds no records may
            // hold one all the same (a framework's debug page echoing
            // what it had): its status and head pass, its body does not.
            Err(NotRead::OtherType(_)) if !head.status.is_success() => {
                self.hidden.withheld.inc();
                return Ok(Shaped::Withheld);
            }
            // A record type in a form that cannot be read (another
            // charset, two types): refused, whatever the status.
            Err(why) => return Err(refused(format!("{why}, and a field plan applies"))),
        };
        let coding = decode::coding(&head.headers)
            .map_err(|why| refused(format!("{why}, and a field plan applies")))?;
        for (counter, n) in self.hidden.hidden.iter() {
            counter.inc_by(*n);
        }
        let (tree, key) = (self.tree.clone(), self.key.clone());
        let body: Box<dyn BodyTransform> =
            Box::new(MaskBody::of(format, tree, key, self.conformance.clone()));
        Ok(Shaped::Rewritten(match coding {
            None => body,
            Some(coding) => {
                // Sent as identity.
                head.headers.remove(http::header::CONTENT_ENCODING);
                Box::new(decode::Decoded::new(coding, body))
            }
        }))
    }
}

impl MaskBody {
    /// The masker of a body in `format`, checking it against the contract
    /// when `conformance` says so (the tree is then `tree::checked`).
    pub(super) fn of(
        format: Format,
        tree: Arc<tree::Level>,
        key: Option<Arc<aws_lc_rs::hmac::Key>>,
        conformance: Option<conform::Sampled>,
    ) -> MaskBody {
        let checker = conformance.map(conform::Checker::new);
        match (format, checker) {
            (Format::Json, None) => MaskBody::Json(scan::Scanner::new(tree, key)),
            (Format::Json, Some(c)) => MaskBody::Json(scan::Scanner::new(tree, key).checking(c)),
            (Format::Lines, None) => MaskBody::Json(scan::Scanner::lines(tree, key)),
            (Format::Lines, Some(c)) => MaskBody::Json(scan::Scanner::lines(tree, key).checking(c)),
            (Format::Csv, None) => MaskBody::Csv(csv::CsvMasker::new(tree, key)),
            (Format::Csv, Some(c)) => MaskBody::Csv(csv::CsvMasker::new(tree, key).checking(c)),
        }
    }

    pub(super) fn checker(&self) -> Option<&conform::Checker> {
        match self {
            MaskBody::Json(s) => s.checker(),
            MaskBody::Csv(c) => c.checker(),
        }
    }

    /// Why the body was cut: a contract violation under `enforce`, or
    /// what masking could not do.
    fn refusal(&self, reason: String) -> TransformError {
        match self.checker() {
            Some(c) if c.refused() => TransformError {
                transform: conform::CONFORMANCE,
                reason,
            },
            _ => refused(reason),
        }
    }
}

pub(super) enum MaskBody {
    /// JSON, or NDJSON (the scanner's `lines`).
    Json(scan::Scanner),
    Csv(csv::CsvMasker),
}

/// A masked part as `Bytes` without the second allocation `Bytes::from`
/// makes for a `Vec` with room to spare (its shared header): the spare is
/// given back first, which the allocator does in place while the part
/// fills at least half of it (the scanner reserves little beyond the chunk).
fn frozen(out: Vec<u8>) -> Bytes {
    Bytes::from(out.into_boxed_slice())
}

impl BodyTransform for MaskBody {
    fn data(&mut self, chunk: Bytes) -> Result<Bytes, TransformError> {
        let out = match self {
            MaskBody::Json(s) => s.feed(&chunk),
            MaskBody::Csv(c) => c.feed(&chunk),
        };
        out.map(frozen).map_err(|e| self.refusal(e))
    }

    fn end(&mut self) -> Result<Bytes, TransformError> {
        let out = match self {
            MaskBody::Json(s) => s.finish(),
            MaskBody::Csv(c) => c.finish(),
        };
        out.map(frozen).map_err(|e| self.refusal(e))
    }

    fn look_ahead(&self) -> bool {
        self.checker()
            .is_some_and(|c| c.mode() == crate::decision::fields::Mode::Enforce)
    }

    fn settled(&self) -> bool {
        self.checker().is_none_or(conform::Checker::settled)
    }

    fn violations(&self) -> Kinds {
        self.checker().map_or(Kinds::NONE, conform::Checker::kinds)
    }
}

#[cfg(test)]
mod tests;

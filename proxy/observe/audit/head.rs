//! The chain's head held outside the trail. A chain shows any change to
//! the lines it holds, but not lines cut from its end: the head (the last
//! sequence number and chain written) is published where the trail's
//! owner cannot rewrite it — the admin port (`GET /audit/head`), the
//! `meshgate_audit_chain_seq` gauge, and checkpoint lines on the log
//! stream — and `meshgate audit verify --expect` checks a trail against it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::gauge::Gauge;

/// The last line written: its sequence number and chain, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
    pub at: SystemTime,
    /// The file it is in (sink `file`).
    pub file: Option<PathBuf>,
}

impl Head {
    /// The answer of `GET /audit/head`.
    pub fn to_json(head: Option<&Head>) -> serde_json::Value {
        match head {
            None => serde_json::json!({ "seq": null, "hash": null, "at": null, "file": null }),
            Some(h) => serde_json::json!({
                "seq": h.seq,
                "hash": h.hash,
                "at": at_text(h.at),
                "file": h.file.as_ref().map(|f| f.display().to_string()),
            }),
        }
    }
}

/// RFC 3339; none for a clock outside the years 1970 to 9999 (where
/// humantime would panic: this runs on the writer thread too).
fn at_text(t: SystemTime) -> Option<String> {
    super::line::rfc3339_micros(t).ok().map(|t| t.to_string())
}

#[derive(Default)]
struct State {
    head: Option<Head>,
    /// The head last logged as a checkpoint.
    checkpointed: Option<(u64, String)>,
}

/// The head, shared by the writer thread (which moves it) and the readers.
#[derive(Clone)]
pub(super) struct HeadCell {
    state: Arc<Mutex<State>>,
    gauge: Gauge,
    file: Option<PathBuf>,
}

impl HeadCell {
    pub(super) fn new(gauge: Gauge, file: Option<PathBuf>) -> HeadCell {
        HeadCell {
            state: Arc::default(),
            gauge,
            file,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is replaced whole: a panic elsewhere cannot leave it half-set.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer has written up to `seq` with chain `hash`.
    pub(super) fn moved(&self, seq: u64, hash: &str) {
        let mut s = self.lock();
        s.head = Some(Head {
            seq,
            hash: hash.to_string(),
            at: SystemTime::now(),
            file: self.file.clone(),
        });
        self.gauge.set(i64::try_from(seq).unwrap_or(i64::MAX));
    }

    /// The head found at the end of an existing file (`in_file`: FILE,
    /// or FILE.1 when FILE was just rotated), logged as where the chain
    /// resumes: a shipped log then shows a cut-and-restart as a head lower
    /// than the last checkpoint before it. The next event written moves
    /// the head into FILE.
    pub(super) fn resumed(&self, seq: u64, hash: &str, in_file: PathBuf) {
        self.moved(seq, hash);
        let mut s = self.lock();
        s.checkpointed = Some((seq, hash.to_string()));
        tracing::info!(seq, hash, file = %in_file.display(), "audit trail resumed");
        if let Some(h) = s.head.as_mut() {
            h.file = Some(in_file);
        }
    }

    pub(super) fn get(&self) -> Option<Head> {
        self.lock().head.clone()
    }

    /// Logs the head as a checkpoint, if it moved since the last one.
    pub(super) fn checkpoint(&self) {
        let mut s = self.lock();
        let Some(h) = &s.head else { return };
        if s.checkpointed
            .as_ref()
            .is_some_and(|(seq, hash)| *seq == h.seq && *hash == h.hash)
        {
            return;
        }
        tracing::info!(
            seq = h.seq,
            hash = %h.hash,
            at = at_text(h.at).as_deref().unwrap_or("null"),
            "audit checkpoint"
        );
        s.checkpointed = Some((h.seq, h.hash.clone()));
    }

    /// Logs a checkpoint every `interval` (when the head moved), for ever.
    pub(super) async fn checkpoints(self, interval: Duration) {
        // The first one an interval from now, not at once.
        let first = tokio::time::Instant::now() + interval;
        let mut tick = tokio::time::interval_at(first, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.checkpoint();
        }
    }
}

/// What a trail must reach: a head published by the sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub seq: u64,
    /// The chain at `seq`, when known.
    pub hash: Option<String>,
}

/// Reads the expected heads: `SEQ` or `SEQ:HASH`, the JSON of `GET
/// /audit/head`, or a log stream (JSON or text) of the sidecar. In a log,
/// every `audit checkpoint` line is an anchor (the last one alone could be
/// a forged continuation's, after a cut and a restart; the earlier ones
/// then disagree with the trail), and an `audit trail resumed` line below a
/// checkpoint seen before it (since the last `audit trail starts a new
/// chain`: a stdout sink's each start, a file sink's on no file) is a cut
/// before a restart, refused here. Which chain of the trail a checkpoint
/// belongs to is found by its hash ([`super::verify_against`]).
pub fn parse_anchors(text: &str) -> Result<Vec<Anchor>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty: expected SEQ[:HASH], a checkpoint log line or /audit/head JSON".into());
    }
    if let Some(a) = plain(t) {
        return a.map(|a| vec![a]);
    }
    if t.starts_with('{') && !t.contains('\n') && !t.contains("audit trail resumed") {
        return from_json(t).map(|a| vec![a]);
    }
    let read = |l: &str| {
        let l = l.trim();
        if l.starts_with('{') {
            from_json(l)
        } else {
            from_text_log(l)
        }
    };
    let mut anchors: Vec<Anchor> = Vec::new();
    // The highest checkpoint of the chain the log is in.
    let mut top: Option<u64> = None;
    for line in t.lines() {
        if line.contains("audit checkpoint") {
            let a = read(line)?;
            top = top.max(Some(a.seq));
            anchors.push(a);
        } else if says(line, "audit trail starts a new chain") {
            top = None;
        } else if line.contains("audit trail resumed") {
            let resumed = read(line)?;
            if let Some(top) = top {
                if resumed.seq < top {
                    return Err(format!(
                        "the sidecar resumed its trail at seq {} after a checkpoint at seq {top}: the tail was cut before a restart",
                        resumed.seq
                    ));
                }
            }
        }
    }
    if anchors.is_empty() {
        return Err("no `audit checkpoint` line in it".into());
    }
    Ok(anchors)
}

/// `SEQ` or `SEQ:HASH`; `None` when it is not of that shape at all.
fn plain(t: &str) -> Option<Result<Anchor, String>> {
    let (seq, hash) = match t.split_once(':') {
        Some((s, h)) => (s, Some(h)),
        None => (t, None),
    };
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(anchor(seq, hash))
}

fn anchor(seq: &str, hash: Option<&str>) -> Result<Anchor, String> {
    let seq = seq
        .parse::<u64>()
        .map_err(|e| format!("seq {seq:?}: {e}"))?;
    let hash = hash.map(check_hash).transpose()?;
    Ok(Anchor { seq, hash })
}

fn check_hash(h: &str) -> Result<String, String> {
    if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(h.to_string())
    } else {
        Err(format!("hash {h:?}: expected 64 lowercase hex digits"))
    }
}

/// `{"seq":…,"hash":…}` at the top (the admin answer, a flattened JSON log
/// line) or under `fields` (a nested one).
/// Whether a log line's message is `message`: exactly, for a JSON line
/// (the text inside another message, an error's, must not count); for a
/// text line, whether it follows the line's target (`target: message`).
fn says(line: &str, message: &str) -> bool {
    let line = line.trim();
    if !line.contains(message) {
        return false;
    }
    if !line.starts_with('{') {
        // A text line, `TIME  LEVEL target: message fields`: the message is
        // what follows the first `: ` (the time has none), not words inside
        // another message or a field's value.
        return line
            .split_once(": ")
            .and_then(|(_, said)| said.strip_prefix(message))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '));
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return false;
    };
    let said = |v: &serde_json::Value| v.get("message").and_then(|m| m.as_str()) == Some(message);
    said(&v) || v.get("fields").is_some_and(said)
}

fn from_json(l: &str) -> Result<Anchor, String> {
    let v: serde_json::Value = serde_json::from_str(l).map_err(|e| format!("not JSON: {e}"))?;
    let obj = match v.get("fields") {
        Some(f) if f.get("seq").is_some() => f,
        _ => &v,
    };
    let seq = match obj.get("seq") {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| format!("seq {n}: not a sequence number"))?,
        Some(serde_json::Value::Null) => {
            return Err("seq is null: the sidecar had written no audit line yet".into())
        }
        Some(other) => return Err(format!("seq {other}: not a sequence number")),
        None => return Err("no `seq` field".into()),
    };
    let hash = match obj.get("hash") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(h)) => Some(check_hash(h)?),
        Some(other) => return Err(format!("hash {other}: not a string")),
    };
    Ok(Anchor { seq, hash })
}

/// A text log line: `… audit checkpoint seq=5 hash=… at=…`.
fn from_text_log(l: &str) -> Result<Anchor, String> {
    let field = |name: &str| {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .map(|v| v.trim_matches('"'))
    };
    let seq = field("seq").ok_or("no `seq=` field in the checkpoint line")?;
    anchor(seq, field("hash"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "ab00000000000000000000000000000000000000000000000000000000000000";

    /// One anchor, for the shapes that hold one.
    fn parse_anchor(text: &str) -> Result<Anchor, String> {
        let mut all = parse_anchors(text)?;
        assert_eq!(all.len(), 1, "{all:?}");
        Ok(all.remove(0))
    }

    /// Only a line whose message it is starts a new chain: the words
    /// inside another message (an error's) do not reset the log's heads.
    #[test]
    fn a_new_chain_is_a_message_not_words_in_one() {
        assert!(says(
            r#"{"message":"audit trail starts a new chain","sink":"stdout"}"#,
            "audit trail starts a new chain"
        ));
        assert!(says(
            r#"{"fields":{"message":"audit trail starts a new chain"}}"#,
            "audit trail starts a new chain"
        ));
        assert!(!says(
            r#"{"message":"request failed","error":"x: audit trail starts a new chain"}"#,
            "audit trail starts a new chain"
        ));
        // The same in text logs.
        let new_chain = "audit trail starts a new chain";
        assert!(says(
            r#"2026-12-07T16:00:00.123456Z  INFO meshgate::observe::audit: audit trail starts a new chain sink="stdout""#,
            new_chain
        ));
        assert!(!says(
            "2026-12-07T16:00:00.123456Z  WARN meshgate::pipeline: request failed error=x: audit trail starts a new chain",
            new_chain
        ));
        assert!(!says(
            "2026-12-07T16:00:00.123456Z  WARN meshgate::pipeline: audit trail starts a new chained store",
            new_chain
        ));
    }

    #[test]
    fn every_shape_of_an_expected_head() {
        let with = |seq| Anchor {
            seq,
            hash: Some(H.to_string()),
        };
        assert_eq!(
            parse_anchor("12"),
            Ok(Anchor {
                seq: 12,
                hash: None
            })
        );
        assert_eq!(parse_anchor(&format!(" 12:{H}\n")), Ok(with(12)));
        let admin = format!(r#"{{"seq":7,"hash":"{H}","at":"x","file":null}}"#);
        assert_eq!(parse_anchor(&admin), Ok(with(7)));
        let json_log = format!(
            "{{\"message\":\"meshgate ready\"}}\n\
             {{\"message\":\"audit checkpoint\",\"seq\":3,\"hash\":\"{H}\"}}\n\
             {{\"message\":\"audit checkpoint\",\"seq\":9,\"hash\":\"{H}\"}}\n\
             {{\"message\":\"shutting down\"}}\n"
        );
        // Every checkpoint of a log is an anchor.
        assert_eq!(parse_anchors(&json_log), Ok(vec![with(3), with(9)]));
        let nested =
            format!(r#"{{"fields":{{"message":"audit checkpoint","seq":4,"hash":"{H}"}}}}"#);
        assert_eq!(parse_anchor(&nested), Ok(with(4)));
        let text =
            format!("2026-01-01T00:00:00Z  INFO meshgate: audit checkpoint seq=5 hash={H} at=x");
        assert_eq!(parse_anchor(&text), Ok(with(5)));
    }

    /// A log holding a cut and a restart: the trail resumed below a
    /// checkpoint logged before.
    #[test]
    fn a_resume_below_an_earlier_checkpoint_is_a_cut() {
        let log = format!(
            "{{\"message\":\"audit checkpoint\",\"seq\":4,\"hash\":\"{H}\"}}\n\
             {{\"message\":\"audit trail resumed\",\"seq\":2,\"hash\":\"{H}\"}}\n\
             {{\"message\":\"audit checkpoint\",\"seq\":5,\"hash\":\"{H}\"}}\n"
        );
        let e = parse_anchors(&log).unwrap_err();
        assert_eq!(
            e,
            "the sidecar resumed its trail at seq 2 after a checkpoint at seq 4: the tail was cut before a restart"
        );
        // Resumed at (or past) the last checkpoint: a plain restart.
        let ok = log.replace("\"seq\":2", "\"seq\":4");
        assert_eq!(parse_anchors(&ok).map(|a| a.len()), Ok(2));
        // After a new chain (a stdout sink's next start, a file sink that
        // found no file) a resume is held to that chain's checkpoints only;
        // the earlier ones stay heads, looked for in the trail.
        let new_chain = log.replace(
            "{\"message\":\"audit trail resumed\"",
            "{\"message\":\"audit trail starts a new chain\"}\n\
             {\"message\":\"audit trail resumed\"",
        );
        assert_eq!(parse_anchors(&new_chain).map(|a| a.len()), Ok(2));
    }

    #[test]
    fn a_bad_expected_head_says_what_is_wrong() {
        let err = |s: &str| parse_anchors(s).unwrap_err();
        assert!(
            err("12:abc").contains("64 lowercase hex"),
            "{}",
            err("12:abc")
        );
        assert!(err(r#"{"seq":null,"hash":null}"#).contains("no audit line yet"));
        assert!(err(r#"{"hash":"x"}"#).contains("no `seq` field"));
        assert!(err("hello\nworld").contains("no `audit checkpoint` line"));
        assert!(err("99999999999999999999999").contains("seq"));
        assert!(err("").contains("empty"));
    }
}

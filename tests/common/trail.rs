//! The audit trail a sidecar writes to a file, read back by request id.

use std::path::Path;
use std::time::{Duration, Instant};

use super::Meshgate;

/// Every whole line of the trail `path`, as JSON (none when it does not
/// exist yet). A last line without its line feed is being written (the
/// writer's buffer can fill in the middle of a line): left for the next look.
pub fn events(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The event of request `request_id` in the trail `path`: events are
/// written at the end of a response, so this waits (up to 20 s) for it,
/// looking again at each new log line of the sidecar.
pub fn event_of(mg: &Meshgate, path: &Path, request_id: &str) -> serde_json::Value {
    event_where(mg, path, &format!("of request {request_id}"), |events| {
        events.into_iter().find(|e| e["request_id"] == request_id)
    })
}

/// The event `pick` finds among the events of the trail `path`, waited
/// for like [`event_of`]; `what` names it in the failure.
pub fn event_where(
    mg: &Meshgate,
    path: &Path,
    what: &str,
    pick: impl Fn(Vec<serde_json::Value>) -> Option<serde_json::Value>,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(e) = pick(events(path)) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no audit event {what} in {}",
            path.display()
        );
        mg.logs
            .wait_for(mg.logs.len(), Duration::from_millis(200), |_| true);
    }
}

/// The events in the trail `path` of requests to `request_path`, once
/// there are at least `n` of them (waiting up to 20 s, as [`event_of`]):
/// for responses that were cut before their head, which name no request id.
pub fn events_of_path(
    mg: &Meshgate,
    path: &Path,
    request_path: &str,
    n: usize,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found: Vec<_> = events(path)
            .into_iter()
            .filter(|e| e["path"] == request_path)
            .collect();
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{} events of {request_path} in {}, not {n}",
            found.len(),
            path.display()
        );
        mg.logs
            .wait_for(mg.logs.len(), Duration::from_millis(200), |_| true);
    }
}

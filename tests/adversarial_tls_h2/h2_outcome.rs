//! What the server did with one stream of an HTTP/2 probe.

use serde_json::Value;

/// What the server sent for one stream, or for the whole connection.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// A response with this status.
    Status(u64),
    /// RST_STREAM with this error code; the connection goes on.
    Reset(String),
    /// GOAWAY with this error code and debug data; the connection ends.
    GoAway(String, String),
}

pub(crate) fn reset(code: &str) -> Outcome {
    Outcome::Reset(code.into())
}

pub(crate) fn goaway(code: &str, debug: &str) -> Outcome {
    Outcome::GoAway(code.into(), debug.into())
}

/// The outcome of stream 1 in a probe's report. After a stream outcome the
/// connection must still have served the normal request on stream 3.
pub(crate) fn outcome_of(r: &Value) -> Outcome {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    if !r["goaway"].is_null() {
        assert_eq!(r["closed"], true, "{r}");
        return Outcome::GoAway(text(&r["goaway"]["error"]), text(&r["goaway"]["debug"]));
    }
    assert_eq!(
        r["stream3"]["status"], 200,
        "the connection stopped serving: {r}"
    );
    match (
        r["stream1"]["status"].as_u64(),
        r["stream1"]["reset"].as_str(),
    ) {
        (Some(status), _) => Outcome::Status(status),
        (None, Some(code)) => reset(code),
        _ => panic!("no answer on stream 1: {r}"),
    }
}

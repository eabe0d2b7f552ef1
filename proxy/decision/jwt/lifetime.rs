//! A token's time claims (`exp`, `nbf`, `iat`), read strictly and checked
//! against the clock and the issuer's `max_lifetime`.
//!
//! RFC 7519 NumericDates are read here rather than by jsonwebtoken, which
//! reports a present but unreadable `exp` as missing and rounds fractions.
//! A date is accepted only as a finite, integer-valued JSON number from 0 to
//! 2^63-1 seconds; anything else (`1.5`, `-1`, `"123"`, `1e400`, 2^64) is
//! refused as `malformed_claim`, naming the claim. All arithmetic saturates.

use serde_json::{Map, Value};
use std::time::Duration;

use super::TokenError;

/// The latest NumericDate accepted: `i64::MAX` seconds.
pub(super) const LATEST: u64 = i64::MAX as u64;

/// The time claims this module reads.
pub(super) const TIME_CLAIMS: [&str; 3] = ["exp", "nbf", "iat"];

/// A NumericDate claim, `None` when absent.
pub(super) fn numeric_date(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<u64>, TokenError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let malformed = || TokenError::MalformedClaim(name.to_string());
    let Value::Number(n) = value else {
        return Err(malformed());
    };
    if let Some(u) = n.as_u64() {
        return if u <= LATEST {
            Ok(Some(u))
        } else {
            Err(malformed())
        };
    }
    if n.is_i64() {
        // Negative: before 1970.
        return Err(malformed());
    }
    match n.as_f64() {
        // 2^63 as f64 is exact; an integral f64 below it fits in u64 (the
        // range also shuts out NaN and the infinities).
        Some(f) if (0.0..9_223_372_036_854_775_808.0).contains(&f) && f.fract() == 0.0 => {
            Ok(Some(f as u64))
        }
        _ => Err(malformed()),
    }
}

/// The clock and the issuer's bounds a token's times are checked against.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    /// Unix seconds.
    pub now: u64,
    /// Allowed clock skew for `exp` and `nbf`.
    pub leeway: Duration,
    /// The longest a token may live: `exp - iat`, or `exp - now` (less the
    /// leeway) when there is no `iat`.
    pub max_lifetime: Duration,
}

/// Checks `exp`, `nbf` and `iat` and returns `exp`. Order: a malformed date
/// first, then a missing `exp`, expired, not yet valid, too long a lifetime.
pub(super) fn check(claims: &Map<String, Value>, w: Window) -> Result<u64, TokenError> {
    let exp = numeric_date(claims, "exp")?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;
    let exp = exp.ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
    let leeway = w.leeway.as_secs();
    let max = w.max_lifetime.as_secs();
    if exp.saturating_add(leeway) < w.now {
        return Err(TokenError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > w.now.saturating_add(leeway)) {
        return Err(TokenError::NotYetValid);
    }
    // Issued in the future, or after it expires: not a time a real issuer
    // writes (a future `iat` would also shrink `exp - iat`).
    if iat.is_some_and(|iat| iat > w.now.saturating_add(leeway) || iat > exp) {
        return Err(TokenError::IatImpossible);
    }
    let too_long = TokenError::LifetimeTooLong(w.max_lifetime);
    if iat.is_some_and(|iat| exp.saturating_sub(iat) > max) {
        return Err(too_long);
    }
    // Without `iat` (or with one in the future), what is left of the token's
    // life is bounded the same way.
    if exp.saturating_sub(w.now) > max.saturating_add(leeway) {
        return Err(too_long);
    }
    Ok(exp)
}

/// When a payload is not JSON because a number is out of range (`1e400`):
/// the time claim that number belongs to, if it is one.
pub(super) fn out_of_range_claim(payload: &[u8], err: &serde_json::Error) -> Option<TokenError> {
    if !err.to_string().starts_with("number out of range") {
        return None;
    }
    // serde_json's line and column (1-based) point at the number's end.
    let mut offset = 0usize;
    for _ in 1..err.line() {
        offset += payload.get(offset..)?.iter().position(|&b| b == b'\n')? + 1;
    }
    let end = offset.checked_add(err.column())?.min(payload.len());
    let before = payload.get(..end)?;
    let number = |b: &u8| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-');
    let start = before.iter().rposition(|b| !number(b)).map_or(0, |i| i + 1);
    let key = before
        .get(..start)?
        .trim_ascii_end()
        .strip_suffix(b":")?
        .trim_ascii_end();
    TIME_CLAIMS
        .iter()
        .find(|c| key.ends_with(format!("\"{c}\"").as_bytes()))
        .map(|c| TokenError::MalformedClaim((*c).to_string()))
}

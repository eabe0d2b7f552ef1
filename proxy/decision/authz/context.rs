//! The Cedar context of a request, made of values.
//!
//! cedar-policy builds a context from restricted expressions and evaluates
//! them (`Context::from_pairs`): a record, strings, and the `ip(..)` and
//! `datetime(..)` calls, whose text Cedar parses with regexes each time.
//! That was 30,000 instructions of every context (callgrind, 2026-12-04),
//! more than the rest of a decision in a new second. Here only the two
//! extension values are Cedar's evaluation, remembered per thread (the
//! address per client, the time per second), and the context is the record
//! of those values beside the plain ones, built directly.
//! [`Snapshot::cedar_context`] is the same context made Cedar's way, the
//! reference a test holds it equal to.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

use cedar_policy::{Context, EntityTypeName, RestrictedExpression};
use cedar_policy_core::ast;

use crate::FastMap;

use super::*;

/// One extension value as Cedar makes it, or why it could not.
type Made = Result<ast::Value, String>;

thread_local! {
    /// `context.time` of the current second.
    static TIME_VALUE: std::cell::RefCell<Option<(u64, Made)>> =
        const { std::cell::RefCell::new(None) };
    /// `context.source_ip` by address.
    static IP_VALUES: std::cell::RefCell<FastMap<IpAddr, Made>> =
        std::cell::RefCell::new(FastMap::default());
}

/// Clients' addresses a thread remembers before it forgets them all.
const IP_VALUES_KEPT: usize = 4096;

/// The value Cedar makes of `e` when it is a context attribute: the same
/// evaluation `Context::from_pairs` applies to each.
fn evaluated(e: RestrictedExpression) -> Made {
    let ctx = Context::from_pairs([("v".to_string(), e)]).map_err(|e| e.to_string())?;
    match ctx.as_ref() {
        ast::Context::Value(attrs) => attrs
            .get("v")
            .cloned()
            .ok_or_else(|| "context value missing".to_string()),
        ast::Context::RestrictedResidual(_) => Err("context value not concrete".to_string()),
    }
}

/// The names of the extension constructors the context calls, parsed once;
/// `None` if Cedar stopped accepting one (then [`evaluated`] takes Cedar's
/// own way).
static IP_NAME: LazyLock<Option<ast::Name>> = LazyLock::new(|| unqualified("ip"));
pub(super) static DATETIME_NAME: LazyLock<Option<ast::Name>> =
    LazyLock::new(|| unqualified("datetime"));

fn unqualified(name: &str) -> Option<ast::Name> {
    name.parse::<ast::UnreservedId>()
        .ok()
        .map(ast::Name::unqualified_name)
}

/// `name("<text>")` as Cedar's evaluator makes it of a call on a string
/// literal, `name` one of the extension constructors (`Err` if there is no
/// such extension function or it refuses the text).
pub(super) fn construct(name: &str, text: &str) -> Made {
    let name = unqualified(name).ok_or_else(|| format!("not a name: {name}"))?;
    call_constructor(&name, text)
}

/// `name("<text>")` as Cedar's evaluator makes it of a context's
/// restricted expression: the extension function looked up and called on
/// the string, without the evaluator around it (half the cost of
/// [`evaluated`], callgrind, 2026-12-04); Cedar's own way if the name
/// could not be parsed.
fn constructed(
    name: Option<&ast::Name>,
    text: &str,
    cedars_way: impl FnOnce() -> RestrictedExpression,
) -> Made {
    match name {
        Some(name) => call_constructor(name, text),
        None => evaluated(cedars_way()),
    }
}

/// What Cedar's evaluator does with an extension call on values: the
/// function looked up and called.
fn call_constructor(name: &ast::Name, text: &str) -> Made {
    let extensions = cedar_policy_core::extensions::Extensions::all_available();
    let f = extensions.func(name).map_err(|e| e.to_string())?;
    match f.call(&[ast::Value::from(text)]) {
        Ok(ast::PartialValue::Value(v)) => Ok(v),
        Ok(ast::PartialValue::Residual(_)) => Err("value not concrete".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// `context.time`: the request's second, as Cedar's `datetime` of
/// [`time_expr`]'s text; made once per second per thread. A second after
/// the thread's last one (the clock moves on by a few seconds between
/// requests) is that one's value offset by the seconds between them, with
/// Cedar's `offset`: parsing the text with Cedar's regexes was 4,900
/// instructions of every new second (callgrind, 2026-12-04). The two are
/// equal as Cedar compares values (the same milliseconds since the epoch);
/// only how Cedar would write the value differs (`offset(datetime(..),
/// duration(..))`, its canonical form), which no decision or error of a
/// condition on `context.time` shows. Anything else (an earlier second, a
/// step of 2^16 seconds or more, an error) is parsed as before.
fn time_value(t: SystemTime) -> Made {
    let second = policy_second(t);
    TIME_VALUE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let mut stepped = None;
        if let Some((at, v)) = &*slot {
            if *at == second {
                return v.clone();
            }
            if let (Some(step), Ok(v)) = (second.checked_sub(*at), v) {
                stepped = offset_seconds(v, step);
            }
        }
        let v = match stepped {
            Some(v) => Ok(v),
            None => {
                let text =
                    cedar_datetime(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(second));
                constructed(DATETIME_NAME.as_ref(), &text, || time_expr(t))
            }
        };
        *slot = Some((second, v.clone()));
        v
    })
}

/// Steps of `time_value` made with `offset`: below 2^16 seconds.
const OFFSET_BITS: usize = 16;

static OFFSET_NAME: LazyLock<Option<ast::Name>> = LazyLock::new(|| unqualified("offset"));
static DURATION_NAME: LazyLock<Option<ast::Name>> = LazyLock::new(|| unqualified("duration"));

thread_local! {
    /// `duration("<2^k>s")` for each bit `k` of a step, made on first use.
    static POWERS: std::cell::RefCell<[Option<ast::Value>; OFFSET_BITS]> =
        std::cell::RefCell::new(Default::default());
}

/// `datetime.offset(duration("<step>s"))` as Cedar evaluates it, one
/// `offset` per bit of `step`; `None` when `step` is 0 or too large, or
/// Cedar refuses a step (then the caller parses the text).
pub(super) fn offset_seconds(datetime: &ast::Value, step: u64) -> Option<ast::Value> {
    if step == 0 || step >= 1 << OFFSET_BITS {
        return None;
    }
    let offset = OFFSET_NAME.as_ref()?;
    let duration = DURATION_NAME.as_ref()?;
    let extensions = cedar_policy_core::extensions::Extensions::all_available();
    let f = extensions.func(offset).ok()?;
    POWERS.with(|powers| {
        let mut powers = powers.borrow_mut();
        let mut v = datetime.clone();
        for (k, power) in powers.iter_mut().enumerate() {
            if step & (1 << k) == 0 {
                continue;
            }
            if power.is_none() {
                *power = call_constructor(duration, &format!("{}s", 1u64 << k)).ok();
            }
            match f.call(&[v, power.clone()?]) {
                Ok(ast::PartialValue::Value(next)) => v = next,
                _ => return None,
            }
        }
        Some(v)
    })
}

/// `context.source_ip`: Cedar's `ip` of the address's text.
fn ip_value(ip: IpAddr) -> Made {
    IP_VALUES.with(|cell| {
        let mut map = cell.borrow_mut();
        if let Some(v) = map.get(&ip) {
            return v.clone();
        }
        if map.len() >= IP_VALUES_KEPT {
            map.clear();
        }
        let v = constructed(IP_NAME.as_ref(), &ip.to_string(), || ip_expr(ip));
        map.insert(ip, v.clone());
        v
    })
}

/// Whether the context of `parsed` can be made: only its extension values
/// can fail (they are remembered, so this costs two look-ups).
pub(super) fn context_can_be_made(parsed: &ParsedRequest<'_>) -> Result<(), String> {
    time_value(parsed.time)?;
    ip_value(parsed.source_ip)?;
    Ok(())
}

static USER_TYPE: LazyLock<EntityTypeName> = LazyLock::new(|| type_name("User"));

impl Snapshot {
    /// The Cedar context of a request: the record [`Snapshot::cedar_context`]
    /// makes, from values.
    pub(super) fn context(parsed: &ParsedRequest<'_>) -> Result<Context, String> {
        Self::context_with(parsed, None)
    }

    /// [`Snapshot::context`] with `extra`, an attribute no condition of a
    /// policy reads (the tests' literals, see `literals.rs`), beside its
    /// own: made directly, not looked up in the per-thread cache of
    /// contexts and copied (in a new second the look-up always missed, and
    /// then kept copies of the key and the context for nothing).
    pub(super) fn context_with(
        parsed: &ParsedRequest<'_>,
        extra: Option<(&str, ast::Value)>,
    ) -> Result<Context, String> {
        let time = time_value(parsed.time)?;
        let source_ip = ip_value(parsed.source_ip)?;
        let tls = ast::Value::record([("version", parsed.tls_version)], None);
        let mut attrs = BTreeMap::new();
        attrs.insert("method".into(), ast::Value::from(parsed.method));
        attrs.insert("path".into(), ast::Value::from(parsed.path));
        attrs.insert("source_ip".into(), source_ip);
        attrs.insert("time".into(), time);
        attrs.insert("tls".into(), tls);
        attrs.insert("has_user".into(), ast::Value::from(parsed.user.is_some()));
        if let Some(u) = parsed.user {
            let user = ast::EntityUID::from(uid(&USER_TYPE, &u.id));
            attrs.insert("user".into(), ast::Value::from(user));
        }
        if let Some(p) = parsed.purpose {
            attrs.insert("purpose".into(), ast::Value::from(p));
        }
        if let Some((name, value)) = extra {
            attrs.insert(name.into(), value);
        }
        Ok(Context::from(ast::Context::Value(Arc::new(attrs))))
    }

    /// The same context as cedar-policy makes it from restricted
    /// expressions: what the plain `Authorizer` reference decides with.
    pub(super) fn cedar_context(parsed: &ParsedRequest<'_>) -> Result<Context, String> {
        let mut pairs = vec![
            (
                "method".to_string(),
                RestrictedExpression::new_string(parsed.method.to_string()),
            ),
            (
                "path".to_string(),
                RestrictedExpression::new_string(parsed.path.to_string()),
            ),
            ("source_ip".to_string(), ip_expr(parsed.source_ip)),
            ("time".to_string(), time_expr(parsed.time)),
            (
                "tls".to_string(),
                RestrictedExpression::new_record([(
                    "version".to_string(),
                    RestrictedExpression::new_string(parsed.tls_version.to_string()),
                )])
                .map_err(|e| e.to_string())?,
            ),
            (
                "has_user".to_string(),
                RestrictedExpression::new_bool(parsed.user.is_some()),
            ),
        ];
        if let Some(u) = parsed.user {
            pairs.push((
                "user".to_string(),
                RestrictedExpression::new_entity_uid(uid(&type_name("User"), &u.id)),
            ));
        }
        if let Some(p) = parsed.purpose {
            pairs.push((
                "purpose".to_string(),
                RestrictedExpression::new_string(p.to_string()),
            ));
        }
        Context::from_pairs(pairs).map_err(|e| e.to_string())
    }
}

/// Cedar's datetime format, UTC with milliseconds.
pub fn cedar_datetime(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    let year = dt.year();
    if !(0..=9999).contains(&year) {
        // Before the epoch (`SystemTime`s past 9999 do not convert): the
        // text as `format!` writes it, sign included.
        return formatted(&dt);
    }
    // `format!` cost 3,000 instructions of every new second.
    let mut out = String::with_capacity(24);
    let mut push = |n: u32, width: u32, sep: Option<char>| {
        for k in (0..width).rev() {
            let digit = n / 10u32.pow(k) % 10;
            out.push(char::from(b'0' + digit as u8));
        }
        if let Some(c) = sep {
            out.push(c);
        }
    };
    // `year` is in 0..=9999 (checked above).
    push(year.unsigned_abs(), 4, Some('-'));
    push(u32::from(u8::from(dt.month())), 2, Some('-'));
    push(u32::from(dt.day()), 2, Some('T'));
    push(u32::from(dt.hour()), 2, Some(':'));
    push(u32::from(dt.minute()), 2, Some(':'));
    push(u32::from(dt.second()), 2, Some('.'));
    push(u32::from(dt.millisecond()), 3, Some('Z'));
    out
}

/// A time as `format!` writes it (the text `cedar_datetime` makes by hand
/// for the years 0 to 9999, and the one it uses outside them).
pub(super) fn formatted(dt: &time::OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.millisecond()
    )
}

//! The per-thread decision caches: field decisions have their own, so a
//! burst of field plans does not evict the decisions requests are made from.

use super::*;
use crate::decision::routes::Lookup;
use crate::model::identity::{parse_spiffe_id, Principal};
use crate::model::path::normalize;
use http::Method;

const REPORTING: &str = "spiffe://mesh.local/ns/finance/sa/reporting";

fn spiffe(id: &str) -> Principal {
    Principal::Spiffe(parse_spiffe_id(id).expect("valid id"))
}

/// The request's decision entry of `who` about `resource`, if the thread
/// still holds it.
fn remembered(s: &Snapshot, who: &str, resource: &Resource) -> bool {
    decisions_of(resource.kind).with(|c| c.borrow().get(who, (s.serial, resource.index)).is_some())
}

#[test]
fn request_decisions_survive_a_burst_of_field_decisions() {
    let s = Snapshot::build(&examples::example_inputs()).expect("example policies load");
    let path = normalize("/orders").expect("path");
    let Lookup::Found(target) = s.routes().lookup(&Method::GET, &path) else {
        panic!("no route for GET /orders")
    };
    let decoded = path.decoded();
    let parsed = ParsedRequest {
        method: "GET",
        path: &decoded,
        source_ip: "10.1.2.3".parse().expect("ip"),
        purpose: None,
        tls_version: "TLSv1.3",
        time: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_168_800),
        user: None,
    };
    let resource = s.resource(target).expect("the orders dataset");
    assert_ne!(resource.kind, FIELD);
    assert!(s.authorize(&spiffe(REPORTING), target, &parsed).allowed);
    assert!(remembered(&s, REPORTING, resource));

    // Field plans of the orders dataset for enough callers that their
    // field decisions alone would fill a shared cache.
    let first = s
        .field_plan(&spiffe(REPORTING), target, &parsed)
        .expect("orders declares fields");
    let fields = first.specs.fields.len();
    assert!(fields > 1, "{fields} fields");
    let callers = DecisionCache::CAPACITY / fields + 1;
    for i in 0..callers {
        let who = spiffe(&format!("spiffe://mesh.local/ns/finance/sa/report-{i}"));
        let plan = s.field_plan(&who, target, &parsed).expect("a plan");
        // Each caller's plan is built from its own field decisions, and
        // comes out as finance's does.
        assert_eq!(plan.hidden, first.hidden, "caller {i}");
        assert_eq!(plan.visible, first.visible, "caller {i}");
    }
    decisions_of(FIELD).with(|c| {
        let c = c.borrow();
        assert!(c.len <= DecisionCache::CAPACITY, "{} field entries", c.len);
        assert!(c.len > 0, "the field decisions are cached");
    });
    // The request's decision is still where it was.
    assert!(remembered(&s, REPORTING, resource));
}

#[test]
fn a_datetime_made_from_the_name_parsed_once_is_cedars_own() {
    for text in [
        "2026-12-04T15:00:00.000Z",
        "1970-01-01T00:00:00.000Z",
        "not a date",
    ] {
        assert_eq!(
            super::cache::datetime_expr(text),
            cedar_policy::RestrictedExpression::new_datetime(text),
            "{text}"
        );
    }
}

#[test]
fn a_context_made_of_values_is_the_one_cedar_makes() {
    let user = crate::decision::jwt::User {
        id: "https://idp.example|alice".to_string(),
        issuer: "https://idp.example".to_string(),
        subject: "alice".to_string(),
        groups: vec!["analysts".to_string()],
        scopes: Vec::new(),
        attributes: Vec::new(),
        expires_at: 0,
    };
    let at = |s: u64| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s);
    let times = [
        at(0),
        at(1_795_168_800),
        at(1_795_168_801) + std::time::Duration::from_millis(999),
        at(253_402_300_799),
    ];
    let ips: [std::net::IpAddr; 3] = [
        [10, 0, 0, 1].into(),
        "::1".parse().expect("ip"),
        "2001:db8::7".parse().expect("ip"),
    ];
    for (i, time) in times.into_iter().enumerate() {
        for ip in ips {
            for purpose in [None, Some("reporting"), Some("")] {
                for user in [None, Some(&user)] {
                    let parsed = ParsedRequest {
                        method: ["GET", "POST"][i % 2],
                        path: "/p1/rows/a b",
                        source_ip: ip,
                        purpose,
                        tls_version: "TLSv1.3",
                        time,
                        user,
                    };
                    let ours = Snapshot::context(&parsed);
                    let cedars = Snapshot::cedar_context(&parsed);
                    match (ours, cedars) {
                        (Ok(a), Ok(b)) => {
                            assert_eq!(a.as_ref(), b.as_ref(), "{parsed:?}");
                            // Written alike too, but for a time offset
                            // from the thread's last second (see
                            // `a_time_offset_from_the_last_second_is_the_parsed_one`).
                            assert_eq!(written(&a), written(&b), "{parsed:?}");
                        }
                        (a, b) => panic!("{parsed:?}: {a:?} vs {b:?}"),
                    }
                }
            }
        }
    }
}

/// A context's attributes as Cedar writes them, `time` left out.
fn written(c: &cedar_policy::Context) -> Vec<(String, String)> {
    let cedar_policy_core::ast::Context::Value(attrs) = c.as_ref() else {
        panic!("context not concrete");
    };
    attrs
        .iter()
        .filter(|(k, _)| k.as_str() != "time")
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_time_offset_from_the_last_second_is_the_parsed_one() {
    use cedar_policy::{Authorizer, Entities, EntityUid, PolicySet, Request};
    let at = |s: u64| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s);
    // Steps of one second, of several, across a day and a year, of the
    // largest made by `offset` and the first parsed instead, and back.
    let mut second = 1_795_168_790;
    let mut seconds = Vec::new();
    for step in [1, 1, 2, 3, 7, 59, 86_399, 1, 31_536_000, 65_535, 65_536, 1] {
        second += step;
        seconds.push(second);
    }
    seconds.extend([
        second - 5,
        0,
        1,
        951_782_399,
        951_782_400,
        253_402_300_798,
        253_402_300_799,
    ]);
    // Conditions on the time, evaluated by Cedar on both contexts.
    let policies: PolicySet = r#"
        permit(principal, action, resource) when { context.time.toTime() < duration("12h") };
        permit(principal, action, resource) when { context.time.toDate() == datetime("2026-11-19") };
        permit(principal, action, resource) when { context.time > datetime("2026-11-19T20:00:00Z") };
        permit(principal, action, resource) when { context.time.durationSince(datetime("2000-02-29")).toDays() > 9500 };
        permit(principal, action, resource) when { context.time.offset(duration("-1ms")) < context.time };
        permit(principal, action, resource) when { [context.time].contains(datetime("2026-11-19T22:13:11Z")) };
    "#
    .parse()
    .expect("policies");
    let uid = |s: &str| s.parse::<EntityUid>().expect("uid");
    for second in seconds {
        let parsed = ParsedRequest {
            method: "GET",
            path: "/p1/rows",
            source_ip: [10, 0, 0, 1].into(),
            purpose: None,
            tls_version: "TLSv1.3",
            time: at(second),
            user: None,
        };
        let ours = Snapshot::context(&parsed).expect("ours");
        let cedars = Snapshot::cedar_context(&parsed).expect("cedar's");
        assert_eq!(ours.as_ref(), cedars.as_ref(), "{second}");
        let decide = |c: cedar_policy::Context| {
            let r = Request::new(
                uid(r#"A::"a""#),
                uid(r#"A::"b""#),
                uid(r#"A::"c""#),
                c,
                None,
            )
            .expect("request");
            let resp = Authorizer::new().is_authorized(&r, &policies, &Entities::empty());
            let mut reasons: Vec<String> =
                resp.diagnostics().reason().map(|p| p.to_string()).collect();
            reasons.sort();
            let errors: Vec<String> = resp.diagnostics().errors().map(|e| e.to_string()).collect();
            (resp.decision(), reasons, errors)
        };
        assert_eq!(decide(ours), decide(cedars), "{second}");
    }
}

#[test]
fn offset_steps_a_datetime_as_cedar_parses_the_later_one() {
    use super::context::{cedar_datetime, construct, offset_seconds};
    let parsed = |s: u64| {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s);
        construct("datetime", &cedar_datetime(t)).expect("datetime")
    };
    for from in [0u64, 951_782_399, 1_795_168_800, 252_000_000_000] {
        for step in [1u64, 2, 3, 5, 60, 3_600, 65_535] {
            let stepped = offset_seconds(&parsed(from), step);
            assert_eq!(stepped, Some(parsed(from + step)), "{from} + {step}");
        }
        for step in [0u64, 65_536, u64::MAX] {
            assert_eq!(offset_seconds(&parsed(from), step), None, "{from} + {step}");
        }
    }
}

#[test]
fn cedar_datetime_is_the_text_format_wrote() {
    for s in [
        0u64,
        1,
        59,
        86_399,
        951_782_400,
        1_795_168_801,
        253_402_300_799,
    ] {
        for ms in [0u64, 7, 999] {
            let t = SystemTime::UNIX_EPOCH
                + std::time::Duration::from_secs(s)
                + std::time::Duration::from_millis(ms);
            let expected = super::context::formatted(&time::OffsetDateTime::from(t));
            assert_eq!(super::context::cedar_datetime(t), expected);
        }
    }
}

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

//! The `shadow` member of a request line: the fields the shadow set's
//! plan would hide or show otherwise, only where it differs, bounded.

use super::tests::event;
use super::*;
use crate::decision::authz::Decision;
use crate::decision::fields::{DatasetFields, FieldPlan, Mask, ShadowField, Undeclared};

fn outcome(shadow_differs: Vec<ShadowField>) -> Arc<AuthzOutcome> {
    let allow = |policies: &[&str]| Decision {
        allowed: true,
        policies: policies.iter().map(|p| p.to_string()).collect(),
        errors: vec![],
    };
    Arc::new(AuthzOutcome {
        product: Arc::from("sales.orders"),
        action: crate::decision::contract::Action::Read,
        resource: Arc::from("sales.orders/orders"),
        decision: allow(&["p1"]),
        shadow: Some(allow(&["p1"])),
        policy_version: Arc::from("v2"),
        throughput: None,
        latency: None,
        fields: Some(Arc::new(FieldPlan {
            dataset: Arc::from("sales.orders/orders"),
            hidden: vec![],
            visible: vec![],
            verdicts: vec![],
            shadow_hidden: Some(vec![]),
            shadow_differs,
            specs: Arc::new(DatasetFields::default()),
            undeclared: Undeclared::Pass,
            errors: vec![],
            trees: Default::default(),
        })),
    })
}

fn shadow_of(outcome: Arc<AuthzOutcome>) -> serde_json::Value {
    let mut e = event("/orders/SO-1");
    e.outcome = Some(outcome);
    e.decision = "allow";
    e.status = 200;
    let mut line = Vec::new();
    write_request(&mut line, 1, None, &e, "node", None).expect("written");
    let v: serde_json::Value = serde_json::from_slice(&line).expect("json");
    v["shadow"].clone()
}

fn differ(i: usize) -> ShadowField {
    ShadowField {
        path: Arc::from(format!("f{i}/é").as_str()),
        hide: i.is_multiple_of(2),
        mask: if i.is_multiple_of(2) {
            Mask::Hash
        } else {
            Mask::Omit
        },
        policies: vec![format!("trial.p{i}")],
    }
}

#[test]
fn a_shadow_plan_that_differs_lists_its_fields_with_method_and_policies() {
    let shadow = shadow_of(outcome(vec![differ(0), differ(1)]));
    assert_eq!(
        shadow,
        serde_json::json!({
            "decision": "allow", "policies": ["p1"],
            "fields": [
                {"field": "f0/é", "would": "hide", "mask": "hash", "policies": ["trial.p0"]},
                {"field": "f1/é", "would": "show", "mask": "omit", "policies": ["trial.p1"]},
            ],
        })
    );
}

#[test]
fn a_shadow_plan_that_agrees_adds_nothing() {
    let shadow = shadow_of(outcome(vec![]));
    assert_eq!(
        shadow,
        serde_json::json!({"decision": "allow", "policies": ["p1"]})
    );
}

#[test]
fn a_shadow_plan_lists_at_most_32_fields_and_counts_the_rest() {
    let many: Vec<ShadowField> = (0..SHADOW_FIELDS + 8).map(differ).collect();
    let shadow = shadow_of(outcome(many.clone()));
    let listed = shadow["fields"].as_array().expect("a list");
    assert_eq!(listed.len(), SHADOW_FIELDS);
    assert_eq!(
        listed[SHADOW_FIELDS - 1]["field"],
        *many[SHADOW_FIELDS - 1].path
    );
    assert_eq!(shadow["fields_left_off"], 8);
}

use super::depth::{DECIDING_STACK, MAX_NESTING, MAX_OPERATORS};
use super::parse::{parse_in_pieces, statement_cuts, PARSE_PART, PIECE};
use super::*;
use crate::decision::routes::Lookup;
use crate::model::identity::parse_spiffe_id;
use crate::model::identity::Principal;
use crate::model::path::normalize;
use cedar_policy::Policy;
use http::Method;
use std::str::FromStr;

fn spiffe(id: &str) -> Principal {
    Principal::Spiffe(parse_spiffe_id(id).expect("valid id"))
}

fn at(hour: u64) -> SystemTime {
    // 2026-11-20T00:00:00Z plus `hour` hours
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_132_800 + hour * 3600)
}

struct Ask<'a> {
    who: &'a str,
    method: Method,
    path: &'a str,
    purpose: Option<&'a str>,
    hour: u64,
}

fn ask(s: &Snapshot, a: Ask<'_>) -> Decision {
    let path = normalize(a.path).expect("path");
    let Lookup::Found(target) = s.routes().lookup(&a.method, &path) else {
        panic!("no route for {} {}", a.method, a.path)
    };
    let decoded = path.decoded();
    let parsed = ParsedRequest {
        method: a.method.as_str(),
        path: &decoded,
        source_ip: "10.1.2.3".parse().expect("ip"),
        purpose: a.purpose,
        tls_version: "TLSv1.3",
        time: at(a.hour),
        user: None,
    };
    let d = s.authorize(&spiffe(a.who), target, &parsed);
    let reference = s.authorize_unindexed(&spiffe(a.who), target, &parsed);
    assert_eq!(d, reference, "index and plain authorizer disagree");
    d
}

fn get<'a>(who: &'a str, path: &'a str) -> Ask<'a> {
    Ask {
        who,
        method: Method::GET,
        path,
        purpose: None,
        hour: 10,
    }
}

const REPORTING: &str = "spiffe://mesh.local/ns/finance/sa/reporting";
const CAMPAIGNS: &str = "spiffe://mesh.local/ns/marketing/sa/campaigns";
const FRAUD: &str = "spiffe://mesh.local/ns/risk/sa/fraud-scanner";
const SALES_ETL: &str = "spiffe://mesh.local/ns/sales/sa/etl";

fn example() -> Snapshot {
    Snapshot::build(&crate::decision::authz::examples::example_inputs())
        .expect("example policies load")
}

#[test]
fn example_policies_decide_by_identity() {
    let s = example();
    let d = ask(&s, get(REPORTING, "/orders"));
    assert!(d.allowed);
    assert_eq!(d.policies, vec!["sales.orders.finance-may-read"]);
    let d = ask(&s, get(CAMPAIGNS, "/orders/SO-1"));
    assert!(!d.allowed);
    assert!(d.policies.is_empty() && d.errors.is_empty(), "{d:?}");
    let d = ask(&s, get(CAMPAIGNS, "/orders/_schema"));
    assert_eq!(
        (d.allowed, d.policies),
        (
            true,
            vec!["sales.orders.marketing-may-describe".to_string()]
        )
    );
    let other_td = ask(
        &s,
        get(
            "spiffe://partner.example/ns/finance/sa/reporting",
            "/orders",
        ),
    );
    assert!(!other_td.allowed);
    assert_eq!(other_td.policies, vec!["mesh.foreign-trust-domain"]);
}

#[test]
fn baseline_forbid_beats_a_domain_permit() {
    let s = example();
    let write = |who| Ask {
        who,
        method: Method::POST,
        path: "/ledger/entries",
        purpose: None,
        hour: 10,
    };
    let d = ask(&s, write(SALES_ETL));
    assert!(!d.allowed);
    assert_eq!(d.policies, vec!["mesh.write-only-from-owning-domain"]);
    let d = ask(&s, write("spiffe://mesh.local/ns/finance-batch/sa/booker"));
    assert_eq!(
        (d.allowed, d.policies),
        (true, vec!["finance.ledger.finance-may-write".to_string()])
    );
}

#[test]
fn restricted_data_needs_an_allowed_declared_purpose() {
    let s = example();
    let with = |purpose| Ask {
        purpose,
        ..get(FRAUD, "/customers/C-1")
    };
    let d = ask(&s, with(None));
    assert_eq!(
        (d.allowed, d.policies),
        (
            false,
            vec!["mesh.restricted-requires-allowed-purpose".to_string()]
        )
    );
    let d = ask(&s, with(Some("marketing")));
    assert!(!d.allowed);
    let d = ask(&s, with(Some("fraud-investigation")));
    assert_eq!(
        (d.allowed, d.policies),
        (
            true,
            vec!["sales.customers.fraud-investigators-may-read".to_string()]
        )
    );
}

#[test]
fn one_declared_purpose_only() {
    let s = example();
    let path = normalize("/customers/C-1").expect("path");
    let decide = |purposes: &[&str]| {
        let mut headers = http::HeaderMap::new();
        for p in purposes {
            headers.append(
                X_DATA_PURPOSE,
                http::HeaderValue::from_str(p).expect("value"),
            );
        }
        s.decide_http(
            &spiffe(FRAUD),
            &HttpFacts {
                method: &Method::GET,
                path: &path,
                headers: &headers,
                source_ip: "10.1.2.3".parse().expect("ip"),
                tls_version: "TLSv1.3",
                time: at(10),
                user: None,
            },
        )
        .map(|o| o.decision.allowed)
    };
    assert!(matches!(decide(&["fraud-investigation"]), Ok(true)));
    assert!(matches!(decide(&["marketing"]), Ok(false)));
    // Policy would see the first, the upstream both: refused.
    for two in [
        ["fraud-investigation", "marketing"],
        ["fraud-investigation", "fraud-investigation"],
    ] {
        assert!(
            matches!(decide(&two), Err(DecideError::DuplicatePurpose)),
            "{two:?}"
        );
    }
    assert!(matches!(
        decide(&["fraud investigation"]),
        Err(DecideError::InvalidPurpose)
    ));
}

#[test]
fn time_windows_use_the_request_time() {
    let s = example();
    let d = ask(
        &s,
        Ask {
            hour: 10,
            ..get(REPORTING, "/ledger/entries")
        },
    );
    assert_eq!(
        d.policies,
        vec!["finance.ledger.controlling-business-hours"]
    );
    assert!(d.allowed);
    assert!(
        !ask(
            &s,
            Ask {
                hour: 23,
                ..get(REPORTING, "/ledger/entries")
            }
        )
        .allowed
    );
    assert!(
        !ask(
            &s,
            Ask {
                hour: 5,
                ..get(REPORTING, "/ledger/entries")
            }
        )
        .allowed
    );
}

fn with_policy(text: &str) -> Result<Snapshot, LoadErrors> {
    let mut inputs = crate::decision::authz::examples::example_inputs();
    inputs.policies.push(Source {
        name: "extra.cedar".into(),
        text: text.into(),
        domain: None,
    });
    Snapshot::build(&inputs)
}

/// `context.time` is the request's time rounded down to the second: the
/// contexts and the datetime value are cached per second, and a new
/// second is never served a cached one.
#[test]
fn policies_see_the_time_rounded_down_to_the_second() {
    let s = with_policy(
        "@id(\"t.after\")\nforbid (principal, action, resource)\nwhen { context.time > datetime(\"2026-11-20T10:00:00Z\") };",
    )
    .expect("loads");
    let path = normalize("/orders").expect("path");
    let Lookup::Found(target) = s.routes().lookup(&Method::GET, &path) else {
        panic!("no route for /orders")
    };
    let decoded = path.decoded();
    let decide = |time: SystemTime| {
        let parsed = ParsedRequest {
            method: "GET",
            path: &decoded,
            source_ip: "10.1.2.3".parse().expect("ip"),
            purpose: None,
            tls_version: "TLSv1.3",
            time,
            user: None,
        };
        s.authorize(&spiffe(REPORTING), target, &parsed)
    };
    let ms = std::time::Duration::from_millis;
    let boundary = at(10) + std::time::Duration::from_secs(1);
    // With the clock's own milliseconds this would be denied.
    assert!(
        decide(boundary - ms(1)).allowed,
        "10:00:00.999 is seen as 10:00:00"
    );
    let d = decide(boundary);
    assert!(!d.allowed);
    assert_eq!(d.policies, ["t.after"]);
    assert!(!decide(boundary + ms(999)).allowed);
    assert!(
        decide(boundary - ms(500)).allowed,
        "an earlier second again"
    );
    assert!(!decide(boundary + ms(1)).allowed);
}

#[test]
fn thousands_of_template_linked_grants_decide_like_policies() {
    let mut inputs = crate::decision::authz::examples::example_inputs();
    let links: Vec<serde_json::Value> = (0..3000)
        .map(|n| {
            serde_json::json!({
                "template_id": "sales.grant.read",
                "link_id": format!("sales.grant.{n}"),
                "args": {
                    "?principal": format!("Mesh::Service::\"spiffe://mesh.local/ns/partners/sa/p{n}\""),
                    "?resource": if n % 2 == 0 { "Mesh::DataProduct::\"sales.orders\"" } else { "Mesh::DataProduct::\"sales.customers\"" },
                }
            })
        })
        .collect();
    inputs.policies.push(Source {
        name: "many.links.json".into(),
        text: serde_json::Value::Array(links).to_string(),
        domain: Some("sales".into()),
    });
    let s = Snapshot::build(&inputs).expect("grants load");
    assert!(s.policy_count() > 3000);
    let d = ask(
        &s,
        get("spiffe://mesh.local/ns/partners/sa/p1234", "/orders/SO-1"),
    );
    assert_eq!(
        (d.allowed, d.policies),
        (true, vec!["sales.grant.1234".to_string()])
    );
    // p1235's grant is on customers (restricted: the baseline still wants a purpose).
    let d = ask(
        &s,
        get("spiffe://mesh.local/ns/partners/sa/p1235", "/orders/SO-1"),
    );
    assert!(!d.allowed);
    let d = ask(
        &s,
        get("spiffe://mesh.local/ns/partners/sa/p1235", "/customers/C-1"),
    );
    assert_eq!(d.policies, vec!["mesh.restricted-requires-allowed-purpose"]);
}

#[test]
fn bad_links_are_reported_with_their_file_and_entry() {
    let mut inputs = crate::decision::authz::examples::example_inputs();
    inputs.policies.push(Source {
        name: "bad.links.json".into(),
        text: r#"[{"template_id": "no.such.template", "link_id": "x", "args": {"?principal": "Mesh::Service::\"a\"", "?resource": "Mesh::DataProduct::\"sales.orders\""}}]"#.into(),
        domain: None,
    });
    let e = Snapshot::build(&inputs).unwrap_err();
    // Where, which grant, and why: Cedar's own message alone says only
    // `unable to link template`.
    assert_eq!(
        e.shown[0],
        "bad.links.json:1:51: [0] `x`: unable to link template: failed to find a template with id `no.such.template`"
    );
}

#[test]
fn load_errors_carry_file_line_and_column() {
    let e = with_policy("\n\n@id(\"x\")\npermit (principal, action, resource) when { nope };")
        .unwrap_err();
    assert!(e.shown[0].starts_with("extra.cedar:4:"), "{e}");
    let e = with_policy("permit (principal, action, resource);").unwrap_err();
    assert_eq!(
        e.shown,
        vec!["extra.cedar:1:1: policy has no @id(\"…\") annotation"]
    );
    let e =
        with_policy("\n@id(\"mesh.foreign-trust-domain\")\npermit (principal, action, resource);")
            .unwrap_err();
    assert!(e.shown[0].starts_with("extra.cedar:2:1: @id(\"mesh.foreign-trust-domain\") is already used in policies/mesh/baseline.cedar:17:1"), "{e}");
    let e = with_policy("@id(\"bad-attr\")\npermit (principal, action, resource)\nwhen { resource.colour == \"red\" };").unwrap_err();
    assert!(e.shown[0].starts_with("extra.cedar:3:"), "{e}");
    assert!(e.shown[0].contains("colour"), "{e}");
    let e = with_policy(
        "@id(\"bad-type\")\npermit (principal == Mesh::Robot::\"r\", action, resource);",
    )
    .unwrap_err();
    assert!(e.shown[0].starts_with("extra.cedar:2:"), "{e}");
}

#[test]
fn a_large_set_validated_in_halves_reports_every_error() {
    let mut inputs = crate::decision::authz::synth::inputs(20, SPLIT_VALIDATION_AT + 500, 5);
    let whole = Snapshot::build(&inputs).expect("synthetic set loads");
    let (first, second) = split_for_validation(&whole.enforced.set);
    let (first, second) = (first.expect("split"), second.expect("split"));
    assert_eq!(
        first.policies().count() + second.policies().count(),
        whole.enforced.set.policies().count()
    );
    for (i, attr) in ["colour", "flavour", "texture"].iter().enumerate() {
        inputs.policies.push(Source {
            name: format!("bad{i}.cedar"),
            text: format!(
                "@id(\"bad.{i}\")\npermit (principal, action, resource)\nwhen {{ resource.{attr} == \"x\" }};"
            ),
            domain: None,
        });
    }
    let e = Snapshot::build(&inputs).expect_err("three invalid policies");
    for (i, attr) in ["colour", "flavour", "texture"].iter().enumerate() {
        assert!(
            e.shown
                .iter()
                .any(|m| m.starts_with(&format!("bad{i}.cedar:3:")) && m.contains(attr)),
            "{e}"
        );
    }
}

#[test]
fn candidate_index_agrees_with_the_plain_authorizer_on_random_requests() {
    use crate::decision::authz::synth::{self, Rng};
    // Policies that fail at run time (overflow), with and without reading
    // the context, some only for one purpose: errors must be reported
    // like Cedar reports them, each under its own policy.
    let failing = r#"
@id("err.ctx")
permit (principal, action, resource in Mesh::DataProduct::"p1")
when { context.time.offset(duration("9223372036854775807ms")) > context.time };
@id("err.purpose")
forbid (principal, action, resource in Mesh::DataProduct::"p2")
when { context has purpose && context.purpose == "audit" && 9223372036854775807 + 1 > 0 };
@id("err.same-condition")
permit (principal, action, resource in Mesh::DataProduct::"p2")
when { context has purpose && context.purpose == "audit" && 9223372036854775807 + 1 > 0 };
@id("err.principal")
forbid (principal, action == Mesh::Action::"read", resource in Mesh::DataProduct::"p3")
when { principal has namespace && principal.namespace == "sales" && 9223372036854775807 + 1 > 0 };
"#;
    for (products, policies, seed) in [(20, 300, 7), (50, 1000, 11)] {
        let mut inputs = synth::inputs(products, policies, seed);
        inputs.policies.push(Source {
            name: "synth/failing.cedar".into(),
            text: failing.into(),
            domain: None,
        });
        let s = Snapshot::build(&inputs).expect("synthetic set loads");
        let mut rng = Rng::new(seed * 31);
        let paths = ["rows", "rows/k1", "query", "meta", "feed", "audit"];
        let (mut allowed, mut total, mut failed) = (0, 0, HashSet::new());
        for _ in 0..3000 {
            let p = rng.below(products);
            let sub = *rng.pick(&paths);
            let method = match sub {
                "query" => Method::POST,
                "rows" if rng.below(3) == 0 => Method::POST,
                _ => Method::GET,
            };
            let path = format!("/p{p}/{sub}");
            let ns = *rng.pick(&synth::DOMAINS);
            let who = format!("spiffe://mesh.local/ns/{ns}/sa/app");
            let purpose = (rng.below(2) == 0).then(|| *rng.pick(&synth::PURPOSES));
            let d = ask(
                &s,
                Ask {
                    who: &who,
                    method,
                    path: &path,
                    purpose,
                    // Half at one hour, so that requests repeat and
                    // remembered outcomes are reused (and must agree).
                    hour: if rng.below(2) == 0 {
                        rng.below(24) as u64
                    } else {
                        9
                    },
                },
            );
            total += 1;
            allowed += usize::from(d.allowed);
            for e in &d.errors {
                if let Some(id) = [
                    "err.ctx",
                    "err.purpose",
                    "err.same-condition",
                    "err.principal",
                ]
                .into_iter()
                .find(|id| e.contains(id))
                {
                    failed.insert(id);
                }
            }
        }
        // The generator must exercise both outcomes for the comparison to mean anything.
        assert!(
            allowed > total / 20 && allowed < total * 19 / 20,
            "{allowed}/{total} allowed"
        );
        assert_eq!(failed.len(), 4, "errors seen: {failed:?}");
    }
}

#[test]
fn policy_text_is_cut_only_at_statement_ends() {
    let text = concat!(
        "@id(\"a;b\") permit (principal, action, resource) when { context.path == \"/x;\\\";y\" };\n",
        "// forbid; (comment)\n",
        "@id(\"c\") permit (principal, action, resource);\n",
        "@id(\"d\") permit (principal, action, resource);\n",
    );
    let first = text.find("};").expect("first end") + 2;
    let second = text.find("resource);").expect("second end") + "resource);".len();
    // Pieces of a quarter: only real statement ends, in order, qualify.
    let cuts = statement_cuts(text, text.len() / 4);
    assert!(!cuts.is_empty());
    assert!(
        cuts.iter()
            .all(|c| [first, second, text.len() - 1].contains(c)),
        "{cuts:?}"
    );
    assert!(cuts.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        statement_cuts("permit (principal, action, resource)", 2),
        Vec::<usize>::new()
    );
    // A comment ends at a bare CR too, as in Cedar's lexer: otherwise the
    // string below would look open, its end would be looked for in the
    // comment after it, and the `;` there taken for a statement end.
    let tricky = "// c\r@id(\"a\") permit (principal, action, resource) when { context.path == \"x\ny\" };\n// \" ; @id(\"evil\") permit (principal, action, resource);\n";
    let end = tricky.find("};").expect("end") + 2;
    for parts in 2..5 {
        let cuts = statement_cuts(tricky, tricky.len() / parts);
        assert!(cuts.iter().all(|&c| c == end), "{cuts:?}");
    }
    assert_eq!(
        PolicySet::from_str(tricky)
            .expect("parses")
            .policies()
            .count(),
        1
    );
}

#[test]
fn a_large_policy_file_parses_in_parts_like_the_whole() {
    let mut rng = crate::decision::authz::synth::Rng::new(5);
    let text = crate::decision::authz::synth::policies(4000, 50, &mut rng);
    assert!(
        text.len() > 2 * PARSE_PART,
        "the text must be long enough to cut"
    );
    let ids = |sets: &[&PolicySet]| {
        let mut ids: Vec<String> = sets
            .iter()
            .flat_map(|s| s.policies())
            .filter_map(|p| p.annotation("id").map(str::to_owned))
            .collect();
        ids.sort();
        ids
    };
    let pieces = parse_in_pieces(&text).expect("parses");
    assert!(pieces.len() >= text.len() / (2 * PIECE), "{}", pieces.len());
    let sets: Vec<&PolicySet> = pieces.iter().map(|p| &p.set).collect();
    let whole = PolicySet::from_str(&text).expect("parses");
    assert_eq!(ids(&sets), ids(&[&whole]));
    assert_eq!(ids(&sets).len(), 4000);
    // Each piece is whole statements, at its offset: its first policy's
    // text is found there.
    for p in &pieces {
        if let Some(first) = p.set.policies().next() {
            let found = text[p.at..].find(&first.to_string());
            assert!(found.is_some_and(|o| o < PIECE), "{}", p.at);
        }
    }
    // An error late in the text is reported as for the whole file.
    let broken =
        format!("{text}\n@id(\"bad\") permit (principal, action, resource) when {{ 1 + }};\n");
    let src = Source {
        name: "big.cedar".into(),
        text: broken.clone(),
        domain: None,
    };
    let mut errors = Vec::new();
    parse_policies(&[src], &mut errors);
    let line = broken.lines().count();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!("big.cedar:{line}:")),
        "{}",
        errors[0]
    );

    // A validation error late in a large file: located in the whole file.
    let mut inputs = crate::decision::authz::synth::inputs(50, 4000, 5);
    let big = &mut inputs.policies[0];
    assert!(big.text.len() > 2 * PARSE_PART);
    big.text.push_str("\n@id(\"bad.type\")\npermit (principal, action, resource)\nwhen { context.method == 1 };\n");
    let line = big.text.lines().count();
    let name = big.name.clone();
    let errors = Snapshot::build(&inputs).expect_err("a type error").shown;
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("{name}:{line}:")) && e.contains("bad.type")),
        "expected an error at {name}:{line}: {errors:?}"
    );
}

/// Cedar's validator hashes the text a policy was parsed from for every
/// error it finds: policies are parsed in pieces of a file (`parse.rs`),
/// and each error is still located in the whole file.
#[test]
fn errors_in_every_piece_of_a_file_are_located_in_the_file() {
    let mut inputs = crate::decision::authz::synth::inputs(50, 100, 5);
    let file = &mut inputs.policies[0];
    let first = file.text.lines().count() + 1;
    // Each erring policy long enough that the errors reported span pieces.
    let filler = format!("// {}\n", "x".repeat(700));
    let bad = REPORTED + 50;
    for n in 0..bad {
        file.text.push_str(&format!(
            "@id(\"bad.{n}\")\npermit (principal, action, resource)\nwhen {{ context.method == {n} }};\n{filler}"
        ));
    }
    let shown_end = file.text.len() - 50 * (filler.len() + 80);
    assert!(shown_end > 4 * PIECE);
    let name = file.name.clone();
    let err = Snapshot::build(&inputs).expect_err("type errors");
    assert_eq!(err.total(), bad);
    assert!(
        err.to_string()
            .ends_with(&format!("(and {} more errors)", bad - 1)),
        "{err}"
    );
    let errors = err.lines();
    assert_eq!(errors.len(), REPORTED + 1, "{:?}", &errors[..3]);
    assert_eq!(errors[REPORTED], "policy: and 50 more errors not shown");
    // The first ones, in file order, each at its line.
    for (n, e) in errors[..REPORTED].iter().enumerate() {
        let line = first + 4 * n + 2;
        let at = format!("{name}:{line}:");
        assert!(
            e.starts_with(&at)
                && (e.contains(&format!("bad.{n}`")) || e.contains(&format!("bad.{n}\""))),
            "bad.{n} not at {at}: {e}"
        );
    }
}

#[test]
fn conditions_are_remembered_only_by_few_valued_context_attributes() {
    let reads = |cond: &str| {
        let text = format!("@id(\"t\") permit (principal, action, resource) when {{ {cond} }};");
        let p = Policy::from_str(&text).expect("policy");
        Specialized::of(&p).expect("specialised").reads
    };
    assert_eq!(
        reads(r#"context has purpose && context.purpose == "audit""#),
        Some(READS_PURPOSE)
    );
    assert_eq!(
        reads(r#"context.method == "GET" && context.time.toTime() >= duration("9h")"#),
        Some(READS_METHOD | READS_TIME)
    );
    assert_eq!(
        reads(r#"context.tls.version == "TLSv1.3" && !context.has_user"#),
        Some(READS_TLS | READS_HAS_USER)
    );
    assert_eq!(
        reads(r#"principal.namespace == "sales" && context.method == "GET""#),
        Some(READS_METHOD)
    );
    // Many-valued, or not an attribute: decided on every request.
    assert_eq!(reads(r#"context.path like "/orders/*""#), None);
    assert_eq!(reads(r#"context.source_ip.isLoopback()"#), None);
    assert_eq!(
        reads(r#"context has user && context.user in Mesh::Group::"x""#),
        None
    );
    assert_eq!(reads(r#"context == { method: "GET" }"#), None);
    assert_eq!(
        reads(r#"context.method == "GET" || context has path"#),
        None
    );
}

#[test]
fn extension_literals_of_remembered_conditions_are_made_once() {
    let literals = |cond: &str| {
        let text = format!("@id(\"t\") permit (principal, action, resource) when {{ {cond} }};");
        let p = Policy::from_str(&text).expect("policy");
        let sp = Specialized::of(&p).expect("specialised");
        let mut keys: Vec<String> = sp.literals.iter().map(|(k, _)| k.clone()).collect();
        keys.sort();
        (
            keys,
            sp.test.to_string().contains(super::literals::LITERALS),
        )
    };
    assert_eq!(
        literals(
            r#"context.time.toTime() >= duration("9h") && context.time.toTime() < duration("17h") && context.time < datetime("2027-01-01")"#
        ),
        (
            vec![
                r#"datetime("2027-01-01")"#.to_string(),
                r#"duration("17h")"#.to_string(),
                r#"duration("9h")"#.to_string(),
            ],
            true
        )
    );
    // Read on every request (the source address): left as written.
    assert_eq!(
        literals(r#"context.source_ip.isInRange(ip("10.0.0.0/8"))"#),
        (Vec::new(), false)
    );
}

#[test]
fn on_behalf_of_needs_the_service_and_a_user_in_the_group() {
    let s = example();
    let user = |groups: &[&str]| crate::decision::jwt::User {
        id: "https://idp.mesh.local|alice".into(),
        issuer: "https://idp.mesh.local".into(),
        subject: "alice".into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        scopes: vec!["ledger:read".into()],
        attributes: vec![],
        expires_at: u64::MAX,
    };
    let decide = |who: &str, u: Option<&crate::decision::jwt::User>| {
        let path = normalize("/ledger/summary").expect("path");
        let Lookup::Found(target) = s.routes().lookup(&Method::GET, &path) else {
            panic!("routed")
        };
        let decoded = path.decoded();
        let parsed = ParsedRequest {
            method: "GET",
            path: &decoded,
            source_ip: "10.1.2.3".parse().expect("ip"),
            purpose: None,
            tls_version: "TLSv1.3",
            time: at(10),
            user: u,
        };
        let d = s.authorize(&spiffe(who), target, &parsed);
        assert_eq!(d, s.authorize_unindexed(&spiffe(who), target, &parsed));
        d
    };
    let dashboard = "spiffe://mesh.local/ns/reporting/sa/dashboard";
    let analyst = user(&["finance-analysts"]);
    let d = decide(dashboard, Some(&analyst));
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.policies, vec!["finance.ledger.dashboard-for-analysts"]);
    // Not in the group, no user, or another service with the analyst's token.
    assert!(!decide(dashboard, Some(&user(&["marketing"]))).allowed);
    assert!(!decide(dashboard, None).allowed);
    assert!(
        !decide(
            "spiffe://mesh.local/ns/marketing/sa/campaigns",
            Some(&analyst)
        )
        .allowed
    );
    // Static group hierarchy applies to token groups: finance-analysts is in finance-staff.
    let e = s.user_entity(&analyst).expect("user entity");
    let staff = uid(&type_name("Group"), "finance-staff");
    let ents = Entities::from_entities([e], None).expect("entities");
    let ancestors: Vec<_> = ents
        .ancestors(&uid(&type_name("User"), &analyst.id))
        .expect("user present")
        .cloned()
        .collect();
    assert!(ancestors.contains(&staff), "{ancestors:?}");
}

/// The example inputs with the orders contract declared `deprecated`.
fn with_orders_deprecated(extra_policy: Option<&str>) -> Snapshot {
    let mut inputs = crate::decision::authz::examples::example_inputs();
    let orders = inputs
        .contracts
        .iter_mut()
        .find(|c| c.name.ends_with("sales/orders.odcs.yaml"))
        .expect("orders contract");
    let text = orders
        .text
        .replace("\nstatus: active\n", "\nstatus: Deprecated\n")
        .replace(
            "slaProperties:\n",
            "slaProperties:\n  - { property: endOfSupport, value: \"2026-06-30\" }\n",
        );
    assert!(text.contains("status: Deprecated") && text.contains("endOfSupport"));
    orders.text = text;
    if let Some(p) = extra_policy {
        inputs.policies.push(Source {
            name: "extra.cedar".into(),
            text: p.into(),
            domain: None,
        });
    }
    Snapshot::build(&inputs).expect("loads")
}

#[test]
fn products_and_datasets_carry_their_contract_status_and_version() {
    // Read from the resource, product (describe) and dataset (read) alike.
    let probe = "@id(\"t.status\")\npermit (principal, action, resource)\nwhen { resource.status == \"deprecated\" && resource.version == \"2.0.0\" };";
    let s = with_orders_deprecated(Some(probe));
    for path in ["/orders/_schema", "/orders/SO-1"] {
        let d = ask(&s, get(CAMPAIGNS, path));
        assert!(
            d.allowed && d.policies.contains(&"t.status".to_string()),
            "{path}: {d:?}"
        );
    }
    // An active contract (and one without status) is "active".
    let s = with_policy(probe.replace("deprecated", "active").as_str()).expect("loads");
    for path in ["/orders/_schema", "/orders/SO-1"] {
        let d = ask(&s, get(CAMPAIGNS, path));
        assert!(
            d.allowed && d.policies.contains(&"t.status".to_string()),
            "{path}: {d:?}"
        );
    }
    let d = ask(&s, get(CAMPAIGNS, "/customers/C-1"));
    assert!(!d.policies.contains(&"t.status".to_string()), "{d:?}");
}

#[test]
fn the_baseline_refuses_writes_to_a_deprecated_version_but_not_reads() {
    let post = || Ask {
        who: SALES_ETL,
        method: Method::POST,
        path: "/orders",
        purpose: None,
        hour: 10,
    };
    let active = example();
    let d = ask(&active, post());
    assert_eq!(
        (d.allowed, d.policies),
        (true, vec!["sales.own-domain-full-access".to_string()])
    );
    let deprecated = with_orders_deprecated(None);
    let d = ask(&deprecated, post());
    assert_eq!(
        (d.allowed, d.policies),
        (
            false,
            vec!["mesh.no-writes-to-deprecated-version".to_string()]
        )
    );
    // Its consumers still read it until its sunset.
    let d = ask(&deprecated, get(REPORTING, "/orders"));
    assert_eq!(
        (d.allowed, d.policies),
        (true, vec!["sales.orders.finance-may-read".to_string()])
    );
}

/// A condition of `terms` alternatives: `context.path == "/n0" || …`
/// (three operators a term).
fn chain_of(terms: usize) -> String {
    (0..terms)
        .map(|i| format!("context.path == \"/n{i}\""))
        .collect::<Vec<_>>()
        .join(" || ")
}

/// Policies deep enough to overflow the stack of the thread that parsed
/// them (a reload aborted the sidecar), or of the worker that first
/// specialised them (the first request they applied to did), are refused
/// before Cedar reads them, each at its position.
#[test]
fn policies_nested_or_chained_beyond_the_bounds_are_refused_with_their_position() {
    let nested = format!(
        "@id(\"deep\")\npermit (principal, action, resource)\nwhen {{ {}true{} }};",
        "(".repeat(1_000),
        ")".repeat(1_000)
    );
    let e = with_policy(&nested).expect_err("too deep");
    assert_eq!(e.shown.len(), 1, "{e}");
    assert!(
        e.shown[0].starts_with(&format!(
            "extra.cedar:3:{}: brackets nested more than {MAX_NESTING} deep",
            7 + MAX_NESTING
        )),
        "{e}"
    );
    let chained = format!(
        "\n@id(\"long\")\nforbid (principal, action, resource)\nwhen {{ {} }};",
        chain_of(10_000)
    );
    let e = with_policy(&chained).expect_err("too long");
    assert_eq!(e.shown.len(), 1, "{e}");
    assert!(
        e.shown[0].starts_with(&format!(
            "extra.cedar:2:1: policy has 29999 operators; at most {MAX_OPERATORS}"
        )),
        "{e}"
    );
    assert!(e.shown[0].contains(".contains(x)"), "{e}");
}

/// A policy at both bounds at once (brackets 32 deep around a chain of
/// 1,000 operators, each a level of its own) loads and decides, on a
/// thread with the stack the runtime's workers have.
#[test]
fn a_policy_just_within_the_bounds_loads_and_decides() {
    let deepest = format!(
        "@id(\"deep.forbid\")\nforbid (principal, action, resource)\nwhen {{ {}{}context.path == \"/orders\"{} }};",
        "(".repeat(MAX_NESTING - 1),
        "false || ".repeat(MAX_OPERATORS - 2),
        ")".repeat(MAX_NESTING - 1)
    );
    let decide = move || {
        let s = with_policy(&deepest).expect("within the bounds");
        let d = ask(&s, get(REPORTING, "/orders"));
        assert_eq!((d.allowed, d.policies), (false, vec!["deep.forbid".into()]));
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        let d = ask(&s, get(REPORTING, "/orders/SO-1"));
        assert_eq!(
            (d.allowed, d.policies),
            (true, vec!["sales.orders.finance-may-read".into()])
        );
    };
    std::thread::Builder::new()
        .stack_size(DECIDING_STACK)
        .spawn(decide)
        .expect("thread")
        .join()
        .expect("decided");
}

/// The fields of a dataset share one list of their ancestors' entities:
/// each had copies of its own, and 50,000 fields took 1.27 GB to load.
#[test]
fn the_fields_of_a_dataset_share_their_ancestors_entities() {
    let s = example();
    let orders = s
        .products
        .iter()
        .find(|e| e.product.id == "sales.orders")
        .expect("orders");
    let fields = orders.fields.iter().flatten().next().expect("its fields");
    let (a, b) = (&fields.resources[0], &fields.resources[1]);
    assert!(Arc::ptr_eq(&a.up, &b.up));
    let above: Vec<String> = a.entities().map(|e| e.uid().to_string()).collect();
    assert_eq!(
        above,
        [
            r#"Mesh::Field::"sales.orders/orders/id""#,
            r#"Mesh::Dataset::"sales.orders/orders""#,
            r#"Mesh::DataProduct::"sales.orders""#,
            r#"Mesh::Domain::"sales""#
        ]
    );
}

#[test]
fn undeclared_scopes_are_reported_like_errors_the_first_ones_only() {
    let mut inputs = crate::decision::authz::synth::inputs(50, 100, 5);
    let file = &mut inputs.policies[0];
    let first = file.text.lines().count() + 1;
    let many = REPORTED + 50;
    for n in 0..many {
        file.text.push_str(&format!(
            "@id(\"nowhere.{n}\")\npermit (principal in Mesh::Domain::\"nowhere{n}\", action, resource);\n"
        ));
    }
    let name = file.name.clone();
    let snapshot = Snapshot::build(&inputs).expect("warnings only");
    let undeclared: Vec<String> = snapshot
        .warnings()
        .iter()
        .map(|w| w.warning())
        .filter(|w| w.contains("nowhere") || w.starts_with("policy: "))
        .collect();
    assert_eq!(undeclared.len(), REPORTED + 1, "{:#?}", &undeclared[..3]);
    for (n, w) in undeclared[..REPORTED].iter().enumerate() {
        let at = format!("{name}:{}:1:", first + 2 * n);
        assert!(
            w.starts_with(&at) && w.contains(&format!("\"nowhere{n}\"")),
            "nowhere{n} not at {at}: {w}"
        );
    }
    assert_eq!(
        undeclared[REPORTED],
        "policy: warning: and 50 more warnings not shown"
    );
}

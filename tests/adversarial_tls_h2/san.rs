//! A SPIFFE id in the wrong SAN type is never the service.

use rcgen::SanType;

use crate::common::*;
use crate::setup::*;

/// The SPIFFE id of `reporting` (which may read orders) placed where it does
/// not count, each in a certificate the sidecar's CA really signed.
#[test]
fn a_spiffe_id_in_the_wrong_san_type_is_never_the_service() {
    let leaf = |sans: Vec<SanType>, cn: Option<&str>| {
        let mut l = Leaf::client_spiffe(REPORTING);
        l.sans = sans;
        l.cn = cn.map(str::to_string);
        l
    };
    let cases = san_cases();
    let env = env(
        |pki| {
            for (name, sans, cn, _) in &cases {
                pki.client(name, leaf(sans.clone(), *cn));
            }
        },
        &[],
    );
    // The real service reads a row: the path is reachable for the right principal.
    assert_eq!(
        status_of(
            &env.pki,
            Some("reporting"),
            &env.mg.url("/orders/SO-real?slow=0")
        ),
        "200"
    );
    let mut refused = std::collections::BTreeMap::<&str, f64>::new();
    for (name, _, _, expected) in &cases {
        let path = format!("/orders/SO-{name}");
        let status = status_of(&env.pki, Some(name), &env.mg.url(&format!("{path}?slow=0")));
        match expected {
            Ok(principal) => {
                assert_eq!(status, "403", "{name}");
                let events = env.audit_events_through(&path);
                let e = events
                    .iter()
                    .find(|e| e["path"] == path.as_str())
                    .expect("event");
                assert_eq!(e["principal"]["id"], principal.as_str(), "{name}: {e}");
                assert_eq!(e["decision"], "deny", "{name}: {e}");
                assert_eq!(e["status"], 403, "{name}: {e}");
            }
            Err(reason) => {
                assert_eq!(status, "000", "{name} got an HTTP answer");
                *refused.entry(reason).or_default() += 1.0;
                let sample =
                    format!("meshgate_tls_handshake_failures_total{{reason=\"{reason}\"}}");
                wait_until(&sample, || env.metric(&sample) == refused[reason]);
            }
        }
    }
    let arrived = env.arrivals();
    let rows: Vec<&String> = arrived
        .iter()
        .filter(|p| p.starts_with("/orders/SO-"))
        .collect();
    assert_eq!(rows, vec!["/orders/SO-real"]);
}

/// A client of `a_spiffe_id_in_the_wrong_san_type_is_never_the_service`:
/// its name, SANs and CN, and the principal policy must see, or Err:
/// refused after the handshake, with this handshake-failure reason.
type Case = (
    &'static str,
    Vec<SanType>,
    Option<&'static str>,
    Result<String, &'static str>,
);

/// The clients with `reporting`'s id where it does not count.
fn san_cases() -> Vec<Case> {
    let uri = |u: &str| SanType::URI(u.try_into().expect("ia5"));
    vec![
        (
            "dns-san",
            vec![SanType::DnsName(REPORTING.try_into().expect("ia5"))],
            Some("client"),
            Ok(format!("dns:{REPORTING}")),
        ),
        (
            "email-san",
            vec![SanType::Rfc822Name(REPORTING.try_into().expect("ia5"))],
            Some("client"),
            Ok("cn:client".into()),
        ),
        (
            "email-san-no-cn",
            vec![SanType::Rfc822Name(REPORTING.try_into().expect("ia5"))],
            None,
            Err("no_identity"),
        ),
        (
            "cn-beside-uri",
            vec![uri(CAMPAIGNS)],
            Some(REPORTING),
            Ok(CAMPAIGNS.into()),
        ),
        (
            "cn-only",
            vec![],
            Some(REPORTING),
            Ok(format!("cn:{REPORTING}")),
        ),
        (
            "https-uri",
            vec![uri("https://mesh.local/ns/finance/sa/reporting")],
            Some("client"),
            Ok("cn:client".into()),
        ),
        (
            "spiffe-no-slashes",
            vec![uri("spiffe:mesh.local/ns/finance/sa/reporting")],
            Some("client"),
            Ok("cn:client".into()),
        ),
        (
            "uppercase-scheme",
            vec![uri("SPIFFE://mesh.local/ns/finance/sa/reporting")],
            Some("client"),
            Err("bad_identity"),
        ),
        (
            "two-spiffe-uris",
            vec![uri(CAMPAIGNS), uri(REPORTING)],
            Some("client"),
            Err("bad_identity"),
        ),
        (
            "spiffe-and-https-uris",
            vec![
                uri(REPORTING),
                uri("https://evil.example/ns/finance/sa/reporting"),
            ],
            Some("client"),
            Err("bad_identity"),
        ),
        (
            "root-spiffe-id",
            vec![uri("spiffe://mesh.local")],
            Some("client"),
            Err("bad_identity"),
        ),
    ]
}

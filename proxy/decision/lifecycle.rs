//! A product version's lifecycle, read from its contract, and what it
//! puts on the wire: `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and
//! `Link` headers on every response of a version that is or will be
//! deprecated.
//!
//! From the ODCS contract: `status` (`proposed`, `draft`, `active`,
//! `deprecated`, `retired`); `slaProperties` `endOfSupport` (the date the
//! version is deprecated: `Deprecation`) and `endOfLife` (the date it stops
//! answering: `Sunset`); and two custom properties, `successorVersion` (a
//! URI reference to the version that replaces it: `Link` with
//! `rel="successor-version"`, RFC 5829) and `deprecationLink` (a page
//! about the deprecation: `Link` with `rel="deprecation"`, RFC 9745).
//! Dates are RFC 3339 dates (`2027-06-30`, midnight UTC) or date-times.

use std::time::SystemTime;

use http::header::{HeaderName, HeaderValue, LINK};

use crate::model::response::{ResponseTransform, Shaped, TransformError};

/// The contract's `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Status {
    Proposed,
    Draft,
    #[default]
    Active,
    Deprecated,
    Retired,
}

impl std::str::FromStr for Status {
    type Err = String;

    /// ODCS writes the values in lower case; any case is taken.
    fn from_str(s: &str) -> Result<Status, String> {
        let all = [
            ("proposed", Status::Proposed),
            ("draft", Status::Draft),
            ("active", Status::Active),
            ("deprecated", Status::Deprecated),
            ("retired", Status::Retired),
        ];
        all.into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s.trim()))
            .map(|(_, st)| st)
            .ok_or_else(|| {
                format!(
                    "`{}`: one of proposed, draft, active, deprecated, retired",
                    s.escape_debug()
                )
            })
    }
}

impl Status {
    /// The value as ODCS writes it (lower case); what Cedar policies see
    /// as `resource.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Proposed => "proposed",
            Status::Draft => "draft",
            Status::Active => "active",
            Status::Deprecated => "deprecated",
            Status::Retired => "retired",
        }
    }
}

/// Where a product version stands in its life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lifecycle {
    pub status: Status,
    /// `endOfSupport`: when the version is (or was) deprecated.
    pub end_of_support: Option<SystemTime>,
    /// `endOfLife`: when it stops answering.
    pub end_of_life: Option<SystemTime>,
    /// `successorVersion`: the version to move to.
    pub successor: Option<String>,
    /// `deprecationLink`: what to read about the deprecation.
    pub deprecation_link: Option<String>,
}

/// A lifecycle field that does not hold what it must; the contract
/// reader names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleError {
    pub field: &'static str,
    pub message: String,
}

impl Lifecycle {
    /// Whether the version is deprecated at `now` (and still answers): past
    /// its `endOfSupport`, or `deprecated` without one. A `deprecated` status
    /// whose `endOfSupport` is still ahead is deprecated from that date, as
    /// its `Deprecation` header announces: not counted or described as
    /// deprecated before it.
    pub fn is_deprecated(&self, now: SystemTime) -> bool {
        !self.is_retired(now)
            && match self.end_of_support {
                Some(t) => t <= now,
                None => self.status == Status::Deprecated,
            }
    }

    /// Whether the version has stopped answering at `now`: `retired`, or
    /// past its `endOfLife`.
    pub fn is_retired(&self, now: SystemTime) -> bool {
        self.status == Status::Retired || self.end_of_life.is_some_and(|t| t <= now)
    }

    /// Reads a contract's lifecycle: its `status`, an `slaProperties`
    /// value by property name, a custom property by name.
    pub fn read<'v>(
        status: Option<Status>,
        sla: impl Fn(&str) -> Option<&'v serde_yaml_ng::Value>,
        custom: impl Fn(&str) -> Option<&'v serde_yaml_ng::Value>,
    ) -> Result<Lifecycle, LifecycleError> {
        let date = |property: &str, field: &'static str| {
            sla(property)
                .map(|v| {
                    let text = v.as_str().ok_or_else(|| LifecycleError {
                        field,
                        message: "must be a date written as a string, e.g. \"2027-06-30\"".into(),
                    })?;
                    parse_date(text).map_err(|message| LifecycleError { field, message })
                })
                .transpose()
        };
        let text = |property: &str, field: &'static str| {
            custom(property)
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| LifecycleError {
                            field,
                            message: "must be a string (a URI reference)".into(),
                        })
                })
                .transpose()
        };
        let lifecycle = Lifecycle {
            status: status.unwrap_or_default(),
            end_of_support: date("endOfSupport", "slaProperties.endOfSupport")?,
            end_of_life: date("endOfLife", "slaProperties.endOfLife")?,
            successor: text("successorVersion", "customProperties.successorVersion")?,
            deprecation_link: text("deprecationLink", "customProperties.deprecationLink")?,
        };
        lifecycle.check()?;
        // A bad link is refused at load, whether or not there are dates to
        // announce (a retired version's 410 names its successor too).
        if let Some(s) = &lifecycle.successor {
            link(s, "successor-version", "customProperties.successorVersion")?;
        }
        if let Some(d) = &lifecycle.deprecation_link {
            link(d, "deprecation", "customProperties.deprecationLink")?;
        }
        Ok(lifecycle)
    }

    /// Checks what the reader took from the contract: a deprecated version
    /// says from when, and a version does not sunset before it is
    /// deprecated (RFC 8594 section 3 and RFC 9745 section 5.1).
    pub fn check(&self) -> Result<(), LifecycleError> {
        if self.status == Status::Deprecated && self.end_of_support.is_none() {
            return Err(LifecycleError {
                field: "slaProperties.endOfSupport",
                message: "required when `status` is `deprecated`: the date the version is deprecated (sent as `Deprecation`)".into(),
            });
        }
        if let (Some(dep), Some(sunset)) = (self.end_of_support, self.end_of_life) {
            if sunset < dep {
                return Err(LifecycleError {
                    field: "slaProperties.endOfLife",
                    message: format!(
                        "{} is before endOfSupport {}: a version cannot sunset before it is deprecated",
                        humantime::format_rfc3339_seconds(sunset),
                        humantime::format_rfc3339_seconds(dep),
                    ),
                });
            }
        }
        Ok(())
    }

    /// The headers every response of this version carries, when it is or
    /// will be deprecated or sunset; `None` for a version with nothing to
    /// announce.
    pub fn headers(&self) -> Result<Option<LifecycleHeaders>, LifecycleError> {
        if self.end_of_support.is_none() && self.end_of_life.is_none() {
            return Ok(None);
        }
        // A structured-field Date (RFC 9651 3.3.7): `@` and Unix seconds.
        let deprecation = self
            .end_of_support
            .map(|t| HeaderValue::from_str(&format!("@{}", unix_seconds(t))))
            .transpose()
            .map_err(|_| LifecycleError {
                field: "slaProperties.endOfSupport",
                message: "cannot be written as a structured-field date".into(),
            })?;
        let sunset = self
            .end_of_life
            .map(|t| HeaderValue::from_str(&httpdate::fmt_http_date(t)))
            .transpose()
            .map_err(|_| LifecycleError {
                field: "slaProperties.endOfLife",
                message: "cannot be written as an HTTP-date".into(),
            })?;
        let mut links = Vec::new();
        for (target, rel, field) in [
            (
                &self.deprecation_link,
                "deprecation",
                "customProperties.deprecationLink",
            ),
            (
                &self.successor,
                "successor-version",
                "customProperties.successorVersion",
            ),
        ] {
            if let Some(t) = target {
                links.push(link(t, rel, field)?);
            }
        }
        Ok(Some(LifecycleHeaders {
            deprecation,
            sunset,
            links,
        }))
    }
}

/// One `Link` field value (RFC 8288): `<target>; rel="…"`, the target
/// checked by [`check_target`].
fn link(target: &str, rel: &str, field: &'static str) -> Result<HeaderValue, LifecycleError> {
    let refused = |why: &str| LifecycleError {
        field,
        message: format!("`{}`: {why}", target.escape_debug()),
    };
    check_target(target).map_err(|why| refused(&why))?;
    target
        .parse::<http::Uri>()
        .map_err(|e| refused(&format!("not a URI reference: {e}")))?;
    HeaderValue::from_str(&format!("<{target}>; rel=\"{rel}\""))
        .map_err(|_| refused("not valid in a header"))
}

/// The longest link target.
pub const LINK_MAX: usize = 2048;

/// The characters of a URI besides ASCII letters and digits (RFC 3986:
/// unreserved, gen-delims, sub-delims, and `%` of a percent-encoding).
const URI_MORE: &str = "-._~:/?#[]@!$&'()*+,;=%";

/// Checks a link target (`successorVersion`, `deprecationLink`): a URI
/// reference (RFC 3986) in its own characters, ASCII only (what is not is
/// percent-encoded), and either an absolute `http`/`https` URI with a host
/// (any host: a deprecation is often explained on a docs site) and no user
/// information, or a path from the node's root (`/v2/orders`). Clients
/// follow these links from a `Link` header or a 410: `javascript:`,
/// `data:` or `mailto:` have no place there, nor a scheme-relative
/// `//host/…` (it leaves the node unseen), nor a relative path (`v2/orders`
/// names another place from each route it is answered on).
pub fn check_target(target: &str) -> Result<(), String> {
    if target.is_empty() {
        return Err("empty".into());
    }
    if target.len() > LINK_MAX {
        return Err(format!("longer than {LINK_MAX} characters"));
    }
    if let Some(c) = target.chars().find(|c| !c.is_ascii()) {
        return Err(format!(
            "holds `{}`: a link is ASCII; percent-encode the UTF-8 bytes of anything else (`é` is `%C3%A9`)",
            c.escape_debug()
        ));
    }
    if let Some(c) = target
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !URI_MORE.contains(*c))
    {
        return Err(format!(
            "holds `{}`: not a URI character (RFC 3986: spaces, quotes, angle brackets, braces, `\\`, `|`, `^` and controls are percent-encoded)",
            c.escape_debug()
        ));
    }
    let b = target.as_bytes();
    if let Some(i) = (0..b.len()).find(|&i| {
        b[i] == b'%' && !(b.get(i + 1..i + 3)).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    }) {
        return Err(format!(
            "`%` at {}: not followed by two hex digits (a `%` itself is `%25`)",
            i + 1
        ));
    }
    let first = target.find(['/', '?', '#']).unwrap_or(target.len());
    match target[..first].split_once(':') {
        Some((scheme, _))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            let Some(rest) = target[scheme.len() + 1..].strip_prefix("//") else {
                return Err(format!("an {scheme} URI names its host: `{scheme}://host/…`"));
            };
            let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
            if authority.is_empty() || authority.starts_with(':') {
                return Err("no host".into());
            }
            if authority.contains('@') {
                return Err("user information (`…@`) before the host: it misleads whoever reads the link".into());
            }
            Ok(())
        }
        Some((scheme, _)) => Err(format!(
            "scheme `{scheme}:`: a link is an absolute http or https URI, or a path from the root (`/orders`)"
        )),
        None if target.starts_with("//") => Err(
            "scheme-relative (`//host…`): it leaves the node; write `https://host…` or a path (`/orders`)"
                .into(),
        ),
        None if target.starts_with('/') => Ok(()),
        None => Err(
            "a relative path: a client resolves it against the URL it requested, so it names another place from each route; write it from the root (`/orders`) or as an absolute http(s) URI"
                .into(),
        ),
    }
}

/// What a link target that passed [`check_target`] points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind<'a> {
    /// An absolute `http`/`https` URI.
    Absolute,
    /// A path from the root of the node (`/v2/orders`), without its query
    /// or fragment: a route of the node should answer it.
    Rooted(&'a str),
}

impl<'a> TargetKind<'a> {
    pub fn of(target: &'a str) -> TargetKind<'a> {
        if target.starts_with('/') {
            TargetKind::Rooted(&target[..target.find(['?', '#']).unwrap_or(target.len())])
        } else {
            TargetKind::Absolute
        }
    }
}

/// Seconds since the Unix epoch, negative before it.
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// Parses an RFC 3339 date (midnight UTC) or date-time.
pub fn parse_date(text: &str) -> Result<SystemTime, String> {
    use time::format_description::well_known::{Iso8601, Rfc3339};
    let t = text.trim();
    let refused = || {
        format!(
            "`{}`: not an RFC 3339 date (2027-06-30) or date-time (2027-06-30T12:00:00Z)",
            t.escape_debug()
        )
    };
    // RFC 3339's full-date only: ISO 8601's ordinal, week and basic forms
    // (2027-181, 20270630) are not dates a contract means.
    let full_date = t.len() == 10
        && t.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let at = match time::OffsetDateTime::parse(t, &Rfc3339) {
        Ok(dt) => dt,
        Err(_) if full_date => time::Date::parse(t, &Iso8601::DATE)
            .map(|d| d.midnight().assume_utc())
            .map_err(|_| refused())?,
        Err(_) => return Err(refused()),
    };
    // HTTP-dates and the Unix seconds of `Deprecation` cover 1970 to 9999.
    // 9999-12-31T23:59:59Z in Unix seconds.
    const LAST: i64 = 253_402_300_799;
    if !(0..=LAST).contains(&at.unix_timestamp()) {
        return Err(format!(
            "`{}`: a date between 1970 and 9999, in UTC",
            t.escape_debug()
        ));
    }
    Ok(SystemTime::from(at))
}

/// The response transform of a version with a lifecycle to announce:
/// header values made once, when the snapshot is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleHeaders {
    deprecation: Option<HeaderValue>,
    sunset: Option<HeaderValue>,
    links: Vec<HeaderValue>,
}

const DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
const SUNSET: HeaderName = HeaderName::from_static("sunset");

impl ResponseTransform for LifecycleHeaders {
    /// Sets `Deprecation` and `Sunset` (the contract, not the upstream, is
    /// what the node answers for) and adds the `Link`s beside any of the
    /// upstream's own.
    fn head(&self, head: &mut http::response::Parts) -> Result<Shaped, TransformError> {
        let h = &mut head.headers;
        if let Some(v) = &self.deprecation {
            h.insert(DEPRECATION, v.clone());
        }
        if let Some(v) = &self.sunset {
            h.insert(SUNSET, v.clone());
        }
        for l in &self.links {
            h.append(LINK, l.clone());
        }
        Ok(Shaped::Passed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(text: &str) -> SystemTime {
        parse_date(text).expect("date")
    }

    #[test]
    fn dates_are_rfc3339_dates_or_date_times() {
        assert_eq!(
            at("2027-06-30"),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_814_313_600)
        );
        assert_eq!(
            at("2027-06-30T02:00:00+02:00"),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_814_313_600)
        );
        let e = parse_date("30/06/2027").expect_err("not RFC 3339");
        assert!(e.contains("not an RFC 3339 date"), "{e}");
        assert!(parse_date("2027-02-30").is_err());
        // ISO 8601 forms that RFC 3339 does not have.
        assert!(parse_date("2027-181").is_err());
        assert!(parse_date("20270630").is_err());
        // Outside what HTTP-dates and Unix seconds carry (and a typo).
        for far in ["1969-12-31", "0227-06-30", "9999-12-31T23:00:00-02:00"] {
            let e = parse_date(far).expect_err(far);
            assert!(e.contains("between 1970 and 9999"), "{e}");
        }
        assert!(parse_date("9999-12-31").is_ok());
    }

    #[test]
    fn headers_have_the_rfc_formats() {
        let l = Lifecycle {
            status: Status::Deprecated,
            end_of_support: Some(at("2026-01-01")),
            end_of_life: Some(at("2027-06-30")),
            successor: Some("/v2/orders".into()),
            deprecation_link: Some("https://docs.example/orders/v1".into()),
        };
        l.check().expect("consistent");
        let t = l
            .headers()
            .expect("headers")
            .expect("something to announce");
        let mut head = http::Response::new(()).into_parts().0;
        head.headers
            .insert(LINK, HeaderValue::from_static("</next>; rel=\"next\""));
        assert!(matches!(t.head(&mut head), Ok(Shaped::Passed)));
        assert_eq!(head.headers["deprecation"], "@1767225600");
        assert_eq!(head.headers["sunset"], "Wed, 30 Jun 2027 00:00:00 GMT");
        let links: Vec<_> = head.headers.get_all(LINK).iter().collect();
        assert_eq!(
            links,
            [
                "</next>; rel=\"next\"",
                "<https://docs.example/orders/v1>; rel=\"deprecation\"",
                "</v2/orders>; rel=\"successor-version\"",
            ]
        );
    }

    #[test]
    fn read_takes_the_contract_fields_and_names_the_bad_one() {
        let sla: serde_yaml_ng::Value =
            serde_yaml_ng::from_str("endOfSupport: '2026-01-01'\nendOfLife: 2027-06-30\n")
                .expect("yaml");
        let custom: serde_yaml_ng::Value =
            serde_yaml_ng::from_str("successorVersion: /v2/orders\n").expect("yaml");
        let l = Lifecycle::read(Some(Status::Deprecated), |k| sla.get(k), |k| custom.get(k))
            .expect("lifecycle");
        assert_eq!(l.end_of_life, Some(at("2027-06-30")));
        assert_eq!(l.successor.as_deref(), Some("/v2/orders"));
        let number: serde_yaml_ng::Value =
            serde_yaml_ng::from_str("endOfLife: 2027").expect("yaml");
        let e = Lifecycle::read(None, |k| number.get(k), |_| None).expect_err("a number");
        assert_eq!(e.field, "slaProperties.endOfLife");
    }

    #[test]
    fn link_targets_are_ascii_uri_references_to_http_or_relative() {
        for ok in [
            "/v2/orders",
            "/orders?version=2#top",
            "https://docs.example/sales/orders/v1-deprecation",
            "HTTP://other.example:8080/x",
            "https://[2001:db8::1]/x",
            "/orders/%C3%A9",
        ] {
            assert_eq!(check_target(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("", "empty"),
            ("/orders/é", "holds `é`: a link is ASCII"),
            ("/{{.}}", "holds `{`: not a URI character"),
            ("/a b", "holds ` `"),
            ("/a\\b", "holds `\\\\`"),
            ("/a\u{7f}", "holds `\\u{7f}`"),
            ("/100%", "`%` at 5: not followed by two hex digits"),
            ("/%zz", "`%` at 2"),
            ("javascript:alert(1)", "scheme `javascript:`"),
            ("JavaScript:alert(1)", "scheme `JavaScript:`"),
            ("mailto:owner@acme.example", "scheme `mailto:`"),
            ("data:text/html,x", "scheme `data:`"),
            ("//evil.example/x", "scheme-relative"),
            ("v2/orders", "a relative path"),
            ("?page=2", "a relative path"),
            ("https:/x", "names its host"),
            ("https://", "no host"),
            ("https://:80/x", "no host"),
            ("https://docs.example@evil.example/", "user information"),
        ] {
            let e = check_target(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(check_target(&format!("/{}", "a".repeat(LINK_MAX))).is_err());
        assert_eq!(
            TargetKind::of("/v2/orders?x#y"),
            TargetKind::Rooted("/v2/orders")
        );
        assert_eq!(TargetKind::of("https://x.example/y"), TargetKind::Absolute);
        // A refused target is named escaped, by its field.
        let custom: serde_yaml_ng::Value =
            serde_yaml_ng::from_str("deprecationLink: \"java\\nscript:x\"").expect("yaml");
        let e = Lifecycle::read(None, |_| None, |k| custom.get(k)).expect_err("link");
        assert_eq!(e.field, "customProperties.deprecationLink");
        assert!(
            e.message.starts_with("`java\\nscript:x`: holds `\\n`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_version_is_retired_by_its_status_or_past_its_end_of_life() {
        let now = at("2027-01-01");
        assert!(!Lifecycle::default().is_retired(now));
        let retired = Lifecycle {
            status: Status::Retired,
            ..Lifecycle::default()
        };
        assert!(retired.is_retired(now));
        let sunset = |date| Lifecycle {
            end_of_life: Some(at(date)),
            ..Lifecycle::default()
        };
        assert!(sunset("2027-01-01").is_retired(now));
        assert!(!sunset("2027-01-02").is_retired(now));
        assert!(!sunset("2027-01-01").is_deprecated(now));
        let deprecated_from = |date| Lifecycle {
            end_of_support: Some(at(date)),
            ..Lifecycle::default()
        };
        assert!(deprecated_from("2027-01-01").is_deprecated(now));
        // Announced ahead: not deprecated yet.
        assert!(!deprecated_from("2027-01-02").is_deprecated(now));
        // Nor with the status already `deprecated`: the date decides.
        let ahead = Lifecycle {
            status: Status::Deprecated,
            ..deprecated_from("2027-01-02")
        };
        assert!(!ahead.is_deprecated(now));
        assert!(ahead.is_deprecated(at("2027-01-02")));
    }

    #[test]
    fn inconsistent_or_malformed_lifecycles_are_refused() {
        let deprecated = Lifecycle {
            status: Status::Deprecated,
            ..Lifecycle::default()
        };
        assert_eq!(
            deprecated.check().expect_err("no date").field,
            "slaProperties.endOfSupport"
        );
        let backwards = Lifecycle {
            end_of_support: Some(at("2027-01-01")),
            end_of_life: Some(at("2026-01-01")),
            ..Lifecycle::default()
        };
        let e = backwards.check().expect_err("sunset first");
        assert_eq!(e.field, "slaProperties.endOfLife");
        assert!(e.message.contains("before endOfSupport"), "{}", e.message);
        let bad_link = Lifecycle {
            end_of_support: Some(at("2027-01-01")),
            successor: Some("/v2> ; rel=\"evil\"".into()),
            ..Lifecycle::default()
        };
        assert_eq!(
            bad_link.headers().expect_err("link").field,
            "customProperties.successorVersion"
        );
        assert_eq!(Lifecycle::default().headers(), Ok(None));
        // A retired version with no dates still has its link checked: the
        // 410 carries it.
        let custom: serde_yaml_ng::Value =
            serde_yaml_ng::from_str("successorVersion: '/v2>; rel=\"evil\"'").expect("yaml");
        let e =
            Lifecycle::read(Some(Status::Retired), |_| None, |k| custom.get(k)).expect_err("link");
        assert_eq!(e.field, "customProperties.successorVersion");
    }
}

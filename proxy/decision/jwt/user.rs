//! A verified end user, as policies see it, and the mapping of token claims onto it.

use serde::Deserialize;
use std::collections::BTreeMap;

use super::*;

/// A claim value mapped to a Cedar attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    String(String),
    Long(i64),
    Bool(bool),
    Set(Vec<String>),
}

/// A verified end user, as policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// `<issuer>|<sub>`: the `Mesh::User` entity id.
    pub id: String,
    pub issuer: String,
    pub subject: String,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    /// Configured attributes present in the token.
    pub attributes: Vec<(String, AttrValue)>,
    /// `exp`, Unix seconds.
    pub expires_at: u64,
}

impl User {
    /// A user from a token's claims given directly, without a signature (for
    /// `meshgate authorize --claims` and `claims:` in test cases): mapped as
    /// the configured issuer named by `iss` says, or with the default mapping
    /// (`groups`, `scope`, no attributes) when there is no `users` section.
    /// `exp` may be left out.
    pub fn from_claims(
        users: Option<&UsersConfig>,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<User, String> {
        let iss = claims
            .get("iss")
            .and_then(|v| v.as_str())
            .ok_or("claims: `iss` (a string) is required")?;
        let default;
        let issuer = match users {
            Some(u) => u
                .issuers
                .iter()
                .find(|i| i.issuer == iss)
                .ok_or_else(|| format!("claims: `{iss}` is not a configured issuer"))?,
            None => {
                default = serde_json::from_value::<IssuerConfig>(
                    serde_json::json!({ "issuer": iss, "audiences": [] }),
                )
                .map_err(|e| e.to_string())?;
                &default
            }
        };
        let mut claims = claims.clone();
        claims
            .entry("exp")
            .or_insert_with(|| serde_json::Value::from(lifetime::LATEST));
        map_claims(issuer, &claims).map_err(|e| format!("claims: {e}"))
    }
}

/// A user written out directly, as `meshgate test` cases and `meshgate
/// authorize --user` give it: what a verified token would have mapped to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub issuer: String,
    pub subject: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Attribute -> a string, integer, boolean or list of strings.
    #[serde(default)]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

impl UserSpec {
    pub fn to_user(&self) -> Result<User, String> {
        use serde_json::Value;
        let mut attributes = Vec::new();
        for (name, v) in &self.attributes {
            let value = match v {
                Value::String(s) => AttrValue::String(s.clone()),
                Value::Bool(b) => AttrValue::Bool(*b),
                Value::Number(n) => AttrValue::Long(
                    n.as_i64()
                        .ok_or_else(|| format!("attributes.{name}: not a 64-bit integer"))?,
                ),
                Value::Array(items) => AttrValue::Set(
                    items
                        .iter()
                        .map(|i| i.as_str().map(String::from))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| format!("attributes.{name}: a list of strings"))?,
                ),
                _ => {
                    return Err(format!(
                        "attributes.{name}: a string, integer, boolean or list of strings"
                    ))
                }
            };
            attributes.push((name.clone(), value));
        }
        Ok(User {
            id: format!("{}|{}", self.issuer, self.subject),
            issuer: self.issuer.clone(),
            subject: self.subject.clone(),
            groups: self.groups.clone(),
            scopes: self.scopes.clone(),
            attributes,
            expires_at: u64::MAX,
        })
    }
}

pub(super) fn map_claims(
    c: &IssuerConfig,
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<User, TokenError> {
    use serde_json::Value;
    for name in &c.required_claims {
        if !claims.contains_key(name) {
            return Err(TokenError::MissingClaim(name.clone()));
        }
    }
    let string = |name: &str| -> Result<String, TokenError> {
        match claims.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(TokenError::BadClaim(name.into())),
            None => Err(TokenError::MissingClaim(name.into())),
        }
    };
    let strings = |name: &str, split: bool| -> Result<Vec<String>, TokenError> {
        match claims.get(name) {
            None => Ok(Vec::new()),
            // RFC 6749 3.3: scope tokens are separated by spaces (%x20) only.
            Some(Value::String(s)) if split => Ok(s
                .split(' ')
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .ok_or_else(|| TokenError::BadClaim(name.into()))
                })
                .collect(),
            Some(_) => Err(TokenError::BadClaim(name.into())),
        }
    };
    let issuer = string("iss")?;
    let subject = string("sub")?;
    if subject.is_empty() {
        return Err(TokenError::BadClaim("sub".into()));
    }
    let expires_at = lifetime::numeric_date(claims, "exp")?
        .ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
    let mut attributes = Vec::new();
    for (attr, spec) in &c.attributes {
        let Some(v) = claims.get(&spec.claim) else {
            continue;
        };
        let bad = || TokenError::BadClaim(spec.claim.clone());
        let value = match spec.kind {
            AttributeType::String => AttrValue::String(v.as_str().ok_or_else(bad)?.to_string()),
            AttributeType::Long => AttrValue::Long(v.as_i64().ok_or_else(bad)?),
            AttributeType::Bool => AttrValue::Bool(v.as_bool().ok_or_else(bad)?),
            AttributeType::StringSet => AttrValue::Set(strings(&spec.claim, false)?),
        };
        attributes.push((attr.clone(), value));
    }
    Ok(User {
        id: format!("{issuer}|{subject}"),
        groups: strings(&c.groups_claim, false)?,
        scopes: strings(&c.scopes_claim, true)?,
        issuer,
        subject,
        attributes,
        expires_at,
    })
}

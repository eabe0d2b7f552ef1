//! The admission webhook: an AdmissionReview answered with the patch for its pod.

use json_patch::jsonptr::PointerBuf;
use serde_json::Value;
use std::collections::BTreeMap;

use super::*;

/// The webhook's answer to one AdmissionReview.
#[derive(Debug)]
pub struct Answer {
    /// The response to send back (allowed with a patch, allowed as is, or refused).
    pub response: kube_core::admission::AdmissionResponse,
    pub outcome: Outcome,
}

/// What the webhook did with one review (for metrics and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Injected(Box<Status>),
    Skipped(SkipReason),
    /// The pod opted in but cannot be injected as asked.
    Refused(String),
    /// A well-formed review the webhook does not handle (not a Pod CREATE,
    /// no object, a pod that does not parse): refused.
    Unsupported(String),
    /// A v1 review whose `request.uid` can be read but which does not parse
    /// as a review: refused with that uid (the API server needs the uid to
    /// take the answer), counted as invalid.
    Invalid(String),
}

/// A body that is not an AdmissionReview v1 with a readable request uid:
/// answered with 400.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("not an AdmissionReview: {0}")]
    Parse(String),
    #[error("`{0}`: only admission.k8s.io/v1 AdmissionReview is served")]
    Version(String),
    #[error("the review has no request")]
    NoRequest,
}

/// Which of the two webhooks a review came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected {
    /// `/inject`: its namespaceSelector only sends pods of namespaces
    /// labelled `meshgate.io/inject=enabled`, so the namespace is opted in.
    Namespace,
    /// `/inject-pod`: pods labelled `meshgate.io/inject=enabled` in other
    /// namespaces; only the pod's own choice counts.
    Pod,
}

/// The review's object must say it is a v1 Pod wherever it says anything
/// (the API server reads the patched object by its own type fields), and
/// have the metadata object the patch adds to. Read from the body itself:
/// the typed parse drops both type fields when one is missing, and makes up
/// empty metadata.
pub(super) fn object_is_a_v1_pod(body: &[u8]) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    pub(super) struct Review {
        request: Request,
    }
    #[derive(serde::Deserialize)]
    pub(super) struct Request {
        object: Types,
    }
    #[derive(serde::Deserialize)]
    pub(super) struct Types {
        #[serde(rename = "apiVersion")]
        api_version: Option<Value>,
        kind: Option<Value>,
        metadata: Option<Value>,
    }
    let types = serde_json::from_slice::<Review>(body)
        .map_err(|e| format!("the object's type fields do not parse: {e}"))?
        .request
        .object;
    if !matches!(types.metadata, Some(Value::Object(_))) {
        return Err("the pod has no metadata object".into());
    }
    for (field, value, want) in [
        ("apiVersion", types.api_version, "v1"),
        ("kind", types.kind, "Pod"),
    ] {
        match value {
            None => {}
            Some(Value::String(s)) if s == want => {}
            Some(other) => return Err(format!("the object's {field} is {other}, not \"{want}\"")),
        }
    }
    Ok(())
}

/// Decides one AdmissionReview (JSON bytes).
pub fn review(
    cfg: &InjectorConfig,
    body: &[u8],
    selected: Selected,
) -> Result<Answer, ReviewError> {
    use kube_core::admission::{AdmissionResponse, AdmissionReview, Operation};
    use kube_core::DynamicObject;
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            // A review the API server could match to a request gets an
            // answer it can use: refused, with the uid.
            let Some(uid) = readable_uid(body) else {
                return Err(ReviewError::Parse(e.to_string()));
            };
            let why = format!("the review does not parse: {e}");
            let mut response = AdmissionResponse::invalid(format!("meshgate injection: {why}"));
            response.uid = uid;
            return Ok(Answer {
                response,
                outcome: Outcome::Invalid(why),
            });
        }
    };
    if review.types.api_version != "admission.k8s.io/v1" || review.types.kind != "AdmissionReview" {
        return Err(ReviewError::Version(format!(
            "{}, {}",
            review.types.api_version, review.types.kind
        )));
    }
    let mut req = review.request.ok_or(ReviewError::NoRequest)?;
    req.types = review.types.clone();
    let base = AdmissionResponse::from(&req);
    let refuse = |base: AdmissionResponse, why: String| Answer {
        response: base.deny(format!("meshgate injection: {why}")),
        outcome: Outcome::Unsupported(why),
    };
    if req.kind.kind != "Pod" || !req.kind.group.is_empty() || req.operation != Operation::Create {
        let why = format!(
            "only Pod CREATE is handled, not {} {:?}",
            req.kind.kind, req.operation
        );
        return Ok(refuse(base, why));
    }
    let Some(object) = req.object.as_ref() else {
        return Ok(refuse(base, "the request has no object".into()));
    };
    if let Err(why) = object_is_a_v1_pod(body) {
        return Ok(refuse(base, why));
    }
    let pod = serde_json::to_value(object)
        .and_then(serde_json::from_value::<k8s_openapi::api::core::v1::Pod>);
    let pod = match pod {
        Ok(p) => p,
        Err(e) => return Ok(refuse(base, format!("the pod does not parse: {e}"))),
    };
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(refuse(base, "the pod has no spec".into()));
    };
    let namespace = req.namespace.clone().or(pod.metadata.namespace.clone());
    let labels = match selected {
        Selected::Namespace => BTreeMap::from([(INJECT.to_string(), "enabled".to_string())]),
        Selected::Pod => BTreeMap::new(),
    };
    let planned = plan(
        cfg,
        namespace.as_deref(),
        &labels,
        &pod.metadata,
        spec,
        &PointerBuf::new(),
    );
    Ok(match planned {
        Ok(PodOutcome::Inject { patch, status }) => {
            match base.clone().with_patch(json_patch::Patch(patch)) {
                Ok(mut response) => {
                    if !status.warnings.is_empty() {
                        response.warnings = Some(status.warnings.clone());
                    }
                    Answer {
                        response,
                        outcome: Outcome::Injected(status),
                    }
                }
                Err(e) => Answer {
                    response: base.deny(format!("meshgate injection: {e}")),
                    outcome: Outcome::Refused(e.to_string()),
                },
            }
        }
        Ok(PodOutcome::Skip(reason)) => {
            let mut response = base;
            if let Some(advice) = reason.advice() {
                response.warnings = Some(vec![advice.to_string()]);
            }
            Answer {
                response,
                outcome: Outcome::Skipped(reason),
            }
        }
        Err(error) => Answer {
            response: base.deny(format!("meshgate injection: {error}")),
            outcome: Outcome::Refused(error.to_string()),
        },
    })
}

/// `request.uid` of a body that says it is an `admission.k8s.io/v1`
/// AdmissionReview, read leniently (a string, whatever else the body holds,
/// bytes that are not UTF-8 included: the typed parse skips unknown fields
/// without checking them, so this must not be stricter).
pub(super) fn readable_uid(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_str(&String::from_utf8_lossy(body)).ok()?;
    if v.get("apiVersion")?.as_str()? != "admission.k8s.io/v1"
        || v.get("kind")?.as_str()? != "AdmissionReview"
    {
        return None;
    }
    Some(v.get("request")?.get("uid")?.as_str()?.to_string())
}

//! AdmissionReview handling.

use super::*;

/// The request's uid, when the body is a v1 AdmissionReview whose
/// `request.uid` is a string.
fn readable_uid(body: Option<&serde_json::Value>) -> Option<String> {
    let v = body?;
    if v.get("apiVersion")?.as_str()? != "admission.k8s.io/v1"
        || v.get("kind")?.as_str()? != "AdmissionReview"
    {
        return None;
    }
    Some(v.get("request")?.get("uid")?.as_str()?.to_string())
}

/// JSON bytes as a review through both webhooks (`/inject` and
/// `/inject-pod`): a review whose uid can be read always gets a response
/// with that uid; an injection's patch applies cleanly (json-patch) to the
/// pod as sent and gives a pod with exactly one sidecar, which a second
/// review (the API server's reinvocation) leaves alone.
pub fn admission_review(data: &[u8]) {
    use crate::k8s::inject::{review, InjectorConfig, Outcome, Selected, SkipReason, CONTAINER};
    use base64::Engine;
    use serde_json::Value;
    static CFG: OnceLock<InjectorConfig> = OnceLock::new();
    let cfg = CFG.get_or_init(InjectorConfig::default);
    // Read as the webhook reads uids: bytes that are not UTF-8 replaced
    // (the typed parse lets them through in fields it skips).
    let request: Option<Value> = serde_json::from_str(&String::from_utf8_lossy(data)).ok();
    let uid = readable_uid(request.as_ref());
    for selected in [Selected::Namespace, Selected::Pod] {
        let answer = match review(cfg, data, selected) {
            Ok(a) => a,
            Err(e) => {
                assert!(uid.is_none(), "the review of {uid:?} got no response: {e}");
                continue;
            }
        };
        let body = crate::k8s::webhook::review_json(answer.response.clone()).expect("serialises");
        let v: Value = serde_json::from_slice(&body).expect("the response is JSON");
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["kind"], "AdmissionReview");
        let r = &v["response"];
        assert_eq!(r["uid"].as_str(), uid.as_deref(), "response uid");
        let allowed = r["allowed"].as_bool().expect("allowed");
        let patch = r.get("patch");
        match &answer.outcome {
            Outcome::Injected(_) => assert!(allowed && patch.is_some(), "{r}"),
            Outcome::Skipped(_) => assert!(allowed && patch.is_none(), "{r}"),
            _ => assert!(!allowed && patch.is_none(), "{r}"),
        }
        let Some(patch) = patch else { continue };
        assert_eq!(r["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch.as_str().expect("a base64 string"))
            .expect("base64");
        let ops: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON patch");
        let request = request.as_ref().expect("an answered review is JSON");
        let mut pod = request["request"]["object"].clone();
        if let Err(e) = json_patch::patch(&mut pod, &ops) {
            panic!("the patch does not apply to the pod sent: {e}\npatch: {ops:?}");
        }
        let typed: k8s_openapi::api::core::v1::Pod =
            serde_json::from_value(pod.clone()).expect("the patched pod parses");
        let spec = typed.spec.expect("spec");
        let sidecars = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .filter(|c| c.name == CONTAINER)
            .count();
        assert_eq!(sidecars, 1, "sidecars in the patched pod");
        // Reinvocation: the API server may call the webhook again with the
        // patched pod.
        let mut again = request.clone();
        again["request"]["object"] = pod;
        let second = review(cfg, again.to_string().as_bytes(), selected).expect("answered");
        assert!(
            matches!(
                second.outcome,
                Outcome::Skipped(SkipReason::AlreadyInjected)
            ),
            "second review: {:?}",
            second.outcome
        );
    }
}

//! The hash key's Secret: mounted read-only (its one key) where the
//! sidecar's `fields.hash_key_file` points, only when a pod's annotation
//! or the injector's configuration names it.

use super::tests::{enabled, injected, pod, run};
use super::*;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

/// The sidecar's configuration in the injected pod `out`, as YAML (its
/// parse as a sidecar configuration is in `tests.rs`).
fn config_of(out: &Value) -> Value {
    let env = &out["spec"]["initContainers"][0]["env"][0];
    assert_eq!(env["name"], CONFIG_ENV);
    let text = env["value"].as_str().expect("config text");
    serde_yaml_ng::from_str(text).expect("YAML")
}

fn status_of(out: &Value) -> Value {
    let text = out["metadata"]["annotations"][STATUS]
        .as_str()
        .expect("status annotation");
    serde_json::from_str(text).expect("status json")
}

fn named<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|v| v["name"] == name)
}

/// Injects `v` with the injector configured by `cfg`.
fn injected_with(cfg: &InjectorConfig, v: &Value) -> Value {
    let p: Pod = serde_json::from_value(v.clone()).expect("pod parses");
    let PodOutcome::Inject { patch, .. } = plan(
        cfg,
        Some("sales"),
        &enabled(),
        &p.metadata,
        p.spec.as_ref().expect("spec"),
        &PointerBuf::new(),
    )
    .expect("plans") else {
        panic!("not injected")
    };
    let mut out = v.clone();
    json_patch::patch(&mut out, &patch).expect("patch applies");
    out
}

#[test]
fn without_the_option_nothing_is_mounted_and_the_config_says_nothing() {
    let out = injected(&pod(json!({})));
    assert!(named(&out["spec"]["volumes"], "meshgate-hash-key").is_none());
    let mounts = &out["spec"]["initContainers"][0]["volumeMounts"];
    assert!(named(mounts, "meshgate-hash-key").is_none());
    assert!(config_of(&out).get("fields").is_none());
    assert!(status_of(&out).get("hash_key_secret").is_none());
    // The CSI identity needs no fsGroup: the pod's securityContext is left alone.
    assert!(out["spec"].get("securityContext").is_none());
}

#[test]
fn the_annotation_mounts_the_key_read_only_where_the_config_points() {
    let out = injected(&pod(
        json!({"metadata": {"annotations": {HASH_KEY_SECRET: "mesh-hash-key"}}}),
    ));
    assert_eq!(
        named(&out["spec"]["volumes"], "meshgate-hash-key"),
        Some(&json!({"name": "meshgate-hash-key", "secret": {
            "secretName": "mesh-hash-key", "defaultMode": 0o440,
            "items": [{"key": "hash.key", "path": "hash.key"}]}}))
    );
    let mounts = &out["spec"]["initContainers"][0]["volumeMounts"];
    assert_eq!(
        named(mounts, "meshgate-hash-key"),
        Some(
            &json!({"name": "meshgate-hash-key", "mountPath": "/etc/meshgate/hash-key", "readOnly": true})
        )
    );
    // Relative to the working directory `/`, like every other path.
    let file = &config_of(&out)["fields"]["hash_key_file"];
    assert_eq!(file, "etc/meshgate/hash-key/hash.key");
    assert_eq!(
        std::path::Path::new(WORKING_DIR).join(file.as_str().expect("a path")),
        std::path::Path::new(HASH_KEY_DIR).join(HASH_KEY_FILE)
    );
    assert_eq!(status_of(&out)["hash_key_secret"], "mesh-hash-key");
    // The Secret's files (0440) are readable by the sidecar's group.
    assert_eq!(out["spec"]["securityContext"], json!({"fsGroup": 65532}));
    let own = injected(&pod(json!({
        "metadata": {"annotations": {HASH_KEY_SECRET: "mesh-hash-key"}},
        "spec": {"securityContext": {"fsGroup": 2000}}})));
    assert_eq!(own["spec"]["securityContext"], json!({"fsGroup": 2000}));
}

#[test]
fn the_injector_config_mounts_the_key_in_every_pod_and_an_annotation_names_another() {
    let mut cfg = InjectorConfig::default();
    cfg.sidecar.hash_key_secret = Some("mesh-hash-key".into());
    let out = injected_with(&cfg, &pod(json!({})));
    let volume = named(&out["spec"]["volumes"], "meshgate-hash-key").expect("the key's volume");
    assert_eq!(volume["secret"]["secretName"], "mesh-hash-key");
    assert_eq!(
        config_of(&out)["fields"]["hash_key_file"],
        "etc/meshgate/hash-key/hash.key"
    );

    let out = injected_with(
        &cfg,
        &pod(json!({"metadata": {"annotations": {HASH_KEY_SECRET: "trial-key"}}})),
    );
    let volume = named(&out["spec"]["volumes"], "meshgate-hash-key").expect("the key's volume");
    assert_eq!(volume["secret"]["secretName"], "trial-key");
    assert_eq!(status_of(&out)["hash_key_secret"], "trial-key");
}

#[test]
fn a_bad_secret_name_or_a_taken_volume_name_is_refused() {
    let bad = pod(json!({"metadata": {"annotations": {HASH_KEY_SECRET: "Mesh_Key"}}}));
    match run(&bad, &enabled()) {
        Err(InjectError::Annotation {
            annotation,
            message,
        }) => {
            assert_eq!(annotation, HASH_KEY_SECRET);
            assert!(
                message.contains("`Mesh_Key` is not a valid resource name"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let taken = pod(json!({
        "metadata": {"annotations": {HASH_KEY_SECRET: "mesh-hash-key"}},
        "spec": {"volumes": [{"name": "meshgate-hash-key", "emptyDir": {}}]}}));
    assert_eq!(
        run(&taken, &enabled()).err(),
        Some(InjectError::Volume("meshgate-hash-key".into()))
    );
}

#[test]
fn the_injector_config_refuses_a_bad_secret_name_naming_file_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("injector.yaml");
    std::fs::write(&file, "sidecar:\n  hash_key_secret: Not/A/Name\n").expect("write");
    let err = InjectorConfig::load(&file)
        .expect_err("refused")
        .to_string();
    assert_eq!(
        err,
        format!(
            "{}: sidecar.hash_key_secret: `Not/A/Name` is not a valid Secret name",
            file.display()
        )
    );
    std::fs::write(&file, "sidecar:\n  hash_key_secret: mesh-hash-key\n").expect("write");
    let cfg = InjectorConfig::load(&file).expect("loads");
    assert_eq!(
        cfg.sidecar.hash_key_secret.as_deref(),
        Some("mesh-hash-key")
    );
}

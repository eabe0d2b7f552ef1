use super::*;

fn baseline() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("schema.cedarschema"), "").expect("write");
    std::fs::create_dir(dir.path().join("mesh")).expect("mkdir");
    dir
}

#[test]
fn names_are_labels() {
    for bad in [
        "",
        "Logistics",
        "log_istics",
        "-x",
        "x-",
        "a/b",
        "a.b",
        &"x".repeat(64),
    ] {
        let e = DomainSpec::new(bad, &[], DEFAULT_TRUST_DOMAIN).expect_err(bad);
        assert!(e.to_string().starts_with("domain name `"), "{e}");
    }
    assert!(DomainSpec::new("logistics-2", &[], DEFAULT_TRUST_DOMAIN).is_ok());
    let e = ProductSpec::new("shipments", None, DEFAULT_TRUST_DOMAIN, None).expect_err("no dot");
    assert!(e.to_string().contains("expected DOMAIN.PRODUCT"), "{e}");
    let e = ProductSpec::new("logistics.ship.ments", None, DEFAULT_TRUST_DOMAIN, None)
        .expect_err("two dots");
    assert!(
        e.to_string()
            .starts_with("product id's product `ship.ments`"),
        "{e}"
    );
    let e = ProductSpec::new("a.b", None, "Mesh Local", None).expect_err("trust domain");
    assert!(
        e.to_string().starts_with("--trust-domain `Mesh Local`"),
        "{e}"
    );
    let e = ProductSpec::new("a.b", None, DEFAULT_TRUST_DOMAIN, Some("x\"y")).expect_err("owner");
    assert!(e.to_string().starts_with("--owner `x\"y`"), "{e}");
    let p = ProductSpec::new("a.b", None, DEFAULT_TRUST_DOMAIN, None).expect("ok");
    assert_eq!(
        (p.namespace.as_str(), p.owner.as_str()),
        ("a", "a-data-team@example.com")
    );
}

#[test]
fn a_skeleton_is_written_whole_or_not_at_all() {
    let dir = baseline();
    let spec = DomainSpec::new("logistics", &[], DEFAULT_TRUST_DOMAIN).expect("spec");
    let home = dir.path().join("domains/logistics");
    std::fs::create_dir_all(home.join("local")).expect("mkdir");
    std::fs::write(home.join("local/meshgate.yaml"), "mine").expect("write");
    let e = init_domain(dir.path(), &spec).expect_err("exists");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: already exists; meshgate init never overwrites a file (move it away or choose another name)",
            home.join("local/meshgate.yaml").display()
        )
    );
    assert!(!home.join("policies.cedar").exists());
    assert_eq!(
        std::fs::read_to_string(home.join("local/meshgate.yaml")).expect("read"),
        "mine"
    );
}

#[test]
fn the_domain_entry_is_added_locally_unless_the_mesh_has_it() {
    let dir = baseline();
    let spec = DomainSpec::new("logistics", &[], DEFAULT_TRUST_DOMAIN).expect("spec");
    let mesh = r#"[{"uid":{"type":"Mesh::Domain","id":"sales"},"attrs":{"namespaces":["sales"]},"parents":[]}]"#;
    std::fs::write(dir.path().join("entities.json"), mesh).expect("write");
    let w = init_domain(dir.path(), &spec).expect("init");
    let local = dir.path().join("domains/logistics/local/entities.json");
    let list: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&local).expect("read")).expect("json");
    assert_eq!(list[1], templates::domain_entity(&spec));
    assert_eq!(list[0]["uid"]["id"], "sales");
    assert!(
        w.notes[0].contains("the platform team owns that file"),
        "{:?}",
        w.notes
    );

    // Registered already: the local configuration names the mesh's file.
    let dir = baseline();
    let registered = r#"[{"uid":{"type":"Mesh::Domain","id":"logistics"},"attrs":{"namespaces":["logistics"]},"parents":[]}]"#;
    std::fs::write(dir.path().join("entities.json"), registered).expect("write");
    let w = init_domain(dir.path(), &spec).expect("init");
    assert!(w.notes.is_empty());
    assert!(!dir
        .path()
        .join("domains/logistics/local/entities.json")
        .exists());
    let cfg = std::fs::read_to_string(dir.path().join("domains/logistics/local/meshgate.yaml"))
        .expect("read");
    assert!(cfg.contains("entities: ../../../entities.json"), "{cfg}");

    // A namespace of another domain is refused.
    let dir = baseline();
    std::fs::write(dir.path().join("entities.json"), mesh).expect("write");
    let spec = DomainSpec::new("logistics", &["sales".into()], DEFAULT_TRUST_DOMAIN).expect("spec");
    let e = init_domain(dir.path(), &spec).expect_err("claimed");
    assert!(
        e.to_string().ends_with(
            "namespace `sales` already belongs to domain `sales`; choose another with --namespace"
        ),
        "{e}"
    );
}

#[test]
fn init_needs_the_baseline_and_the_domain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = DomainSpec::new("logistics", &[], DEFAULT_TRUST_DOMAIN).expect("spec");
    let e = init_domain(dir.path(), &spec).expect_err("no baseline");
    assert!(
        e.to_string()
            .contains("schema.cedarschema: not found; copy the platform's mesh baseline"),
        "{e}"
    );
    let p =
        ProductSpec::new("logistics.shipments", None, DEFAULT_TRUST_DOMAIN, None).expect("spec");
    let e = init_product(dir.path(), &p).expect_err("no domain");
    assert!(
        e.to_string().ends_with(
            "not found; run `meshgate init domain logistics` first (with the same --dir)"
        ),
        "{e}"
    );
}

#[test]
fn a_product_names_the_kustomization_lines_it_needs() {
    let dir = baseline();
    let spec = DomainSpec::new("logistics", &[], DEFAULT_TRUST_DOMAIN).expect("spec");
    init_domain(dir.path(), &spec).expect("domain");
    let p =
        ProductSpec::new("logistics.shipments", None, DEFAULT_TRUST_DOMAIN, None).expect("spec");
    let w = init_product(dir.path(), &p).expect("product");
    assert_eq!(w.files.len(), 4);
    assert!(
        w.notes[0].ends_with("      - shipments.odcs.yaml\n      - shipments.cedar"),
        "{:?}",
        w.notes
    );
    // Without the kustomization, the note says so instead.
    std::fs::remove_file(dir.path().join("domains/logistics/kustomization.yaml")).expect("rm");
    let p = ProductSpec::new("logistics.carriers", None, DEFAULT_TRUST_DOMAIN, None).expect("spec");
    let w = init_product(dir.path(), &p).expect("product");
    assert!(
        w.notes[0]
            .contains("kustomization.yaml: not found; list carriers.odcs.yaml and carriers.cedar"),
        "{:?}",
        w.notes
    );
}

//! The texts `meshgate init` writes. Every name in them has been checked
//! (an RFC 1123 label, a SPIFFE trust domain, an owner without quotes), so
//! they are put in as they are.

use serde_json::{json, Value};

use super::{DomainSpec, ProductSpec};

/// The domain's entry of the mesh's `entities.json`.
pub fn domain_entity(d: &DomainSpec) -> Value {
    json!({
        "uid": { "type": "Mesh::Domain", "id": d.name },
        "attrs": { "namespaces": d.namespaces },
        "parents": []
    })
}

pub fn domain_policies(d: &DomainSpec) -> String {
    let n = &d.name;
    format!(
        r#"// The {n} domain's own policies. Each product's policies are in
// PRODUCT.cedar beside this file (`meshgate init product {n}.PRODUCT`).
// Speak only about the domain's own products: `resource in
// Mesh::DataProduct::"{n}.…"` or `resource in Mesh::Domain::"{n}"`.
// The mesh baseline's forbid rules apply whatever is permitted here.

// A grant: one consumer reads (and queries) one product or dataset. Each
// grant is a link of this template in grants.links.json, e.g.
//   {{ "template_id": "{n}.grant.read", "link_id": "{n}.grant.read.sales-reporting.PRODUCT",
//     "args": {{ "?principal": "Mesh::Service::\"spiffe://{td}/ns/sales/sa/reporting\"",
//               "?resource": "Mesh::DataProduct::\"{n}.PRODUCT\"" }} }}
@id("{n}.grant.read")
permit (
  principal == ?principal,
  action in [Mesh::Action::"read", Mesh::Action::"query"],
  resource in ?resource
);
"#,
        td = d.trust_domain
    )
}

pub fn kustomization(d: &DomainSpec) -> String {
    let n = &d.name;
    format!(
        r#"# The {n} domain's policies, grants and contracts as one ConfigMap
# ({n}-policies), owned by the domain team. A product's pods name it with the
# meshgate.io/policy-configmap annotation; the sidecar reads *.cedar and
# *.links.json as policies and *.odcs.yaml as contracts, and reloads them when
# the kubelet updates the volume (no content hash in the name). List each
# product's PRODUCT.odcs.yaml and PRODUCT.cedar under `files`.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
configMapGenerator:
  - name: {n}-policies
    files:
      - policies.cedar
      - grants.links.json
    options:
      disableNameSuffixHash: true
      labels:
        app.kubernetes.io/part-of: meshgate
        app.kubernetes.io/component: domain-policies
        meshgate.io/domain: {n}
"#
    )
}

/// The sidecar configuration for a local run, in `domains/NAME/local/`:
/// the mesh baseline three levels up, the domain's directory one up.
pub fn local_config(d: &DomainSpec, entities: &str) -> String {
    let n = &d.name;
    let ns = d.namespaces.first().unwrap_or(&d.name);
    let td = &d.trust_domain;
    format!(
        r#"# A sidecar for the {n} domain's products on this machine:
#   meshgate certs dev --out domains/{n}/local/certs \
#     --client own=spiffe://{td}/ns/{ns}/sa/local \
#     --client other=spiffe://{td}/ns/elsewhere/sa/local
#   meshgate validate --config domains/{n}/local/meshgate.yaml
#   meshgate run --config domains/{n}/local/meshgate.yaml
# with the product's own server on 127.0.0.1:8080. Relative paths are
# resolved against this file's directory. In Kubernetes the injector writes
# the sidecar's configuration itself (docs/kubernetes.md); this file is for
# trying the domain's policies out and for CI.
listen: 127.0.0.1:8443
admin: 127.0.0.1:9901
upstream: http://127.0.0.1:8080
tls:
  cert: certs/server.pem
  key: certs/server-key.pem
  client_ca: certs/ca.pem
log:
  format: text
policy:
  # The platform's: the schema, the mesh's entities and the baseline.
  schema: ../../../schema.cedarschema
  entities: {entities}
  # The baseline first, then this domain's *.cedar and *.links.json, held
  # to the domain's own products (README: Domain authority).
  sources:
    - ../../../mesh
    - {{ path: .., domain: {n} }}
  # This domain's *.odcs.yaml.
  contracts:
    - ..
"#
    )
}

pub fn contract(p: &ProductSpec) -> String {
    let (id, d, name, owner) = (&p.id, &p.domain, &p.product, &p.owner);
    format!(
        r#"# Data contract of the {d} domain's "{name}" product (ODCS v3), written by
# `meshgate init product`. Fill in the description, the schema's properties
# and the SLA; the routes say how the product's server exposes it.
apiVersion: v3.0.2
kind: DataContract
id: {id}
name: {name}
version: 0.1.0
status: active
domain: {d}
dataProduct: {name}
description:
  purpose: "What the product holds and what it is for."
tags: [{d}, {name}]
schema:
  - name: {name}
    physicalType: table
    classification: internal
    properties:
      - {{ name: id, logicalType: string, primaryKey: true }}
team:
  - {{ username: "{owner}", role: owner }}
# Watched by `meshgate slo-rules`: availability in percent over 30 days, the
# latency 99% of allowed requests stay under, and the throughput that sizes a
# consumer's quota when no tier names it.
slaProperties:
  - {{ property: availability, value: 99.5, unit: percent }}
  - {{ property: latency, value: 500, unit: ms }}
  - {{ property: throughput, value: 50, unit: requests/s }}
customProperties:
  - property: classification
    value: internal
  - property: owner
    value: "{owner}"
  # method + path pattern -> Cedar action (and dataset), matched after path
  # normalisation; literal segments win over {{parameters}}.
  - property: meshgateRoutes
    value:
      - {{ method: GET, path: /{name}, action: read, dataset: {name} }}
      - {{ method: GET, path: "/{name}/{{id}}", action: read, dataset: {name} }}
      - {{ method: POST, path: /{name}/search, action: query, dataset: {name} }}
      - {{ method: POST, path: /{name}, action: write, dataset: {name} }}
      - {{ method: GET, path: /{name}/_schema, action: describe }}
"#
    )
}

pub fn product_policies(p: &ProductSpec) -> String {
    let (id, d) = (&p.id, &p.domain);
    format!(
        r#"// Policies of the {id} data product.

// The {d} domain's own services use the product fully, writes included (the
// mesh baseline allows writes from the owning domain only).
@id("{id}.own-domain")
permit (
  principal in Mesh::Domain::"{d}",
  action,
  resource in Mesh::DataProduct::"{id}"
);

// Another domain's services: name the domain and the actions, e.g.
// @id("{id}.sales-may-read")
// permit (
//   principal in Mesh::Domain::"sales",
//   action in [Mesh::Action::"read", Mesh::Action::"query", Mesh::Action::"describe"],
//   resource in Mesh::DataProduct::"{id}"
// );
// One consumer at a time: a grant in grants.links.json (see policies.cedar).
"#
    )
}

/// A service of the product's domain and one of no domain, as the tests
/// call them.
fn callers(p: &ProductSpec) -> (String, String, String) {
    let other_ns = if p.namespace == "elsewhere" {
        "elsewhere-2"
    } else {
        "elsewhere"
    };
    (
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            p.trust_domain, p.namespace, p.product
        ),
        format!("spiffe://{}/ns/{other_ns}/sa/reader", p.trust_domain),
        other_ns.to_string(),
    )
}

pub fn http_tests(p: &ProductSpec) -> String {
    let (id, name) = (&p.id, &p.product);
    let (own, other, _) = callers(p);
    format!(
        r#"# HTTP cases of {id}: `meshgate test` decides each one through the same
# normalisation, route table and request building as the sidecar; `status`
# is what the sidecar would answer (200: forwarded to the product).
cases:
  - name: the domain's own service reads the list
    principal: {own}
    path: /{name}
    expect: {{ decision: allow, status: 200, policies: [{id}.own-domain] }}

  - name: the domain's own service reads one record
    principal: {own}
    path: /{name}/42
    expect: {{ decision: allow, status: 200, policies: [{id}.own-domain] }}

  - name: the domain's own service writes
    principal: {own}
    method: POST
    path: /{name}
    expect: {{ decision: allow, status: 200, policies: [{id}.own-domain] }}

  - name: a service of another domain may not read
    principal: {other}
    path: /{name}
    expect: {{ decision: deny, status: 403, policies: [] }}

  - name: a service of another domain may not write
    principal: {other}
    method: POST
    path: /{name}
    expect: {{ decision: deny, status: 403 }}

  - name: a path no route names is 404
    principal: {own}
    path: /{name}-archive
    expect: {{ status: 404 }}
"#
    )
}

/// Cedar `run-tests` JSON without `entities`: `meshgate test` decides each
/// case with the caller and the product as the sidecar builds them (the
/// certificate's namespace, `entities.json`, the contract), so the cases
/// cannot drift from the real setup.
pub fn cedar_tests(p: &ProductSpec) -> String {
    let (own, other, _) = callers(p);
    let case = |name: &str, who: &str, decision: &str, reason: Value| {
        json!({
            "name": name,
            "request": {
                "principal": format!("Mesh::Service::\"{who}\""),
                "action": "Mesh::Action::\"read\"",
                "resource": format!("Mesh::DataProduct::\"{}\"", p.id),
                "context": {
                    "method": "GET",
                    "path": format!("/{}", p.product),
                    "source_ip": { "__extn": { "fn": "ip", "arg": "10.0.0.7" } },
                    "time": { "__extn": { "fn": "datetime", "arg": "2026-11-20T10:00:00Z" } },
                    "tls": { "version": "TLSv1.3" },
                    "has_user": false
                }
            },
            "decision": decision,
            "reason": reason,
            "num_errors": 0
        })
    };
    let tests = json!([
        case(
            "the domain's own service reads the product",
            &own,
            "allow",
            json!([format!("{}.own-domain", p.id)])
        ),
        case(
            "a service of no domain may not read the product",
            &other,
            "deny",
            json!([])
        ),
    ]);
    let mut text = serde_json::to_string_pretty(&tests).unwrap_or_default();
    text.push('\n');
    text
}

//! Synthetic meshes of any size, for the criterion benches and the
//! differential test of the candidate index: `products` contracts spread over
//! domains, `policies` Cedar policies with every scope shape the index
//! handles (unscoped, `==`, `in` product, `in` domain, `is`, action lists),
//! some with conditions on the context and the principal, and a tenth as
//! many template-linked grants.

use crate::decision::authz::{PolicyInputs, Source};
use crate::decision::contract::Action;

/// A small deterministic generator (xorshift64*), so runs are repeatable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

pub const DOMAINS: [&str; 8] = [
    "sales",
    "finance",
    "marketing",
    "risk",
    "hr",
    "logistics",
    "support",
    "research",
];
pub const PURPOSES: [&str; 4] = ["reporting", "fraud-investigation", "marketing", "audit"];
pub const CLASSES: [&str; 4] = ["public", "internal", "confidential", "restricted"];

/// Product `i`'s id and domain.
pub fn product(i: usize) -> (String, &'static str) {
    (format!("p{i}"), DOMAINS[i % DOMAINS.len()])
}

/// The route prefix of product `i`: `/p{i}/rows` (read), `/p{i}/rows/{id}` (read,
/// dataset rows), `/p{i}/query` (query), `/p{i}/meta` (describe), `/p{i}/feed`
/// (subscribe), POST `/p{i}/rows` (write).
pub fn contract(i: usize) -> String {
    let (id, domain) = product(i);
    let class = CLASSES[i % CLASSES.len()];
    let purposes = [
        PURPOSES[i % PURPOSES.len()],
        PURPOSES[(i + 1) % PURPOSES.len()],
    ];
    let lines = [
        "apiVersion: v3.0.2".to_string(),
        "kind: DataContract".to_string(),
        format!("id: {id}"),
        "version: 1.0.0".to_string(),
        format!("domain: {domain}"),
        "schema:".to_string(),
        "  - name: rows".to_string(),
        "  - name: audit".to_string(),
        "    classification: restricted".to_string(),
        "customProperties:".to_string(),
        format!("  - {{ property: classification, value: {class} }}"),
        format!("  - {{ property: owner, value: team-{domain} }}"),
        format!(
            "  - {{ property: allowedPurposes, value: [{}, {}] }}",
            purposes[0], purposes[1]
        ),
        "  - property: meshgateRoutes".to_string(),
        "    value:".to_string(),
        format!("      - {{ method: GET, path: /{id}/rows, action: read, dataset: rows }}"),
        format!(
            "      - {{ method: GET, path: \"/{id}/rows/{{key}}\", action: read, dataset: rows }}"
        ),
        format!("      - {{ method: POST, path: /{id}/rows, action: write, dataset: rows }}"),
        format!("      - {{ method: POST, path: /{id}/query, action: query }}"),
        format!("      - {{ method: GET, path: /{id}/meta, action: describe }}"),
        format!("      - {{ method: GET, path: /{id}/feed, action: subscribe }}"),
        format!("      - {{ method: GET, path: /{id}/audit, action: read, dataset: audit }}"),
    ];
    lines.join("\n") + "\n"
}

fn action_scope(rng: &mut Rng) -> String {
    let a = |rng: &mut Rng| format!("Mesh::Action::\"{}\"", rng.pick(&Action::ALL[..5]).as_str());
    match rng.below(4) {
        0 => "action".to_string(),
        1 => format!("action == {}", a(rng)),
        _ => format!("action in [{}, {}]", a(rng), a(rng)),
    }
}

fn condition(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => String::new(),
        1 => format!(
            " when {{ context has purpose && context.purpose == \"{}\" }}",
            rng.pick(&PURPOSES)
        ),
        2 => format!(
            " when {{ principal has namespace && principal.namespace == \"{}\" }}",
            rng.pick(&DOMAINS)
        ),
        3 => " when { context.method == \"GET\" }".to_string(),
        4 => " unless { resource.classification == \"restricted\" }".to_string(),
        _ => format!(
            " when {{ context.time.toTime() >= duration(\"{}h\") }}",
            rng.below(24)
        ),
    }
}

/// `count` policies over `products` products.
pub fn policies(count: usize, products: usize, rng: &mut Rng) -> String {
    let mut out = String::with_capacity(count * 160);
    for n in 0..count {
        let effect = if rng.below(10) == 0 {
            "forbid"
        } else {
            "permit"
        };
        let principal = match rng.below(3) {
            0 => "principal".to_string(),
            1 => format!("principal in Mesh::Domain::\"{}\"", rng.pick(&DOMAINS)),
            _ => format!(
                "principal == Mesh::Service::\"spiffe://mesh.local/ns/{}/sa/app\"",
                rng.pick(&DOMAINS)
            ),
        };
        let p = rng.below(products);
        let (pid, pdomain) = product(p);
        // As in real meshes, almost all policies are about one product (they
        // live in its domain's repo); a few are domain-wide, fewer mesh-wide:
        // per mille, 2 unscoped, 2 `is Dataset`, 20 `in` a domain.
        let resource = match rng.below(1000) {
            0..=1 => "resource".to_string(),
            2..=3 => "resource is Mesh::Dataset".to_string(),
            4..=23 => format!("resource in Mesh::Domain::\"{pdomain}\""),
            24..=173 => format!("resource == Mesh::DataProduct::\"{pid}\""),
            174..=323 => format!("resource == Mesh::Dataset::\"{pid}/rows\""),
            324..=423 => format!("resource is Mesh::Dataset in Mesh::DataProduct::\"{pid}\""),
            _ => format!("resource in Mesh::DataProduct::\"{pid}\""),
        };
        let action = action_scope(rng);
        let cond = condition(rng);
        out.push_str(&format!(
            "@id(\"synth.{n}\")\n{effect} ({principal}, {action}, {resource}){cond};\n\n"
        ));
    }
    out
}

const GRANT_TEMPLATE: &str = "@id(\"synth.grant\")\npermit (principal == ?principal, action in [Mesh::Action::\"read\", Mesh::Action::\"query\"], resource in ?resource);\n";

/// `count` template-linked grants: one domain's service reads one product.
pub fn grants(count: usize, products: usize, rng: &mut Rng) -> String {
    let links: Vec<String> = (0..count)
        .map(|n| {
            let ns = rng.pick(&DOMAINS);
            let (pid, _) = product(rng.below(products));
            format!(
                "{{\"template_id\":\"synth.grant\",\"link_id\":\"synth.grant.{n}\",\"args\":{{\"?principal\":\"Mesh::Service::\\\"spiffe://mesh.local/ns/{ns}/sa/app\\\"\",\"?resource\":\"Mesh::DataProduct::\\\"{pid}\\\"\"}}}}"
            )
        })
        .collect();
    format!("[{}]", links.join(","))
}

/// The example schema and baseline, `products` synthetic contracts and
/// `count` synthetic policies.
pub fn inputs(products: usize, count: usize, seed: u64) -> PolicyInputs {
    let mut rng = Rng::new(seed);
    let base = crate::decision::authz::examples::example_inputs();
    let entities = format!(
        "[{}]",
        DOMAINS
            .iter()
            .map(|d| format!(
                "{{\"uid\":{{\"type\":\"Mesh::Domain\",\"id\":\"{d}\"}},\"attrs\":{{\"namespaces\":[\"{d}\"]}},\"parents\":[]}}"
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    PolicyInputs {
        schema: base.schema,
        entities: Some(Source {
            name: "synth/entities.json".into(),
            text: entities,
            domain: None,
        }),
        policies: vec![
            Source {
                name: "synth/policies.cedar".into(),
                text: policies(count, products, &mut rng) + GRANT_TEMPLATE,
                domain: None,
            },
            Source {
                name: "synth/grants.links.json".into(),
                text: grants(count / 10 + 1, products, &mut rng),
                domain: None,
            },
        ],
        contracts: (0..products)
            .map(|i| Source {
                name: format!("synth/p{i}.odcs.yaml"),
                text: contract(i),
                domain: None,
            })
            .collect(),
        shadow: vec![],
    }
}

/// The personal fields of [`fields_inputs`]' orders, as they are masked.
pub const PERSONAL: [(&str, &str); 3] = [
    ("customer_email", "hash"),
    ("customer_phone", "last4"),
    ("customer_name", "omit"),
];

/// The example mesh with the sales orders dataset declaring `fields`
/// properties (the three [`PERSONAL`] ones tagged `pii` first, then
/// `f3`, `f4`, ... alternately strings and numbers), and a sales field rule
/// hiding personal fields from callers outside sales: a caller of another
/// domain gets a plan hiding three fields of `fields`.
pub fn fields_inputs(fields: usize) -> PolicyInputs {
    let mut inputs = crate::decision::authz::examples::example_inputs();
    let mut props = String::new();
    for (name, mask) in PERSONAL {
        props.push_str(&format!(
            "      - {{ name: {name}, logicalType: string, tags: [pii], customProperties: [{{ property: meshgateMask, value: {mask} }}] }}\n"
        ));
    }
    for i in PERSONAL.len()..fields {
        let kind = if i % 2 == 0 { "string" } else { "number" };
        props.push_str(&format!("      - {{ name: f{i}, logicalType: {kind} }}\n"));
    }
    for c in &mut inputs.contracts {
        if c.name.ends_with("sales/orders.odcs.yaml") {
            let start = c.text.find("    properties:\n").map(|i| i + 16);
            let end = c.text.find("team:\n");
            if let (Some(start), Some(end)) = (start, end) {
                c.text = format!("{}{props}{}", &c.text[..start], &c.text[end..]);
            }
        }
    }
    inputs.policies.push(Source {
        name: "synth/fields.cedar".into(),
        text: r#"@id("sales.synth.pii-for-sales-only")
forbid (principal, action == Mesh::Action::"read_field", resource in Mesh::Dataset::"sales.orders/orders")
when { resource.pii }
unless { principal in Mesh::Domain::"sales" };
"#
        .into(),
        domain: Some("sales".into()),
    });
    inputs
}

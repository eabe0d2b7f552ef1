//! `meshgate demo`: dev certificates, the sample data product and the sidecar in
//! one process, with ready-to-paste curl commands.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;

use crate::runtime::config::{parse_upstream, Config, LogConfig, LogFormat, TlsPaths};
use crate::tools::certs::{demo_clients, dev_certs_usable, dev_hash_key, generate_dev};

pub struct DemoOptions {
    pub certs: PathBuf,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

/// The configuration the demo runs with (embedded defaults, dev certificates).
pub fn demo_config(opts: &DemoOptions, upstream: SocketAddr) -> anyhow::Result<Config> {
    Ok(Config {
        listen: opts.listen,
        admin: opts.admin,
        upstream: parse_upstream(&format!("http://{upstream}")).map_err(anyhow::Error::msg)?,
        upstream_protocol: Default::default(),
        tls: TlsPaths {
            cert: opts.certs.join("server.pem"),
            key: opts.certs.join("server-key.pem"),
            client_ca: opts.certs.join("ca.pem"),
            trust_domains: Default::default(),
        },
        workers: None,
        timeouts: Default::default(),
        limits: Default::default(),
        headers: Default::default(),
        log: LogConfig {
            level: None,
            format: LogFormat::Text,
        },
        policy: None,
        users: None,
        quotas: None,
        audit: Default::default(),
        metrics: Default::default(),
        fields: Some(crate::pipeline::mask::FieldsConfig {
            hash_key_file: opts.certs.join("hash.key"),
        }),
        tracing: Default::default(),
        conformance: Default::default(),
    })
}

pub async fn run(opts: DemoOptions, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let clients = demo_clients();
    if !dev_certs_usable(&opts.certs, &clients) {
        generate_dev(&opts.certs, &clients)?;
        eprintln!("created dev certificates in {}/", opts.certs.display());
    }
    dev_hash_key(&opts.certs)?;
    let product = TcpListener::bind("127.0.0.1:0").await?;
    let product_addr = product.local_addr()?;
    tokio::spawn(crate::devkit::sample::serve(product));

    let config = demo_config(&opts, product_addr)?;
    config.validate("(demo)")?;
    let bound = crate::runtime::sidecar::bind(
        config,
        Some(crate::decision::authz::examples::demo_inputs()),
    )
    .await?;
    let data = bound.data_addr()?;
    let admin = bound.admin_addr()?;
    let dir = opts.certs.display();
    let url = format!("https://localhost:{}/orders", data.port());
    let curl = |who: &str| {
        format!("curl --cacert {dir}/ca.pem --cert {dir}/{who}.pem --key {dir}/{who}-key.pem {url}")
    };
    let v1 = format!("https://localhost:{}/v1/orders", data.port());
    eprintln!();
    eprintln!("meshgate demo: sample data product \"sales.orders\" on http://{product_addr}, behind the sidecar on {data}");
    eprintln!();
    eprintln!(
        "  # reporting ({}), finance domain: allowed to read orders, the customers' e-mail and phone included -> 200",
        clients[0].spiffe_id
    );
    eprintln!("  {}", curl(&clients[0].name));
    eprintln!(
        "  # campaigns ({}), marketing domain: denied by policy -> 403",
        clients[1].spiffe_id
    );
    eprintln!("  {}", curl(&clients[1].name));
    eprintln!(
        "  # analytics ({}), marketing domain: granted to read orders -> 200, but personal fields are masked: customer_email pseudonymised (\"hmac-sha256:...\", the same for the same address), customer_phone cut to its last four digits",
        clients[2].spiffe_id
    );
    eprintln!("  {}", curl(&clients[2].name));
    eprintln!("  # reporting reads the deprecated version 1 of orders: -i shows its Deprecation, Sunset and Link headers");
    eprintln!(
        "  curl -i --cacert {dir}/ca.pem --cert {dir}/{who}.pem --key {dir}/{who}-key.pem {v1}",
        who = clients[0].name
    );
    eprintln!("  # campaigns may describe the orders product (not read it): its ODPS descriptor, the ports it may see");
    eprintln!(
        "  curl --cacert {dir}/ca.pem --cert {dir}/{who}.pem --key {dir}/{who}-key.pem https://localhost:{port}/.well-known/data-product/sales.orders",
        who = clients[1].name,
        port = data.port()
    );
    eprintln!("  # analytics asks what it would see of orders: its caller view lists the fields hidden from it and how");
    eprintln!(
        "  curl --cacert {dir}/ca.pem --cert {dir}/{who}.pem --key {dir}/{who}-key.pem https://localhost:{port}/.well-known/data-product/sales.orders/caller",
        who = clients[2].name,
        port = data.port()
    );
    eprintln!("  # the policy snapshot that decides (version, policies, last reload error)");
    eprintln!("  curl http://{admin}/policy");
    eprintln!("  # without a client certificate: refused at the TLS handshake");
    eprintln!("  curl --cacert {dir}/ca.pem {url}");
    eprintln!("  # metrics");
    eprintln!("  curl http://{admin}/metrics");
    eprintln!();
    eprintln!("Every request leaves a hash-chained audit event: JSON lines on standard output (`meshgate demo > trail` keeps them for `meshgate audit verify trail`).");
    eprintln!("Ctrl-C stops the demo.");
    bound.serve(shutdown).await?;
    Ok(())
}

//! `meshgate init`: the skeleton of a domain or of a data product.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::tools::scaffold::{self, DomainSpec, ProductSpec, Written, DEFAULT_TRUST_DOMAIN};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: InitCommand,
}

#[derive(clap::Subcommand)]
enum InitCommand {
    /// Write domains/NAME/: the domain's policies (a grant template), an
    /// empty grants file, the kustomization of its policy ConfigMap, and
    /// local/ (a sidecar configuration, and the domain's entities entry
    /// while the mesh's entities.json lacks it).
    ///
    /// DIR must hold the platform's mesh baseline: schema.cedarschema, mesh/
    /// and entities.json (policies/ of the meshgate repository).
    Domain {
        /// The domain: lower-case letters, digits and -.
        name: String,
        /// The root of the policy tree.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// A Kubernetes namespace of the domain's services (repeatable;
        /// default: NAME).
        #[arg(long = "namespace", value_name = "NS")]
        namespaces: Vec<String>,
        /// The mesh's SPIFFE trust domain.
        #[arg(long, value_name = "TD", default_value = DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
    },
    /// Write one data product into domains/DOMAIN/: its ODCS contract
    /// (routes, SLA, owner, classification), its policy (the domain's own
    /// services may use it) and its tests, tests/PRODUCT.test.yaml (HTTP
    /// cases) and tests/PRODUCT.test.json (Cedar run-tests).
    Product {
        /// The contract id, DOMAIN.PRODUCT (e.g. logistics.shipments).
        id: String,
        /// The root of the policy tree.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// The namespace of the domain's services in the tests (default: DOMAIN).
        #[arg(long, value_name = "NS")]
        namespace: Option<String>,
        /// The mesh's SPIFFE trust domain.
        #[arg(long, value_name = "TD", default_value = DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
        /// The owning team (default: DOMAIN-data-team@example.com).
        #[arg(long, value_name = "TEAM")]
        owner: Option<String>,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // `--dir .` (the default) names the files as `domains/…`, not `./domains/…`.
    let here = |dir: PathBuf| {
        if dir == Path::new(".") {
            PathBuf::new()
        } else {
            dir
        }
    };
    match args.command {
        InitCommand::Domain {
            name,
            dir,
            namespaces,
            trust_domain,
        } => {
            let dir = here(dir);
            let spec = DomainSpec::new(&name, &namespaces, &trust_domain)?;
            report(&scaffold::init_domain(&dir, &spec)?);
            println!(
                "next: meshgate init product {name}.PRODUCT{}",
                dir_arg(&dir)
            );
        }
        InitCommand::Product {
            id,
            dir,
            namespace,
            trust_domain,
            owner,
        } => {
            let dir = here(dir);
            let spec =
                ProductSpec::new(&id, namespace.as_deref(), &trust_domain, owner.as_deref())?;
            report(&scaffold::init_product(&dir, &spec)?);
            let local = dir.join("domains").join(&spec.domain).join("local");
            println!(
                "next: meshgate test --config {} {}",
                local.join("meshgate.yaml").display(),
                dir.join("domains").join(&spec.domain).display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn report(w: &Written) {
    for f in &w.files {
        println!("wrote {}", f.display());
    }
    for n in &w.notes {
        println!("{n}");
    }
}

fn dir_arg(dir: &Path) -> String {
    if dir.as_os_str().is_empty() {
        String::new()
    } else {
        format!(" --dir {}", dir.display())
    }
}

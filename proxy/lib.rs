//! meshgate: a policy-enforcing mTLS sidecar for data products.
//!
//! The code is folders by concern (see docs/design.md): `base` and `model`
//! at the bottom, `transport`, `decision` and `observe` above them, the
//! request `pipeline` on top of those, and `runtime`, `k8s`, `tools`, `cli`
//! and `devkit` at the edge. The request path reads top to bottom in
//! `pipeline/request.rs`. Modules are private; what the binary, the tests,
//! the benches and the fuzz targets use is re-exported below.
#![forbid(unsafe_code)]

mod base;
mod cli;
mod decision;
mod devkit;
mod k8s;
mod model;
mod observe;
mod pipeline;
mod runtime;
mod tools;
mod transport;

pub use cli::main as cli;

// What the tests, benches and fuzz targets use besides the binary.
pub use base::yaml::parse_yaml;
pub use decision::authz::{HttpFacts, ParsedRequest, Snapshot};
pub use decision::jwt::{User, UsersConfig, Verifier};
pub use decision::quota::{Consumer, Quotas, QuotasConfig, Verdict};
pub use decision::routes::{Lookup, Target};
pub use k8s::inject::{InjectorConfig, ADMIN_PORT_NAME, SIDECAR_LABEL, SIDECAR_LABEL_VALUE};
pub use model::connection::ConnInfo;
pub use model::identity::{PeerIdentity, Principal};
pub use model::path::{normalize, NormalPath};
pub use observe::audit::{Audit, AuditConfig, Event, FullMode, SinkKind};
pub use observe::metrics::{Metrics, Observed};
pub use tools::slo::RuleFile;

/// The fuzz harness bodies (one per target in fuzz/): not public API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::devkit::fuzzing::*;
}

/// Synthetic meshes for the benches: not public API.
#[doc(hidden)]
pub mod synth {
    pub use crate::decision::authz::synth::*;
}

/// Field masking's parts (the response stage's transform of a field plan),
/// for the benches: not public API.
#[doc(hidden)]
pub mod masking {
    pub use crate::model::response::{BodyTransform, ResponseTransform, TransformError};
    pub use crate::pipeline::mask::csv::CsvMasker;
    pub use crate::pipeline::mask::scan::Scanner;
    pub use crate::pipeline::mask::{tree, FieldMasking, HashKeys, Masking};
}

/// Hash map for lookups on the request path: foldhash, seeded at random per
/// map; std's SipHash made up most of the hashing cost of a proxied request
/// (route table, per-thread decision and context caches).
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// mimalloc instead of the C library's allocator: a proxied request makes a
/// few dozen short-lived allocations, freed on other threads too (audit
/// events); with mimalloc a request costs 7% fewer instructions (callgrind,
/// HTTP/2 load). Set here, in the library, so that the benches in benches/
/// measure with the allocator the binary runs with. Not under `cargo fuzz`:
/// its AddressSanitizer checks the heap through the C library's malloc.
#[cfg(not(fuzzing))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

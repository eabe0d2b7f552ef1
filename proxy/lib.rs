//! meshgate: a policy-enforcing mTLS sidecar for data products.
//!
//! The request path reads top to bottom in [`server`] (per connection: TLS,
//! identity) and [`proxy`] (per request: path normalisation, route, Cedar
//! decision, forwarding).
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod authz;
pub mod certs;
pub mod config;
pub mod contract;
pub mod demo;
pub mod embedded;
pub mod error;
pub mod exposition;
pub mod fetch;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod inject;
pub mod jwt;
pub mod metrics;
pub mod path;
pub mod paths;
pub mod policy;
pub mod policytest;
pub mod pool;
pub mod proxy;
pub mod quota;
pub mod routes;
pub mod sample;
pub mod server;
pub mod slo;
pub mod synth;
pub mod tls;
pub mod trace;
pub mod webhook;

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

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

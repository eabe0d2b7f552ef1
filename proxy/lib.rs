//! meshgate: a policy-enforcing mTLS sidecar for data products.
//!
//! The request path reads top to bottom in [`server`]: TLS and identity per
//! connection, then per request header hygiene and forwarding in [`proxy`].
#![forbid(unsafe_code)]

pub mod admin;
pub mod certs;
pub mod config;
pub mod demo;
pub mod error;
pub mod identity;
pub mod metrics;
pub mod proxy;
pub mod sample;
pub mod server;
pub mod tls;

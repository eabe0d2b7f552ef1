//! Adversarial HTTP/1.1 requests against the real binary with the example
//! policies: the marketing `campaigns` service may describe the orders
//! product (`GET /orders/_schema`, the public path) and may not read it
//! (`/orders`, `/orders/{id}`, the protected paths), nor anything of the
//! customers or ledger products. Requests are written as raw bytes over mTLS
//! (no client library normalises them first) and the upstream records every
//! request that reaches it, so each case asserts the exact answer and exactly
//! what the upstream received: never a protected path.

mod audit_helpers;
#[path = "../common/mod.rs"]
mod common;
mod raw;

mod audit_text;
mod oversized;
mod paths;
mod smuggling;
mod spoofing;

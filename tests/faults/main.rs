//! Faults under load, through the real binary: the upstream killed and
//! restarted, the upstream hanging, certificates and trust bundles rotated
//! 100 times, the policy set replaced 100 times (with invalid sets among
//! them), the audit disk full in both modes, and SIGTERM.
//!
//! Each test runs a bounded load generator on loopback (rustls with hyper
//! and h2 clients in a runtime of their own) and records every request:
//! when it was sent, when its outcome came, and what the outcome was. Every request has
//! a deadline; one that passes it fails the test (a hang). The assertions
//! are on the whole record.

//!
//! One binary, a module per fault; `load` is the generator, `probes` what
//! the process, the kernel and the audit trail are asked.

#[path = "../common/mod.rs"]
mod common;
mod load;
mod probes;

mod disk_full;
mod policy_swap;
mod rotation;
mod sigterm;
mod upstream_down;

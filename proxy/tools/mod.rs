//! Offline tools over the same inputs as the sidecar: SLO alert rules,
//! policy tests, development certificates.

pub mod certs;
pub mod junit;
pub mod policytest;
pub mod slo;
pub mod sunset;

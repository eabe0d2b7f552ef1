//! Offline tools over the same inputs as the sidecar: SLO alert rules,
//! policy tests, development certificates, the well-known documents, the
//! skeletons of `meshgate init`.

pub mod certs;
pub mod conformance;
pub mod describe;
pub mod junit;
pub mod policytest;
pub mod scaffold;
pub mod slo;
pub mod sunset;

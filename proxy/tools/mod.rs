//! Offline tools over the same inputs as the sidecar: SLO alert rules,
//! policy tests, development certificates, the skeletons of `meshgate init`.

pub mod certs;
pub mod policytest;
pub mod scaffold;
pub mod slo;

//! Kubernetes: the sidecar injector and its admission webhook.

pub mod inject;
pub mod webhook;

//! For trying meshgate out and testing it, not part of its public API: the
//! demo, the sample data product, the embedded example tree, synthetic
//! meshes, the fuzz harness bodies.

pub mod demo;
pub mod embedded;
#[doc(hidden)]
pub mod fuzzing;
pub mod sample;
pub mod synth;

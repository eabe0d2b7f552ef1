//! For trying meshgate out and testing it, not part of its public API: the
//! demo, the sample data product, the fuzz harness bodies. (The example
//! policy tree and synthetic meshes are `decision::authz` inputs and live
//! there, so the decision's own tests need nothing from here.)

pub mod demo;
#[doc(hidden)]
pub mod fuzzing;
pub mod sample;

//! The adversarial suite of issue 8, TLS and HTTP/2 half: the real binary,
//! the example policies of this repository, and clients that misbehave on
//! purpose. The caller `campaigns` (marketing) may describe the orders
//! product (`/orders/_schema`, the public path) and may not read its rows
//! (`/orders/SO-1`, the protected path). Every request carries `?slow=0`, so
//! the upstream reports each arrival: every case asserts its exact outcome
//! (status, stream reset or GOAWAY code, TLS alert, metric) and that the
//! protected path never reached the upstream.
//!
//! HTTP/2 attacks are written frame by frame by `tests/h2/h2probe.py` (it
//! needs Python's `h2` package from PyPI, for HPACK); TLS ones use `openssl
//! s_client`, hand-made ClientHellos and `testssl` (Debian's testssl.sh).
//! One meshgate per class.

#[path = "../common/mod.rs"]
mod common;
mod h2_outcome;
mod setup;
mod tls_helpers;

mod h2_frames;
mod rapid_reset;
mod san;
mod stall;
mod testssl;
mod tls_old;

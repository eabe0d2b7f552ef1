//! Masking never holds a response whole: a 100 MB JSON array, and NDJSON
//! and CSV bodies, stream through the real binary masked end to end (every
//! record's e-mail pseudonymised, none sent as it was) while the sidecar's
//! peak RSS rises by less than 32 MB (compressed ones:
//! `fields_memory_coded.rs`).

mod common;

use common::fields::masked;
use common::memory::{download, peak_kib};
use common::stream_upstream::{StreamUpstream, EMAIL};
use common::*;

#[test]
fn large_masked_responses_stream_within_a_bounded_memory() {
    // 130 MB through a debug build: kept apart from the other load-heavy tests.
    let _heavy = heavy();
    let pki = Pki::new();
    let up = StreamUpstream::start();
    let mg = masked(&pki, &up).log_level("info").start();
    // Each format once, small: one-time allocations are not the bound's.
    for path in ["/orders/big.json", "/orders/big.ndjson", "/orders/big.csv"] {
        let (code, counts) = download(&pki, &[], &mg.url(path), &["hmac-sha256:"]);
        assert_eq!((code, counts[0]), (0, 1), "{path}");
    }
    let before = peak_kib(mg.pid());
    // About 100 MB of JSON, 20 MB of NDJSON and 10 MB of CSV (a debug
    // build masks about 10 MB/s on a loaded machine).
    for (path, n, proto) in [
        ("/orders/big.json?n=350000", 350_000, "--http1.1"),
        ("/orders/big.ndjson?n=70000", 70_000, "--http2"),
        ("/orders/big.csv?n=140000", 140_000, "--http1.1"),
    ] {
        let needles = ["hmac-sha256:", EMAIL];
        let (code, counts) = download(&pki, &[proto], &mg.url(path), &needles);
        assert_eq!(code, 0, "{path}: curl failed");
        assert_eq!(counts, [n, 0], "{path}");
    }
    let risen = peak_kib(mg.pid()).saturating_sub(before);
    assert!(risen < 32 * 1024, "peak RSS rose by {risen} KiB");
}

//! Compressed responses never balloon the sidecar's memory: 40 MB of
//! gzip-coded JSON, zstd-coded NDJSON and br-coded CSV, and gzip and zstd
//! decompression bombs, stream through the real binary masked end to end
//! while its peak RSS rises by less than 32 MB. (A test binary of its own:
//! beside `fields_memory.rs`'s 100 MB in a debug build, each would slow
//! the other past curl's deadline.)

mod common;

use common::fields::masked;
use common::memory::{download, peak_kib};
use common::stream_upstream::{StreamUpstream, EMAIL};
use common::*;

/// A compressed body is decoded as it streams, 64 KiB at a time: a bomb
/// of 48 MiB of spaces (a few dozen KiB on the wire) passes in bounded
/// memory.
#[test]
fn compressed_responses_and_bombs_stream_within_a_bounded_memory() {
    // Tens of MB through a debug build: kept apart from the other
    // load-heavy tests.
    let _heavy = heavy();
    let pki = Pki::new();
    let up = StreamUpstream::start();
    let mg = masked(&pki, &up).log_level("info").start();
    for coding in common::coded::CODINGS {
        let url = mg.url(&format!("/orders/big.json?coding={coding}"));
        let (code, counts) = download(&pki, &[], &url, &["hmac-sha256:"]);
        assert_eq!((code, counts[0]), (0, 1), "{coding}");
    }
    let before = peak_kib(mg.pid());
    for (path, n, proto) in [
        (
            "/orders/big.json?n=140000&coding=gzip",
            140_000,
            "--http1.1",
        ),
        ("/orders/big.ndjson?n=30000&coding=zstd", 30_000, "--http2"),
        ("/orders/big.csv?n=60000&coding=br", 60_000, "--http1.1"),
        ("/orders/big.json?n=3&pad=48&coding=gzip", 3, "--http2"),
        ("/orders/big.json?n=3&pad=48&coding=zstd", 3, "--http1.1"),
    ] {
        let needles = ["hmac-sha256:", EMAIL];
        let (code, counts) = download(&pki, &[proto], &mg.url(path), &needles);
        assert_eq!(code, 0, "{path}: curl failed");
        assert_eq!(counts, [n, 0], "{path}");
    }
    let risen = peak_kib(mg.pid()).saturating_sub(before);
    assert!(risen < 32 * 1024, "peak RSS rose by {risen} KiB");
}

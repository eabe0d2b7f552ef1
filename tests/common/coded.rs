//! Compressed bodies as an upstream that ignores `Accept-Encoding` sends
//! them: `gzip`, `deflate` (zlib), `br` and `zstd`, whole or streamed.

use std::io::Write;

/// The content codings the tests send.
pub const CODINGS: [&str; 4] = ["gzip", "deflate", "br", "zstd"];

/// A writer that encodes what it is given in `coding` into `out`; the
/// stream is finished when it is dropped.
pub fn encoder<'a>(coding: &str, out: impl Write + 'a) -> Box<dyn Write + 'a> {
    match coding {
        "gzip" => Box::new(flate2::write::GzEncoder::new(
            out,
            flate2::Compression::fast(),
        )),
        "deflate" => Box::new(flate2::write::ZlibEncoder::new(
            out,
            flate2::Compression::fast(),
        )),
        "br" => Box::new(brotli::CompressorWriter::new(out, 64 * 1024, 4, 22)),
        "zstd" => {
            let mut e = zstd::stream::Encoder::new(out, 3).expect("zstd encoder");
            e.include_checksum(true).expect("zstd checksum");
            Box::new(e.auto_finish())
        }
        other => panic!("no encoder for {other}"),
    }
}

/// `data` encoded in `coding`, whole.
pub fn encode(coding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut e = encoder(coding, &mut out);
        e.write_all(data).expect("encode");
    }
    out
}

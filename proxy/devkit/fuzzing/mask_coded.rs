//! `mask_coded`: a compressed response on a masked route
//! (`pipeline/mask/decode.rs` and its gzip framing, `decode/gzip.rs`)
//! against reference decoders that read the whole coded stream at once: the
//! coding crates' own readers, framed independently of meshgate's streaming
//! decoder (flate2's `MultiGzDecoder` for gzip; zlib streams one after
//! another with flate2's `Decompress`; brotli's `BrotliDecompressStream`
//! with RFC 7932 windows only, streams one after another; zstd's reader
//! with RFC 9659's 8 MiB window).
//!
//! Input: four control bytes, then the body. Byte 0: bits 0–1 the coding
//! (gzip, deflate, br, zstd); bit 2 the body is the coded stream as it is
//! (else it is the plain text and is coded here); bit 3 through the field
//! masker as the response stage builds it (the field plan's transform given
//! the head of a coded NDJSON response), else through the decoder alone.
//! Byte 1: bits 0–1 how many streams (gzip members, zlib or brotli streams,
//! zstd frames) the plain text is coded in, one to four; bits 2–3 what is
//! done to the coded bytes (nothing, cut, one bit flipped, one byte
//! appended); bits 4–6 gzip's optional header fields (extra, name,
//! comment); bit 7 a high compression level instead of the lowest. Byte 2:
//! where the damage is, as a fraction of the coded length (and the bit a
//! flip changes, the byte appended). Byte 3: the chunk size the coded bytes
//! are fed in (255: whole).
//!
//! Checked: where the reference decodes the bytes, the decoder alone makes
//! exactly its bytes, in parts of at most [`PIECE`] bytes, however the
//! input is chunked; where it refuses them (corrupt, cut, trailing bytes
//! that begin no stream, no stream at all), the decoder fails. Through the
//! masker the head no longer names a coding, and the output is what the
//! masker makes of the reference's bytes fed whole, or a failure where
//! either fails. Text coded here and left undamaged decodes to itself.

use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::decision::fields::{Mask, Undeclared};
use crate::model::response::{BodyTransform, TransformError};
use crate::observe::metrics::Metrics;
use crate::pipeline::mask::decode::{Coding, Decoded, PIECE};
use crate::pipeline::mask::scan::Scanner;
use crate::pipeline::mask::{FieldMasking, Masking};

/// The control bytes before the body.
const HEAD: usize = 4;

/// The most the reference decodes before the input is left alone (a few
/// coded kilobytes may stand for gigabytes).
const CAP: usize = 256 << 10;

const CODINGS: [(Coding, &str); 4] = [
    (Coding::Gzip, "gzip"),
    (Coding::Deflate, "deflate"),
    (Coding::Brotli, "br"),
    (Coding::Zstd, "zstd"),
];

/// The reference's answer: the decoded bytes, or why they are refused;
/// `None` past [`CAP`].
type Decode = Option<Result<Vec<u8>, String>>;

pub fn mask_coded(data: &[u8]) {
    let Some((head, body)) = data.split_first_chunk::<HEAD>() else {
        return;
    };
    let (coding, name) = CODINGS[usize::from(head[0] & 3)];
    let raw = head[0] & 4 != 0;
    let masked = head[0] & 8 != 0;
    let coded = if raw {
        body.to_vec()
    } else {
        let streams = usize::from(head[1] & 3) + 1;
        let mut coded = Vec::new();
        for part in split(body, streams) {
            coded.extend(encode(coding, part, head[1]));
        }
        coded
    };
    let coded = damaged(coded, head[1] >> 2 & 3, head[2]);
    let Some(reference) = reference(coding, &coded) else {
        return;
    };
    if !raw && head[1] >> 2 & 3 == 0 {
        assert!(
            reference.as_deref() == Ok(body),
            "{name}: coded here, the reference reads {reference:?}"
        );
    }
    let step = match head[3] {
        255 => coded.len().max(1),
        n => usize::from(n) + 1,
    };
    if !masked {
        let got = through(Box::new(Decoded::new(coding, Box::new(Same))), &coded, step);
        match (&reference, &got) {
            (Ok(want), Ok(parts)) => {
                assert!(
                    parts.iter().all(|p| p.len() <= PIECE),
                    "{name}: a part over {PIECE} bytes"
                );
                let out: Vec<u8> = parts.concat();
                assert!(
                    &out == want,
                    "{name} in chunks of {step}: decoded {} bytes, the reference {}",
                    out.len(),
                    want.len()
                );
            }
            (Err(_), Err(_)) => {}
            (Ok(want), Err(e)) => panic!(
                "{name} in chunks of {step}: the reference decodes {} bytes, the decoder fails: {e}",
                want.len()
            ),
            (Err(why), Ok(parts)) => panic!(
                "{name} in chunks of {step}: the reference refuses ({why}), the decoder made {} bytes",
                parts.iter().map(Bytes::len).sum::<usize>()
            ),
        }
        return;
    }
    let transform = masking();
    let mut response = http::Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/x-ndjson")
        .header(http::header::CONTENT_ENCODING, name)
        .body(())
        .map(|r| r.into_parts().0)
        .expect("a valid head");
    let body_transform = transform
        .head(&mut response)
        .expect("a coded NDJSON response is masked")
        .rewrite()
        .expect("with a body transform");
    assert!(
        !response
            .headers
            .contains_key(http::header::CONTENT_ENCODING),
        "{name}: the masked body is sent as identity, its head still names a coding"
    );
    let got = through(body_transform, &coded, step).map(|parts| parts.concat());
    let want = reference.and_then(|plain| {
        let mut s = Scanner::lines(plan().tree(), None);
        let mut out = s.feed(&plain)?;
        out.extend(s.finish()?);
        Ok(out)
    });
    match (&want, &got) {
        (Ok(want), Ok(got)) => assert!(
            want == got,
            "{name} in chunks of {step}: masked to {:?}, the reference's text masks to {:?}",
            String::from_utf8_lossy(got),
            String::from_utf8_lossy(want)
        ),
        (Err(_), Err(_)) => {}
        (Ok(_), Err(e)) => panic!("{name}: the reference's text masks, the stream fails: {e}"),
        (Err(why), Ok(got)) => panic!(
            "{name}: refused by the reference or its masking ({why}), the stream sent {:?}",
            String::from_utf8_lossy(got)
        ),
    }
}

/// `body` in `n` pieces (some may be empty).
fn split(body: &[u8], n: usize) -> Vec<&[u8]> {
    let at: Vec<usize> = (0..=n).map(|i| i * body.len() / n).collect();
    at.windows(2).map(|w| &body[w[0]..w[1]]).collect()
}

/// `plain` as one stream of `coding` (`flags`: byte 1 of the input).
fn encode(coding: Coding, plain: &[u8], flags: u8) -> Vec<u8> {
    let best = flags & 0x80 != 0;
    let level = if best {
        flate2::Compression::best()
    } else {
        flate2::Compression::fast()
    };
    let written = match coding {
        Coding::Gzip => {
            let mut b = flate2::GzBuilder::new();
            if flags & 0x10 != 0 {
                b = b.extra(b"mg\x02\x00ok".to_vec());
            }
            if flags & 0x20 != 0 {
                b = b.filename("orders.ndjson");
            }
            if flags & 0x40 != 0 {
                b = b.comment("from the sample upstream");
            }
            let mut e = b.write(Vec::new(), level);
            e.write_all(plain).and_then(|()| e.finish())
        }
        Coding::Deflate => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
            e.write_all(plain).and_then(|()| e.finish())
        }
        Coding::Brotli => {
            let mut out = Vec::new();
            {
                // (Small windows and levels: the input is small, and the
                // fuzzer's speed is what matters here.)
                let (quality, window) = if best { (9, 18) } else { (1, 16) };
                let mut e = brotli::CompressorWriter::new(&mut out, 4096, quality, window);
                e.write_all(plain).expect("brotli writes to memory");
            }
            Ok(out)
        }
        Coding::Zstd => {
            zstd::stream::Encoder::new(Vec::new(), if best { 9 } else { 1 }).and_then(|mut e| {
                e.include_checksum(true)?;
                e.write_all(plain)?;
                e.finish()
            })
        }
    };
    written.expect("coding to memory does not fail")
}

/// `coded` with `what` done to it at `at` (a fraction of its length, 0–255).
fn damaged(mut coded: Vec<u8>, what: u8, at: u8) -> Vec<u8> {
    let pos = usize::from(at) * coded.len() / 256;
    match what {
        1 => coded.truncate(pos),
        2 if !coded.is_empty() => coded[pos] ^= 1 << (at & 7),
        3 => coded.push(at),
        _ => {}
    }
    coded
}

/// The reference decoding of the whole of `coded`.
fn reference(coding: Coding, coded: &[u8]) -> Decode {
    if coded.is_empty() {
        // No stream at all (an empty body is not a coded one).
        return Some(Err("no stream".into()));
    }
    match coding {
        Coding::Gzip => capped(flate2::bufread::MultiGzDecoder::new(coded)),
        Coding::Deflate => zlib_streams(coded),
        Coding::Brotli => brotli_streams(coded),
        Coding::Zstd => match zstd::stream::read::Decoder::with_buffer(coded) {
            Ok(mut d) => match d.window_log_max(23) {
                Ok(()) => capped(d),
                Err(e) => Some(Err(e.to_string())),
            },
            Err(e) => Some(Err(e.to_string())),
        },
    }
}

/// What `r` reads to its end, up to [`CAP`].
fn capped(r: impl Read) -> Decode {
    let mut out = Vec::new();
    match r.take(CAP as u64 + 1).read_to_end(&mut out) {
        Ok(_) if out.len() > CAP => None,
        Ok(_) => Some(Ok(out)),
        Err(e) => Some(Err(e.to_string())),
    }
}

/// zlib streams back to back, each read to its end by flate2.
fn zlib_streams(mut coded: &[u8]) -> Decode {
    let mut out = Vec::new();
    while !coded.is_empty() {
        let mut z = flate2::Decompress::new(true);
        loop {
            let (before, made) = (z.total_in(), out.len());
            if out.len() > CAP {
                return None;
            }
            out.reserve(64 * 1024);
            let status = z.decompress_vec(coded, &mut out, flate2::FlushDecompress::None);
            let read = usize::try_from(z.total_in() - before).expect("read within the input");
            coded = &coded[read..];
            if read == 0 && out.len() == made && status.is_ok() {
                return Some(Err("a zlib stream that makes no progress".into()));
            }
            match status {
                Ok(flate2::Status::StreamEnd) => break,
                Ok(_) if coded.is_empty() && out.len() < out.capacity() => {
                    return Some(Err("a zlib stream cut short".into()))
                }
                Ok(_) => {}
                Err(e) => return Some(Err(e.to_string())),
            }
        }
    }
    Some(Ok(out))
}

/// brotli streams back to back (RFC 7932 windows), each to its end.
fn brotli_streams(mut coded: &[u8]) -> Decode {
    use brotli::enc::StandardAlloc;
    use brotli::{BrotliDecompressStream, BrotliResult, BrotliState};
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !coded.is_empty() {
        let mut state = BrotliState::new_strict(
            StandardAlloc::default(),
            StandardAlloc::default(),
            StandardAlloc::default(),
        );
        loop {
            let (mut avail_in, mut in_at) = (coded.len(), 0);
            let (mut avail_out, mut out_at, mut total) = (buf.len(), 0, 0);
            let result = BrotliDecompressStream(
                &mut avail_in,
                &mut in_at,
                coded,
                &mut avail_out,
                &mut out_at,
                &mut buf,
                &mut total,
                &mut state,
            );
            out.extend_from_slice(&buf[..out_at]);
            coded = &coded[in_at..];
            if out.len() > CAP {
                return None;
            }
            match result {
                BrotliResult::ResultSuccess => break,
                BrotliResult::NeedsMoreOutput => {}
                BrotliResult::NeedsMoreInput => {
                    return Some(Err("a brotli stream cut short".into()))
                }
                BrotliResult::ResultFailure => return Some(Err("a corrupt brotli stream".into())),
            }
        }
    }
    Some(Ok(out))
}

/// `coded` in chunks of `step` through `t` as the response stage drives a
/// body transform (`data` or `end`, then `more` until it has nothing
/// more): every part, or the first error.
fn through(mut t: Box<dyn BodyTransform>, coded: &[u8], step: usize) -> Result<Vec<Bytes>, String> {
    let mut parts = Vec::new();
    let why = |e: TransformError| e.reason;
    for chunk in coded.chunks(step) {
        parts.push(t.data(Bytes::copy_from_slice(chunk)).map_err(why)?);
        while let Some(more) = t.more().map_err(why)? {
            parts.push(more);
        }
    }
    parts.push(t.end().map_err(why)?);
    while let Some(more) = t.more().map_err(why)? {
        parts.push(more);
    }
    Ok(parts)
}

/// Passes what it is given (the masker's place, for the decoder alone).
struct Same;

impl BodyTransform for Same {
    fn data(&mut self, chunk: Bytes) -> Result<Bytes, TransformError> {
        Ok(chunk)
    }
    fn end(&mut self) -> Result<Bytes, TransformError> {
        Ok(Bytes::new())
    }
}

/// The field plan of `mask_json`, every method but `hash` (no key here:
/// the decoder, not the methods, is under test).
fn plan() -> &'static crate::decision::fields::FieldPlan {
    static PLAN: OnceLock<crate::decision::fields::FieldPlan> = OnceLock::new();
    PLAN.get_or_init(|| {
        super::mask::plan(
            [
                Mask::Omit,
                Mask::Null,
                Mask::Redact,
                Mask::Last4,
                Mask::Year,
            ],
            Undeclared::Pass,
        )
    })
}

/// The response stage's transform for [`plan`], as a request builds it.
fn masking() -> Arc<dyn crate::model::response::ResponseTransform> {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    let metrics = METRICS.get_or_init(Metrics::new);
    let product: Arc<str> = Arc::from("fuzz");
    FieldMasking::for_plan(
        Masking {
            plan: Some(plan()),
            product: &product,
            key: None,
            metrics: &metrics.fields,
            conformance: None,
        },
        None,
    )
    .expect("the plan hides fields")
}

use std::io::Write;

use super::*;

const ALL: [Coding; 4] = [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd];

fn encode(coding: Coding, data: &[u8]) -> Vec<u8> {
    match coding {
        Coding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).expect("gzip");
            e.finish().expect("gzip")
        }
        Coding::Deflate => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).expect("zlib");
            e.finish().expect("zlib")
        }
        Coding::Brotli => {
            let mut out = Vec::new();
            let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            e.write_all(data).expect("br");
            drop(e);
            out
        }
        Coding::Zstd => {
            // With the frame's checksum, as a corrupt frame is caught.
            let mut e = zstd::stream::Encoder::new(Vec::new(), 3).expect("zstd");
            e.include_checksum(true).expect("checksum");
            e.write_all(data).expect("zstd");
            e.finish().expect("zstd")
        }
    }
}

/// Passes what it is given (the masker's place).
struct Same;

impl BodyTransform for Same {
    fn data(&mut self, chunk: Bytes) -> Result<Bytes, TransformError> {
        Ok(chunk)
    }
    fn end(&mut self) -> Result<Bytes, TransformError> {
        Ok(Bytes::new())
    }
}

/// `body` in chunks of `size` through a decoding transform as the
/// pipeline drives it: every part, or the first error.
fn through(coding: Coding, body: &[u8], size: usize) -> Result<Vec<Bytes>, String> {
    let mut t = Decoded::new(coding, Box::new(Same));
    let mut parts = Vec::new();
    let mut drain = |t: &mut Decoded, first: Bytes| -> Result<(), String> {
        parts.push(first);
        while let Some(more) = t.more().map_err(|e| e.reason)? {
            parts.push(more);
        }
        Ok(())
    };
    for chunk in body.chunks(size) {
        let first = t
            .data(Bytes::copy_from_slice(chunk))
            .map_err(|e| e.reason)?;
        drain(&mut t, first)?;
    }
    let last = t.end().map_err(|e| e.reason)?;
    drain(&mut t, last)?;
    Ok(parts)
}

fn joined(parts: &[Bytes]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}

fn records(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| format!("{{\"id\": \"SO-{i}\", \"customer_email\": \"c{i}@example.com\"}}\n"))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn the_coding_is_read_from_content_encoding_and_only_one_known_coding_is_read() {
    let of = |values: &[&str]| {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append(
                http::header::CONTENT_ENCODING,
                http::HeaderValue::from_str(v).expect("value"),
            );
        }
        coding(&h)
    };
    assert_eq!(of(&[]), Ok(None));
    assert_eq!(of(&["identity"]), Ok(None));
    assert_eq!(of(&["GZip"]), Ok(Some(Coding::Gzip)));
    assert_eq!(of(&["x-gzip"]), Ok(Some(Coding::Gzip)));
    assert_eq!(of(&["identity, br"]), Ok(Some(Coding::Brotli)));
    assert_eq!(of(&["deflate"]), Ok(Some(Coding::Deflate)));
    assert_eq!(of(&["zstd"]), Ok(Some(Coding::Zstd)));
    let stacked = of(&["gzip, br"]).expect_err("stacked");
    assert!(
        stacked.contains("stacked content codings `gzip, br`"),
        "{stacked}"
    );
    let two_lines = of(&["gzip", "gzip"]).expect_err("stacked");
    assert!(two_lines.contains("stacked"), "{two_lines}");
    let unknown = of(&["compress"]).expect_err("unknown");
    assert!(
        unknown.contains("unknown content coding `compress`"),
        "{unknown}"
    );
}

#[test]
fn each_coding_decodes_to_the_bytes_sent_whatever_the_chunks() {
    let body = records(2000);
    for coding in ALL {
        let encoded = encode(coding, &body);
        for size in [1, 7, 4096, encoded.len()] {
            if size == 1 && encoded.len() > 20_000 {
                continue;
            }
            let parts = through(coding, &encoded, size).expect("decodes");
            assert_eq!(joined(&parts), body, "{coding:?} in chunks of {size}");
        }
    }
}

#[test]
fn gzip_members_and_zstd_frames_one_after_another_decode_as_one_body() {
    for coding in [Coding::Gzip, Coding::Zstd] {
        let mut encoded = encode(coding, b"[{\"id\": 1},");
        encoded.extend(encode(coding, b"{\"id\": 2}]"));
        let parts = through(coding, &encoded, 5).expect("decodes");
        assert_eq!(joined(&parts), b"[{\"id\": 1},{\"id\": 2}]", "{coding:?}");
    }
}

#[test]
fn a_cut_or_corrupt_stream_or_one_with_bytes_after_its_end_fails() {
    let body = records(200);
    for coding in ALL {
        let encoded = encode(coding, &body);
        let cut = &encoded[..encoded.len() - 3];
        let e = through(coding, cut, 1024).expect_err("cut");
        assert!(e.contains(coding.name()), "{coding:?}: {e}");
        let mut corrupt = encoded.clone();
        let middle = corrupt.len() / 2;
        for b in &mut corrupt[middle..middle + 8] {
            *b ^= 0x5a;
        }
        // A flipped byte is caught by the stream's structure or checksum.
        assert!(
            through(coding, &corrupt, 1024).is_err(),
            "{coding:?} corrupt"
        );
        let mut trailing = encoded.clone();
        trailing.extend_from_slice(b"\x00garbage");
        assert!(
            through(coding, &trailing, 1024).is_err(),
            "{coding:?} trailing"
        );
        assert!(through(coding, b"", 1024).is_err(), "{coding:?} empty");
    }
}

/// A small chunk that expands a thousandfold comes out in pieces of at
/// most `PIECE` bytes: what one call makes does not grow with the ratio.
#[test]
fn a_decompression_bomb_comes_out_in_bounded_pieces() {
    let body = vec![b' '; 8 << 20];
    for coding in ALL {
        let encoded = encode(coding, &body);
        assert!(
            encoded.len() * 100 < body.len(),
            "{coding:?}: {}",
            encoded.len()
        );
        let parts = through(coding, &encoded, encoded.len()).expect("decodes");
        let largest = parts.iter().map(Bytes::len).max().unwrap_or(0);
        assert!(largest <= PIECE, "{coding:?}: a part of {largest} bytes");
        assert_eq!(parts.iter().map(Bytes::len).sum::<usize>(), body.len());
    }
}

#[test]
fn a_zstd_frame_asking_for_a_window_over_8_mib_is_refused() {
    let body = records(10);
    let mut e = zstd::stream::Encoder::new(Vec::new(), 3).expect("zstd");
    e.set_parameter(zstd::stream::raw::CParameter::WindowLog(25))
        .expect("window");
    e.set_pledged_src_size(None).expect("unknown size");
    e.write_all(&body).expect("write");
    let encoded = e.finish().expect("zstd");
    let got = through(Coding::Zstd, &encoded, 1024);
    assert!(got.is_err(), "a 32 MiB window was accepted");
}

/// A gzip member with every optional header field (RFC 1952 2.3): an
/// extra field, a name, a comment, and the header's own check.
fn gzip_with_every_field(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::GzBuilder::new()
        .extra(vec![b'x'; 300])
        .filename("orders.json")
        .comment("a comment")
        .write(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    let mut member = e.finish().expect("gzip");
    // FHCRC: the flag, and the low half of the header's CRC-32 after it.
    member[3] |= 0x02;
    let header_len = 10 + 2 + 300 + "orders.json".len() + 1 + "a comment".len() + 1;
    let crc = crc32fast::hash(&member[..header_len]) as u16;
    let mut with_check = member[..header_len].to_vec();
    with_check.extend_from_slice(&crc.to_le_bytes());
    with_check.extend_from_slice(&member[header_len..]);
    with_check
}

#[test]
fn a_gzip_header_with_every_optional_field_is_read_whatever_the_chunks() {
    let body = records(50);
    let encoded = gzip_with_every_field(&body);
    for size in [1, 3, 11, 301, encoded.len()] {
        let parts = through(Coding::Gzip, &encoded, size).expect("decodes");
        assert_eq!(joined(&parts), body, "chunks of {size}");
    }
    let mut wrong_check = encoded.clone();
    let at = 10 + 2 + 300 + 12 + 10;
    wrong_check[at] ^= 1;
    let e = through(Coding::Gzip, &wrong_check, 64).expect_err("header check");
    assert!(e.contains("header's check"), "{e}");
}

#[test]
fn a_gzip_member_whose_trailer_or_header_is_wrong_fails() {
    let body = records(50);
    let encoded = encode(Coding::Gzip, &body);
    let n = encoded.len();
    let wrong = |at: usize| {
        let mut bad = encoded.clone();
        bad[at] ^= 0x01;
        through(Coding::Gzip, &bad, 100).expect_err("refused")
    };
    assert!(wrong(n - 8).contains("CRC"), "{}", wrong(n - 8));
    assert!(wrong(n - 4).contains("length"), "{}", wrong(n - 4));
    assert!(wrong(0).contains("not a gzip member"), "{}", wrong(0));
    assert!(wrong(2).contains("not deflated"), "{}", wrong(2));
    let mut reserved = encoded.clone();
    reserved[3] |= 0x80;
    let e = through(Coding::Gzip, &reserved, 100).expect_err("reserved flag");
    assert!(e.contains("reserved"), "{e}");
}

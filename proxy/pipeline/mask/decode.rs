//! Compressed responses on a masked route. The request asks the upstream
//! for `identity`; an upstream that compresses all the same (`gzip`,
//! `deflate`, `br`, `zstd`) is decoded as it streams, masked, and sent as
//! identity. Decoding never makes more than [`PIECE`] bytes at a time: a
//! chunk that expands a thousandfold (a decompression bomb) comes out as
//! many pieces, each masked and sent before the next is decoded, so the
//! memory a response takes does not grow with what it decodes to. The
//! decoders' own state is bounded too: a 32 KiB window for gzip and
//! deflate, at most 16 MiB for `br` (RFC 7932 windows only, no large
//! window) and 8 MiB for `zstd` (RFC 9659's limit for the content coding).
//!
//! Stacked codings, unknown ones, and a stream that is corrupt or ends
//! before its end fail the response as a body that cannot be masked.

use bytes::Bytes;
use compression_codecs::core::util::{PartialBuffer, WriteBuffer};
use compression_codecs::zstd::params::DParameter;
use compression_codecs::{BrotliDecoder, DecodeV2, ZlibDecoder, ZstdDecoder};

use crate::model::conformance::Kinds;
use crate::model::response::{BodyTransform, TransformError};

mod gzip;

/// The most a decoder makes of its input at a time.
pub const PIECE: usize = 64 * 1024;

/// RFC 9659: a `zstd`-coded HTTP body's window is at most 8 MiB.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// A content coding masking can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    /// HTTP's `deflate`: the zlib format (RFC 9110 8.4.1.2).
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }
}

/// The coding of a body by its `Content-Encoding` (none, or `identity`:
/// `None`), or why it cannot be read: more than one coding, or one not
/// known here.
pub fn coding(headers: &http::HeaderMap) -> Result<Option<Coding>, String> {
    let mut named = Vec::new();
    for value in headers.get_all(http::header::CONTENT_ENCODING) {
        let text = value
            .to_str()
            .map_err(|_| "a Content-Encoding that is not text".to_string())?;
        for c in text.split(',').map(str::trim) {
            if !c.is_empty() && !c.eq_ignore_ascii_case("identity") {
                named.push(c.to_ascii_lowercase());
            }
        }
    }
    match named.as_slice() {
        [] => Ok(None),
        [one] => match one.as_str() {
            "gzip" | "x-gzip" => Ok(Some(Coding::Gzip)),
            "deflate" => Ok(Some(Coding::Deflate)),
            "br" => Ok(Some(Coding::Brotli)),
            "zstd" => Ok(Some(Coding::Zstd)),
            _ => Err(format!("a body in the unknown content coding `{one}`")),
        },
        more => Err(format!(
            "a body in stacked content codings `{}`",
            more.join(", ")
        )),
    }
}

/// One body's decoder: compressed chunks in, decoded pieces out.
pub struct Decoder {
    coding: Coding,
    codec: Box<dyn DecodeV2 + Send>,
    /// The compressed chunk in hand, and how much of it has been read.
    input: Bytes,
    at: usize,
    out: Vec<u8>,
    /// The last call filled its piece: more may be held in the decoder.
    full: bool,
    /// The stream (or its last member) has ended.
    ended: bool,
    /// The upstream's body has ended: what is held is drained, and a
    /// stream that has not ended is cut.
    last: bool,
}

impl Decoder {
    pub fn new(coding: Coding) -> Decoder {
        let codec: Box<dyn DecodeV2 + Send> = match coding {
            Coding::Gzip => Box::new(gzip::Gzip::new()),
            Coding::Deflate => Box::new(ZlibDecoder::new()),
            Coding::Brotli => Box::new(BrotliDecoder::new()),
            Coding::Zstd => Box::new(ZstdDecoder::new_with_params(&[DParameter::window_log_max(
                ZSTD_WINDOW_LOG_MAX,
            )])),
        };
        Decoder {
            coding,
            codec,
            input: Bytes::new(),
            at: 0,
            out: vec![0; PIECE],
            full: false,
            ended: false,
            last: false,
        }
    }

    /// The next compressed chunk (the one in hand has been read: `next`
    /// returned `None`).
    pub fn push(&mut self, chunk: Bytes) {
        self.input = chunk;
        self.at = 0;
    }

    /// The upstream's body has ended.
    pub fn close(&mut self) {
        self.last = true;
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> String {
        format!("the {} body {what} ({e})", self.coding.name())
    }

    /// The next decoded piece, or `None` when the chunk in hand is read
    /// (and, after [`close`](Self::close), the stream is whole).
    pub fn next(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            if self.at < self.input.len() {
                if self.ended {
                    // Another member (gzip) or frame (zstd) follows.
                    self.codec
                        .reinit()
                        .map_err(|e| self.failed("is corrupt", e))?;
                    self.ended = false;
                }
                let mut input = PartialBuffer::new(&self.input[self.at..]);
                let mut out = WriteBuffer::new_initialized(&mut self.out);
                let done = self.codec.decode(&mut input, &mut out);
                let (read, n) = (input.written_len(), out.written_len());
                self.full = out.has_no_spare_space();
                self.ended = done.map_err(|e| self.failed("is corrupt", e))?;
                self.at += read;
                if n > 0 {
                    return Ok(Some(Bytes::copy_from_slice(&self.out[..n])));
                }
                if read == 0 && !self.ended {
                    return Err(self.failed("makes no progress", "nothing read"));
                }
                continue;
            }
            if self.ended {
                // A whole stream has left nothing behind.
                return Ok(None);
            }
            if self.full {
                // What the decoder holds from a chunk read to its end.
                let mut out = WriteBuffer::new_initialized(&mut self.out);
                let flushed = self.codec.flush(&mut out);
                let n = out.written_len();
                self.full = !flushed.map_err(|e| self.failed("is corrupt", e))?;
                if n > 0 {
                    return Ok(Some(Bytes::copy_from_slice(&self.out[..n])));
                }
                self.full = false;
                continue;
            }
            if !self.last {
                return Ok(None);
            }
            // The body ended inside the stream: it ends here, or it was cut.
            let mut out = WriteBuffer::new_initialized(&mut self.out);
            let finished = self.codec.finish(&mut out);
            let n = out.written_len();
            self.ended = finished.map_err(|e| self.failed("ends before its end", e))?;
            if n > 0 {
                return Ok(Some(Bytes::copy_from_slice(&self.out[..n])));
            }
            if !self.ended {
                return Err(self.failed("ends before its end", "nothing more to read"));
            }
        }
    }
}

/// A body transform reading a compressed body: each decoded piece goes
/// through the transform it wraps, one piece a call (the rest through
/// [`BodyTransform::more`]).
pub struct Decoded {
    decoder: Decoder,
    inner: Box<dyn BodyTransform>,
    /// The transform it wraps has been told the end.
    ended: bool,
}

impl Decoded {
    pub fn new(coding: Coding, inner: Box<dyn BodyTransform>) -> Decoded {
        Decoded {
            decoder: Decoder::new(coding),
            inner,
            ended: false,
        }
    }
}

impl BodyTransform for Decoded {
    fn data(&mut self, chunk: Bytes) -> Result<Bytes, TransformError> {
        self.decoder.push(chunk);
        Ok(self.more()?.unwrap_or_default())
    }

    fn more(&mut self) -> Result<Option<Bytes>, TransformError> {
        if let Some(out) = self.inner.more()? {
            return Ok(Some(out));
        }
        match self.decoder.next().map_err(super::refused)? {
            Some(piece) => self.inner.data(piece).map(Some),
            None if self.decoder.last && !self.ended => {
                self.ended = true;
                self.inner.end().map(Some)
            }
            None => Ok(None),
        }
    }

    fn end(&mut self) -> Result<Bytes, TransformError> {
        self.decoder.close();
        Ok(self.more()?.unwrap_or_default())
    }

    // The masker's own answers (its conformance checks run on the decoded
    // body); what it sends is never the upstream's bytes.

    fn look_ahead(&self) -> bool {
        self.inner.look_ahead()
    }

    fn settled(&self) -> bool {
        self.inner.settled()
    }

    fn violations(&self) -> Kinds {
        self.inner.violations()
    }
}

#[cfg(test)]
mod tests;

//! gzip (RFC 1952) read around a raw deflate decoder: the member's header
//! (its optional extra field, name, comment and header check), the deflate
//! stream, and the trailer's CRC-32 and length of what it decoded to.
//!
//! compression-codecs' own `gzip` feature would do this, but it turns on
//! memchr's `default` feature, which changes the build of every crate of
//! the graph that uses memchr; the framing is small enough to read here.

use std::io::{Error, ErrorKind, Result};

use compression_codecs::core::util::{PartialBuffer, WriteBuffer};
use compression_codecs::{DecodeV2, DeflateDecoder};

/// The header's flags (RFC 1952 2.3.1).
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
const RESERVED: u8 = 0xe0;

fn corrupt(what: &'static str) -> Error {
    Error::new(ErrorKind::InvalidData, what)
}

/// Where a member's header is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// The ten fixed bytes: how many are in.
    Fixed(u8),
    /// FEXTRA's length, little-endian: its first byte once in.
    ExtraLength(Option<u8>),
    /// FEXTRA's bytes still to skip.
    Extra(u16),
    /// FNAME, up to its zero byte.
    Name,
    /// FCOMMENT, up to its zero byte.
    Comment,
    /// FHCRC: its first byte once in.
    Check(Option<u8>),
    Done,
}

/// A member's header, read as it arrives (it may come a byte at a time).
#[derive(Debug)]
struct Header {
    field: Field,
    flags: u8,
    /// The CRC-32 of the header's bytes before FHCRC.
    crc: crc32fast::Hasher,
}

impl Header {
    fn new() -> Header {
        Header {
            field: Field::Fixed(0),
            flags: 0,
            crc: crc32fast::Hasher::new(),
        }
    }

    /// The first optional field the flags name after `field`, or the end.
    fn after(&self, field: Field) -> Field {
        let order = [
            (FEXTRA, Field::ExtraLength(None)),
            (FNAME, Field::Name),
            (FCOMMENT, Field::Comment),
            (FHCRC, Field::Check(None)),
        ];
        let from = match field {
            Field::Fixed(_) => 0,
            Field::ExtraLength(_) | Field::Extra(_) => 1,
            Field::Name => 2,
            Field::Comment => 3,
            Field::Check(_) | Field::Done => 4,
        };
        order[from..]
            .iter()
            .find(|(flag, _)| self.flags & flag != 0)
            .map_or(Field::Done, |(_, next)| *next)
    }

    /// Reads what of the header `input` holds; whether it is whole.
    fn read(&mut self, input: &mut PartialBuffer<&[u8]>) -> Result<bool> {
        while self.field != Field::Done {
            let Some(&b) = input.unwritten().first() else {
                return Ok(false);
            };
            // Skipped in bulk: the extra field can be 64 KiB.
            if let Field::Extra(left) = self.field {
                let n = input.unwritten().len().min(usize::from(left));
                self.crc.update(&input.unwritten()[..n]);
                input.advance(n);
                let left = left - n as u16;
                self.field = match left {
                    0 => self.after(Field::Extra(0)),
                    _ => Field::Extra(left),
                };
                continue;
            }
            input.advance(1);
            if !matches!(self.field, Field::Check(_)) {
                self.crc.update(&[b]);
            }
            self.field = match self.field {
                Field::Fixed(at) => {
                    match (at, b) {
                        (0, 0x1f) | (1, 0x8b) | (2, 8) => {}
                        (0 | 1, _) => return Err(corrupt("not a gzip member")),
                        (2, _) => return Err(corrupt("a gzip member not deflated")),
                        (3, flags) if flags & RESERVED != 0 => {
                            return Err(corrupt("a gzip header's reserved flags set"))
                        }
                        (3, flags) => self.flags = flags,
                        _ => {}
                    }
                    match at {
                        9 => self.after(Field::Fixed(at)),
                        _ => Field::Fixed(at + 1),
                    }
                }
                Field::ExtraLength(None) => Field::ExtraLength(Some(b)),
                Field::ExtraLength(Some(low)) => match u16::from_le_bytes([low, b]) {
                    0 => self.after(Field::Extra(0)),
                    n => Field::Extra(n),
                },
                Field::Name if b == 0 => self.after(Field::Name),
                Field::Comment if b == 0 => self.after(Field::Comment),
                Field::Check(None) => Field::Check(Some(b)),
                Field::Check(Some(low)) => {
                    let crc = self.crc.clone().finalize();
                    if u16::from_le_bytes([low, b]) != crc as u16 {
                        return Err(corrupt("a gzip header's check does not match"));
                    }
                    Field::Done
                }
                same => same,
            };
        }
        Ok(true)
    }
}

/// Where a member is.
#[derive(Debug)]
enum Part {
    Header(Header),
    Deflate,
    /// The trailer's eight bytes: those in so far.
    Trailer([u8; 8], usize),
    Done,
}

/// One gzip stream's decoder (a member; another follows after `reinit`).
#[derive(Debug)]
pub struct Gzip {
    part: Part,
    deflate: DeflateDecoder,
    /// The CRC-32 and length (mod 2^32) of what the member decoded to.
    crc: crc32fast::Hasher,
    size: u32,
}

impl Gzip {
    pub fn new() -> Gzip {
        Gzip {
            part: Part::Header(Header::new()),
            deflate: DeflateDecoder::new(),
            crc: crc32fast::Hasher::new(),
            size: 0,
        }
    }

    /// What the deflate decoder wrote from `from` on: into the check.
    fn decoded(&mut self, output: &WriteBuffer<'_>, from: usize) {
        let made = &output.written()[from..];
        self.crc.update(made);
        self.size = self.size.wrapping_add(made.len() as u32);
    }

    fn trailer(&self, trailer: &[u8; 8]) -> Result<()> {
        let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let size = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
        if crc != self.crc.clone().finalize() {
            return Err(corrupt("a gzip member's CRC does not match"));
        }
        if size != self.size {
            return Err(corrupt("a gzip member's length does not match"));
        }
        Ok(())
    }
}

impl DecodeV2 for Gzip {
    fn reinit(&mut self) -> Result<()> {
        self.deflate.reinit()?;
        self.part = Part::Header(Header::new());
        self.crc = crc32fast::Hasher::new();
        self.size = 0;
        Ok(())
    }

    fn decode(
        &mut self,
        input: &mut PartialBuffer<&[u8]>,
        output: &mut WriteBuffer<'_>,
    ) -> Result<bool> {
        loop {
            match &mut self.part {
                Part::Header(header) => {
                    if !header.read(input)? {
                        return Ok(false);
                    }
                    self.part = Part::Deflate;
                }
                Part::Deflate => {
                    // (The decoder's answer to no input is an error.)
                    if input.unwritten().is_empty() {
                        return Ok(false);
                    }
                    let from = output.written_len();
                    let ended = self.deflate.decode(input, output);
                    self.decoded(output, from);
                    if !ended? {
                        return Ok(false);
                    }
                    self.part = Part::Trailer([0; 8], 0);
                }
                Part::Trailer(trailer, have) => {
                    let n = input.unwritten().len().min(8 - *have);
                    trailer[*have..*have + n].copy_from_slice(&input.unwritten()[..n]);
                    input.advance(n);
                    *have += n;
                    if *have < 8 {
                        return Ok(false);
                    }
                    let trailer = *trailer;
                    self.trailer(&trailer)?;
                    self.part = Part::Done;
                }
                Part::Done => return Ok(true),
            }
        }
    }

    fn flush(&mut self, output: &mut WriteBuffer<'_>) -> Result<bool> {
        if !matches!(self.part, Part::Deflate) {
            return Ok(true);
        }
        let from = output.written_len();
        let flushed = self.deflate.flush(output);
        self.decoded(output, from);
        flushed
    }

    fn finish(&mut self, output: &mut WriteBuffer<'_>) -> Result<bool> {
        match self.part {
            Part::Done => Ok(true),
            Part::Deflate => {
                // What the decoder still holds; the trailer is missing all
                // the same, so the member is cut.
                let from = output.written_len();
                let finished = self.deflate.finish(output);
                self.decoded(output, from);
                finished?;
                Ok(false)
            }
            _ => Ok(false),
        }
    }
}

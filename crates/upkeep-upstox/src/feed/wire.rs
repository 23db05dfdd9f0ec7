//! A minimal zero-copy protobuf wire reader: varints, fixed64, length-delimited slices
//! and unknown-field skipping. It never panics and never allocates.

use super::FeedDecodeError;

pub(crate) type Result<T> = std::result::Result<T, FeedDecodeError>;

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const SGROUP: u8 = 3;
const EGROUP: u8 = 4;
const I32: u8 = 5;

/// Deepest group nesting accepted inside unknown fields (upb's whole-message limit is 100).
const MAX_GROUP_DEPTH: u32 = 64;

/// A cursor over one message's bytes.
#[derive(Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline]
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// The bytes not read yet.
    #[inline]
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    #[inline]
    pub(crate) fn has_more(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Consumes the key `tag` if it comes next. Encoders write fields in field-number
    /// order, so trying the schema's order first predicts well (upb's "fast table" idea).
    #[inline(always)]
    pub(crate) fn eat(&mut self, tag: u64) -> bool {
        if tag < 0x80 {
            if let Some((&b, rest)) = self.buf.split_first()
                && u64::from(b) == tag
            {
                self.buf = rest;
                return true;
            }
        } else if let [b0, b1, ref rest @ ..] = *self.buf
            && u64::from(b0) == (tag & 0x7f) | 0x80
            && u64::from(b1) == tag >> 7
        {
            self.buf = rest;
            return true;
        }
        false
    }

    /// Reads a raw field key (`field << 3 | wire type`). Known keys are matched as
    /// constants (see [`tag`]); anything else goes to [`Reader::skip_tag`].
    #[inline(always)]
    pub(crate) fn tag(&mut self) -> Result<u64> {
        self.varint()
    }

    /// Skips the value of a field this reader does not know, or whose wire type does not
    /// match the schema (protobuf C++/upb treat such a field as unknown, too).
    #[inline(never)]
    pub(crate) fn skip_tag(&mut self, tag: u64) -> Result<()> {
        let (field, wire_type) = split_tag(tag)?;
        self.skip_at_depth(field, wire_type, 0)
    }

    #[inline(always)]
    pub(crate) fn varint(&mut self) -> Result<u64> {
        match *self.buf {
            [b0, ref rest @ ..] if b0 < 0x80 => {
                self.buf = rest;
                Ok(u64::from(b0))
            }
            [b0, b1, ref rest @ ..] if b1 < 0x80 => {
                self.buf = rest;
                Ok(u64::from(b0 & 0x7f) | (u64::from(b1) << 7))
            }
            _ => self.varint_long(),
        }
    }

    /// Three bytes or more (timestamps are six), or truncated.
    #[inline(never)]
    fn varint_long(&mut self) -> Result<u64> {
        // Up to eight bytes with eight readable: find the last byte and squeeze out the
        // continuation bits without a loop.
        if let Some(chunk) = self.buf.first_chunk::<8>() {
            let x = u64::from_le_bytes(*chunk);
            let stop = !x & 0x8080_8080_8080_8080;
            if stop != 0 {
                let bits = stop.trailing_zeros() + 1; // 8 * bytes used
                let mut v = (x & (u64::MAX >> (64 - bits))) & 0x7f7f_7f7f_7f7f_7f7f;
                v = ((v & 0x7f00_7f00_7f00_7f00) >> 1) | (v & 0x007f_007f_007f_007f);
                v = ((v & 0x3fff_0000_3fff_0000) >> 2) | (v & 0x0000_3fff_0000_3fff);
                v = ((v & 0x0fff_ffff_0000_0000) >> 4) | (v & 0x0000_0000_0fff_ffff);
                self.buf = self.buf.get((bits / 8) as usize..).unwrap_or_default();
                return Ok(v);
            }
        }
        let buf = self.buf;
        let mut value: u64 = 0;
        let mut i = 0;
        while i < 10 {
            let Some(&b) = buf.get(i) else {
                return Err(FeedDecodeError::Truncated);
            };
            value |= u64::from(b & 0x7f) << (7 * i);
            i += 1;
            if b < 0x80 {
                // The 10th byte may only carry the top bit of a u64.
                if i == 10 && b > 1 {
                    return Err(FeedDecodeError::BadVarint);
                }
                self.buf = buf.get(i..).unwrap_or_default();
                return Ok(value);
            }
        }
        Err(FeedDecodeError::BadVarint)
    }

    #[inline]
    pub(crate) fn int64(&mut self) -> Result<i64> {
        Ok(self.varint()? as i64)
    }

    /// An `int32` or enum: protobuf truncates the 64-bit varint to its low 32 bits.
    #[inline]
    pub(crate) fn int32(&mut self) -> Result<i32> {
        Ok(self.varint()? as i32)
    }

    #[inline]
    pub(crate) fn bool(&mut self) -> Result<bool> {
        Ok(self.varint()? != 0)
    }

    #[inline]
    pub(crate) fn double(&mut self) -> Result<f64> {
        match self.buf.split_first_chunk::<8>() {
            Some((head, rest)) => {
                self.buf = rest;
                Ok(f64::from_le_bytes(*head))
            }
            None => Err(FeedDecodeError::Truncated),
        }
    }

    /// A length-delimited payload (sub-message or string bytes).
    #[inline]
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.varint()?;
        if len > self.buf.len() as u64 {
            return Err(FeedDecodeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(len as usize);
        self.buf = rest;
        Ok(head)
    }

    /// A proto3 `string`: must be UTF-8, as the SDK's runtime requires.
    #[inline]
    pub(crate) fn str(&mut self) -> Result<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| FeedDecodeError::InvalidUtf8)
    }

    fn skip_at_depth(&mut self, field: u32, wire_type: u8, depth: u32) -> Result<()> {
        match wire_type {
            VARINT => self.varint().map(drop),
            I64 => self.advance(8),
            LEN => self.bytes().map(drop),
            I32 => self.advance(4),
            SGROUP => {
                if depth >= MAX_GROUP_DEPTH {
                    return Err(FeedDecodeError::TooDeep);
                }
                loop {
                    if !self.has_more() {
                        return Err(FeedDecodeError::Truncated);
                    }
                    let (f, wt) = split_tag(self.varint()?)?;
                    if wt == EGROUP {
                        return if f == field {
                            Ok(())
                        } else {
                            Err(FeedDecodeError::UnbalancedGroup)
                        };
                    }
                    self.skip_at_depth(f, wt, depth + 1)?;
                }
            }
            EGROUP => Err(FeedDecodeError::UnbalancedGroup),
            other => Err(FeedDecodeError::InvalidWireType(other)),
        }
    }

    #[inline]
    fn advance(&mut self, n: usize) -> Result<()> {
        match self.buf.get(n..) {
            Some(rest) => {
                self.buf = rest;
                Ok(())
            }
            None => Err(FeedDecodeError::Truncated),
        }
    }
}

/// The key of `field` with `wire_type`, for matching in `match tag { .. }`.
pub(crate) const fn tag(field: u32, wire_type: u8) -> u64 {
    ((field as u64) << 3) | wire_type as u64
}

/// Splits and checks a key: field numbers are 1..2^29.
#[inline]
fn split_tag(tag: u64) -> Result<(u32, u8)> {
    if tag > u64::from(u32::MAX) || tag >> 3 == 0 {
        return Err(FeedDecodeError::InvalidTag);
    }
    Ok(((tag >> 3) as u32, (tag & 7) as u8))
}

/// Counts the length-delimited occurrences of `field` at the top level of `buf`, to size
/// a Vec before decoding. Stops quietly at the first malformed byte: the decode proper
/// reports it.
pub(crate) fn count_len_field(buf: &[u8], field: u32) -> usize {
    let want = tag(field, LEN);
    let mut r = Reader::new(buf);
    let mut n = 0;
    while r.has_more() {
        let Ok(t) = r.tag() else { break };
        let skipped = if t & 7 == u64::from(LEN) {
            n += usize::from(t == want);
            r.bytes().map(drop)
        } else {
            r.skip_tag(t)
        };
        if skipped.is_err() {
            break;
        }
    }
    n
}

//! Frames cut and joined at the wire level, for a relay: [`split`] finds each instrument's
//! `feeds` entry in a `FeedResponse` without decoding it, [`FrameParts::write_filtered`]
//! writes the frame again with only some instruments (the other fields verbatim), and
//! [`write_snapshot`] builds a frame from entries kept earlier. No re-encoding: the
//! bytes a consumer receives are the bytes Upstox sent.

use super::FeedDecodeError;
use super::types::{FeedType, RequestMode};
use super::wire::{Reader, tag};

const V1: u64 = tag(1, 0);
const L1: u64 = tag(1, 2);
const L2: u64 = tag(2, 2);
const V3: u64 = tag(3, 0);
const L4: u64 = tag(4, 2);
const V4: u64 = tag(4, 0);

/// One `feeds` map entry of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedPart<'a> {
    /// The instrument key.
    pub key: &'a str,
    /// `Feed.requestMode` of the entry.
    pub mode: RequestMode,
    /// The whole field as it came: key, length and the entry (write it as is).
    pub field: &'a [u8],
}

/// A frame split into its instruments' entries and everything else.
#[derive(Debug, Clone, Default)]
pub struct FrameParts<'a> {
    /// `type`.
    pub kind: FeedType,
    /// `currentTs`.
    pub current_ts: i64,
    /// Whether the frame carries `marketInfo`.
    pub has_market_info: bool,

    /// `feeds` entries in wire order (a repeated key appears twice; the last wins).
    pub feeds: Vec<FeedPart<'a>>,
    /// Every other top-level field, verbatim.
    others: Vec<&'a [u8]>,
}

/// Splits a `FeedResponse` at the top level. Only the entries' keys and request modes are
/// read; the rest is checked only as far as the wire format's framing.
pub fn split(buf: &[u8]) -> Result<FrameParts<'_>, FeedDecodeError> {
    let mut parts = FrameParts::default();
    let mut r = Reader::new(buf);
    while r.has_more() {
        let start = r.rest();
        let t = r.tag()?;
        match t {
            V1 => parts.kind = FeedType::from_i32(r.int32()?),
            V3 => parts.current_ts = r.int64()?,
            L2 => {
                let entry = r.bytes()?;
                let (key, mode) = entry_key_mode(entry)?;
                let field = start
                    .get(..start.len() - r.rest().len())
                    .unwrap_or_default();
                parts.feeds.push(FeedPart { key, mode, field });
                continue;
            }
            L4 => {
                r.bytes()?;
                parts.has_market_info = true;
            }
            t => r.skip_tag(t)?,
        }
        let field = start
            .get(..start.len() - r.rest().len())
            .unwrap_or_default();
        parts.others.push(field);
    }
    Ok(parts)
}

fn entry_key_mode(entry: &[u8]) -> Result<(&str, RequestMode), FeedDecodeError> {
    let mut key = "";
    let mut mode = RequestMode::Ltpc;
    let mut r = Reader::new(entry);
    while r.has_more() {
        match r.tag()? {
            L1 => key = r.str()?,
            L2 => {
                let mut f = Reader::new(r.bytes()?);
                while f.has_more() {
                    match f.tag()? {
                        V4 => mode = RequestMode::from_i32(f.int32()?),
                        t => f.skip_tag(t)?,
                    }
                }
            }
            t => r.skip_tag(t)?,
        }
    }
    Ok((key, mode))
}

impl FrameParts<'_> {
    /// Appends every top-level field but the `feeds` entries (type, time, market info) to
    /// `out`; entries may follow in any order (field order does not matter in protobuf).
    pub fn write_others(&self, out: &mut Vec<u8>) {
        for f in &self.others {
            out.extend_from_slice(f);
        }
    }

    /// Appends the frame to `out` with only the entries `keep` accepts (given their
    /// index in [`FrameParts::feeds`]); returns how many it kept. The other fields
    /// come first, then the kept entries (field order does not matter in protobuf).
    pub fn write_filtered(
        &self,
        mut keep: impl FnMut(usize, &FeedPart<'_>) -> bool,
        out: &mut Vec<u8>,
    ) -> usize {
        self.write_others(out);
        let mut n = 0;
        for (i, p) in self.feeds.iter().enumerate() {
            if keep(i, p) {
                out.extend_from_slice(p.field);
                n += 1;
            }
        }
        n
    }
}

/// Appends a snapshot frame to `out`: `type` `kind`, `currentTs`, and the given `feeds`
/// fields (as [`FeedPart::field`] gave them).
pub fn write_snapshot<'f>(
    kind: FeedType,
    current_ts: i64,
    fields: impl IntoIterator<Item = &'f [u8]>,
    out: &mut Vec<u8>,
) {
    if kind.number() != 0 {
        out.push(0x08);
        put_varint(out, kind.number() as i64 as u64);
    }
    for f in fields {
        out.extend_from_slice(f);
    }
    if current_ts != 0 {
        out.push(0x18);
        put_varint(out, current_ts as u64);
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

//! A `feeds` entry streamed in a richer mode, rewritten as Upstox sends it in a poorer one,
//! at the wire level (for a relay that streams a key once, in the richest mode any of its
//! consumers wants).
//!
//! | streamed as | asked for | the consumer gets |
//! |---|---|---|
//! | any richer mode | `ltpc` | `Feed{ltpc}` (the entry's `ltpc`), no `requestMode` |
//! | `full` / `full_d30` | `option_greeks` | `Feed{firstLevelWithGreeks{ltpc, firstDepth = best level, optionGreeks, vtt, oi, iv}, requestMode: option_greeks}`; an index has only `ltpc` |
//! | `full_d30` | `full` | the same `marketFF` with its first 5 depth levels, `requestMode: full_d5` |
//!
//! Sub-messages (`ltpc`, a quote, `optionGreeks`) and scalar values are copied as bytes;
//! only the framing around them is written anew.

use super::FeedDecodeError;
use super::request::SubscriptionMode;
use super::types::RequestMode;
use super::wire::{Reader, tag};

/// Depth levels of mode `full` (`full_d5`).
const FULL_LEVELS: usize = 5;

fn rank(mode: RequestMode) -> Option<u8> {
    match mode {
        RequestMode::Ltpc => Some(0),
        RequestMode::OptionGreeks => Some(1),
        RequestMode::FullD5 => Some(2),
        RequestMode::FullD30 => Some(3),
        RequestMode::Unknown(_) => None,
    }
}

/// Whether an entry streamed with `requestMode` `have` is richer than what a consumer
/// asked for (`want`), so it has to be [`reshape`]d for that consumer. An entry in a
/// poorer or unknown mode is passed on as it is (nothing can be added to it).
pub fn needs_reshape(have: RequestMode, want: SubscriptionMode) -> bool {
    match (rank(have), rank(want.response_mode())) {
        (Some(h), Some(w)) => h > w,
        _ => false,
    }
}

// Feed
const FEED_LTPC: u64 = tag(1, 2);
const FEED_FULL: u64 = tag(2, 2);
const FEED_GREEKS: u64 = tag(3, 2);
// FullFeed
const FULL_MARKET: u64 = tag(1, 2);
const FULL_INDEX: u64 = tag(2, 2);
// MarketFullFeed / IndexFullFeed / FirstLevelWithGreeks: ltpc is field 1 in all three.
const LTPC: u64 = tag(1, 2);
const MFF_LEVEL: u64 = tag(2, 2);
const MFF_GREEKS: u64 = tag(3, 2);
const MFF_VTT: u64 = tag(6, 0);
const MFF_OI: u64 = tag(7, 1);
const MFF_IV: u64 = tag(8, 1);
// FirstLevelWithGreeks
const FLG_DEPTH: u64 = tag(2, 2);
const FLG_GREEKS: u64 = tag(3, 2);
const FLG_VTT: u64 = tag(4, 0);
const FLG_OI: u64 = tag(5, 1);
const FLG_IV: u64 = tag(6, 1);
// MarketLevel
const QUOTE: u64 = tag(1, 2);
// FeedsEntry
const ENTRY_KEY: u64 = tag(1, 2);
const ENTRY_VALUE: u64 = tag(2, 2);
const FEEDS: u64 = tag(2, 2);
const FEED_MODE: u64 = tag(4, 0);

/// The union member of a `Feed`.
enum Union<'a> {
    Ltpc(&'a [u8]),
    Market(&'a [u8]),
    Index(&'a [u8]),
    Greeks(&'a [u8]),
    None,
}

/// Appends to `out` the `feeds` field `field` (as [`super::FeedPart::field`] gives it)
/// shaped for a consumer that asked for `want`. A field already as poor as `want` is
/// copied as it is.
pub fn reshape(
    field: &[u8],
    want: SubscriptionMode,
    out: &mut Vec<u8>,
) -> Result<(), FeedDecodeError> {
    let mut r = Reader::new(field);
    if r.tag()? != FEEDS {
        return Err(FeedDecodeError::InvalidTag);
    }
    let entry = r.bytes()?;
    let mut key_field: &[u8] = &[];
    let mut value: &[u8] = &[];
    let mut e = Reader::new(entry);
    while e.has_more() {
        let start = e.rest();
        let t = e.tag()?;
        match t {
            ENTRY_KEY => {
                e.bytes()?;
                key_field = consumed(start, &e);
            }
            ENTRY_VALUE => value = e.bytes()?,
            t => e.skip_tag(t)?,
        }
    }
    let mut union = Union::None;
    let mut f = Reader::new(value);
    while f.has_more() {
        match f.tag()? {
            FEED_LTPC => union = Union::Ltpc(f.bytes()?),
            FEED_GREEKS => union = Union::Greeks(f.bytes()?),
            FEED_FULL => {
                let mut ff = Reader::new(f.bytes()?);
                while ff.has_more() {
                    match ff.tag()? {
                        FULL_MARKET => union = Union::Market(ff.bytes()?),
                        FULL_INDEX => union = Union::Index(ff.bytes()?),
                        t => ff.skip_tag(t)?,
                    }
                }
            }
            t => f.skip_tag(t)?,
        }
    }
    let mut feed = Vec::with_capacity(value.len());
    match (want, union) {
        (SubscriptionMode::Ltpc, u) => {
            let ltpc = match u {
                Union::Ltpc(l) => Some(l),
                Union::Market(m) | Union::Index(m) | Union::Greeks(m) => sub_message(m, LTPC)?,
                Union::None => None,
            };
            put_len(&mut feed, FEED_LTPC, ltpc.unwrap_or_default());
        }
        (SubscriptionMode::OptionGreeks, Union::Market(m)) => {
            let flg = market_to_greeks(m)?;
            put_len(&mut feed, FEED_GREEKS, &flg);
            put_varint_field(&mut feed, FEED_MODE, RequestMode::OptionGreeks.number());
        }
        (SubscriptionMode::OptionGreeks, Union::Index(i)) => {
            let mut flg = Vec::new();
            if let Some(l) = sub_message(i, LTPC)? {
                put_len(&mut flg, LTPC, l);
            }
            put_len(&mut feed, FEED_GREEKS, &flg);
            put_varint_field(&mut feed, FEED_MODE, RequestMode::OptionGreeks.number());
        }
        (SubscriptionMode::Full, Union::Market(m)) => {
            let mff = market_levels(m, FULL_LEVELS)?;
            let mut full = Vec::with_capacity(mff.len() + 4);
            put_len(&mut full, FULL_MARKET, &mff);
            put_len(&mut feed, FEED_FULL, &full);
            put_varint_field(&mut feed, FEED_MODE, RequestMode::FullD5.number());
        }
        (SubscriptionMode::Full, Union::Index(i)) => {
            let mut full = Vec::with_capacity(i.len() + 4);
            put_len(&mut full, FULL_INDEX, i);
            put_len(&mut feed, FEED_FULL, &full);
            put_varint_field(&mut feed, FEED_MODE, RequestMode::FullD5.number());
        }
        // Already as poor as asked (or nothing to take from): as it came.
        _ => {
            out.extend_from_slice(field);
            return Ok(());
        }
    }
    let value_len = 1 + varint_len(feed.len() as u64) + feed.len();
    put_varint(out, FEEDS);
    put_varint(out, (key_field.len() + value_len) as u64);
    out.extend_from_slice(key_field);
    put_len(out, ENTRY_VALUE, &feed);
    Ok(())
}

/// `FirstLevelWithGreeks` from a `MarketFullFeed`.
fn market_to_greeks(m: &[u8]) -> Result<Vec<u8>, FeedDecodeError> {
    let mut ltpc = None;
    let mut first = None;
    let mut greeks = None;
    let mut vtt = None;
    let mut oi = None;
    let mut iv = None;
    let mut r = Reader::new(m);
    while r.has_more() {
        let t = r.tag()?;
        let start = r.rest();
        match t {
            LTPC => ltpc = Some(r.bytes()?),
            MFF_LEVEL => first = sub_message(r.bytes()?, QUOTE)?,
            MFF_GREEKS => greeks = Some(r.bytes()?),
            MFF_VTT | MFF_OI | MFF_IV => {
                r.skip_tag(t)?;
                let raw = consumed(start, &r);
                match t {
                    MFF_VTT => vtt = Some(raw),
                    MFF_OI => oi = Some(raw),
                    _ => iv = Some(raw),
                }
            }
            t => r.skip_tag(t)?,
        }
    }
    let mut out = Vec::with_capacity(m.len() / 2);
    if let Some(l) = ltpc {
        put_len(&mut out, LTPC, l);
    }
    if let Some(q) = first {
        put_len(&mut out, FLG_DEPTH, q);
    }
    if let Some(g) = greeks {
        put_len(&mut out, FLG_GREEKS, g);
    }
    for (t, raw) in [(FLG_VTT, vtt), (FLG_OI, oi), (FLG_IV, iv)] {
        if let Some(raw) = raw {
            put_varint(&mut out, t);
            out.extend_from_slice(raw);
        }
    }
    Ok(out)
}

/// The `MarketFullFeed` with at most `levels` depth levels, every other field verbatim.
fn market_levels(m: &[u8], levels: usize) -> Result<Vec<u8>, FeedDecodeError> {
    let mut out = Vec::with_capacity(m.len());
    let mut r = Reader::new(m);
    while r.has_more() {
        let start = r.rest();
        let t = r.tag()?;
        if t == MFF_LEVEL {
            let level = r.bytes()?;
            let mut kept = Vec::with_capacity(level.len());
            let mut q = Reader::new(level);
            let mut n = 0;
            while q.has_more() {
                let qs = q.rest();
                let qt = q.tag()?;
                q.skip_tag(qt)?;
                if qt == QUOTE {
                    n += 1;
                    if n > levels {
                        continue;
                    }
                }
                kept.extend_from_slice(consumed(qs, &q));
            }
            put_len(&mut out, MFF_LEVEL, &kept);
        } else {
            r.skip_tag(t)?;
            out.extend_from_slice(consumed(start, &r));
        }
    }
    Ok(out)
}

/// The first length-delimited field `t` of a message (the first is what a quote list's
/// best level is; for singular fields protobuf merges repeats, which Upstox never sends).
fn sub_message(m: &[u8], t: u64) -> Result<Option<&[u8]>, FeedDecodeError> {
    let mut r = Reader::new(m);
    while r.has_more() {
        let ft = r.tag()?;
        if ft == t {
            return Ok(Some(r.bytes()?));
        }
        r.skip_tag(ft)?;
    }
    Ok(None)
}

/// The bytes read from `start` up to where `r` is now.
fn consumed<'a>(start: &'a [u8], r: &Reader<'a>) -> &'a [u8] {
    start
        .get(..start.len() - r.rest().len())
        .unwrap_or_default()
}

fn put_len(out: &mut Vec<u8>, t: u64, bytes: &[u8]) {
    put_varint(out, t);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint_field(out: &mut Vec<u8>, t: u64, v: i32) {
    if v != 0 {
        put_varint(out, t);
        put_varint(out, v as i64 as u64);
    }
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

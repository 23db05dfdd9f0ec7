//! `FeedResponse` bytes -> [`FeedFrame`], a typed view that borrows from the input.
//!
//! Decoding follows protobuf's parse rules as the SDK's runtime (upb) applies them: fields
//! may come in any order; a singular message that appears twice is merged; a oneof takes
//! the last case seen (merging if the case repeats); repeated fields append; a map key
//! that repeats keeps both entries here and the last one wins (see [`FeedFrame::feed`]);
//! unknown fields, and known fields with an unexpected wire type, are skipped; strings
//! must be UTF-8.

use super::FeedDecodeError;
use super::types::*;
use super::wire::{Reader, Result, count_len_field, tag};

// Field keys (`field << 3 | wire type`) matched as constants: V = varint, D = fixed64
// (double), L = length-delimited.
const V1: u64 = tag(1, 0);
const V2: u64 = tag(2, 0);
const V3: u64 = tag(3, 0);
const V4: u64 = tag(4, 0);
const V6: u64 = tag(6, 0);
const V7: u64 = tag(7, 0);
const V13: u64 = tag(13, 0);
const V14: u64 = tag(14, 0);
const V15: u64 = tag(15, 0);
const V16: u64 = tag(16, 0);
const D1: u64 = tag(1, 1);
const D2: u64 = tag(2, 1);
const D3: u64 = tag(3, 1);
const D4: u64 = tag(4, 1);
const D5: u64 = tag(5, 1);
const D6: u64 = tag(6, 1);
const D7: u64 = tag(7, 1);
const D8: u64 = tag(8, 1);
const D9: u64 = tag(9, 1);
const D10: u64 = tag(10, 1);
const D11: u64 = tag(11, 1);
const D12: u64 = tag(12, 1);
const L1: u64 = tag(1, 2);
const L2: u64 = tag(2, 2);
const L3: u64 = tag(3, 2);
const L4: u64 = tag(4, 2);
const L5: u64 = tag(5, 2);

/// Most instruments one frame may carry: twice the largest subscription Upstox allows
/// (5,000 keys in ltpc mode).
pub const MAX_FEEDS: usize = 10_000;

/// Decodes one message: first a straight pass that expects the fields in the listed (schema)
/// order, then a general loop for whatever is left (other orders, repeats, unknown fields).
/// Both apply the same arms, so the result is the same as a plain loop, only faster.
macro_rules! fields {
    ($buf:expr, $r:ident, { $($tag:ident => $body:expr),+ $(,)? }) => {{
        let mut $r = Reader::new($buf);
        $( if $r.eat($tag) { $body; } )+
        while $r.has_more() {
            match $r.tag()? {
                $( $tag => { $body; } )+
                t => $r.skip_tag(t)?,
            }
        }
    }};
}

/// Decodes one WebSocket binary frame (one serialized `FeedResponse`).
///
/// Instrument keys, OHLC intervals and status strings borrow from `buf`. A frame costs
/// one allocation (the feeds `Vec`); depth ladders beyond five levels (full_d30), more than
/// two candles, and market_info maps add one each.
///
/// A frame may carry at most [`MAX_FEEDS`] instruments (each decoded feed takes a few
/// hundred bytes, so this bounds what a hostile frame can make us allocate).
pub fn decode(buf: &[u8]) -> std::result::Result<FeedFrame<'_>, FeedDecodeError> {
    let mut frame = FeedFrame {
        kind: FeedType::InitialFeed,
        feeds: Vec::new(),
        current_ts: 0,
        market_info: None,
    };
    let n_feeds = count_len_field(buf, 2);
    if n_feeds > MAX_FEEDS {
        return Err(FeedDecodeError::TooManyFeeds(n_feeds));
    }
    frame.feeds.reserve_exact(n_feeds);
    fields!(buf, r, {
        V1 => frame.kind = FeedType::from_i32(r.int32()?),
        L2 => {
            // Decode in place: a Feed is a few hundred bytes, so avoid moving it.
            frame.feeds.push(("", Feed::default()));
            if let Some((key, feed)) = frame.feeds.last_mut() {
                feeds_entry(r.bytes()?, key, feed)?;
            }
        },
        V3 => frame.current_ts = r.int64()?,
        L4 => market_info(
            r.bytes()?,
            frame.market_info.get_or_insert_with(MarketInfo::default),
        )?,
    });
    Ok(frame)
}

fn feeds_entry<'a>(buf: &'a [u8], key: &mut &'a str, feed: &mut Feed<'a>) -> Result<()> {
    fields!(buf, r, {
        L1 => *key = r.str()?,
        L2 => merge_feed(r.bytes()?, feed)?,
    });
    Ok(())
}

fn merge_feed<'a>(buf: &'a [u8], out: &mut Feed<'a>) -> Result<()> {
    fields!(buf, r, {
        L1 => {
            let b = r.bytes()?;
            if !matches!(out.data, Some(FeedData::Ltpc(_))) {
                out.data = Some(FeedData::Ltpc(Ltpc::default()));
            }
            if let Some(FeedData::Ltpc(l)) = &mut out.data {
                merge_ltpc(b, l)?;
            }
        },
        L2 => {
            let b = r.bytes()?;
            if !matches!(out.data, Some(FeedData::Full(_))) {
                out.data = Some(FeedData::Full(None));
            }
            if let Some(FeedData::Full(ff)) = &mut out.data {
                merge_full_feed(b, ff)?;
            }
        },
        L3 => {
            let b = r.bytes()?;
            if !matches!(out.data, Some(FeedData::FirstLevelWithGreeks(_))) {
                out.data = Some(FeedData::FirstLevelWithGreeks(
                    FirstLevelWithGreeks::default(),
                ));
            }
            if let Some(FeedData::FirstLevelWithGreeks(g)) = &mut out.data {
                merge_first_level(b, g)?;
            }
        },
        V4 => out.request_mode = RequestMode::from_i32(r.int32()?),
    });
    Ok(())
}

fn merge_full_feed<'a>(buf: &'a [u8], out: &mut Option<FullFeed<'a>>) -> Result<()> {
    fields!(buf, r, {
        L1 => {
            let b = r.bytes()?;
            if !matches!(out, Some(FullFeed::Market(_))) {
                *out = Some(FullFeed::Market(MarketFullFeed::default()));
            }
            if let Some(FullFeed::Market(m)) = out {
                merge_market_ff(b, m)?;
            }
        },
        L2 => {
            let b = r.bytes()?;
            if !matches!(out, Some(FullFeed::Index(_))) {
                *out = Some(FullFeed::Index(IndexFullFeed::default()));
            }
            if let Some(FullFeed::Index(i)) = out {
                merge_index_ff(b, i)?;
            }
        },
    });
    Ok(())
}

fn merge_market_ff<'a>(buf: &'a [u8], out: &mut MarketFullFeed<'a>) -> Result<()> {
    fields!(buf, r, {
        L1 => merge_ltpc(r.bytes()?, out.ltpc.get_or_insert_with(Ltpc::default))?,
        L2 => merge_market_level(
            r.bytes()?,
            out.market_level.get_or_insert_with(MarketLevel::default),
        )?,
        L3 => merge_greeks(
            r.bytes()?,
            out.option_greeks.get_or_insert_with(OptionGreeks::default),
        )?,
        L4 => merge_market_ohlc(
            r.bytes()?,
            out.market_ohlc.get_or_insert_with(MarketOhlc::default),
        )?,
        D5 => out.atp = r.double()?,
        V6 => out.vtt = r.int64()?,
        D7 => out.oi = r.double()?,
        D8 => out.iv = r.double()?,
        D9 => out.tbq = r.double()?,
        D10 => out.tsq = r.double()?,
        D11 => out.iep = r.double()?,
        D12 => out.rp = r.double()?,
        V13 => out.ieq = r.int64()?,
        V14 => out.iiq_total = r.int64()?,
        V15 => out.iiq_m = r.int64()?,
        V16 => out.cas_eligible = r.bool()?,
    });
    Ok(())
}

fn merge_index_ff<'a>(buf: &'a [u8], out: &mut IndexFullFeed<'a>) -> Result<()> {
    fields!(buf, r, {
        L1 => merge_ltpc(r.bytes()?, out.ltpc.get_or_insert_with(Ltpc::default))?,
        L2 => merge_market_ohlc(
            r.bytes()?,
            out.market_ohlc.get_or_insert_with(MarketOhlc::default),
        )?,
    });
    Ok(())
}

fn merge_first_level(buf: &[u8], out: &mut FirstLevelWithGreeks) -> Result<()> {
    fields!(buf, r, {
        L1 => merge_ltpc(r.bytes()?, out.ltpc.get_or_insert_with(Ltpc::default))?,
        L2 => merge_quote(
            r.bytes()?,
            out.first_depth.get_or_insert_with(Quote::default),
        )?,
        L3 => merge_greeks(
            r.bytes()?,
            out.option_greeks.get_or_insert_with(OptionGreeks::default),
        )?,
        V4 => out.vtt = r.int64()?,
        D5 => out.oi = r.double()?,
        D6 => out.iv = r.double()?,
    });
    Ok(())
}

#[inline]
fn merge_ltpc(buf: &[u8], out: &mut Ltpc) -> Result<()> {
    fields!(buf, r, {
        D1 => out.ltp = r.double()?,
        V2 => out.ltt = r.int64()?,
        V3 => out.ltq = r.int64()?,
        D4 => out.cp = r.double()?,
        L5 => merge_double_value(r.bytes()?, out.iep.get_or_insert(0.0))?,
    });
    Ok(())
}

/// `google.protobuf.DoubleValue { double value = 1; }`
fn merge_double_value(buf: &[u8], out: &mut f64) -> Result<()> {
    fields!(buf, r, {
        D1 => *out = r.double()?,
    });
    Ok(())
}

fn merge_market_level(buf: &[u8], out: &mut MarketLevel) -> Result<()> {
    fields!(buf, r, {
        L1 => merge_quote(r.bytes()?, out.bid_ask_quote.push_default())?,
    });
    Ok(())
}

#[inline]
fn merge_quote(buf: &[u8], out: &mut Quote) -> Result<()> {
    fields!(buf, r, {
        V1 => out.bid_q = r.int64()?,
        D2 => out.bid_p = r.double()?,
        V3 => out.ask_q = r.int64()?,
        D4 => out.ask_p = r.double()?,
    });
    Ok(())
}

fn merge_greeks(buf: &[u8], out: &mut OptionGreeks) -> Result<()> {
    fields!(buf, r, {
        D1 => out.delta = r.double()?,
        D2 => out.theta = r.double()?,
        D3 => out.gamma = r.double()?,
        D4 => out.vega = r.double()?,
        D5 => out.rho = r.double()?,
    });
    Ok(())
}

fn merge_market_ohlc<'a>(buf: &'a [u8], out: &mut MarketOhlc<'a>) -> Result<()> {
    fields!(buf, r, {
        L1 => merge_ohlc(r.bytes()?, out.ohlc.push_default())?,
    });
    Ok(())
}

fn merge_ohlc<'a>(buf: &'a [u8], out: &mut Ohlc<'a>) -> Result<()> {
    fields!(buf, r, {
        L1 => out.interval = r.str()?,
        D2 => out.open = r.double()?,
        D3 => out.high = r.double()?,
        D4 => out.low = r.double()?,
        D5 => out.close = r.double()?,
        V6 => out.vol = r.int64()?,
        V7 => out.ts = r.int64()?,
    });
    Ok(())
}

fn market_info<'a>(buf: &'a [u8], out: &mut MarketInfo<'a>) -> Result<()> {
    fields!(buf, r, {
        L1 => out.segment_status.push(segment_status_entry(r.bytes()?)?),
        L2 => out.cas_market_status.push(status_entry(r.bytes()?)?),
        L3 => out.pre_open_session_status.push(status_entry(r.bytes()?)?),
    });
    Ok(())
}

fn segment_status_entry(buf: &[u8]) -> Result<(&str, MarketStatus)> {
    let mut key = "";
    let mut status = MarketStatus::PreOpenStart;
    fields!(buf, r, {
        L1 => key = r.str()?,
        V2 => status = MarketStatus::from_i32(r.int32()?),
    });
    Ok((key, status))
}

fn status_entry(buf: &[u8]) -> Result<(&str, StatusInfo<'_>)> {
    let mut key = "";
    let mut info = StatusInfo::default();
    fields!(buf, r, {
        L1 => key = r.str()?,
        L2 => {
            let mut s = Reader::new(r.bytes()?);
            while s.has_more() {
                match s.tag()? {
                    L1 => info.status = s.str()?,
                    V2 => info.updated_time = s.int64()?,
                    t => s.skip_tag(t)?,
                }
            }
        },
    });
    Ok((key, info))
}

/// The `type` of a `FeedResponse` without decoding the rest (the relay routes frames by
/// it). A frame without the field is an `initial_feed` (the wire default).
pub fn frame_type(buf: &[u8]) -> std::result::Result<FeedType, FeedDecodeError> {
    let mut kind = FeedType::InitialFeed;
    let mut r = Reader::new(buf);
    while r.has_more() {
        match r.tag()? {
            V1 => kind = FeedType::from_i32(r.int32()?),
            t => r.skip_tag(t)?,
        }
    }
    Ok(kind)
}

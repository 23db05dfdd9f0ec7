//! The JSON view the official SDK hands to `on_message`: `json_format.MessageToDict` with
//! default options, applied to the prost types.
//!
//! Rules (feed-v3-fields.txt, "JSON VIEW"): field names are the proto names (already
//! lowerCamelCase); int64 values are decimal strings; enums are their names (an unknown
//! enum number stays a number); scalar fields at their default value (0, `false`, `""`,
//! the first enum value) are left out; message fields appear when present, even empty
//! (`{}`); empty repeated fields and maps are left out; `google.protobuf.DoubleValue`
//! (`LTPC.iep`) is a bare number; non-finite doubles are the strings `"NaN"`,
//! `"Infinity"` and `"-Infinity"`.
//!
//! A double counts as default only when its bits are all zero (`-0.0` is kept), as the
//! upb runtime under the SDK decides presence.
//!
//! Why a second implementation of what `upkeep_upstox::feed::to_sdk_json` does: this
//! one renders prost's owned types, that one the zero-copy decoder's borrowed types. The
//! tests use this one as the oracle for the fast decoder (golden frames and generated
//! messages must give the same JSON through both paths), so the two are kept apart on
//! purpose: one shared renderer would make that differential test compare a thing with
//! itself.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::feed::{
    FeedResponse, FirstLevelWithGreeks, FullFeed, IndexFullFeed, Ltpc, MarketFullFeed, MarketInfo,
    MarketLevel, MarketOhlc, MarketStatus, Ohlc, OptionGreeks, Quote, RequestMode, StatusInfo,
    Type, feed, full_feed,
};

/// `MessageToDict(FeedResponse)`.
pub fn feed_response(msg: &FeedResponse) -> Value {
    let mut o = Map::new();
    if msg.r#type != 0 {
        let name = Type::try_from(msg.r#type).ok().map(|t| t.as_str_name());
        o.insert("type".into(), enum_value(name, msg.r#type));
    }
    if !msg.feeds.is_empty() {
        let feeds = msg
            .feeds
            .iter()
            .map(|(k, f)| (k.clone(), feed_value(f)))
            .collect::<Map<_, _>>();
        o.insert("feeds".into(), Value::Object(feeds));
    }
    put_i64(&mut o, "currentTs", msg.current_ts);
    if let Some(mi) = &msg.market_info {
        o.insert("marketInfo".into(), market_info(mi));
    }
    Value::Object(o)
}

fn feed_value(f: &crate::feed::Feed) -> Value {
    let mut o = Map::new();
    match &f.feed_union {
        Some(feed::FeedUnion::Ltpc(l)) => {
            o.insert("ltpc".into(), ltpc(l));
        }
        Some(feed::FeedUnion::FullFeed(ff)) => {
            o.insert("fullFeed".into(), full_feed_value(ff));
        }
        Some(feed::FeedUnion::FirstLevelWithGreeks(g)) => {
            o.insert("firstLevelWithGreeks".into(), first_level(g));
        }
        None => {}
    }
    if f.request_mode != 0 {
        let name = RequestMode::try_from(f.request_mode)
            .ok()
            .map(|m| m.as_str_name());
        o.insert("requestMode".into(), enum_value(name, f.request_mode));
    }
    Value::Object(o)
}

fn full_feed_value(ff: &FullFeed) -> Value {
    let mut o = Map::new();
    match &ff.full_feed_union {
        Some(full_feed::FullFeedUnion::MarketFf(m)) => {
            o.insert("marketFF".into(), market_ff(m));
        }
        Some(full_feed::FullFeedUnion::IndexFf(i)) => {
            o.insert("indexFF".into(), index_ff(i));
        }
        None => {}
    }
    Value::Object(o)
}

fn market_ff(m: &MarketFullFeed) -> Value {
    let mut o = Map::new();
    if let Some(l) = &m.ltpc {
        o.insert("ltpc".into(), ltpc(l));
    }
    if let Some(ml) = &m.market_level {
        o.insert("marketLevel".into(), market_level(ml));
    }
    if let Some(g) = &m.option_greeks {
        o.insert("optionGreeks".into(), greeks(g));
    }
    if let Some(c) = &m.market_ohlc {
        o.insert("marketOHLC".into(), market_ohlc(c));
    }
    put_f64(&mut o, "atp", m.atp);
    put_i64(&mut o, "vtt", m.vtt);
    put_f64(&mut o, "oi", m.oi);
    put_f64(&mut o, "iv", m.iv);
    put_f64(&mut o, "tbq", m.tbq);
    put_f64(&mut o, "tsq", m.tsq);
    put_f64(&mut o, "iep", m.iep);
    put_f64(&mut o, "rp", m.rp);
    put_i64(&mut o, "ieq", m.ieq);
    put_i64(&mut o, "iiqTotal", m.iiq_total);
    put_i64(&mut o, "iiqM", m.iiq_m);
    if m.cas_eligible {
        o.insert("casEligible".into(), Value::Bool(true));
    }
    Value::Object(o)
}

fn index_ff(i: &IndexFullFeed) -> Value {
    let mut o = Map::new();
    if let Some(l) = &i.ltpc {
        o.insert("ltpc".into(), ltpc(l));
    }
    if let Some(c) = &i.market_ohlc {
        o.insert("marketOHLC".into(), market_ohlc(c));
    }
    Value::Object(o)
}

fn first_level(g: &FirstLevelWithGreeks) -> Value {
    let mut o = Map::new();
    if let Some(l) = &g.ltpc {
        o.insert("ltpc".into(), ltpc(l));
    }
    if let Some(q) = &g.first_depth {
        o.insert("firstDepth".into(), quote(q));
    }
    if let Some(og) = &g.option_greeks {
        o.insert("optionGreeks".into(), greeks(og));
    }
    put_i64(&mut o, "vtt", g.vtt);
    put_f64(&mut o, "oi", g.oi);
    put_f64(&mut o, "iv", g.iv);
    Value::Object(o)
}

fn ltpc(l: &Ltpc) -> Value {
    let mut o = Map::new();
    put_f64(&mut o, "ltp", l.ltp);
    put_i64(&mut o, "ltt", l.ltt);
    put_i64(&mut o, "ltq", l.ltq);
    put_f64(&mut o, "cp", l.cp);
    if let Some(iep) = l.iep {
        o.insert("iep".into(), double(iep));
    }
    Value::Object(o)
}

fn market_level(ml: &MarketLevel) -> Value {
    let mut o = Map::new();
    if !ml.bid_ask_quote.is_empty() {
        let quotes = ml.bid_ask_quote.iter().map(quote).collect();
        o.insert("bidAskQuote".into(), Value::Array(quotes));
    }
    Value::Object(o)
}

fn quote(q: &Quote) -> Value {
    let mut o = Map::new();
    put_i64(&mut o, "bidQ", q.bid_q);
    put_f64(&mut o, "bidP", q.bid_p);
    put_i64(&mut o, "askQ", q.ask_q);
    put_f64(&mut o, "askP", q.ask_p);
    Value::Object(o)
}

fn greeks(g: &OptionGreeks) -> Value {
    let mut o = Map::new();
    put_f64(&mut o, "delta", g.delta);
    put_f64(&mut o, "theta", g.theta);
    put_f64(&mut o, "gamma", g.gamma);
    put_f64(&mut o, "vega", g.vega);
    put_f64(&mut o, "rho", g.rho);
    Value::Object(o)
}

fn market_ohlc(c: &MarketOhlc) -> Value {
    let mut o = Map::new();
    if !c.ohlc.is_empty() {
        o.insert(
            "ohlc".into(),
            Value::Array(c.ohlc.iter().map(ohlc).collect()),
        );
    }
    Value::Object(o)
}

fn ohlc(c: &Ohlc) -> Value {
    let mut o = Map::new();
    if !c.interval.is_empty() {
        o.insert("interval".into(), Value::String(c.interval.clone()));
    }
    put_f64(&mut o, "open", c.open);
    put_f64(&mut o, "high", c.high);
    put_f64(&mut o, "low", c.low);
    put_f64(&mut o, "close", c.close);
    put_i64(&mut o, "vol", c.vol);
    put_i64(&mut o, "ts", c.ts);
    Value::Object(o)
}

fn market_info(mi: &MarketInfo) -> Value {
    let mut o = Map::new();
    if !mi.segment_status.is_empty() {
        let m = mi
            .segment_status
            .iter()
            .map(|(k, v)| {
                let name = MarketStatus::try_from(*v).ok().map(|s| s.as_str_name());
                (k.clone(), enum_value(name, *v))
            })
            .collect::<Map<_, _>>();
        o.insert("segmentStatus".into(), Value::Object(m));
    }
    put_status_map(&mut o, "casMarketStatus", &mi.cas_market_status);
    put_status_map(&mut o, "preOpenSessionStatus", &mi.pre_open_session_status);
    Value::Object(o)
}

fn put_status_map(o: &mut Map<String, Value>, name: &str, m: &HashMap<String, StatusInfo>) {
    if m.is_empty() {
        return;
    }
    let m = m
        .iter()
        .map(|(k, s)| {
            let mut so = Map::new();
            if !s.status.is_empty() {
                so.insert("status".into(), Value::String(s.status.clone()));
            }
            put_i64(&mut so, "updatedTime", s.updated_time);
            (k.clone(), Value::Object(so))
        })
        .collect::<Map<_, _>>();
    o.insert(name.into(), Value::Object(m));
}

/// A double as MessageToDict writes it: a number, or `"NaN"` / `"Infinity"` / `"-Infinity"`.
fn double(v: f64) -> Value {
    if v.is_nan() {
        Value::String("NaN".into())
    } else if v.is_infinite() {
        Value::String(if v > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

/// An enum as MessageToDict writes it: the value's name, or the number when it is unknown.
fn enum_value(name: Option<&str>, number: i32) -> Value {
    match name {
        Some(n) => Value::String(n.to_owned()),
        None => Value::from(number),
    }
}

fn put_f64(o: &mut Map<String, Value>, name: &str, v: f64) {
    if v.to_bits() != 0 {
        o.insert(name.into(), double(v));
    }
}

fn put_i64(o: &mut Map<String, Value>, name: &str, v: i64) {
    if v != 0 {
        o.insert(name.into(), Value::String(v.to_string()));
    }
}

//! [`to_sdk_json`]: the dict the official SDK's `MarketDataStreamerV3` hands to
//! `on_message` (`json_format.MessageToDict` with default options).
//!
//! Rules: proto field names (already lowerCamelCase); int64 as decimal strings; enums by
//! name (an unknown number stays a number); scalars at their default (0, `false`, `""`,
//! first enum value) left out; a present message kept even when empty (`{}`); empty
//! repeated fields and maps left out; `LTPC.iep` (a `DoubleValue`) as a bare number;
//! non-finite doubles as `"NaN"` / `"Infinity"` / `"-Infinity"`. A double is a default
//! only when all its bits are zero (`-0.0` is kept), as upb decides presence.

use serde_json::{Map, Value};

use super::types::*;

/// The SDK's JSON view of a decoded frame.
pub fn to_sdk_json(frame: &FeedFrame<'_>) -> Value {
    let mut o = Map::new();
    if frame.kind != FeedType::InitialFeed {
        o.insert(
            "type".into(),
            enum_value(frame.kind.name(), frame.kind.number()),
        );
    }
    if !frame.feeds.is_empty() {
        let mut feeds = Map::new();
        for (key, feed) in &frame.feeds {
            // A repeated map key: the last entry wins, as in protobuf.
            feeds.insert((*key).to_owned(), feed_value(feed));
        }
        o.insert("feeds".into(), Value::Object(feeds));
    }
    put_i64(&mut o, "currentTs", frame.current_ts);
    if let Some(mi) = &frame.market_info {
        o.insert("marketInfo".into(), market_info(mi));
    }
    Value::Object(o)
}

fn feed_value(f: &Feed<'_>) -> Value {
    let mut o = Map::new();
    match &f.data {
        Some(FeedData::Ltpc(l)) => {
            o.insert("ltpc".into(), ltpc(l));
        }
        Some(FeedData::Full(ff)) => {
            let mut fo = Map::new();
            match ff {
                Some(FullFeed::Market(m)) => {
                    fo.insert("marketFF".into(), market_ff(m));
                }
                Some(FullFeed::Index(i)) => {
                    fo.insert("indexFF".into(), index_ff(i));
                }
                None => {}
            }
            o.insert("fullFeed".into(), Value::Object(fo));
        }
        Some(FeedData::FirstLevelWithGreeks(g)) => {
            o.insert("firstLevelWithGreeks".into(), first_level(g));
        }
        None => {}
    }
    if f.request_mode != RequestMode::Ltpc {
        o.insert(
            "requestMode".into(),
            enum_value(f.request_mode.name(), f.request_mode.number()),
        );
    }
    Value::Object(o)
}

fn market_ff(m: &MarketFullFeed<'_>) -> Value {
    let mut o = Map::new();
    if let Some(l) = &m.ltpc {
        o.insert("ltpc".into(), ltpc(l));
    }
    if let Some(ml) = &m.market_level {
        let mut lo = Map::new();
        if !ml.bid_ask_quote.is_empty() {
            lo.insert(
                "bidAskQuote".into(),
                Value::Array(ml.bid_ask_quote.iter().map(quote).collect()),
            );
        }
        o.insert("marketLevel".into(), Value::Object(lo));
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

fn index_ff(i: &IndexFullFeed<'_>) -> Value {
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

fn market_ohlc(c: &MarketOhlc<'_>) -> Value {
    let mut o = Map::new();
    if !c.ohlc.is_empty() {
        o.insert(
            "ohlc".into(),
            Value::Array(c.ohlc.iter().map(ohlc).collect()),
        );
    }
    Value::Object(o)
}

fn ohlc(c: &Ohlc<'_>) -> Value {
    let mut o = Map::new();
    if !c.interval.is_empty() {
        o.insert("interval".into(), Value::String(c.interval.to_owned()));
    }
    put_f64(&mut o, "open", c.open);
    put_f64(&mut o, "high", c.high);
    put_f64(&mut o, "low", c.low);
    put_f64(&mut o, "close", c.close);
    put_i64(&mut o, "vol", c.vol);
    put_i64(&mut o, "ts", c.ts);
    Value::Object(o)
}

fn market_info(mi: &MarketInfo<'_>) -> Value {
    let mut o = Map::new();
    if !mi.segment_status.is_empty() {
        let mut m = Map::new();
        for (k, s) in &mi.segment_status {
            m.insert((*k).to_owned(), enum_value(s.name(), s.number()));
        }
        o.insert("segmentStatus".into(), Value::Object(m));
    }
    put_status_map(&mut o, "casMarketStatus", &mi.cas_market_status);
    put_status_map(&mut o, "preOpenSessionStatus", &mi.pre_open_session_status);
    Value::Object(o)
}

fn put_status_map(o: &mut Map<String, Value>, name: &str, entries: &[(&str, StatusInfo<'_>)]) {
    if entries.is_empty() {
        return;
    }
    let mut m = Map::new();
    for (k, s) in entries {
        let mut so = Map::new();
        if !s.status.is_empty() {
            so.insert("status".into(), Value::String(s.status.to_owned()));
        }
        put_i64(&mut so, "updatedTime", s.updated_time);
        m.insert((*k).to_owned(), Value::Object(so));
    }
    o.insert(name.into(), Value::Object(m));
}

fn double(v: f64) -> Value {
    if v.is_nan() {
        Value::String("NaN".into())
    } else if v.is_infinite() {
        Value::String(if v > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

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

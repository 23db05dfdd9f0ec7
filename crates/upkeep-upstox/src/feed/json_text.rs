//! [`SdkJsonWriter`]: the SDK's JSON view of a frame written straight into a reused
//! buffer, byte for byte what `serde_json::to_string(&to_sdk_json(frame))` gives, without
//! building a `serde_json::Value` (no allocation per field; `/ws/ticks` renders every
//! frame once per distinct subscription).
//!
//! Same rules as [`super::to_sdk_json`], and the same text as serde_json writes for that
//! value: object keys in byte order (serde_json's map is sorted), a map key that repeats
//! keeps its last entry, doubles in the shortest round-trip digits serde_json uses (via
//! `zmij`, its formatter), int64 as decimal strings, strings escaped as serde_json does.
//! The field lists below are therefore written in sorted order, not schema order.

/// `"name":` with the comma before it when needed; `name` is a literal field name (no
/// escaping needed), written in one copy.
macro_rules! key {
    ($out:expr, $o:expr, $name:literal) => {{
        $out.push_str(if $o.first {
            concat!("\"", $name, "\":")
        } else {
            concat!(",\"", $name, "\":")
        });
        $o.first = false;
    }};
}

/// A double field, left out at its default (all bits zero: `-0.0` is kept).
macro_rules! put_f64 {
    ($out:expr, $o:expr, $name:literal, $v:expr) => {{
        let v: f64 = $v;
        if v.to_bits() != 0 {
            key!($out, $o, $name);
            double($out, v);
        }
    }};
}

/// An int64 field, left out at 0.
macro_rules! put_i64 {
    ($out:expr, $o:expr, $name:literal, $v:expr) => {{
        let v: i64 = $v;
        if v != 0 {
            key!($out, $o, $name);
            int64($out, v);
        }
    }};
}

use super::types::*;

/// Renders frames into one buffer it keeps between calls.
#[derive(Debug, Default)]
pub struct SdkJsonWriter {
    out: String,
    order: Vec<u32>,
}

impl SdkJsonWriter {
    /// A writer with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The whole frame as JSON text (valid until the next call).
    pub fn render(&mut self, frame: &FeedFrame<'_>) -> &str {
        self.render_filtered(frame, |_| true).0
    }

    /// The frame with only the instruments `keep` accepts, and how many it kept. Everything
    /// else (type, time, market info) is kept as is; with no instrument left, `feeds` is
    /// left out as for an empty map.
    pub fn render_filtered(
        &mut self,
        frame: &FeedFrame<'_>,
        mut keep: impl FnMut(&str) -> bool,
    ) -> (&str, usize) {
        self.out.clear();
        self.order.clear();
        // Sorted by key, the last of a repeated key kept (protobuf map semantics, and the
        // serde_json map the old path builds).
        for (i, (key, _)) in frame.feeds.iter().enumerate() {
            if keep(key) {
                self.order.push(i as u32);
            }
        }
        let feeds = &frame.feeds;
        let key_of = |i: u32| feeds.get(i as usize).map_or("", |(k, _)| *k);
        // Stable sort keeps wire order among equal keys; then keep the last of each run.
        self.order.sort_by(|a, b| key_of(*a).cmp(key_of(*b)));
        dedup_keep_last(&mut self.order, |a, b| key_of(a) == key_of(b));
        let kept = self.order.len();

        let out = &mut self.out;
        let mut o = Obj::open(out);
        if frame.current_ts != 0 {
            key!(out, o, "currentTs");
            int64(out, frame.current_ts);
        }
        if !self.order.is_empty() {
            key!(out, o, "feeds");
            let mut m = Obj::open(out);
            for &i in &self.order {
                if let Some((key, feed)) = feeds.get(i as usize) {
                    m.key(out, key);
                    feed_value(out, feed);
                }
            }
            m.close(out);
        }
        if let Some(mi) = &frame.market_info {
            key!(out, o, "marketInfo");
            market_info(out, mi, &mut self.order);
        }
        if frame.kind != FeedType::InitialFeed {
            key!(out, o, "type");
            enum_value(out, frame.kind.name(), frame.kind.number());
        }
        o.close(out);
        (&self.out, kept)
    }
}

/// Removes all but the last of each run of equal neighbours.
fn dedup_keep_last(v: &mut Vec<u32>, same: impl Fn(u32, u32) -> bool) {
    let mut w = 0;
    for r in 0..v.len() {
        let cur = v[r];
        let next_same = v.get(r + 1).is_some_and(|&n| same(cur, n));
        if !next_same {
            v[w] = cur;
            w += 1;
        }
    }
    v.truncate(w);
}

/// An object being written: tracks whether a comma is due.
struct Obj {
    first: bool,
}

impl Obj {
    #[inline]
    fn open(out: &mut String) -> Self {
        out.push('{');
        Self { first: true }
    }

    /// `"name":` (with the comma before it when needed); `name` is escaped.
    #[inline]
    fn key(&mut self, out: &mut String, name: &str) {
        if !self.first {
            out.push(',');
        }
        self.first = false;
        string(out, name);
        out.push(':');
    }

    #[inline]
    fn close(self, out: &mut String) {
        out.push('}');
    }
}

fn feed_value(out: &mut String, f: &Feed<'_>) {
    let mut o = Obj::open(out);
    match &f.data {
        Some(FeedData::FirstLevelWithGreeks(g)) => {
            key!(out, o, "firstLevelWithGreeks");
            first_level(out, g);
        }
        Some(FeedData::Full(ff)) => {
            key!(out, o, "fullFeed");
            let mut fo = Obj::open(out);
            match ff {
                Some(FullFeed::Index(i)) => {
                    key!(out, fo, "indexFF");
                    index_ff(out, i);
                }
                Some(FullFeed::Market(m)) => {
                    key!(out, fo, "marketFF");
                    market_ff(out, m);
                }
                None => {}
            }
            fo.close(out);
        }
        Some(FeedData::Ltpc(l)) => {
            key!(out, o, "ltpc");
            ltpc(out, l);
        }
        None => {}
    }
    if f.request_mode != RequestMode::Ltpc {
        key!(out, o, "requestMode");
        enum_value(out, f.request_mode.name(), f.request_mode.number());
    }
    o.close(out);
}

fn market_ff(out: &mut String, m: &MarketFullFeed<'_>) {
    let mut o = Obj::open(out);
    put_f64!(out, o, "atp", m.atp);
    if m.cas_eligible {
        key!(out, o, "casEligible");
        out.push_str("true");
    }
    put_f64!(out, o, "iep", m.iep);
    put_i64!(out, o, "ieq", m.ieq);
    put_i64!(out, o, "iiqM", m.iiq_m);
    put_i64!(out, o, "iiqTotal", m.iiq_total);
    put_f64!(out, o, "iv", m.iv);
    if let Some(l) = &m.ltpc {
        key!(out, o, "ltpc");
        ltpc(out, l);
    }
    if let Some(ml) = &m.market_level {
        key!(out, o, "marketLevel");
        let mut lo = Obj::open(out);
        if !ml.bid_ask_quote.is_empty() {
            key!(out, lo, "bidAskQuote");
            out.push('[');
            for (i, q) in ml.bid_ask_quote.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                quote(out, q);
            }
            out.push(']');
        }
        lo.close(out);
    }
    if let Some(c) = &m.market_ohlc {
        key!(out, o, "marketOHLC");
        market_ohlc(out, c);
    }
    put_f64!(out, o, "oi", m.oi);
    if let Some(g) = &m.option_greeks {
        key!(out, o, "optionGreeks");
        greeks(out, g);
    }
    put_f64!(out, o, "rp", m.rp);
    put_f64!(out, o, "tbq", m.tbq);
    put_f64!(out, o, "tsq", m.tsq);
    put_i64!(out, o, "vtt", m.vtt);
    o.close(out);
}

fn index_ff(out: &mut String, i: &IndexFullFeed<'_>) {
    let mut o = Obj::open(out);
    if let Some(l) = &i.ltpc {
        key!(out, o, "ltpc");
        ltpc(out, l);
    }
    if let Some(c) = &i.market_ohlc {
        key!(out, o, "marketOHLC");
        market_ohlc(out, c);
    }
    o.close(out);
}

fn first_level(out: &mut String, g: &FirstLevelWithGreeks) {
    let mut o = Obj::open(out);
    if let Some(q) = &g.first_depth {
        key!(out, o, "firstDepth");
        quote(out, q);
    }
    put_f64!(out, o, "iv", g.iv);
    if let Some(l) = &g.ltpc {
        key!(out, o, "ltpc");
        ltpc(out, l);
    }
    put_f64!(out, o, "oi", g.oi);
    if let Some(og) = &g.option_greeks {
        key!(out, o, "optionGreeks");
        greeks(out, og);
    }
    put_i64!(out, o, "vtt", g.vtt);
    o.close(out);
}

fn ltpc(out: &mut String, l: &Ltpc) {
    let mut o = Obj::open(out);
    put_f64!(out, o, "cp", l.cp);
    if let Some(iep) = l.iep {
        key!(out, o, "iep");
        double(out, iep);
    }
    put_f64!(out, o, "ltp", l.ltp);
    put_i64!(out, o, "ltq", l.ltq);
    put_i64!(out, o, "ltt", l.ltt);
    o.close(out);
}

fn quote(out: &mut String, q: &Quote) {
    let mut o = Obj::open(out);
    put_f64!(out, o, "askP", q.ask_p);
    put_i64!(out, o, "askQ", q.ask_q);
    put_f64!(out, o, "bidP", q.bid_p);
    put_i64!(out, o, "bidQ", q.bid_q);
    o.close(out);
}

fn greeks(out: &mut String, g: &OptionGreeks) {
    let mut o = Obj::open(out);
    put_f64!(out, o, "delta", g.delta);
    put_f64!(out, o, "gamma", g.gamma);
    put_f64!(out, o, "rho", g.rho);
    put_f64!(out, o, "theta", g.theta);
    put_f64!(out, o, "vega", g.vega);
    o.close(out);
}

fn market_ohlc(out: &mut String, c: &MarketOhlc<'_>) {
    let mut o = Obj::open(out);
    if !c.ohlc.is_empty() {
        key!(out, o, "ohlc");
        out.push('[');
        for (i, candle) in c.ohlc.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            ohlc(out, candle);
        }
        out.push(']');
    }
    o.close(out);
}

fn ohlc(out: &mut String, c: &Ohlc<'_>) {
    let mut o = Obj::open(out);
    put_f64!(out, o, "close", c.close);
    put_f64!(out, o, "high", c.high);
    if !c.interval.is_empty() {
        key!(out, o, "interval");
        string(out, c.interval);
    }
    put_f64!(out, o, "low", c.low);
    put_f64!(out, o, "open", c.open);
    put_i64!(out, o, "ts", c.ts);
    put_i64!(out, o, "vol", c.vol);
    o.close(out);
}

fn market_info(out: &mut String, mi: &MarketInfo<'_>, scratch: &mut Vec<u32>) {
    let mut o = Obj::open(out);
    status_map(
        out,
        &mut o,
        "casMarketStatus",
        &mi.cas_market_status,
        scratch,
    );
    status_map(
        out,
        &mut o,
        "preOpenSessionStatus",
        &mi.pre_open_session_status,
        scratch,
    );
    if !mi.segment_status.is_empty() {
        key!(out, o, "segmentStatus");
        sorted_keys(scratch, &mi.segment_status);
        let mut m = Obj::open(out);
        for &i in scratch.iter() {
            if let Some((k, s)) = mi.segment_status.get(i as usize) {
                m.key(out, k);
                enum_value(out, s.name(), s.number());
            }
        }
        m.close(out);
    }
    o.close(out);
}

fn status_map(
    out: &mut String,
    o: &mut Obj,
    name: &str,
    entries: &[(&str, StatusInfo<'_>)],
    scratch: &mut Vec<u32>,
) {
    if entries.is_empty() {
        return;
    }
    o.key(out, name);
    sorted_keys(scratch, entries);
    let mut m = Obj::open(out);
    for &i in scratch.iter() {
        if let Some((k, s)) = entries.get(i as usize) {
            m.key(out, k);
            let mut so = Obj::open(out);
            if !s.status.is_empty() {
                key!(out, so, "status");
                string(out, s.status);
            }
            put_i64!(out, so, "updatedTime", s.updated_time);
            so.close(out);
        }
    }
    m.close(out);
}

/// Indices of `entries` sorted by key, the last of a repeated key kept.
fn sorted_keys<T>(scratch: &mut Vec<u32>, entries: &[(&str, T)]) {
    scratch.clear();
    scratch.extend(0..entries.len() as u32);
    let key_of = |i: u32| entries.get(i as usize).map_or("", |(k, _)| *k);
    scratch.sort_by(|a, b| key_of(*a).cmp(key_of(*b)));
    dedup_keep_last(scratch, |a, b| key_of(a) == key_of(b));
}

/// An int64 as protobuf's JSON writes it: a decimal string.
#[inline]
fn int64(out: &mut String, v: i64) {
    let mut b = itoa::Buffer::new();
    out.push('"');
    out.push_str(b.format(v));
    out.push('"');
}

/// A double: serde_json's digits for a finite value, the MessageToDict strings otherwise.
#[inline]
fn double(out: &mut String, v: f64) {
    if v.is_finite() {
        if !cents(out, v) {
            let mut b = zmij::Buffer::new();
            out.push_str(b.format_finite(v));
        }
    } else if v.is_nan() {
        out.push_str("\"NaN\"");
    } else if v > 0.0 {
        out.push_str("\"Infinity\"");
    } else {
        out.push_str("\"-Infinity\"");
    }
}

/// The fast path for prices and quantities: a value that is exactly the double nearest
/// to some `c / 100` (at most two decimals) with `0.01 <= |v| < 1e11`. Its shortest
/// round-trip digits are those of `c / 100` (two such decimals are 0.01 apart, far more
/// than the spacing of doubles below 1e11, so no shorter decimal rounds to `v`), written
/// as serde_json does in that range: no exponent, at least one decimal (`219.0`).
/// `false` (nothing written) for any other value.
#[inline]
fn cents(out: &mut String, v: f64) -> bool {
    let a = v.abs();
    if !(0.01..1e11).contains(&a) {
        return false;
    }
    let c = (a * 100.0).round();
    if c / 100.0 != a {
        return false;
    }
    let c = c as u64;
    if v < 0.0 {
        out.push('-');
    }
    let mut b = itoa::Buffer::new();
    out.push_str(b.format(c / 100));
    let frac = (c % 100) as u8;
    out.push('.');
    out.push(char::from(b'0' + frac / 10));
    if !frac.is_multiple_of(10) {
        out.push(char::from(b'0' + frac % 10));
    }
    true
}

fn enum_value(out: &mut String, name: Option<&str>, number: i32) {
    match name {
        Some(n) => string(out, n),
        None => {
            let mut b = itoa::Buffer::new();
            out.push_str(b.format(number));
        }
    }
}

/// A JSON string with serde_json's escapes: `\"`, `\\`, `\b \t \n \f \r`, other control
/// characters as `\u00XX` (lowercase hex); everything else as is.
#[inline]
fn string(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0c => "\\f",
            b'\r' => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(s.get(start..i).unwrap_or_default());
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or_default());
    out.push('"');
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    fn via_zmij(v: f64) -> String {
        zmij::Buffer::new().format_finite(v).to_owned()
    }

    fn fast(v: f64) -> Option<String> {
        let mut s = String::new();
        super::cents(&mut s, v).then_some(s)
    }

    #[test]
    fn cents_fast_path_matches_serde_jsons_digits_at_the_edges() {
        for v in [
            0.01,
            0.1,
            0.05,
            1.0,
            219.0,
            219.3,
            219.55,
            494.05,
            5000.0,
            26031.85,
            99999999999.99,
            1e10,
            -0.01,
            -4250.5,
            0.07,
            1.1,
            2.675,
        ] {
            if let Some(s) = fast(v) {
                assert_eq!(s, via_zmij(v), "{v}");
            }
        }
        assert_eq!(fast(0.001), None);
        assert_eq!(fast(0.18), Some("0.18".into()));
        assert_eq!(fast(1e11), None);
        assert_eq!(fast(0.1234), None);
    }

    proptest! {
        #[test]
        fn cents_fast_path_matches_serde_jsons_digits(c in -10_000_000_000_000i64..10_000_000_000_000i64, scale in 0u32..4) {
            let v = c as f64 / 10f64.powi(scale as i32);
            if let Some(s) = fast(v) {
                prop_assert_eq!(s, via_zmij(v));
            }
        }

        #[test]
        fn cents_fast_path_matches_on_any_double(bits in any::<u64>()) {
            let v = f64::from_bits(bits);
            if v.is_finite() && let Some(s) = fast(v) {
                prop_assert_eq!(s, via_zmij(v));
            }
        }
    }
}

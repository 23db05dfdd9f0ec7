//! The simulated market: a deterministic price walk per instrument key, and the
//! `FeedResponse` shapes per mode, built with the generated protobuf types.
//!
//! Every number is a pure function of (instrument key, simulator time), so two
//! connections watching the same key see the same prices, and tests are repeatable.

use std::collections::HashMap;
use std::f64::consts::TAU;

use upkeep_proto::feed as pb;

/// A subscription mode, as requests spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Mode {
    Ltpc,
    Full,
    OptionGreeks,
    FullD30,
}

impl Mode {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "ltpc" => Some(Self::Ltpc),
            "full" => Some(Self::Full),
            "option_greeks" => Some(Self::OptionGreeks),
            "full_d30" => Some(Self::FullD30),
            _ => None,
        }
    }

    /// `Feed.requestMode` for keys in this mode (`full` is reported as `full_d5`).
    fn request_mode(self) -> pb::RequestMode {
        match self {
            Self::Ltpc => pb::RequestMode::Ltpc,
            Self::Full => pb::RequestMode::FullD5,
            Self::OptionGreeks => pb::RequestMode::OptionGreeks,
            Self::FullD30 => pb::RequestMode::FullD30,
        }
    }

    fn depth(self) -> usize {
        if self == Self::FullD30 { 30 } else { 5 }
    }
}

/// Segments of the docs' market_info sample.
pub(crate) const SEGMENTS: [&str; 11] = [
    "NSE_COM",
    "NCD_FO",
    "NSE_FO",
    "BSE_EQ",
    "BCD_FO",
    "BSE_FO",
    "NSE_EQ",
    "MCX_FO",
    "MCX_INDEX",
    "NSE_INDEX",
    "BSE_INDEX",
];

/// `SEGMENT|IDENTIFIER` with a known segment and a non-empty identifier.
pub(crate) fn valid_key(key: &str) -> bool {
    match key.split_once('|') {
        Some((seg, id)) => SEGMENTS.contains(&seg) && !id.trim().is_empty(),
        None => false,
    }
}

/// True if `now` falls on a Saturday or Sunday (IST).
pub(crate) fn weekend(now: jiff::Timestamp) -> bool {
    matches!(
        crate::ist::to_ist(now).date().weekday(),
        jiff::civil::Weekday::Saturday | jiff::civil::Weekday::Sunday
    )
}

/// A segment's status at `seconds` into the IST day of a trading day. Exchange session
/// times: equity pre-open 09:00-09:08 (order entry), 09:08-09:15 (matching), normal
/// market 09:15-15:30, closing session 15:40-16:00; F&O and indices 09:15-15:30;
/// currency 09:00-17:00; commodity 09:00-23:30. Outside its hours a segment is
/// `NORMAL_CLOSE` (`CLOSING_END` after the equity closing session).
pub(crate) fn segment_status(segment: &str, seconds: i64) -> pb::MarketStatus {
    use pb::MarketStatus as S;
    const fn hm(h: i64, m: i64) -> i64 {
        h * 3600 + m * 60
    }
    let open = |from: i64, to: i64| {
        if (from..to).contains(&seconds) {
            S::NormalOpen
        } else {
            S::NormalClose
        }
    };
    match segment {
        "NSE_EQ" | "BSE_EQ" => match seconds {
            s if s < hm(9, 0) => S::NormalClose,
            s if s < hm(9, 8) => S::PreOpenStart,
            s if s < hm(9, 15) => S::PreOpenEnd,
            s if s < hm(15, 30) => S::NormalOpen,
            s if s < hm(15, 40) => S::NormalClose,
            s if s < hm(16, 0) => S::ClosingStart,
            _ => S::ClosingEnd,
        },
        "NCD_FO" | "BCD_FO" => open(hm(9, 0), hm(17, 0)),
        "MCX_FO" | "MCX_INDEX" | "NSE_COM" => open(hm(9, 0), hm(23, 30)),
        // NSE_FO, BSE_FO, NSE_INDEX, BSE_INDEX
        _ => open(hm(9, 15), hm(15, 30)),
    }
}

/// The first message of every connection: each segment's status at `now`, as
/// `status_of` says.
pub(crate) fn market_info(
    now: jiff::Timestamp,
    status_of: impl Fn(&str) -> pb::MarketStatus,
) -> pb::FeedResponse {
    let segment_status = SEGMENTS
        .iter()
        .map(|s| ((*s).to_owned(), status_of(s) as i32))
        .collect();
    pb::FeedResponse {
        r#type: pb::Type::MarketInfo as i32,
        feeds: HashMap::new(),
        current_ts: now.as_millisecond(),
        market_info: Some(pb::MarketInfo {
            segment_status,
            cas_market_status: HashMap::new(),
            pre_open_session_status: HashMap::new(),
        }),
    }
}

/// A frame with `keys` in their modes at `now_ms`.
pub(crate) fn feed_frame<'k>(
    kind: pb::Type,
    keys: impl IntoIterator<Item = (&'k str, Mode)>,
    now_ms: i64,
) -> pb::FeedResponse {
    let feeds = keys
        .into_iter()
        .map(|(key, mode)| (key.to_owned(), Instrument::new(key).feed(mode, now_ms)))
        .collect();
    pb::FeedResponse {
        r#type: kind as i32,
        feeds,
        current_ts: now_ms,
        market_info: None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Index,
    Derivative,
    Equity,
}

/// One instrument's deterministic model.
struct Instrument {
    seed: u64,
    kind: Kind,
    /// Previous close; the walk moves around it.
    base: f64,
}

/// FNV-1a: stable across runs and platforms (std's hasher is randomly keyed).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64 of (seed, n): a uniform-looking u64.
fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A number in [-1, 1) from (seed, n).
fn unit(seed: u64, n: u64) -> f64 {
    (mix(seed, n) >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

fn round_tick(p: f64) -> f64 {
    ((p / 0.05).round() * 0.05 * 100.0).round() / 100.0
}

const DAY_MS: i64 = 86_400_000;
const IST_OFFSET_MS: i64 = 19_800_000;

/// Start of the IST calendar day containing `t_ms`, in epoch ms.
fn ist_day_start(t_ms: i64) -> i64 {
    (t_ms + IST_OFFSET_MS).div_euclid(DAY_MS) * DAY_MS - IST_OFFSET_MS
}

impl Instrument {
    fn new(key: &str) -> Self {
        let seed = fnv1a(key.as_bytes());
        let segment = key.split_once('|').map_or(key, |(s, _)| s);
        let kind = if segment.ends_with("_INDEX") {
            Kind::Index
        } else if segment.ends_with("_FO") {
            Kind::Derivative
        } else {
            Kind::Equity
        };
        // Instruments the REST quote table knows walk around the same previous close,
        // so a bot reading the LTP endpoint and the feed sees one market; others get a
        // deterministic price from their key.
        let u = (unit(seed, 0) + 1.0) / 2.0; // [0, 1)
        let base = crate::instruments::find(key).map_or_else(
            || match kind {
                Kind::Index => 10_000.0 + u * 50_000.0,
                Kind::Derivative => 20.0 + u * 480.0,
                Kind::Equity => 50.0 + u * 2_950.0,
            },
            |i| i.close,
        );
        Self {
            seed,
            kind,
            base: round_tick(base),
        }
    }

    /// The walk: two slow waves with per-key phase plus a per-second jitter, within ±2%.
    fn price(&self, t_ms: i64) -> f64 {
        let t = t_ms as f64 / 1000.0;
        let p1 = unit(self.seed, 1) * TAU;
        let p2 = unit(self.seed, 2) * TAU;
        let jitter = unit(self.seed, 1_000 + t_ms.div_euclid(1000) as u64);
        let r = 0.012 * (TAU * t / 3_600.0 + p1).sin()
            + 0.005 * (TAU * t / 300.0 + p2).sin()
            + 0.002 * jitter;
        round_tick(self.base * (1.0 + r)).max(0.05)
    }

    fn ltpc(&self, now_ms: i64) -> pb::Ltpc {
        let bucket = now_ms.div_euclid(1000) as u64;
        let ltq = match self.kind {
            Kind::Index => 0,
            Kind::Derivative => 75 * (1 + (mix(self.seed, bucket) % 10) as i64),
            Kind::Equity => 1 + (mix(self.seed, bucket) % 500) as i64,
        };
        pb::Ltpc {
            ltp: self.price(now_ms),
            ltt: now_ms - (mix(self.seed, bucket ^ 7) % 50) as i64,
            ltq,
            cp: self.base,
            iep: None,
        }
    }

    fn volume(&self, now_ms: i64) -> i64 {
        if self.kind == Kind::Index {
            return 0;
        }
        let secs_today = (now_ms - ist_day_start(now_ms)) / 1000;
        (1 + (self.seed % 40) as i64) * secs_today
    }

    fn greeks(&self, now_ms: i64) -> Option<pb::OptionGreeks> {
        if self.kind != Kind::Derivative {
            return None;
        }
        let m = (self.price(now_ms) / self.base - 1.0) * 10.0;
        Some(pb::OptionGreeks {
            delta: round4(0.5 + 0.4 * m.tanh()),
            theta: round4(-1.0 - 3.0 * (unit(self.seed, 3) + 1.0)),
            gamma: round4(0.0005 + 0.001 * (unit(self.seed, 4) + 1.0)),
            vega: round4(2.0 + 3.0 * (unit(self.seed, 5) + 1.0)),
            rho: round4(0.1 + 0.2 * (unit(self.seed, 6) + 1.0)),
        })
    }

    fn oi_iv(&self) -> (f64, f64) {
        if self.kind != Kind::Derivative {
            return (0.0, 0.0);
        }
        (
            (10_000 + self.seed % 1_000_000) as f64,
            round4(0.1 + 0.15 * (unit(self.seed, 7) + 1.0)),
        )
    }

    fn depth(&self, levels: usize, now_ms: i64) -> Vec<pb::Quote> {
        let ltp = self.price(now_ms);
        let bucket = now_ms.div_euclid(1000) as u64;
        (0..levels)
            .map(|i| {
                let step = 0.05 * (i as f64 + 1.0);
                let q = |n: u64| 1 + (mix(self.seed, bucket * 64 + n) % 2_000) as i64;
                pb::Quote {
                    bid_q: q(2 * i as u64),
                    bid_p: round_tick((ltp - step).max(0.05)),
                    ask_q: q(2 * i as u64 + 1),
                    ask_p: round_tick(ltp + step),
                }
            })
            .collect()
    }

    fn ohlc(&self, now_ms: i64) -> pb::MarketOhlc {
        let ltp = self.price(now_ms);
        let day = ist_day_start(now_ms);
        let minute = now_ms.div_euclid(60_000) * 60_000;
        let vol = self.volume(now_ms);
        let bar = |interval: &str, start: i64, vol: i64| {
            let open = self.price(start);
            pb::Ohlc {
                interval: interval.to_owned(),
                open,
                high: open.max(ltp),
                low: open.min(ltp),
                close: ltp,
                vol,
                ts: start,
            }
        };
        let minute_vol = if vol == 0 {
            0
        } else {
            vol - self.volume(minute)
        };
        pb::MarketOhlc {
            ohlc: vec![bar("1d", day, vol), bar("I1", minute, minute_vol)],
        }
    }

    fn feed(&self, mode: Mode, now_ms: i64) -> pb::Feed {
        use pb::feed::FeedUnion;
        use pb::full_feed::FullFeedUnion;
        let ltpc = self.ltpc(now_ms);
        let union = match mode {
            Mode::Ltpc => FeedUnion::Ltpc(ltpc),
            Mode::Full | Mode::FullD30 if self.kind == Kind::Index => {
                FeedUnion::FullFeed(pb::FullFeed {
                    full_feed_union: Some(FullFeedUnion::IndexFf(pb::IndexFullFeed {
                        ltpc: Some(ltpc),
                        market_ohlc: Some(self.ohlc(now_ms)),
                    })),
                })
            }
            Mode::Full | Mode::FullD30 => {
                let depth = self.depth(mode.depth(), now_ms);
                let tbq = depth.iter().map(|q| q.bid_q).sum::<i64>() as f64 * 10.0;
                let tsq = depth.iter().map(|q| q.ask_q).sum::<i64>() as f64 * 10.0;
                let (oi, iv) = self.oi_iv();
                FeedUnion::FullFeed(pb::FullFeed {
                    full_feed_union: Some(FullFeedUnion::MarketFf(pb::MarketFullFeed {
                        ltpc: Some(ltpc),
                        market_level: Some(pb::MarketLevel {
                            bid_ask_quote: depth,
                        }),
                        option_greeks: self.greeks(now_ms),
                        market_ohlc: Some(self.ohlc(now_ms)),
                        atp: round_tick((self.base + ltpc.ltp) / 2.0),
                        vtt: self.volume(now_ms),
                        oi,
                        iv,
                        tbq,
                        tsq,
                        ..Default::default()
                    })),
                })
            }
            Mode::OptionGreeks => {
                let (oi, iv) = self.oi_iv();
                let first = (self.kind != Kind::Index)
                    .then(|| self.depth(1, now_ms).into_iter().next())
                    .flatten();
                FeedUnion::FirstLevelWithGreeks(pb::FirstLevelWithGreeks {
                    ltpc: Some(ltpc),
                    first_depth: first,
                    option_greeks: self.greeks(now_ms),
                    vtt: self.volume(now_ms),
                    oi,
                    iv,
                })
            }
        };
        pb::Feed {
            request_mode: mode.request_mode() as i32,
            feed_union: Some(union),
        }
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_walk_is_deterministic_per_key_and_time() {
        let a = Instrument::new("NSE_FO|45450");
        let b = Instrument::new("NSE_FO|45450");
        let c = Instrument::new("NSE_FO|45451");
        let t = 1_764_732_600_000;
        assert_eq!(a.price(t), b.price(t));
        assert_ne!((a.base, a.price(t)), (c.base, c.price(t)));
        let moves = (0..60).map(|s| a.price(t + s * 1000)).collect::<Vec<_>>();
        assert!(moves.windows(2).any(|w| w[0] != w[1]), "price never moved");
        for p in moves {
            assert!(
                (p / a.base - 1.0).abs() < 0.021,
                "{p} strays from {}",
                a.base
            );
        }
    }

    #[test]
    fn index_keys_get_index_full_feed_without_ltq() {
        let f = Instrument::new("NSE_INDEX|Nifty 50").feed(Mode::Full, 1_764_732_600_000);
        assert_eq!(f.request_mode(), pb::RequestMode::FullD5);
        let Some(pb::feed::FeedUnion::FullFeed(ff)) = f.feed_union else {
            panic!("not fullFeed")
        };
        let Some(pb::full_feed::FullFeedUnion::IndexFf(i)) = ff.full_feed_union else {
            panic!("not indexFF")
        };
        assert_eq!(i.ltpc.unwrap().ltq, 0);
        assert_eq!(i.market_ohlc.unwrap().ohlc.len(), 2);
    }

    #[test]
    fn full_d30_has_thirty_levels_and_full_has_five() {
        for (mode, levels, rm) in [
            (Mode::Full, 5, pb::RequestMode::FullD5),
            (Mode::FullD30, 30, pb::RequestMode::FullD30),
        ] {
            let f = Instrument::new("NSE_FO|45450").feed(mode, 1_764_732_600_000);
            assert_eq!(f.request_mode(), rm);
            let Some(pb::feed::FeedUnion::FullFeed(ff)) = f.feed_union else {
                panic!("not fullFeed")
            };
            let Some(pb::full_feed::FullFeedUnion::MarketFf(m)) = ff.full_feed_union else {
                panic!("not marketFF")
            };
            let depth = m.market_level.unwrap().bid_ask_quote;
            assert_eq!(depth.len(), levels);
            assert!(depth.iter().all(|q| q.bid_p < q.ask_p));
            assert!(m.option_greeks.is_some());
        }
    }

    #[test]
    fn segment_status_follows_the_session_times() {
        use pb::MarketStatus as S;
        let at = |h: i64, m: i64, s: i64| h * 3600 + m * 60 + s;
        let cases = [
            ("NSE_EQ", at(8, 59, 59), S::NormalClose),
            ("NSE_EQ", at(9, 0, 0), S::PreOpenStart),
            ("NSE_EQ", at(9, 7, 59), S::PreOpenStart),
            ("NSE_EQ", at(9, 8, 0), S::PreOpenEnd),
            ("NSE_EQ", at(9, 14, 59), S::PreOpenEnd),
            ("NSE_EQ", at(9, 15, 0), S::NormalOpen),
            ("NSE_EQ", at(15, 29, 59), S::NormalOpen),
            ("NSE_EQ", at(15, 30, 0), S::NormalClose),
            ("NSE_EQ", at(15, 40, 0), S::ClosingStart),
            ("NSE_EQ", at(16, 0, 0), S::ClosingEnd),
            ("NSE_FO", at(9, 14, 59), S::NormalClose),
            ("NSE_FO", at(9, 15, 0), S::NormalOpen),
            ("NSE_INDEX", at(15, 30, 0), S::NormalClose),
            ("NCD_FO", at(16, 59, 59), S::NormalOpen),
            ("NCD_FO", at(17, 0, 0), S::NormalClose),
            ("MCX_FO", at(23, 29, 59), S::NormalOpen),
            ("MCX_FO", at(23, 30, 0), S::NormalClose),
        ];
        for (segment, seconds, want) in cases {
            assert_eq!(
                segment_status(segment, seconds),
                want,
                "{segment} {seconds}"
            );
        }
    }

    #[test]
    fn weekends_are_told_apart_and_market_info_lists_every_segment() {
        // Thursday 2026-02-05 10:00 IST; Saturday 2026-02-07.
        let thursday = crate::ist::from_ist(jiff::civil::date(2026, 2, 5).at(10, 0, 0, 0));
        let saturday = crate::ist::from_ist(jiff::civil::date(2026, 2, 7).at(10, 0, 0, 0));
        assert!(!weekend(thursday));
        assert!(weekend(saturday));
        let info = market_info(thursday, |_| pb::MarketStatus::NormalClose)
            .market_info
            .unwrap();
        assert_eq!(info.segment_status.len(), SEGMENTS.len());
        assert!(
            info.segment_status
                .values()
                .all(|s| *s == pb::MarketStatus::NormalClose as i32)
        );
        let seconds = crate::ist::seconds_of_ist_day(thursday);
        let open = market_info(thursday, |s| segment_status(s, seconds))
            .market_info
            .unwrap();
        assert_eq!(
            open.segment_status["NSE_EQ"],
            pb::MarketStatus::NormalOpen as i32
        );
    }

    #[test]
    fn ist_day_starts_at_ist_midnight() {
        // 2025-12-03T03:30:00Z is 09:00 IST; the IST day began 2025-12-02T18:30:00Z.
        assert_eq!(ist_day_start(1_764_732_600_000), 1_764_700_200_000);
    }

    #[test]
    fn keys_need_a_known_segment_and_an_identifier() {
        assert!(valid_key("NSE_INDEX|Nifty 50"));
        assert!(valid_key("NSE_FO|45450"));
        assert!(!valid_key("NSE_FO|"));
        assert!(!valid_key("XYZ|1"));
        assert!(!valid_key("NSE_EQ"));
    }
}

//! Typed, borrowing view of one Market Data Feed V3 `FeedResponse`.
//!
//! Field names follow the protobuf schema (`proto/MarketDataFeedV3.proto`) in snake_case.
//! Scalars hold protobuf's default (0, `false`, `""`) when the server left them out.

/// `FeedResponse.type`: which kind of message this frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeedType {
    /// 0: a snapshot (the wire default, so its JSON has no `type`).
    #[default]
    InitialFeed,
    /// 1: a live tick.
    LiveFeed,
    /// 2: the first message of every connection.
    MarketInfo,
    /// A number this schema does not know.
    Unknown(i32),
}

impl FeedType {
    pub(crate) fn from_i32(v: i32) -> Self {
        match v {
            0 => Self::InitialFeed,
            1 => Self::LiveFeed,
            2 => Self::MarketInfo,
            n => Self::Unknown(n),
        }
    }

    /// The wire number.
    pub fn number(self) -> i32 {
        match self {
            Self::InitialFeed => 0,
            Self::LiveFeed => 1,
            Self::MarketInfo => 2,
            Self::Unknown(n) => n,
        }
    }

    /// The schema's name (`"live_feed"`), or `None` for an unknown number.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Self::InitialFeed => Some("initial_feed"),
            Self::LiveFeed => Some("live_feed"),
            Self::MarketInfo => Some("market_info"),
            Self::Unknown(_) => None,
        }
    }
}

/// `Feed.requestMode`: the mode the server is streaming a key in. Note the response
/// spelling: request mode `full` comes back as `FullD5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestMode {
    /// 0 (wire default).
    #[default]
    Ltpc,
    /// 1: request mode `full`.
    FullD5,
    /// 2.
    OptionGreeks,
    /// 3: Upstox Plus only.
    FullD30,
    /// A number this schema does not know.
    Unknown(i32),
}

impl RequestMode {
    pub(crate) fn from_i32(v: i32) -> Self {
        match v {
            0 => Self::Ltpc,
            1 => Self::FullD5,
            2 => Self::OptionGreeks,
            3 => Self::FullD30,
            n => Self::Unknown(n),
        }
    }

    /// The wire number.
    pub fn number(self) -> i32 {
        match self {
            Self::Ltpc => 0,
            Self::FullD5 => 1,
            Self::OptionGreeks => 2,
            Self::FullD30 => 3,
            Self::Unknown(n) => n,
        }
    }

    /// The schema's name (`"full_d5"`), or `None` for an unknown number.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Self::Ltpc => Some("ltpc"),
            Self::FullD5 => Some("full_d5"),
            Self::OptionGreeks => Some("option_greeks"),
            Self::FullD30 => Some("full_d30"),
            Self::Unknown(_) => None,
        }
    }
}

/// `MarketInfo.segmentStatus` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MarketStatus {
    /// 0.
    #[default]
    PreOpenStart,
    /// 1.
    PreOpenEnd,
    /// 2.
    NormalOpen,
    /// 3.
    NormalClose,
    /// 4.
    ClosingStart,
    /// 5.
    ClosingEnd,
    /// A number this schema does not know.
    Unknown(i32),
}

impl MarketStatus {
    pub(crate) fn from_i32(v: i32) -> Self {
        match v {
            0 => Self::PreOpenStart,
            1 => Self::PreOpenEnd,
            2 => Self::NormalOpen,
            3 => Self::NormalClose,
            4 => Self::ClosingStart,
            5 => Self::ClosingEnd,
            n => Self::Unknown(n),
        }
    }

    /// The wire number.
    pub fn number(self) -> i32 {
        match self {
            Self::PreOpenStart => 0,
            Self::PreOpenEnd => 1,
            Self::NormalOpen => 2,
            Self::NormalClose => 3,
            Self::ClosingStart => 4,
            Self::ClosingEnd => 5,
            Self::Unknown(n) => n,
        }
    }

    /// The schema's name (`"NORMAL_OPEN"`), or `None` for an unknown number.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Self::PreOpenStart => Some("PRE_OPEN_START"),
            Self::PreOpenEnd => Some("PRE_OPEN_END"),
            Self::NormalOpen => Some("NORMAL_OPEN"),
            Self::NormalClose => Some("NORMAL_CLOSE"),
            Self::ClosingStart => Some("CLOSING_START"),
            Self::ClosingEnd => Some("CLOSING_END"),
            Self::Unknown(_) => None,
        }
    }
}

/// One decoded `FeedResponse`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FeedFrame<'a> {
    /// `type`.
    pub kind: FeedType,
    /// `feeds`, in wire order, keyed by instrument key (`"NSE_FO|45450"`). Protobuf map
    /// semantics: if a key repeats, the last entry wins ([`FeedFrame::feed`] does that).
    pub feeds: Vec<(&'a str, Feed<'a>)>,
    /// `currentTs`: server time, epoch milliseconds.
    pub current_ts: i64,
    /// `marketInfo`, present on the `market_info` message.
    pub market_info: Option<MarketInfo<'a>>,
}

impl<'a> FeedFrame<'a> {
    /// The feed for `instrument_key` (the last one, if the key repeats).
    pub fn feed(&self, instrument_key: &str) -> Option<&Feed<'a>> {
        self.feeds
            .iter()
            .rev()
            .find(|(k, _)| *k == instrument_key)
            .map(|(_, f)| f)
    }
}

/// `Feed`: one instrument's data, in the shape of its mode.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Feed<'a> {
    /// The `FeedUnion` oneof; `None` when the server sent none of its cases.
    pub data: Option<FeedData<'a>>,
    /// `requestMode`.
    pub request_mode: RequestMode,
}

impl Feed<'_> {
    /// The last-trade block, whatever the mode.
    pub fn ltpc(&self) -> Option<&Ltpc> {
        match &self.data {
            Some(FeedData::Ltpc(l)) => Some(l),
            Some(FeedData::Full(Some(FullFeed::Market(m)))) => m.ltpc.as_ref(),
            Some(FeedData::Full(Some(FullFeed::Index(i)))) => i.ltpc.as_ref(),
            Some(FeedData::FirstLevelWithGreeks(g)) => g.ltpc.as_ref(),
            Some(FeedData::Full(None)) | None => None,
        }
    }
}

/// `Feed.FeedUnion`.
// Inline on purpose: boxing the large case would cost an allocation per instrument per frame.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum FeedData<'a> {
    /// `ltpc` (mode ltpc).
    Ltpc(Ltpc),
    /// `fullFeed` (modes full / full_d30); `None` when it carried neither case.
    Full(Option<FullFeed<'a>>),
    /// `firstLevelWithGreeks` (mode option_greeks).
    FirstLevelWithGreeks(FirstLevelWithGreeks),
}

/// `FullFeed.FullFeedUnion`.
#[allow(clippy::large_enum_variant)] // see FeedData
#[derive(Debug, Clone, PartialEq)]
pub enum FullFeed<'a> {
    /// `marketFF`: tradable instruments.
    Market(MarketFullFeed<'a>),
    /// `indexFF`: NSE_INDEX / BSE_INDEX / MCX_INDEX keys.
    Index(IndexFullFeed<'a>),
}

/// `LTPC`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Ltpc {
    /// Last traded price.
    pub ltp: f64,
    /// Last traded time, epoch ms.
    pub ltt: i64,
    /// Last traded quantity.
    pub ltq: i64,
    /// Previous day's close.
    pub cp: f64,
    /// Indicative equilibrium price (a `DoubleValue`): present only during a pre-open or
    /// closing auction session.
    pub iep: Option<f64>,
}

/// `MarketFullFeed`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MarketFullFeed<'a> {
    pub ltpc: Option<Ltpc>,
    /// Depth: 5 levels in mode full, 30 in full_d30.
    pub market_level: Option<MarketLevel>,
    pub option_greeks: Option<OptionGreeks>,
    pub market_ohlc: Option<MarketOhlc<'a>>,
    /// Average traded price.
    pub atp: f64,
    /// Volume traded today.
    pub vtt: i64,
    /// Open interest.
    pub oi: f64,
    /// Implied volatility.
    pub iv: f64,
    /// Total buy quantity.
    pub tbq: f64,
    /// Total sell quantity.
    pub tsq: f64,
    /// Indicative equilibrium price (CAS / pre-open).
    pub iep: f64,
    /// Reference price for the session's price bands.
    pub rp: f64,
    /// Indicative equilibrium quantity.
    pub ieq: i64,
    /// Total indicative imbalance quantity (may be negative).
    pub iiq_total: i64,
    /// Market-order part of the imbalance quantity.
    pub iiq_m: i64,
    /// May take part in the call auction session.
    pub cas_eligible: bool,
}

/// `IndexFullFeed`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IndexFullFeed<'a> {
    pub ltpc: Option<Ltpc>,
    pub market_ohlc: Option<MarketOhlc<'a>>,
}

/// `FirstLevelWithGreeks` (mode option_greeks).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FirstLevelWithGreeks {
    pub ltpc: Option<Ltpc>,
    /// Best bid / ask.
    pub first_depth: Option<Quote>,
    pub option_greeks: Option<OptionGreeks>,
    pub vtt: i64,
    pub oi: f64,
    pub iv: f64,
}

/// `MarketLevel`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MarketLevel {
    /// Index 0 is the best level. Five levels (mode full) live inline; thirty (full_d30)
    /// spill to the heap.
    pub bid_ask_quote: InlineVec<Quote, 5>,
}

/// `Quote`: one depth level.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Quote {
    pub bid_q: i64,
    pub bid_p: f64,
    pub ask_q: i64,
    pub ask_p: f64,
}

/// `OptionGreeks`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct OptionGreeks {
    pub delta: f64,
    pub theta: f64,
    pub gamma: f64,
    pub vega: f64,
    pub rho: f64,
}

/// `MarketOHLC`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MarketOhlc<'a> {
    /// Candles; the usual two (`"1d"` and `"I1"`) live inline.
    pub ohlc: InlineVec<Ohlc<'a>, 2>,
}

/// `OHLC`: one candle.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Ohlc<'a> {
    /// `"1d"`, `"I1"` (one minute), ...
    pub interval: &'a str,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    /// Volume.
    pub vol: i64,
    /// Candle start, epoch ms.
    pub ts: i64,
}

/// `MarketInfo`: segment and session status, first message of every connection.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MarketInfo<'a> {
    /// `segmentStatus`, keyed by segment (`"NSE_EQ"`), wire order.
    pub segment_status: Vec<(&'a str, MarketStatus)>,
    /// `casMarketStatus` (closing auction session), keyed by segment.
    pub cas_market_status: Vec<(&'a str, StatusInfo<'a>)>,
    /// `preOpenSessionStatus`, keyed by segment.
    pub pre_open_session_status: Vec<(&'a str, StatusInfo<'a>)>,
}

/// `StatusInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StatusInfo<'a> {
    /// Phase name, e.g. `"CAS_CLOSED"`.
    pub status: &'a str,
    /// Epoch ms.
    pub updated_time: i64,
}

/// A list that keeps its first `N` items inline and moves to the heap beyond that, so the
/// usual depth ladder and candle pair cost no allocation. Reads as a slice (`Deref`).
#[derive(Clone)]
pub struct InlineVec<T: Copy + Default, const N: usize> {
    inline: [T; N],
    len: usize,
    heap: Vec<T>,
}

impl<T: Copy + Default, const N: usize> InlineVec<T, N> {
    /// An empty list.
    pub fn new() -> Self {
        Self {
            inline: [T::default(); N],
            len: 0,
            heap: Vec::new(),
        }
    }

    /// Appends an item.
    #[inline]
    pub fn push(&mut self, item: T) {
        *self.push_default() = item;
    }

    /// Appends a default item and returns it, so a decoder can fill it in place.
    #[inline]
    pub(crate) fn push_default(&mut self) -> &mut T {
        if self.heap.is_empty() {
            if self.len < N {
                let i = self.len;
                self.len += 1;
                let slot = &mut self.inline[i];
                *slot = T::default();
                return slot;
            }
            self.heap.reserve(N.max(1) * 2 + 1);
            self.heap.extend_from_slice(&self.inline);
        }
        self.heap.push(T::default());
        let last = self.heap.len() - 1;
        &mut self.heap[last]
    }

    /// The items as a slice.
    #[inline]
    pub fn as_slice(&self) -> &[T] {
        if self.heap.is_empty() {
            self.inline.get(..self.len).unwrap_or_default()
        } else {
            &self.heap
        }
    }
}

impl<T: Copy + Default, const N: usize> Default for InlineVec<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Default, const N: usize> std::ops::Deref for InlineVec<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Copy + Default + PartialEq, const N: usize> PartialEq for InlineVec<T, N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: Copy + Default + std::fmt::Debug, const N: usize> std::fmt::Debug for InlineVec<T, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl<T: Copy + Default, const N: usize> FromIterator<T> for InlineVec<T, N> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut v = Self::new();
        for item in iter {
            v.push(item);
        }
        v
    }
}

impl<'v, T: Copy + Default, const N: usize> IntoIterator for &'v InlineVec<T, N> {
    type Item = &'v T;
    type IntoIter = std::slice::Iter<'v, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

//! A small built-in instrument table and instrument-key validation.

use jiff::Timestamp;

/// One instrument the simulator quotes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Instrument {
    /// `SEGMENT|IDENTIFIER`, e.g. `NSE_EQ|INE848E01016`.
    pub key: &'static str,
    /// Trading symbol; the LTP map key is `SEGMENT:SYMBOL`.
    pub symbol: &'static str,
    /// Previous close.
    pub close: f64,
    /// Last traded quantity.
    pub ltq: u64,
    /// Base traded volume for the day.
    pub volume: u64,
}

impl Instrument {
    /// The segment part of the key.
    pub fn segment(&self) -> &'static str {
        self.key.split('|').next().unwrap_or(self.key)
    }

    /// The LTP response map key (`NSE_EQ:NHPC`).
    pub fn quote_key(&self) -> String {
        format!("{}:{}", self.segment(), self.symbol)
    }

    /// A deterministic last price that wanders within ±2% of the close with simulated time.
    pub fn last_price_at(&self, at: Timestamp) -> f64 {
        let minute = at.as_second().div_euclid(60);
        let seed = self.key.bytes().fold(minute as u64, |h, b| {
            h.wrapping_mul(31).wrapping_add(u64::from(b))
        });
        // Map to [-1, 1) and scale to ±2%.
        let unit = (seed % 2001) as f64 / 1000.0 - 1.0;
        let price = self.close * (1.0 + 0.02 * unit);
        (price * 20.0).round() / 20.0
    }
}

/// Built-in instruments (prices are plausible, not real).
pub const INSTRUMENTS: &[Instrument] = &[
    Instrument {
        key: "NSE_EQ|INE848E01016",
        symbol: "NHPC",
        close: 52.05,
        ltq: 10,
        volume: 12_345_678,
    },
    Instrument {
        key: "NSE_EQ|INE669E01016",
        symbol: "IDEA",
        close: 7.85,
        ltq: 500,
        volume: 456_789_012,
    },
    Instrument {
        key: "NSE_EQ|INE002A01018",
        symbol: "RELIANCE",
        close: 1290.4,
        ltq: 3,
        volume: 8_765_432,
    },
    Instrument {
        key: "BSE_EQ|INE002A01018",
        symbol: "RELIANCE",
        close: 1290.6,
        ltq: 1,
        volume: 345_678,
    },
    Instrument {
        key: "NSE_INDEX|Nifty 50",
        symbol: "Nifty 50",
        close: 24_500.35,
        ltq: 0,
        volume: 0,
    },
    Instrument {
        key: "NSE_INDEX|Nifty Bank",
        symbol: "Nifty Bank",
        close: 52_110.8,
        ltq: 0,
        volume: 0,
    },
    Instrument {
        key: "NSE_INDEX|India VIX",
        symbol: "India VIX",
        close: 13.52,
        ltq: 0,
        volume: 0,
    },
    Instrument {
        key: "NSE_FO|45450",
        symbol: "NIFTY2530622500CE",
        close: 494.05,
        ltq: 75,
        volume: 170_325,
    },
    Instrument {
        key: "NSE_FO|51834",
        symbol: "NIFTY2543021600PE",
        close: 303.9,
        ltq: 75,
        volume: 170_325,
    },
];

/// Segments accepted in instrument keys (docs field pattern).
pub const SEGMENTS: &[&str] = &[
    "NSE_EQ",
    "NSE_FO",
    "NCD_FO",
    "BSE_EQ",
    "BSE_FO",
    "BCD_FO",
    "MCX_FO",
    "NSE_COM",
    "NSE_INDEX",
    "BSE_INDEX",
    "MCX_INDEX",
];

/// Looks up a built-in instrument by key.
pub fn find(key: &str) -> Option<&'static Instrument> {
    INSTRUMENTS.iter().find(|i| i.key == key)
}

/// True if `key` matches `SEGMENT|[\w ]+` from the docs' field pattern.
pub fn is_well_formed(key: &str) -> bool {
    let Some((segment, id)) = key.split_once('|') else {
        return false;
    };
    SEGMENTS.contains(&segment)
        && !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == ' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_format_follows_field_pattern() {
        assert!(is_well_formed("NSE_INDEX|Nifty 50"));
        assert!(is_well_formed("NSE_FO|45450"));
        assert!(!is_well_formed("NSE_EQ"));
        assert!(!is_well_formed("FOO|X"));
        assert!(!is_well_formed("NSE_EQ|"));
        assert!(!is_well_formed("NSE_EQ|A-B"));
    }

    #[test]
    fn prices_stay_near_close() {
        let at: Timestamp = "2026-02-05T05:00:00Z".parse().unwrap();
        for i in INSTRUMENTS {
            let p = i.last_price_at(at);
            assert!(
                (p - i.close).abs() <= i.close * 0.02 + 0.025,
                "{} {p}",
                i.key
            );
        }
    }
}

//! India Standard Time rules, implemented independently of upkeep-core.
//!
//! IST is a fixed UTC+05:30 with no daylight saving, so plain second
//! arithmetic is exact.

use jiff::{Timestamp, civil, tz::Offset};

/// UTC offset of IST in seconds.
pub const IST_OFFSET_SECS: i64 = 5 * 3600 + 30 * 60;
const DAY_SECS: i64 = 86_400;
/// 03:30 as seconds after IST midnight.
const ROLLOVER_SECS_OF_DAY: i64 = 3 * 3600 + 30 * 60;
/// 05:30 as seconds after IST midnight: the end of the nightly maintenance window.
const WINDOW_END_SECS_OF_DAY: i64 = 5 * 3600 + 30 * 60;

/// The IST offset as a jiff `Offset`.
pub fn offset() -> Offset {
    // 19800 s is well inside jiff's offset range; the fallback is unreachable.
    Offset::from_seconds(19_800).unwrap_or(Offset::UTC)
}

/// Seconds since IST midnight for `ts`.
pub fn seconds_of_ist_day(ts: Timestamp) -> i64 {
    (ts.as_second() + IST_OFFSET_SECS).rem_euclid(DAY_SECS)
}

/// The first 03:30:00 IST strictly after `ts` (the daily token expiry rule).
pub fn next_rollover_after(ts: Timestamp) -> Timestamp {
    let secs = ts.as_second();
    let local = secs + IST_OFFSET_SECS;
    let local_midnight = local - local.rem_euclid(DAY_SECS);
    let mut candidate = local_midnight + ROLLOVER_SECS_OF_DAY - IST_OFFSET_SECS;
    if candidate <= secs {
        candidate += DAY_SECS;
    }
    // `ts` may carry sub-second precision: "strictly after" still holds because
    // candidate > floor(ts) means candidate >= floor(ts)+1 > ts.
    Timestamp::from_second(candidate).unwrap_or(Timestamp::MAX)
}

/// True between 00:00:00 and 05:29:59 IST, when funds answer 423 and orders UDAPI100074.
pub fn in_maintenance_window(ts: Timestamp) -> bool {
    seconds_of_ist_day(ts) < WINDOW_END_SECS_OF_DAY
}

/// Converts an IST wall-clock time to a timestamp.
pub fn from_ist(at: civil::DateTime) -> Timestamp {
    offset().to_timestamp(at).unwrap_or(Timestamp::MAX)
}

/// The IST wall-clock time of `ts`.
pub fn to_ist(ts: Timestamp) -> civil::DateTime {
    offset().to_datetime(ts)
}

/// RFC 3339 text of `ts` in IST, e.g. `2026-02-06T03:30:00+05:30`.
pub fn ist_rfc3339(ts: Timestamp) -> String {
    ts.display_with_offset(offset()).to_string()
}

/// Epoch milliseconds as a decimal string (the token-request API's format).
pub fn epoch_ms_string(ts: Timestamp) -> String {
    ts.as_millisecond().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn token_from_reference_expires_at_next_rollover() {
        // Reference token A: iat 2026-02-05T00:19:27Z -> exp 2026-02-05T22:00:00Z.
        let iat = Timestamp::from_second(1_770_250_767).unwrap();
        assert_eq!(next_rollover_after(iat).as_second(), 1_770_328_800);
    }

    #[test]
    fn token_issued_at_0230_dies_same_morning() {
        let iat = from_ist(civil::date(2026, 3, 4).at(2, 30, 0, 0));
        assert_eq!(next_rollover_after(iat), ts("2026-03-03T22:00:00Z"));
    }

    #[test]
    fn token_issued_exactly_at_rollover_lives_a_full_day() {
        let iat = ts("2026-03-03T22:00:00Z");
        assert_eq!(next_rollover_after(iat), ts("2026-03-04T22:00:00Z"));
        let just_before = ts("2026-03-03T21:59:59.999Z");
        assert_eq!(next_rollover_after(just_before), ts("2026-03-03T22:00:00Z"));
    }

    #[test]
    fn maintenance_window_is_midnight_to_0530_ist() {
        assert!(!in_maintenance_window(from_ist(
            civil::date(2026, 1, 1).at(23, 59, 59, 0)
        )));
        assert!(in_maintenance_window(from_ist(
            civil::date(2026, 1, 2).at(0, 0, 0, 0)
        )));
        assert!(in_maintenance_window(from_ist(
            civil::date(2026, 1, 2).at(5, 29, 59, 0)
        )));
        assert!(!in_maintenance_window(from_ist(
            civil::date(2026, 1, 2).at(5, 30, 0, 0)
        )));
    }

    #[test]
    fn reference_token_request_expiry_is_0330_ist() {
        // Reference sample: 1732226400000 = 2024-11-22 03:30 IST.
        let at = from_ist(civil::date(2024, 11, 21).at(18, 0, 0, 0));
        assert_eq!(epoch_ms_string(next_rollover_after(at)), "1732226400000");
    }
}

//! When Upstox tokens die, and what kind of token a set of claims describes.
//!
//! The facts (reference section 2):
//! - A **daily** access token "lasts until 3:30 AM the following day, regardless of the
//!   time it was generated": `exp` is the first 03:30 IST (= 22:00 UTC) strictly after
//!   issue. One made at 02:30 IST dies an hour later, at 03:30 the same day.
//! - A **sandbox** token lasts 30 days; the supplied token B expires at the first 03:30
//!   IST after `iat + 30 days`.
//! - An **extended** token (and the read-only analytics token) lasts about one year.
//!   Both are classified as [`TokenKind::Extended`]; their exact `exp` rule is unknown,
//!   so any lifetime of 364..=367 days counts as matching.
//!
//! IST is a fixed +05:30 offset with no daylight saving, so all of this is plain
//! arithmetic on UTC seconds.

use crate::jwt::{Claims, TokenError, decode_claims};
use crate::secret::AccessToken;
use crate::state::{Thresholds, TokenState};
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;

/// IST is UTC+05:30.
pub const IST_OFFSET_SECONDS: i32 = 5 * 3600 + 30 * 60;
/// 03:30 IST expressed as seconds after 00:00 UTC (22:00 UTC, the previous UTC day).
const ROLLOVER_UTC_SECOND_OF_DAY: i64 = 22 * 3600;
const DAY: i64 = 86_400;
/// The daily rollover, 03:30 IST.
pub const ROLLOVER_IST: Time = Time::constant(3, 30, 0, 0);
/// Lifetime of a sandbox token before rounding up to the next 03:30 IST.
pub const SANDBOX_LIFETIME: SignedDuration = SignedDuration::from_hours(30 * 24);

/// The +05:30 offset.
pub fn ist_offset() -> Offset {
    // 19800 s is well inside the ±25:59:59 range `from_seconds` accepts, so the
    // fallback is unreachable; it exists only because `unwrap` is banned.
    Offset::from_seconds(IST_OFFSET_SECONDS).unwrap_or(Offset::UTC)
}

/// India Standard Time as a fixed +05:30 zone (no tz database needed).
pub fn ist() -> TimeZone {
    TimeZone::fixed(ist_offset())
}

/// The civil IST date and time of `t`.
pub fn ist_datetime(t: Timestamp) -> DateTime {
    ist_offset().to_datetime(t)
}

/// The IST calendar date of `t`.
pub fn ist_date(t: Timestamp) -> Date {
    ist_datetime(t).date()
}

/// The instant at which it is `time` IST on `date`. `None` only outside the years
/// jiff can represent (-9999..=9999).
pub fn ist_timestamp(date: Date, time: Time) -> Option<Timestamp> {
    ist_offset().to_timestamp(date.to_datetime(time)).ok()
}

/// The first 03:30 IST (22:00 UTC) **strictly after** `t`.
///
/// A token is valid at 03:29:59 and dead at 03:30:00, so at exactly 03:30:00 the next
/// rollover is the following day's. Saturates at `Timestamp::MAX` in year 9999.
pub fn next_rollover_after(t: Timestamp) -> Timestamp {
    // Floor to whole seconds (jiff keeps negative sub-second parts for pre-1970 times).
    let s = t.as_second() - i64::from(t.subsec_nanosecond() < 0);
    let mut candidate = s.div_euclid(DAY) * DAY + ROLLOVER_UTC_SECOND_OF_DAY;
    if candidate <= s {
        // candidate <= floor(t) <= t: not strictly after; the next day's is.
        candidate += DAY;
    }
    Timestamp::from_second(candidate).unwrap_or(Timestamp::MAX)
}

/// `t` in IST as RFC 3339, e.g. `2026-02-06T03:30:00+05:30` (sub-seconds dropped).
pub fn format_ist(t: Timestamp) -> String {
    ist_datetime(t)
        .strftime("%Y-%m-%dT%H:%M:%S+05:30")
        .to_string()
}

/// A short human duration: `2d 3h`, `3h 12m`, `45m`, `30s`, `-1h 5m`.
pub fn format_duration(d: SignedDuration) -> String {
    let sign = if d.is_negative() { "-" } else { "" };
    let total = d.as_secs().unsigned_abs();
    let (days, hours, minutes, seconds) = (
        total / 86_400,
        total % 86_400 / 3600,
        total % 3600 / 60,
        total % 60,
    );
    let body = if days > 0 {
        if hours > 0 {
            format!("{days}d {hours}h")
        } else {
            format!("{days}d")
        }
    } else if hours > 0 {
        if minutes > 0 {
            format!("{hours}h {minutes}m")
        } else {
            format!("{hours}h")
        }
    } else if minutes > 0 {
        format!("{minutes}m")
    } else {
        format!("{seconds}s")
    };
    format!("{sign}{body}")
}

/// What kind of token a set of claims describes, judged from `iat` and `exp` (Upstox
/// puts no kind in the claims).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Dies at the first 03:30 IST after issue; renewable every day.
    Daily,
    /// Extended or analytics token: about one year; read-only for most APIs.
    Extended,
    /// Sandbox token: the first 03:30 IST after `iat` + 30 days; sandbox orders only.
    Sandbox,
    /// No `iat`, or a lifetime that matches no known kind.
    Unknown,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Extended => "extended",
            Self::Sandbox => "sandbox",
            Self::Unknown => "unknown",
        }
    }

    /// The inverse of [`TokenKind::as_str`]; any other name is `Unknown`.
    pub fn from_name(name: &str) -> Self {
        match name {
            "daily" => Self::Daily,
            "extended" => Self::Extended,
            "sandbox" => Self::Sandbox,
            _ => Self::Unknown,
        }
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything upkeep knows about a token without asking Upstox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub claims: Claims,
    pub issued_at: Option<Timestamp>,
    /// Always the `exp` claim: Upstox's word wins over our rules.
    pub expires_at: Timestamp,
    pub kind: TokenKind,
    /// Set when `exp` disagrees with every known rule, e.g.
    /// `exp is 05:00 IST, the daily rule says 03:30 IST`.
    pub mismatch: Option<String>,
}

impl TokenInfo {
    /// Time left until expiry (negative once expired).
    pub fn remaining(&self, now: Timestamp) -> SignedDuration {
        self.expires_at.duration_since(now)
    }

    /// Healthy / warning / critical / expired at `now`.
    pub fn state(&self, now: Timestamp, thresholds: &Thresholds) -> TokenState {
        TokenState::at(self.expires_at, now, thresholds)
    }
}

/// Decode `token` (without verifying it) and classify it.
pub fn inspect(token: &AccessToken) -> Result<TokenInfo, TokenError> {
    decode_claims(token.expose()).map(inspect_claims)
}

/// Classify already-decoded claims. Infallible: out-of-range times saturate.
pub fn inspect_claims(claims: Claims) -> TokenInfo {
    let expires_at = saturating_ts(claims.exp);
    let issued_at = claims.iat.map(saturating_ts);
    let (kind, mismatch) = match issued_at {
        Some(iat) => classify(iat, expires_at),
        None => (TokenKind::Unknown, None),
    };
    TokenInfo {
        claims,
        issued_at,
        expires_at,
        kind,
        mismatch,
    }
}

fn saturating_ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap_or(if secs < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

const fn days(n: i64) -> SignedDuration {
    SignedDuration::from_secs(n * DAY)
}

fn classify(iat: Timestamp, exp: Timestamp) -> (TokenKind, Option<String>) {
    let lifetime = exp.duration_since(iat);
    if lifetime <= SignedDuration::ZERO {
        return (
            TokenKind::Unknown,
            Some(format!(
                "exp ({}) is not after iat ({})",
                format_ist(exp),
                format_ist(iat)
            )),
        );
    }
    let daily_exp = next_rollover_after(iat);
    if exp == daily_exp {
        return (TokenKind::Daily, None);
    }
    let sandbox_exp = iat
        .checked_add(SANDBOX_LIFETIME)
        .ok()
        .map(next_rollover_after);
    if Some(exp) == sandbox_exp {
        return (TokenKind::Sandbox, None);
    }
    if (days(364)..=days(367)).contains(&lifetime) {
        return (TokenKind::Extended, None);
    }

    // No rule matches: pick the nearest kind and say how exp disagrees with its rule.
    if lifetime <= days(2) {
        (
            TokenKind::Daily,
            Some(rule_mismatch(exp, daily_exp, "the daily rule")),
        )
    } else if (days(20)..=days(45)).contains(&lifetime) {
        let rule = sandbox_exp.unwrap_or(Timestamp::MAX);
        (
            TokenKind::Sandbox,
            Some(rule_mismatch(exp, rule, "the 30-day sandbox rule")),
        )
    } else if (days(300)..=days(430)).contains(&lifetime) {
        (
            TokenKind::Extended,
            Some(format!(
                "exp is {} after iat, an extended token lasts about 365 days",
                format_duration(lifetime)
            )),
        )
    } else {
        (
            TokenKind::Unknown,
            Some(format!(
                "exp is {} after iat, which matches no known token (daily: until the next \
                 03:30 IST, sandbox: 30 days, extended: 1 year)",
                format_duration(lifetime)
            )),
        )
    }
}

fn rule_mismatch(exp: Timestamp, rule_exp: Timestamp, rule: &str) -> String {
    let exp_time = ist_datetime(exp).time();
    if exp_time != ROLLOVER_IST {
        format!("exp is {} IST, {rule} says 03:30 IST", format_hm(exp_time))
    } else {
        format!(
            "exp is {}, {rule} says {}",
            format_ist(exp),
            format_ist(rule_exp)
        )
    }
}

/// `05:00`, or `05:00:07` when seconds are not zero.
pub(crate) fn format_hm(t: Time) -> String {
    if t.second() == 0 && t.subsec_nanosecond() == 0 {
        format!("{:02}:{:02}", t.hour(), t.minute())
    } else {
        format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TOKEN_A_PAYLOAD, TOKEN_B_PAYLOAD, make_jwt};
    use jiff::civil::date;
    use proptest::prelude::*;

    fn ist_at(y: i16, mo: i8, d: i8, h: i8, mi: i8, s: i8) -> Timestamp {
        ist_timestamp(date(y, mo, d), Time::constant(h, mi, s, 0)).unwrap()
    }

    fn claims(iat: Option<Timestamp>, exp: Timestamp) -> Claims {
        Claims {
            sub: "AB1234".into(),
            jti: None,
            iat: iat.map(|t| t.as_second()),
            exp: exp.as_second(),
            is_plus_plan: false,
            is_multi_client: false,
            iss: None,
        }
    }

    #[test]
    fn ist_is_five_thirty_ahead_of_utc() {
        assert_eq!(ist_offset().seconds(), 19_800);
        let t: Timestamp = "2026-02-05T22:00:00Z".parse().unwrap();
        assert_eq!(ist_datetime(t), date(2026, 2, 6).at(3, 30, 0, 0));
        assert_eq!(t.to_zoned(ist()).offset().seconds(), 19_800);
    }

    #[test]
    fn format_ist_is_rfc3339_with_ist_offset() {
        let t: Timestamp = "2026-02-05T22:00:00.25Z".parse().unwrap();
        assert_eq!(format_ist(t), "2026-02-06T03:30:00+05:30");
        let back: Timestamp = format_ist(t).parse().unwrap();
        assert_eq!(back, "2026-02-05T22:00:00Z".parse::<Timestamp>().unwrap());
    }

    #[test]
    fn next_rollover_table() {
        // (now in IST) -> (next rollover in IST)
        let cases = [
            // a token is valid at 03:29:59 and dead at 03:30:00
            (ist_at(2026, 2, 6, 3, 29, 59), ist_at(2026, 2, 6, 3, 30, 0)),
            (ist_at(2026, 2, 6, 3, 30, 0), ist_at(2026, 2, 7, 3, 30, 0)),
            (ist_at(2026, 2, 6, 3, 30, 1), ist_at(2026, 2, 7, 3, 30, 0)),
            // 8 PM Tuesday -> 3:30 Wednesday; 2:30 Wednesday -> 3:30 same Wednesday
            (ist_at(2026, 2, 3, 20, 0, 0), ist_at(2026, 2, 4, 3, 30, 0)),
            (ist_at(2026, 2, 4, 2, 30, 0), ist_at(2026, 2, 4, 3, 30, 0)),
            // across IST midnight, and across UTC midnight (05:30 IST)
            (ist_at(2026, 2, 5, 23, 59, 59), ist_at(2026, 2, 6, 3, 30, 0)),
            (ist_at(2026, 2, 6, 0, 0, 0), ist_at(2026, 2, 6, 3, 30, 0)),
            (ist_at(2026, 2, 6, 5, 30, 0), ist_at(2026, 2, 7, 3, 30, 0)),
            // month ends, leap-less February, year end
            (ist_at(2026, 1, 31, 10, 0, 0), ist_at(2026, 2, 1, 3, 30, 0)),
            (ist_at(2026, 2, 28, 10, 0, 0), ist_at(2026, 3, 1, 3, 30, 0)),
            (ist_at(2026, 12, 31, 10, 0, 0), ist_at(2027, 1, 1, 3, 30, 0)),
            (ist_at(2026, 12, 31, 23, 0, 0), ist_at(2027, 1, 1, 3, 30, 0)),
            (ist_at(2028, 2, 28, 12, 0, 0), ist_at(2028, 2, 29, 3, 30, 0)),
        ];
        for (now, want) in cases {
            assert_eq!(next_rollover_after(now), want, "after {}", format_ist(now));
        }
    }

    #[test]
    fn sub_second_before_rollover_still_rolls_over_that_day() {
        let just_before: Timestamp = "2026-02-05T21:59:59.999999999Z".parse().unwrap();
        let just_after: Timestamp = "2026-02-05T22:00:00.000000001Z".parse().unwrap();
        assert_eq!(
            next_rollover_after(just_before),
            "2026-02-05T22:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            next_rollover_after(just_after),
            "2026-02-06T22:00:00Z".parse::<Timestamp>().unwrap()
        );
        let pre_epoch: Timestamp = "1969-12-31T21:59:59.5Z".parse().unwrap();
        assert_eq!(
            next_rollover_after(pre_epoch),
            "1969-12-31T22:00:00Z".parse::<Timestamp>().unwrap()
        );
    }

    #[test]
    fn real_token_a_is_daily_and_dies_at_0330_ist_on_feb_6() {
        let tok = AccessToken::new(make_jwt(&serde_json::from_str(TOKEN_A_PAYLOAD).unwrap()));
        let info = inspect(&tok).unwrap();
        assert_eq!(info.kind, TokenKind::Daily);
        assert_eq!(info.mismatch, None);
        assert_eq!(format_ist(info.expires_at), "2026-02-06T03:30:00+05:30");
        assert_eq!(
            format_ist(info.issued_at.unwrap()),
            "2026-02-05T05:49:27+05:30"
        );
    }

    #[test]
    fn real_token_b_is_a_thirty_day_sandbox_token() {
        let tok = AccessToken::new(make_jwt(&serde_json::from_str(TOKEN_B_PAYLOAD).unwrap()));
        let info = inspect(&tok).unwrap();
        assert_eq!(info.kind, TokenKind::Sandbox);
        assert_eq!(info.mismatch, None);
        assert_eq!(format_ist(info.expires_at), "2026-03-02T03:30:00+05:30");
    }

    #[test]
    fn one_year_tokens_are_extended() {
        let iat = ist_at(2026, 3, 12, 10, 0, 0);
        for lifetime in [
            days(365),
            days(366),
            days(365) + SignedDuration::from_hours(17),
        ] {
            let info = inspect_claims(claims(Some(iat), iat + lifetime));
            assert_eq!(info.kind, TokenKind::Extended);
            assert_eq!(info.mismatch, None);
        }
    }

    #[test]
    fn exp_disagreeing_with_every_rule_is_reported() {
        let iat = ist_at(2026, 2, 5, 9, 0, 0);
        let cases = [
            (
                ist_at(2026, 2, 6, 5, 0, 0),
                TokenKind::Daily,
                "exp is 05:00 IST, the daily rule says 03:30 IST".to_string(),
            ),
            (
                ist_at(2026, 2, 7, 3, 30, 0),
                TokenKind::Daily,
                "exp is 2026-02-07T03:30:00+05:30, the daily rule says 2026-02-06T03:30:00+05:30"
                    .to_string(),
            ),
            (
                ist_at(2026, 3, 4, 3, 30, 0),
                TokenKind::Sandbox,
                "exp is 2026-03-04T03:30:00+05:30, the 30-day sandbox rule says \
                 2026-03-08T03:30:00+05:30"
                    .to_string(),
            ),
            (
                iat + days(400),
                TokenKind::Extended,
                "exp is 400d after iat, an extended token lasts about 365 days".to_string(),
            ),
            (
                iat + days(7),
                TokenKind::Unknown,
                "exp is 7d after iat, which matches no known token (daily: until the next \
                 03:30 IST, sandbox: 30 days, extended: 1 year)"
                    .to_string(),
            ),
            (
                iat - SignedDuration::from_hours(1),
                TokenKind::Unknown,
                "exp (2026-02-05T08:00:00+05:30) is not after iat (2026-02-05T09:00:00+05:30)"
                    .to_string(),
            ),
        ];
        for (exp, kind, msg) in cases {
            let info = inspect_claims(claims(Some(iat), exp));
            assert_eq!(info.kind, kind, "{msg}");
            assert_eq!(info.mismatch.as_deref(), Some(msg.as_str()));
            assert_eq!(info.expires_at, exp, "expires_at is always exp");
        }
    }

    #[test]
    fn token_without_iat_is_unknown_but_keeps_exp() {
        let exp = ist_at(2026, 2, 6, 3, 30, 0);
        let info = inspect_claims(claims(None, exp));
        assert_eq!(info.kind, TokenKind::Unknown);
        assert_eq!(info.expires_at, exp);
        assert_eq!(info.issued_at, None);
    }

    #[test]
    fn token_made_at_0230_dies_at_0330_same_day() {
        let iat = ist_at(2026, 2, 4, 2, 30, 0);
        let info = inspect_claims(claims(Some(iat), ist_at(2026, 2, 4, 3, 30, 0)));
        assert_eq!(info.kind, TokenKind::Daily);
        assert_eq!(info.mismatch, None);
    }

    #[test]
    fn inspect_reports_decode_errors() {
        assert_eq!(
            inspect(&AccessToken::new("nope")),
            Err(TokenError::NotThreeParts)
        );
    }

    #[test]
    fn extreme_claims_do_not_panic() {
        for (iat, exp) in [(i64::MIN, i64::MAX), (i64::MAX, i64::MIN), (0, i64::MAX)] {
            let c = Claims {
                iat: Some(iat),
                exp,
                ..claims(None, Timestamp::UNIX_EPOCH)
            };
            let _ = inspect_claims(c);
        }
        let _ = next_rollover_after(Timestamp::MAX);
        let _ = next_rollover_after(Timestamp::MIN);
    }

    #[test]
    fn durations_format_compactly() {
        assert_eq!(format_duration(SignedDuration::from_secs(30)), "30s");
        assert_eq!(format_duration(SignedDuration::from_mins(45)), "45m");
        assert_eq!(format_duration(SignedDuration::from_mins(192)), "3h 12m");
        assert_eq!(format_duration(SignedDuration::from_hours(3)), "3h");
        assert_eq!(format_duration(SignedDuration::from_hours(51)), "2d 3h");
        assert_eq!(format_duration(SignedDuration::from_mins(-65)), "-1h 5m");
    }

    fn any_timestamp() -> impl Strategy<Value = Timestamp> {
        // 1970..2100, with sub-second parts
        (0i64..4_102_444_800, 0i32..1_000_000_000)
            .prop_map(|(s, ns)| Timestamp::new(s, ns).unwrap())
    }

    proptest! {
        #[test]
        fn next_rollover_is_after_t_at_0330_ist_and_within_a_day(t in any_timestamp()) {
            let r = next_rollover_after(t);
            prop_assert!(r > t);
            prop_assert_eq!(ist_datetime(r).time(), ROLLOVER_IST);
            prop_assert!(r.duration_since(t) <= SignedDuration::from_hours(24));
        }

        #[test]
        fn daily_tokens_issued_any_time_are_classified_daily(t in any_timestamp()) {
            let iat = Timestamp::from_second(t.as_second()).unwrap();
            let info = inspect_claims(claims(Some(iat), next_rollover_after(iat)));
            prop_assert_eq!(info.kind, TokenKind::Daily);
            prop_assert_eq!(info.mismatch, None);
        }
    }
}

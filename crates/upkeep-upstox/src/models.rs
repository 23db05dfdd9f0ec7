//! Typed responses. Fields the docs mark as sometimes absent are `Option` or default;
//! unknown fields are ignored (Upstox adds fields over time).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer};
use upkeep_core::{AccessToken, Secret};

/// `GET /v2/user/profile` → `data` (reference 4.1).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Profile {
    /// The UCC.
    pub user_id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub user_name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub email: String,
    #[serde(default, deserialize_with = "null_default")]
    pub broker: String,
    #[serde(default, deserialize_with = "null_default")]
    pub user_type: String,
    #[serde(default, deserialize_with = "null_default")]
    pub exchanges: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub products: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub order_types: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub poa: bool,
    /// Not in SDK 2.30.0's model; present in current docs.
    #[serde(default)]
    pub ddpi: Option<bool>,
    #[serde(default, deserialize_with = "null_default")]
    pub is_active: bool,
}

/// One segment of `GET /v2/user/get-funds-and-margin` (reference 4.2).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SegmentFunds {
    #[serde(deserialize_with = "null_default")]
    pub used_margin: f64,
    #[serde(deserialize_with = "null_default")]
    pub payin_amount: f64,
    #[serde(deserialize_with = "null_default")]
    pub span_margin: f64,
    #[serde(deserialize_with = "null_default")]
    pub adhoc_margin: f64,
    #[serde(deserialize_with = "null_default")]
    pub notional_cash: f64,
    #[serde(deserialize_with = "null_default")]
    pub available_margin: f64,
    #[serde(deserialize_with = "null_default")]
    pub exposure_margin: f64,
}

/// `GET /v2/user/get-funds-and-margin` → `data`. Since July 2025 combined funds are
/// reported in `equity`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Funds {
    #[serde(default)]
    pub equity: Option<SegmentFunds>,
    #[serde(default)]
    pub commodity: Option<SegmentFunds>,
}

/// One entry of `GET /v3/market-quote/ltp` (reference 4.3).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LtpQuote {
    pub last_price: f64,
    /// The instrument key (`NSE_EQ|INE848E01016`).
    pub instrument_token: String,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub ltq: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub volume: Option<i64>,
    /// Previous close.
    #[serde(default)]
    pub cp: Option<f64>,
}

/// `GET /v3/market-quote/ltp` → `data`: keyed by `SEGMENT:TRADING_SYMBOL` (not by
/// instrument key; that is in each quote's `instrument_token`).
pub type LtpQuotes = BTreeMap<String, LtpQuote>;

/// The token endpoint's answer (reference 1.2): a flat object.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenGrant {
    #[serde(deserialize_with = "non_empty_token")]
    pub access_token: AccessToken,
    /// Issued to all apps since 2026-03-11; valid for a year, mostly read-only.
    #[serde(default, deserialize_with = "optional_token")]
    pub extended_token: Option<AccessToken>,
    pub user_id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub user_name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub email: String,
    #[serde(default, deserialize_with = "null_default")]
    pub is_active: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub user_type: String,
    #[serde(default, deserialize_with = "null_default")]
    pub broker: String,
    #[serde(default, deserialize_with = "null_default")]
    pub exchanges: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub products: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub order_types: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub poa: bool,
    #[serde(default)]
    pub ddpi: Option<bool>,
}

/// The v3 access-token request's acknowledgement (reference 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequestAck {
    /// When the approval window closes (the next 03:30 IST).
    pub authorization_expiry: Timestamp,
    /// The app's notifier webhook, where the token will be POSTed on approval.
    pub notifier_url: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct TokenRequestAckWire {
    pub authorization_expiry: serde_json::Value,
    #[serde(default)]
    pub notifier_url: Option<String>,
}

/// A standard OAuth 2 refresh-grant answer (RFC 6749 section 5.1).
#[derive(Debug, Clone, Deserialize)]
pub struct RefreshGrant {
    #[serde(deserialize_with = "non_empty_token")]
    pub access_token: AccessToken,
    /// A rotated refresh token, when the provider rotates them.
    #[serde(default, deserialize_with = "optional_secret")]
    pub refresh_token: Option<Secret>,
    /// Lifetime of the access token in seconds.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub expires_in: Option<i64>,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

/// `null` reads as the type's default (Upstox sometimes sends `null` for absent values).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An integer that may arrive as `75` or `75.0`.
fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Option::<serde_json::Number>::deserialize(d)? {
        None => None,
        Some(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
    })
}

fn non_empty_token<'de, D: Deserializer<'de>>(d: D) -> Result<AccessToken, D::Error> {
    let token = AccessToken::deserialize(d)?;
    if token.expose().is_empty() {
        return Err(serde::de::Error::custom("access_token is empty"));
    }
    Ok(token)
}

fn optional_token<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AccessToken>, D::Error> {
    Ok(Option::<AccessToken>::deserialize(d)?.filter(|t| !t.expose().is_empty()))
}

fn optional_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<Secret>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// Parses an epoch-milliseconds string (`"1732226400000"`), the form Upstox uses for
/// `authorization_expiry`, `expires_at` and `issued_at`. Digits only.
pub(crate) fn epoch_ms_string(value: &str) -> Option<Timestamp> {
    if value.is_empty() || value.len() > 15 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms: i64 = value.parse().ok()?;
    Timestamp::from_millisecond(ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_grant_reads_the_documented_token_response() {
        let body = r#"{"email":"a@b.c","exchanges":["NSE","NFO","BSE","CDS","BFO","BCD"],"products":["D","CO","I"],"broker":"UPSTOX","user_id":"2ZCDQ9","user_name":"Jane","order_types":["MARKET","LIMIT","SL","SL-M"],"user_type":"individual","poa":false,"ddpi":false,"is_active":true,"access_token":"tok.en.a","extended_token":"tok.en.b"}"#;
        let g: TokenGrant = serde_json::from_str(body).unwrap();
        assert_eq!(g.access_token.expose(), "tok.en.a");
        assert_eq!(
            g.extended_token.as_ref().map(|t| t.expose()),
            Some("tok.en.b")
        );
        assert_eq!(g.user_id, "2ZCDQ9");
        assert!(g.is_active);
        assert_eq!(g.ddpi, Some(false));
        let shown = format!("{g:?}");
        assert!(!shown.contains("tok.en"), "{shown}");
    }

    #[test]
    fn token_grant_without_extended_token_or_with_empty_one() {
        let a: TokenGrant = serde_json::from_str(r#"{"user_id":"X","access_token":"t"}"#).unwrap();
        let b: TokenGrant =
            serde_json::from_str(r#"{"user_id":"X","access_token":"t","extended_token":""}"#)
                .unwrap();
        let c: TokenGrant =
            serde_json::from_str(r#"{"user_id":"X","access_token":"t","extended_token":null}"#)
                .unwrap();
        assert!(
            a.extended_token.is_none() && b.extended_token.is_none() && c.extended_token.is_none()
        );
        assert!(
            serde_json::from_str::<TokenGrant>(r#"{"user_id":"X","access_token":""}"#).is_err()
        );
    }

    #[test]
    fn ltp_v3_reads_the_docs_sample() {
        let data = r#"{"NSE_FO:NIFTY2543021600PE":{"last_price":303.9,"instrument_token":"NSE_FO|51834","ltq":75,"volume":170325,"cp":29.0}}"#;
        let q: LtpQuotes = serde_json::from_str(data).unwrap();
        let e = &q["NSE_FO:NIFTY2543021600PE"];
        assert_eq!(e.instrument_token, "NSE_FO|51834");
        assert_eq!(e.ltq, Some(75));
        assert_eq!(e.cp, Some(29.0));
    }

    #[test]
    fn nulls_and_float_integers_do_not_break_decoding() {
        let data = r#"{"NSE_EQ:NHPC":{"last_price":52.05,"instrument_token":"NSE_EQ|INE848E01016","ltq":75.0,"volume":null,"cp":null}}"#;
        let q: LtpQuotes = serde_json::from_str(data).unwrap();
        assert_eq!(q["NSE_EQ:NHPC"].ltq, Some(75));
        assert_eq!(q["NSE_EQ:NHPC"].volume, None);
        let p: Profile =
            serde_json::from_str(r#"{"user_id":"X","poa":null,"exchanges":null,"user_name":null}"#)
                .unwrap();
        assert!(!p.poa && p.exchanges.is_empty() && p.user_name.is_empty());
        let f: Funds = serde_json::from_str(
            r#"{"equity":{"used_margin":null,"available_margin":10.5},"commodity":null}"#,
        )
        .unwrap();
        assert_eq!(f.equity.unwrap().available_margin, 10.5);
        assert!(f.commodity.is_none());
    }

    #[test]
    fn profile_reads_the_docs_sample() {
        let data = r#"{"email":"e","exchanges":["NSE"],"products":["D"],"broker":"UPSTOX","user_id":"2ZCDQ9","user_name":"n","order_types":["MARKET"],"user_type":"individual","poa":false,"ddpi":false,"is_active":true}"#;
        let p: Profile = serde_json::from_str(data).unwrap();
        assert_eq!(p.user_id, "2ZCDQ9");
        assert!(p.is_active);
    }

    #[test]
    fn refresh_grant_reads_rotated_and_absent_refresh_tokens() {
        let rotated: RefreshGrant = serde_json::from_str(
            r#"{"access_token":"new.at","token_type":"Bearer","expires_in":3600,"refresh_token":"new-rt"}"#,
        )
        .unwrap();
        assert_eq!(rotated.access_token.expose(), "new.at");
        assert_eq!(
            rotated.refresh_token.as_ref().map(Secret::expose),
            Some("new-rt")
        );
        assert_eq!(rotated.expires_in, Some(3600));
        assert!(!format!("{rotated:?}").contains("new-rt"));
        let kept: RefreshGrant = serde_json::from_str(r#"{"access_token":"a"}"#).unwrap();
        assert!(kept.refresh_token.is_none() && kept.expires_in.is_none());
    }

    #[test]
    fn epoch_ms_strings_parse_strictly() {
        let t = epoch_ms_string("1732226400000").unwrap();
        assert_eq!(t.to_string(), "2024-11-21T22:00:00Z");
        for bad in [
            "",
            "-1",
            "17322264e5",
            " 1732226400000",
            "1.5",
            "99999999999999999999",
        ] {
            assert_eq!(epoch_ms_string(bad), None, "{bad:?}");
        }
    }
}

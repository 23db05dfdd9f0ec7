//! What upkeep's gateway needs to know about Upstox's REST surface, and nothing else
//! does: which host a path goes to (the official SDK's routing), the endpoint template
//! and rate-limit group of a path (for usage and the shared budget), and what an
//! upstream 401 means.
//!
//! Everything here is pure and allocation-free on the hot path: the gateway calls
//! [`upstream_of`] and [`endpoint`] once per request.

/// Which Upstox host serves a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// `api.upstox.com`: everything but order placement.
    Api,
    /// `api-hft.upstox.com`: order place, modify and cancel.
    Order,
}

/// The path fragments the official SDK (2.30.0, `api_client.py`) sends to
/// `order_host`: any path containing one of them.
const ORDER_HOST_FRAGMENTS: [&str; 3] = ["/order/place", "/order/modify", "/order/cancel"];

/// Whether `path` is an Upstox API path: `/v<version>/...` (`/v2/user/profile`). Nothing
/// else is forwarded, so a key cannot reach other paths of the upstream host.
pub fn is_api_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/v") else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && rest.as_bytes().get(digits) == Some(&b'/') && rest.len() > digits + 1
}

/// Which host `path` (`/v2/user/profile`, no query) goes to, as the official SDK routes it.
pub fn upstream_of(path: &str) -> Upstream {
    if ORDER_HOST_FRAGMENTS.iter().any(|f| path.contains(f)) {
        Upstream::Order
    } else {
        Upstream::Api
    }
}

/// Upstox's rate-limit groups (reference 5.3), with their published limits.
pub use crate::limits::ApiGroup;

/// A path's endpoint: a template with its variable segments named (bounded: metrics and
/// usage are labelled by it, so a path nobody listed is `other`) and its rate group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub template: &'static str,
    pub group: ApiGroup,
}

/// Templates the gateway recognises. `{}` matches one path segment.
const TEMPLATES: &[&str] = &[
    "/v2/user/profile",
    "/v2/user/get-funds-and-margin",
    "/v3/user/get-funds-and-margin",
    "/v2/market-quote/ltp",
    "/v3/market-quote/ltp",
    "/v2/market-quote/quotes",
    "/v2/market-quote/ohlc",
    "/v3/market-quote/ohlc",
    "/v3/market-quote/option-greek",
    // Intraday first: the generic candle templates would also match its paths.
    "/v2/historical-candle/intraday/{}/{}",
    "/v3/historical-candle/intraday/{}/{}/{}",
    "/v2/historical-candle/{}/{}/{}",
    "/v2/historical-candle/{}/{}/{}/{}",
    "/v3/historical-candle/{}/{}/{}/{}",
    "/v3/historical-candle/{}/{}/{}/{}/{}",
    "/v2/option/contract",
    "/v2/option/chain",
    "/v2/market/holidays",
    "/v2/market/holidays/{}",
    "/v2/market/timings/{}",
    "/v2/market/status/{}",
    "/v2/order/place",
    "/v3/order/place",
    "/v2/order/multi/place",
    "/v2/order/modify",
    "/v3/order/modify",
    "/v2/order/cancel",
    "/v3/order/cancel",
    "/v2/order/multi/cancel",
    "/v2/order/positions/exit",
    "/v2/order/details",
    "/v2/order/history",
    "/v2/order/retrieve-all",
    "/v2/order/trades",
    "/v2/order/trades/get-trades-for-day",
    "/v3/order/gtt/place",
    "/v3/order/gtt/modify",
    "/v3/order/gtt/cancel",
    "/v3/order/gtt",
    "/v2/portfolio/long-term-holdings",
    "/v2/portfolio/short-term-positions",
    "/v3/portfolio/mtf-positions",
    "/v2/portfolio/convert-position",
    "/v2/charges/brokerage",
    "/v2/charges/margin",
    "/v2/trade/profit-loss/data",
    "/v2/trade/profit-loss/metadata",
    "/v2/trade/profit-loss/charges",
    "/v2/feed/market-data-feed/authorize",
    "/v3/feed/market-data-feed/authorize",
    "/v2/feed/portfolio-stream-feed/authorize",
    "/v2/logout",
];

/// The endpoint `path` (no query) belongs to.
pub fn endpoint(path: &str) -> Endpoint {
    let template = TEMPLATES
        .iter()
        .copied()
        .find(|t| matches_template(t, path))
        .unwrap_or("other");
    Endpoint {
        template,
        group: group_of(path),
    }
}

fn matches_template(template: &str, path: &str) -> bool {
    let mut t = template.split('/');
    let mut p = path.trim_end_matches('/').split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some("{}"), Some(seg)) if !seg.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

fn group_of(path: &str) -> ApiGroup {
    // Reading orders (details, history, trades, the GTT list) is a standard API;
    // placing, modifying, cancelling (single, multi, GTT) and exiting are the order group.
    if path.contains("/ipo") {
        ApiGroup::Ipo
    } else if path.contains("/payout") || path.contains("/payin") {
        // The stricter payout limits (request, modify, cancel) are not told apart: the
        // reference names no payout paths.
        ApiGroup::PayoutStandard
    } else if upstream_of(path) == Upstream::Order
        || ["/order/multi/", "/order/gtt/", "/order/positions/exit"]
            .iter()
            .any(|f| path.contains(f))
    {
        ApiGroup::Order
    } else {
        ApiGroup::Standard
    }
}

/// What an upstream 401 says about the token that got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unauthorized {
    /// `UDAPI100050`: the token is invalid (expired, revoked, another environment).
    /// Renewing may help.
    TokenInvalid,
    /// `UDAPI100067`: this API does not take an extended token. Renewing will not help.
    ExtendedTokenNotAllowed,
    /// Anything else (permissions, a static IP rule, an unknown code): not a token
    /// problem upkeep can fix. The code, when the body had one.
    Other(Option<String>),
}

/// Reads a 401 body (Upstox's error envelope, either key spelling).
pub fn classify_unauthorized(body: &[u8]) -> Unauthorized {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let e = v.get("errors")?.get(0)?;
            e.get("error_code")
                .or_else(|| e.get("errorCode"))?
                .as_str()
                .map(str::to_owned)
        });
    match code.as_deref() {
        Some("UDAPI100050") => Unauthorized::TokenInvalid,
        Some("UDAPI100067") => Unauthorized::ExtendedTokenNotAllowed,
        _ => Unauthorized::Other(code),
    }
}

/// An error body in Upstox's envelope (both key spellings, as the live gateway sends),
/// for answers upkeep's gateway gives in Upstox's place, so a client that parses
/// Upstox errors reads upkeep's too.
pub fn error_envelope(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "status": "error",
        "errors": [{
            "errorCode": code,
            "message": message,
            "propertyPath": null,
            "invalidValue": null,
            "error_code": code,
            "property_path": null,
            "invalid_value": null,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_paths_go_to_the_order_host_like_the_official_sdk() {
        for p in [
            "/v2/order/place",
            "/v3/order/place",
            "/v2/order/modify",
            "/v3/order/cancel",
        ] {
            assert_eq!(upstream_of(p), Upstream::Order, "{p}");
        }
        for p in [
            "/v2/user/profile",
            "/v3/market-quote/ltp",
            "/v2/order/details",
            "/v2/order/retrieve-all",
            // "/order/multi/place" does not contain "/order/place": the SDK sends it to
            // the API host.
            "/v2/order/multi/place",
            "/v2/order/multi/cancel",
        ] {
            assert_eq!(upstream_of(p), Upstream::Api, "{p}");
        }
    }

    #[test]
    fn endpoints_name_their_variable_segments_and_unknown_paths_are_other() {
        assert_eq!(
            endpoint("/v3/market-quote/ltp").template,
            "/v3/market-quote/ltp"
        );
        assert_eq!(
            endpoint("/v2/historical-candle/NSE_EQ%7CX/day/2026-11-30").template,
            "/v2/historical-candle/{}/{}/{}"
        );
        assert_eq!(
            endpoint("/v2/market/status/NSE").template,
            "/v2/market/status/{}"
        );
        assert_eq!(
            endpoint("/v2/historical-candle/intraday/NSE_EQ%7CX/1minute").template,
            "/v2/historical-candle/intraday/{}/{}"
        );
        assert_eq!(
            endpoint("/v3/historical-candle/intraday/NSE_EQ%7CX/minutes/1").template,
            "/v3/historical-candle/intraday/{}/{}/{}"
        );
        assert_eq!(
            endpoint("/v3/historical-candle/NSE_EQ%7CX/days/1/2026-11-30").template,
            "/v3/historical-candle/{}/{}/{}/{}"
        );
        assert_eq!(endpoint("/v9/attacker/12345").template, "other");
        assert_eq!(endpoint("/v2/market/status/").template, "other");
    }

    #[test]
    fn only_versioned_api_paths_are_upstox_api_paths() {
        assert!(is_api_path("/v2/user/profile"));
        assert!(is_api_path("/v3/market-quote/ltp"));
        assert!(is_api_path("/v10/x"));
        for other in [
            "/sim/clock",
            "/",
            "",
            "/v2",
            "/v2/",
            "/v/x",
            "/vx/y",
            "/version/1",
            "//v2/x",
        ] {
            assert!(!is_api_path(other), "{other}");
        }
    }

    #[test]
    fn order_placement_is_the_order_group_and_reading_orders_is_standard() {
        assert_eq!(endpoint("/v2/order/place").group, ApiGroup::Order);
        assert_eq!(endpoint("/v3/order/cancel").group, ApiGroup::Order);
        assert_eq!(endpoint("/v3/order/gtt/place").group, ApiGroup::Order);
        assert_eq!(endpoint("/v2/order/details").group, ApiGroup::Standard);
        assert_eq!(endpoint("/v2/user/profile").group, ApiGroup::Standard);
        assert_eq!(endpoint("/v2/ipo/apply").group, ApiGroup::Ipo);
    }

    #[test]
    fn a_401_is_read_by_its_code_in_either_spelling() {
        let live = br#"{"status":"error","errors":[{"errorCode":"UDAPI100050","message":"Invalid token used to access API","propertyPath":null,"invalidValue":null,"error_code":"UDAPI100050","property_path":null,"invalid_value":null}]}"#;
        assert_eq!(classify_unauthorized(live), Unauthorized::TokenInvalid);
        let camel = br#"{"status":"error","errors":[{"errorCode":"UDAPI100067","message":"x"}]}"#;
        assert_eq!(
            classify_unauthorized(camel),
            Unauthorized::ExtendedTokenNotAllowed
        );
        assert_eq!(
            classify_unauthorized(b"<html>401</html>"),
            Unauthorized::Other(None)
        );
        assert_eq!(
            classify_unauthorized(br#"{"errors":[{"error_code":"UDAPI100016"}]}"#),
            Unauthorized::Other(Some("UDAPI100016".into()))
        );
    }
}

//! Token-protected REST APIs: logout, profile, funds, LTP quotes, orders.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::{ApiError, json_response, success};
use crate::instruments;
use crate::ist;
use crate::jwt::TokenKind;
use crate::oauth::profile_json;
use crate::ratelimit::{Group, ORDERS};
use crate::sim::{OrderRecord, Sim, TokenInfo, bump};
use crate::util::bearer;

/// Which token kinds an API accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Profile, funds: daily tokens only (extended -> UDAPI100067, sandbox -> UDAPI100050).
    Account,
    /// Market quotes: daily and extended.
    Market,
    /// Orders: daily and sandbox (extended -> UDAPI100067).
    Order,
    /// Logout: any valid token.
    Any,
}

/// Authenticates, checks the token kind, applies the rate limit of (user, `api`).
fn authorize(
    sim: &Sim,
    headers: &HeaderMap,
    access: Access,
    api: &str,
    group: Group,
) -> Result<TokenInfo, ApiError> {
    let token = bearer(headers).ok_or_else(ApiError::invalid_token)?;
    let info = sim
        .check_token(token)
        .map_err(|_| ApiError::invalid_token())?;
    match (access, info.kind) {
        (Access::Account | Access::Order, TokenKind::Extended) => {
            return Err(ApiError::extended_not_permitted());
        }
        (Access::Account | Access::Market, TokenKind::Sandbox) => {
            return Err(ApiError::invalid_token());
        }
        _ => {}
    }
    if !sim.admit(&info.ucc, api, group) {
        bump(&sim.counters_raw().rate_limited);
        return Err(ApiError::rate_limited());
    }
    bump(&sim.counters_raw().api_requests);
    Ok(info)
}

/// Authenticates a market-data call (daily and extended tokens) under `api`'s rate limit.
pub(crate) fn authorize_market(sim: &Sim, headers: &HeaderMap, api: &str) -> Result<(), ApiError> {
    authorize(sim, headers, Access::Market, api, Group::Standard).map(|_| ())
}

fn respond(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /v2/logout`
pub(crate) async fn logout(State(sim): State<Sim>, headers: HeaderMap) -> Response {
    respond((|| {
        let info = authorize(&sim, &headers, Access::Any, "/v2/logout", Group::Standard)?;
        if let Some(rec) = sim.lock().tokens.get_mut(&info.jti) {
            rec.revoked = true;
        }
        bump(&sim.counters_raw().logouts);
        Ok(success(json!(true)))
    })())
}

/// `GET /v2/user/profile`
pub(crate) async fn profile(State(sim): State<Sim>, headers: HeaderMap) -> Response {
    respond((|| {
        let info = authorize(
            &sim,
            &headers,
            Access::Account,
            "/v2/user/profile",
            Group::Standard,
        )?;
        let user = sim
            .lock()
            .users
            .get(&info.ucc)
            .map(|u| u.config.clone())
            .ok_or_else(ApiError::invalid_token)?;
        Ok(success(profile_json(&user)))
    })())
}

fn funds_window(sim: &Sim) -> Result<(), ApiError> {
    if ist::in_maintenance_window(sim.now()) {
        return Err(ApiError::new(
            StatusCode::LOCKED,
            "UDAPI100072",
            "The Funds service is accessible from 5:30 AM to 12:00 AM IST. Please try again later.",
        ));
    }
    Ok(())
}

fn margin(available: f64) -> Value {
    json!({
        "used_margin": 0.0,
        "payin_amount": 0.0,
        "span_margin": 0.0,
        "adhoc_margin": 0.0,
        "notional_cash": 0.0,
        "available_margin": available,
        "exposure_margin": 0.0,
    })
}

/// `GET /v2/user/get-funds-and-margin[?segment=SEC|COM]`
pub(crate) async fn funds_v2(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    respond((|| {
        authorize(
            &sim,
            &headers,
            Access::Account,
            "/v2/user/get-funds-and-margin",
            Group::Standard,
        )?;
        funds_window(&sim)?;
        let data = match q.get("segment").map(String::as_str) {
            None | Some("") => json!({"equity": margin(100_000.0), "commodity": margin(0.0)}),
            Some("SEC") => json!({"equity": margin(100_000.0)}),
            Some("COM") => json!({"commodity": margin(0.0)}),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "UDAPI100036",
                    "Invalid input: segment must be SEC or COM",
                ));
            }
        };
        Ok(success(data))
    })())
}

/// `GET /v3/user/get-funds-and-margin`
pub(crate) async fn funds_v3(State(sim): State<Sim>, headers: HeaderMap) -> Response {
    respond((|| {
        authorize(
            &sim,
            &headers,
            Access::Account,
            "/v3/user/get-funds-and-margin",
            Group::Standard,
        )?;
        funds_window(&sim)?;
        let margin_used = json!({
            "total": 0.0, "mtf": 0.0,
            "loss": {"total": 0.0, "realised": 0.0, "unrealised": 0.0},
            "span_exposure": 0.0, "cash_margin_var_elm": 0.0, "premium_present": 0.0,
            "delivery_margin": {"total": 0.0, "equity": 0.0, "fo_settlement": 0.0},
        });
        Ok(success(json!({
            "available_to_trade": {
                "total": 100_000.0,
                "cash_available_to_trade": {
                    "total": 100_000.0,
                    "cash": {
                        "opening_balance": 100_000.0, "added_today": 0.0, "withdrawn_today": 0.0,
                        "amount_from_stock_sale": 0.0, "unpaid_charges": 0.0,
                    },
                    "margin_used": margin_used,
                },
                "pledge_available_to_trade": {
                    "total": 0.0,
                    "margin_from_pledge": {"total": 0.0, "equity": 0.0, "mutual_funds": 0.0},
                    "margin_used": margin_used,
                },
            },
            "unavailable_to_trade": {
                "cash_unavailable_to_trade": {"unsettled_profit": {"todays_profit": 0.0, "previous_days": 0.0}},
                "pledge_unavailable_to_trade": {"equity": 0.0, "mutual_funds": 0.0},
            },
        })))
    })())
}

/// Maximum instrument keys per LTP call.
const MAX_KEYS: usize = 500;

fn ltp(
    sim: &Sim,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    v3: bool,
) -> Result<Response, ApiError> {
    let api = if v3 {
        "/v3/market-quote/ltp"
    } else {
        "/v2/market-quote/ltp"
    };
    authorize(sim, headers, Access::Market, api, Group::Standard)?;
    let raw = q.get("instrument_key").map(String::as_str).unwrap_or("");
    if raw.trim().is_empty() {
        return Err(ApiError::bad_request(
            "UDAPI1009",
            "instrument_key is required",
        ));
    }
    let keys: Vec<&str> = raw.split(',').collect();
    if keys.len() > MAX_KEYS {
        return Err(ApiError::bad_request(
            "UDAPI100043",
            format!("Maximum instrument key limit exceeded; send at most {MAX_KEYS} keys"),
        ));
    }
    if keys.iter().any(|k| !instruments::is_well_formed(k)) {
        return Err(ApiError::bad_request(
            "UDAPI1011",
            "Invalid format of instrument_key",
        ));
    }
    // One unknown (well-formed) key fails the whole request, naming that key.
    if let Some(unknown) = keys.iter().find(|k| instruments::find(k).is_none()) {
        return Err(ApiError::bad_request("UDAPI1087", "Invalid Instrument key")
            .with_invalid_value(*unknown));
    }
    let now = sim.now();
    let mut data = serde_json::Map::new();
    for inst in keys.iter().filter_map(|k| instruments::find(k)) {
        let price = inst.last_price_at(now);
        let entry = if v3 {
            json!({
                "last_price": price,
                "instrument_token": inst.key,
                "ltq": inst.ltq,
                "volume": inst.volume,
                "cp": inst.close,
            })
        } else {
            json!({"last_price": price, "instrument_token": inst.key})
        };
        data.insert(inst.quote_key(), entry);
    }
    Ok(success(Value::Object(data)))
}

/// `GET /v2/market-quote/ltp?instrument_key=..`
pub(crate) async fn ltp_v2(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    respond(ltp(&sim, &headers, &q, false))
}

/// `GET /v3/market-quote/ltp?instrument_key=..`
pub(crate) async fn ltp_v3(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    respond(ltp(&sim, &headers, &q, true))
}

fn orders_window(sim: &Sim) -> Result<(), ApiError> {
    if ist::in_maintenance_window(sim.now()) {
        return Err(ApiError::new(
            StatusCode::LOCKED,
            "UDAPI100074",
            "The Order APIs are accessible from 5:30 AM to 12:00 AM IST. Please try again later.",
        ));
    }
    Ok(())
}

fn invalid(msg: &str) -> ApiError {
    ApiError::bad_request("UDAPI100036", format!("Invalid input: {msg}"))
}

/// Checks an order body the way a careful gateway would.
fn validate_order(body: &[u8]) -> Result<(), ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        ApiError::bad_request("UDAPI100038", "Invalid input: body is not valid JSON")
    })?;
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    match v.get("quantity").and_then(Value::as_u64) {
        Some(q) if q > 0 => {}
        _ => return Err(invalid("quantity must be a positive integer")),
    }
    if !s("instrument_token").is_some_and(instruments::is_well_formed) {
        return Err(invalid(
            "instrument_token must look like NSE_EQ|INE848E01016",
        ));
    }
    if !matches!(s("transaction_type"), Some("BUY" | "SELL")) {
        return Err(invalid("transaction_type must be BUY or SELL"));
    }
    if !matches!(s("order_type"), Some("MARKET" | "LIMIT" | "SL" | "SL-M")) {
        return Err(invalid("order_type must be MARKET, LIMIT, SL or SL-M"));
    }
    if !matches!(s("product"), Some("I" | "D" | "CO" | "MTF")) {
        return Err(invalid("product must be I, D, CO or MTF"));
    }
    if let Some(val) = v.get("validity")
        && !matches!(val.as_str(), Some("DAY" | "IOC"))
    {
        return Err(invalid("validity must be DAY or IOC"));
    }
    for k in ["price", "trigger_price"] {
        if let Some(p) = v.get(k)
            && !p.as_f64().is_some_and(|p| p >= 0.0)
        {
            return Err(invalid(&format!("{k} must be a number >= 0")));
        }
    }
    Ok(())
}

fn place(sim: &Sim, headers: &HeaderMap, body: &[u8], v3: bool) -> Result<Response, ApiError> {
    let started = tokio::time::Instant::now();
    let info = authorize(sim, headers, Access::Order, ORDERS, Group::Order)?;
    orders_window(sim)?;
    validate_order(body)?;
    let date = ist::to_ist(sim.now()).date();
    let order_id = {
        let mut st = sim.lock();
        st.order_seq += 1;
        let id = format!(
            "{:02}{:02}{:02}{:09}",
            date.year().rem_euclid(100),
            date.month(),
            date.day(),
            st.order_seq
        );
        st.orders.insert(
            id.clone(),
            OrderRecord {
                ucc: info.ucc,
                cancelled: false,
            },
        );
        id
    };
    bump(&sim.counters_raw().orders_placed);
    if v3 {
        let latency = started.elapsed().as_millis() as u64;
        Ok(json_response(
            StatusCode::OK,
            &json!({"status": "success", "data": {"order_ids": [order_id]}, "metadata": {"latency": latency}}),
        ))
    } else {
        Ok(success(json!({"order_id": order_id})))
    }
}

/// `POST /v2/order/place`
pub(crate) async fn place_v2(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    respond(place(&sim, &headers, &body, false))
}

/// `POST /v3/order/place`
pub(crate) async fn place_v3(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    respond(place(&sim, &headers, &body, true))
}

fn cancel(
    sim: &Sim,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    v3: bool,
) -> Result<Response, ApiError> {
    let started = tokio::time::Instant::now();
    let info = authorize(sim, headers, Access::Order, ORDERS, Group::Order)?;
    orders_window(sim)?;
    let order_id = q
        .get("order_id")
        .filter(|o| !o.is_empty())
        .ok_or_else(|| invalid("order_id is required"))?;
    {
        let mut st = sim.lock();
        let order = st
            .orders
            .get_mut(order_id)
            .filter(|o| o.ucc == info.ucc)
            .ok_or_else(|| {
                ApiError::new(StatusCode::NOT_FOUND, "UDAPI100060", "Resource not Found")
            })?;
        if order.cancelled {
            return Err(invalid("order is already cancelled"));
        }
        order.cancelled = true;
    }
    bump(&sim.counters_raw().orders_cancelled);
    if v3 {
        let latency = started.elapsed().as_millis() as u64;
        Ok(json_response(
            StatusCode::OK,
            &json!({"status": "success", "data": {"order_id": order_id}, "metadata": {"latency": latency}}),
        ))
    } else {
        Ok(success(json!({"order_id": order_id})))
    }
}

/// `DELETE /v2/order/cancel?order_id=..`
pub(crate) async fn cancel_v2(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    respond(cancel(&sim, &headers, &q, false))
}

/// `DELETE /v3/order/cancel?order_id=..`
pub(crate) async fn cancel_v3(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    respond(cancel(&sim, &headers, &q, true))
}

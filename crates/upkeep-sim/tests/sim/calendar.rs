//! The market calendar routes: holidays of the clock's year, one date, timings, status.

use jiff::civil::{Time, date};
use upkeep_sim::{CalendarEntry, FaultsPatch, HolidayType, SessionConfig};

use crate::*;

async fn get_open(sim: &TestSim, path: &str) -> (u16, Value) {
    let resp = sim.http.get(sim.url(path)).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn ms(y: i16, mo: i8, d: i8, h: i8, mi: i8) -> i64 {
    ist(y, mo, d, h, mi, 0).as_millisecond()
}

/// A week in December 2026 with a settlement holiday (Tue 1st), a closed Friday (4th)
/// and a Saturday session (5th).
pub fn december_week() -> Vec<CalendarEntry> {
    let s = |ex: &str, (sh, sm), (eh, em)| SessionConfig {
        exchange: ex.into(),
        start: Time::constant(sh, sm, 0, 0),
        end: Time::constant(eh, em, 0, 0),
    };
    vec![
        CalendarEntry {
            date: date(2026, 12, 1),
            description: "Settlement holiday".into(),
            holiday_type: HolidayType::SettlementHoliday,
            closed_exchanges: vec![],
            open_exchanges: vec![],
        },
        CalendarEntry {
            date: date(2026, 12, 4),
            description: "Closed Friday".into(),
            holiday_type: HolidayType::TradingHoliday,
            closed_exchanges: vec!["NSE".into(), "BSE".into(), "NFO".into()],
            open_exchanges: vec![s("MCX", (17, 0), (23, 30))],
        },
        CalendarEntry {
            date: date(2026, 12, 5),
            description: "Saturday session".into(),
            holiday_type: HolidayType::TradingHoliday,
            closed_exchanges: vec!["MCX".into()],
            open_exchanges: vec![s("NSE", (9, 15), (15, 30))],
        },
    ]
}

#[tokio::test]
async fn holidays_list_the_clock_years_dates_with_epoch_ms_sessions_and_need_no_token() {
    let sim = TestSim::start().await; // 2026-02-05
    let (status, body) = get_open(&sim, "/v2/market/holidays").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    let data = body["data"].as_array().unwrap();
    assert!(
        data.iter()
            .all(|d| d["date"].as_str().unwrap().starts_with("2026-"))
    );
    let budget = data.iter().find(|d| d["date"] == "2026-02-07").unwrap();
    assert_eq!(budget["holiday_type"], "TRADING_HOLIDAY");
    let nse = budget["open_exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["exchange"] == "NSE")
        .unwrap();
    assert_eq!(nse["start_time"], ms(2026, 2, 7, 9, 15));
    assert_eq!(nse["end_time"], ms(2026, 2, 7, 15, 30));
    let settlement = data.iter().find(|d| d["date"] == "2026-04-01").unwrap();
    assert_eq!(settlement["holiday_type"], "SETTLEMENT_HOLIDAY");
    assert_eq!(settlement["closed_exchanges"], serde_json::json!([]));
    // The next year after the clock turns.
    sim.clock().set(ist(2027, 1, 1, 0, 5, 0));
    let (_, body) = get_open(&sim, "/v2/market/holidays").await;
    let data = body["data"].as_array().unwrap();
    assert!(!data.is_empty());
    assert!(
        data.iter()
            .all(|d| d["date"].as_str().unwrap().starts_with("2027-"))
    );
}

#[tokio::test]
async fn configured_dates_replace_the_default_and_the_holiday_shorthand() {
    let mut config = config();
    config.market_calendar = december_week();
    config.market_holidays = vec![date(2026, 12, 4), date(2026, 12, 8)];
    let sim = TestSim::start_with(config).await;
    let (_, body) = get_open(&sim, "/v2/market/holidays/2026-12-04").await;
    let day = &body["data"][0];
    assert_eq!(day["description"], "Closed Friday");
    assert_eq!(day["open_exchanges"][0]["exchange"], "MCX");
    let (_, body) = get_open(&sim, "/v2/market/holidays/2026-12-08").await;
    assert_eq!(body["data"][0]["holiday_type"], "TRADING_HOLIDAY");
    assert!(
        body["data"][0]["closed_exchanges"]
            .as_array()
            .unwrap()
            .len()
            >= 8
    );
    let (status, body) = get_open(&sim, "/v2/market/holidays/2026-12-09").await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], serde_json::json!([]));
}

#[tokio::test]
async fn timings_are_empty_on_closed_days_and_follow_special_sessions() {
    let mut config = config();
    config.market_calendar = december_week();
    let sim = TestSim::start_with(config).await;
    let exchanges = |body: &Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["exchange"].as_str().unwrap().to_owned())
            .collect()
    };
    // Settlement holiday: every exchange at its regular hours.
    let (_, body) = get_open(&sim, "/v2/market/timings/2026-12-01").await;
    assert_eq!(exchanges(&body).len(), 8, "{body}");
    let nse = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["exchange"] == "NSE")
        .unwrap();
    assert_eq!(nse["start_time"], ms(2026, 12, 1, 9, 15));
    // Closed Friday: NSE, BSE and NFO gone, MCX in the evening only.
    let (_, body) = get_open(&sim, "/v2/market/timings/2026-12-04").await;
    let open = exchanges(&body);
    assert!(
        !open.contains(&"NSE".to_owned()) && open.contains(&"MCX".to_owned()),
        "{body}"
    );
    let mcx = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["exchange"] == "MCX")
        .unwrap();
    assert_eq!(mcx["start_time"], ms(2026, 12, 4, 17, 0));
    // Saturday session: NSE only (listed); a plain Sunday: nothing.
    let (_, body) = get_open(&sim, "/v2/market/timings/2026-12-05").await;
    assert_eq!(exchanges(&body), vec!["NSE".to_owned()]);
    let (_, body) = get_open(&sim, "/v2/market/timings/2026-12-06").await;
    assert_eq!(body["data"], serde_json::json!([]));
}

#[tokio::test]
async fn an_invalid_date_is_udapi1088() {
    let sim = TestSim::start().await;
    for path in [
        "/v2/market/holidays/2026-02-30",
        "/v2/market/timings/05-02-2026",
    ] {
        let (status, body) = get_open(&sim, path).await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(body["errors"][0]["errorCode"], "UDAPI1088", "{path}");
    }
}

#[tokio::test]
async fn market_status_needs_a_token_and_follows_the_clock_and_calendar() {
    let sim = TestSim::start().await; // Thursday 2026-02-05 10:00 IST
    let (status, _) = get_open(&sim, "/v2/market/status/NSE").await;
    assert_eq!(status, 401);
    let token = sim.daily_token();
    let body: Value = sim
        .get_with("/v2/market/status/NSE", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"]["exchange"], "NSE");
    assert_eq!(body["data"]["status"], "NORMAL_OPEN");
    assert_eq!(
        body["data"]["last_updated"],
        ist(2026, 2, 5, 10, 0, 0).as_millisecond()
    );
    // Sunday: closed.
    sim.clock().set(ist(2026, 2, 8, 10, 0, 0));
    let token = sim.daily_token();
    let body: Value = sim
        .get_with("/v2/market/status/NSE", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"]["status"], "NORMAL_CLOSE");
    let resp = sim.get_with("/v2/market/status/NASDAQ", &token).await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn calendar_down_answers_503_on_every_calendar_route() {
    let sim = TestSim::start().await;
    sim.handle
        .state()
        .patch_faults(FaultsPatch {
            calendar_down: Some(true),
            ..FaultsPatch::default()
        })
        .unwrap();
    for path in [
        "/v2/market/holidays",
        "/v2/market/holidays/2026-02-07",
        "/v2/market/timings/2026-02-07",
    ] {
        let (status, body) = get_open(&sim, path).await;
        assert_eq!(status, 503, "{path}");
        assert_eq!(body["errors"][0]["errorCode"], "UDAPI100500");
    }
    let token = sim.daily_token();
    assert_eq!(
        sim.get_with("/v2/market/status/NSE", &token).await.status(),
        503
    );
    // Other routes are untouched.
    assert_eq!(sim.get_with("/v2/user/profile", &token).await.status(), 200);
}

#[test]
fn a_calendar_entry_with_an_unknown_exchange_is_refused() {
    let mut config = config();
    let mut week = december_week();
    week[0].closed_exchanges = vec!["NASDAQ".into()];
    config.market_calendar = week;
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("NASDAQ"), "{err}");
}

#[test]
fn market_calendar_reads_from_toml_with_ist_wall_times() {
    let c = SimConfig::from_toml(
        r#"
        [[market_calendar]]
        date = "2026-12-05"
        description = "Saturday session"
        holiday_type = "TRADING_HOLIDAY"
        open_exchanges = [{ exchange = "NSE", start = "09:15", end = "15:30" }]
        "#,
    )
    .unwrap();
    assert_eq!(
        c.market_calendar[0].open_exchanges[0].start,
        Time::constant(9, 15, 0, 0)
    );
    assert!(c.default_market_calendar);
}

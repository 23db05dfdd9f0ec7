//! The trading calendar from Upstox (the simulator's): the plan over a week holding a
//! settlement holiday, a Saturday special session and a closed Friday; the calendar
//! unreachable (stored copy, then weekdays), warned about once.
#![allow(clippy::unwrap_used)] // tests may unwrap; helpers here are not #[test] fns

mod common;

use common::*;
use jiff::civil::{Date, Time, date};
use upkeep_core::plan::Action;
use upkeep_server::CalendarSource;
use upkeep_sim::{CalendarEntry, FaultsPatch, HolidayType, SessionConfig};

/// Tue 2026-12-01 settlement holiday, Fri 12-04 closed (MCX open in the evening),
/// Sat 12-05 NSE special session.
fn december_week() -> Vec<CalendarEntry> {
    let session = |ex: &str, (sh, sm): (i8, i8), (eh, em): (i8, i8)| SessionConfig {
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
            open_exchanges: vec![session("MCX", (17, 0), (23, 30))],
        },
        CalendarEntry {
            date: date(2026, 12, 5),
            description: "Saturday session".into(),
            holiday_type: HolidayType::TradingHoliday,
            closed_exchanges: vec!["MCX".into()],
            open_exchanges: vec![session("NSE", (9, 15), (15, 30))],
        },
    ]
}

fn week() -> Vec<Date> {
    (0..7)
        .map(|i| date(2026, 11, 30) + jiff::Span::new().days(i))
        .collect()
}

/// Which days of the week the account's plan counts as trading days.
fn trading_days(app: &TestApp) -> Vec<bool> {
    let policy = app.engine.renewal_policy(ACCOUNT).unwrap();
    week()
        .into_iter()
        .map(|d| policy.is_trading_day(d))
        .collect()
}

async fn first_fetch(app: &TestApp) {
    eventually("the first calendar fetch", || {
        (app.engine.calendar_counts().0 >= 1).then_some(())
    })
    .await;
}

const BY_CALENDAR: [bool; 7] = [true, true, true, true, false, true, false];
const BY_WEEKDAYS: [bool; 7] = [true, true, true, true, true, false, false];

#[tokio::test]
async fn the_plan_renews_by_the_simulators_calendar_week() {
    // A token that died Friday 03:30; the daemon starts Friday 06:00, a closed day.
    let friday = date(2026, 12, 4);
    let app = spawn_app(
        Setup::at(ist(friday, 6, 0, 0))
            .token_issued_at(ist(date(2026, 12, 3), 10, 0, 0))
            .sim(|c| c.market_calendar = december_week()),
    )
    .await;
    first_fetch(&app).await;
    let view = app.engine.calendar_view();
    assert_eq!(view.source, CalendarSource::Upstox, "{:?}", view.error);
    // Mon, settlement Tue, Wed, Thu trade; the closed Friday does not, the Saturday
    // session does, Sunday does not.
    assert_eq!(trading_days(&app), BY_CALENDAR);
    // So the expired token waits for Saturday's window, not Monday's...
    let saturday_window = ist(date(2026, 12, 5), 5, 30, 0);
    let next = eventually("a plan made by the calendar", || {
        app.engine
            .status(ACCOUNT)
            .and_then(|s| s.next)
            .filter(|p| p.at == saturday_window)
    })
    .await;
    assert_eq!(next.action, Action::RenewAt, "{}", next.reason);
    app.let_daemon_run().await;
    assert_eq!(
        app.counters().token_exchanges,
        0,
        "no renewal on the closed Friday"
    );
    // ... and renews then.
    let old = app.current().map(|c| c.fingerprint.clone());
    app.clock.set(saturday_window);
    app.wait_for_renewal(old.as_deref()).await;
}

#[tokio::test]
async fn an_unreachable_calendar_falls_back_to_the_stored_copy_and_warns_once() {
    let friday = date(2026, 12, 4);
    let mut app =
        spawn_app(Setup::at(ist(friday, 6, 0, 0)).sim(|c| c.market_calendar = december_week()))
            .await;
    first_fetch(&app).await;
    assert_eq!(app.engine.calendar_view().source, CalendarSource::Upstox);
    // Upstox's calendar goes away; a restarted daemon plans by the copy it stored.
    app.sim
        .state()
        .patch_faults(FaultsPatch {
            calendar_down: Some(true),
            ..FaultsPatch::default()
        })
        .unwrap();
    app.restart(|_| {}).await;
    first_fetch(&app).await;
    let view = app.engine.calendar_view();
    assert_eq!(view.source, CalendarSource::Stored);
    assert_eq!(view.fetched_at, Some(ist(friday, 6, 0, 0)));
    assert!(view.error.is_some());
    assert_eq!(trading_days(&app), BY_CALENDAR);
    // Retried hourly, warned about once.
    for hours in 1..=3 {
        app.clock.set(ist(friday, 6 + hours, 0, 1));
        eventually("another fetch attempt", || {
            (app.engine.calendar_counts().0 > u64::try_from(hours).unwrap()).then_some(())
        })
        .await;
    }
    assert_eq!(app.engine.calendar_counts().1, 1, "one warning per outage");
}

#[tokio::test]
async fn with_nothing_stored_an_unreachable_calendar_means_weekdays_until_it_is_back() {
    let friday = date(2026, 12, 4);
    let app = spawn_app(
        Setup::at(ist(friday, 6, 0, 0))
            .sim(|c| c.market_calendar = december_week())
            .faults(FaultsPatch {
                calendar_down: Some(true),
                ..FaultsPatch::default()
            }),
    )
    .await;
    first_fetch(&app).await;
    let view = app.engine.calendar_view();
    assert_eq!(view.source, CalendarSource::Weekdays);
    assert!(view.calendar.is_none());
    assert_eq!(trading_days(&app), BY_WEEKDAYS);
    // Upstox answers again: the next hourly attempt brings the calendar in.
    app.sim
        .state()
        .patch_faults(FaultsPatch {
            calendar_down: Some(false),
            ..FaultsPatch::default()
        })
        .unwrap();
    app.clock.set(ist(friday, 7, 0, 1));
    eventually("the calendar fetched again", || {
        (app.engine.calendar_view().source == CalendarSource::Upstox).then_some(())
    })
    .await;
    assert_eq!(trading_days(&app), BY_CALENDAR);
    assert_eq!(app.engine.calendar_counts().1, 1);
}

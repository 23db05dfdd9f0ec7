//! The TokenStore contract: one set of behaviour tests, run on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)] // tests may unwrap (team rule); helpers here are not #[test] fns

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{at, new_token, t0, token_text};
use upkeep_core::{AccessToken, Secret};
use upkeep_store::{
    AuditEvent, FeedConnectionEvent, StoreError, TickQuery, TickRecord, TokenStore,
};

type Store = Arc<dyn TokenStore>;

fn event(account: &str, hours: i64, kind: &str) -> AuditEvent {
    AuditEvent {
        account: account.into(),
        at: at(hours),
        actor: "schedule".into(),
        kind: kind.into(),
        outcome: "ok".into(),
        detail: format!("{kind} for {account}"),
    }
}

async fn accounts_are_upserted_listed_and_removed(s: Store) {
    s.upsert_account("zeta", "live", at(0)).await.unwrap();
    s.upsert_account("alpha", "sandbox", at(1)).await.unwrap();
    s.upsert_account("zeta", "sim", at(5)).await.unwrap();
    let list = s.list_accounts().await.unwrap();
    let got: Vec<_> = list
        .iter()
        .map(|a| (a.id.as_str(), a.env.as_str(), a.created_at))
        .collect();
    assert_eq!(
        got,
        vec![("alpha", "sandbox", at(1)), ("zeta", "sim", at(0))]
    );

    assert!(s.remove_account("zeta").await.unwrap());
    assert!(!s.remove_account("zeta").await.unwrap());
    assert_eq!(s.list_accounts().await.unwrap().len(), 1);
}

async fn removing_an_account_removes_its_tokens_secrets_and_lease_but_keeps_history(s: Store) {
    s.upsert_account("a", "live", t0()).await.unwrap();
    s.put_token("a", new_token("A", at(10)), t0())
        .await
        .unwrap();
    s.put_secret("a", "refresh", &Secret::new("r1"))
        .await
        .unwrap();
    assert!(
        s.try_acquire_lease("a", "p1", t0(), Duration::from_secs(600))
            .await
            .unwrap()
    );
    s.record_event(event("a", 0, "token_imported"))
        .await
        .unwrap();

    assert!(s.remove_account("a").await.unwrap());
    s.upsert_account("a", "live", at(1)).await.unwrap();
    assert!(s.current_token("a").await.unwrap().is_none());
    assert!(s.get_secret("a", "refresh").await.unwrap().is_none());
    assert!(
        s.try_acquire_lease("a", "p2", at(1), Duration::from_secs(600))
            .await
            .unwrap()
    );
    assert_eq!(s.events(Some("a"), 10).await.unwrap().len(), 1);
}

async fn stored_token_comes_back_with_its_metadata_and_fingerprint(s: Store) {
    s.upsert_account("a", "live", t0()).await.unwrap();
    let put = s
        .put_token("a", new_token("A", at(10)), t0())
        .await
        .unwrap();
    let got = s.current_token("a").await.unwrap().unwrap();
    assert_eq!(got, put);
    assert_eq!(got.token.expose(), token_text("A"));
    assert_eq!(
        got.fingerprint,
        AccessToken::new(token_text("A")).fingerprint()
    );
    assert_eq!(got.expires_at, at(10));
    assert_eq!(got.issued_at, Some(at(0)));
    assert_eq!((got.kind.as_str(), got.source.as_str()), ("daily", "test"));
    assert_eq!(got.stored_at, t0());
    assert!(s.previous_token("a").await.unwrap().is_none());
    assert!(s.current_token("other").await.unwrap().is_none());
}

async fn new_token_keeps_the_still_valid_old_one_as_previous(s: Store) {
    s.upsert_account("a", "live", t0()).await.unwrap();
    s.put_token("a", new_token("A", at(10)), t0())
        .await
        .unwrap();
    s.put_token("a", new_token("B", at(11)), at(1))
        .await
        .unwrap();
    assert_eq!(
        s.current_token("a").await.unwrap().unwrap().token.expose(),
        token_text("B")
    );
    assert_eq!(
        s.previous_token("a").await.unwrap().unwrap().token.expose(),
        token_text("A")
    );

    // Only one previous is kept: A goes, B becomes previous.
    s.put_token("a", new_token("C", at(12)), at(2))
        .await
        .unwrap();
    assert_eq!(
        s.previous_token("a").await.unwrap().unwrap().token.expose(),
        token_text("B")
    );
}

async fn expired_old_token_is_dropped_not_kept_as_previous(s: Store) {
    s.upsert_account("a", "live", t0()).await.unwrap();
    s.put_token("a", new_token("A", at(5)), t0()).await.unwrap();
    s.put_token("a", new_token("B", at(10)), at(1))
        .await
        .unwrap();
    assert!(s.previous_token("a").await.unwrap().is_some());

    // At hour 11, B (expired at 10) is not worth keeping; A is dropped as well.
    s.put_token("a", new_token("C", at(30)), at(11))
        .await
        .unwrap();
    assert!(s.previous_token("a").await.unwrap().is_none());
    // Exactly at expiry counts as expired.
    s.put_token("a", new_token("D", at(40)), at(30))
        .await
        .unwrap();
    assert!(s.previous_token("a").await.unwrap().is_none());
}

async fn storing_the_current_token_again_keeps_the_previous(s: Store) {
    s.upsert_account("a", "live", t0()).await.unwrap();
    s.put_token("a", new_token("A", at(10)), t0())
        .await
        .unwrap();
    s.put_token("a", new_token("B", at(11)), at(1))
        .await
        .unwrap();
    let mut again = new_token("B", at(11));
    again.source = "import".into();
    s.put_token("a", again, at(2)).await.unwrap();
    let cur = s.current_token("a").await.unwrap().unwrap();
    assert_eq!(
        (cur.token.expose(), cur.source.as_str()),
        (token_text("B").as_str(), "import")
    );
    assert_eq!(
        s.previous_token("a").await.unwrap().unwrap().token.expose(),
        token_text("A")
    );
}

async fn token_or_secret_for_unknown_account_is_refused(s: Store) {
    let err = s
        .put_token("ghost", new_token("A", at(10)), t0())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::UnknownAccount { account } if account == "ghost"),
        "{err}"
    );
    let err = s
        .put_secret("ghost", "pin", &Secret::new("1234"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownAccount { .. }), "{err}");
}

async fn clear_token_forgets_current_and_previous(s: Store) {
    s.upsert_account("a", "live", t0()).await.unwrap();
    s.upsert_account("b", "live", t0()).await.unwrap();
    s.put_token("a", new_token("A", at(10)), t0())
        .await
        .unwrap();
    s.put_token("a", new_token("B", at(11)), at(1))
        .await
        .unwrap();
    s.put_token("b", new_token("X", at(11)), at(1))
        .await
        .unwrap();
    assert!(s.clear_token("a").await.unwrap());
    assert!(!s.clear_token("a").await.unwrap());
    assert!(s.current_token("a").await.unwrap().is_none());
    assert!(s.previous_token("a").await.unwrap().is_none());
    assert!(
        s.current_token("b").await.unwrap().is_some(),
        "other accounts untouched"
    );
}

async fn secrets_round_trip_per_account_and_can_be_replaced_or_deleted(s: Store) {
    s.upsert_account("a", "live", t0()).await.unwrap();
    s.upsert_account("b", "live", t0()).await.unwrap();
    s.put_secret("a", "refresh_token", &Secret::new("r-1"))
        .await
        .unwrap();
    s.put_secret("a", "refresh_token", &Secret::new("r-2"))
        .await
        .unwrap();
    s.put_secret("a", "totp_seed", &Secret::new("JBSWY3DPEHPK3PXP"))
        .await
        .unwrap();
    assert_eq!(
        s.get_secret("a", "refresh_token").await.unwrap(),
        Some(Secret::new("r-2"))
    );
    assert_eq!(
        s.get_secret("a", "totp_seed").await.unwrap(),
        Some(Secret::new("JBSWY3DPEHPK3PXP"))
    );
    assert_eq!(s.get_secret("b", "refresh_token").await.unwrap(), None);
    assert!(s.delete_secret("a", "refresh_token").await.unwrap());
    assert!(!s.delete_secret("a", "refresh_token").await.unwrap());
    assert_eq!(s.get_secret("a", "refresh_token").await.unwrap(), None);
}

async fn events_older_than_the_retention_are_pruned_and_newer_ones_kept(s: Store) {
    s.upsert_account("a", "live", at(0)).await.unwrap();
    for h in [0, 10, 20, 30] {
        s.record_event(event("a", h, "renewal_succeeded"))
            .await
            .unwrap();
    }
    assert_eq!(s.prune_events(at(15)).await.unwrap(), 2);
    let left: Vec<_> = s
        .events(Some("a"), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.at)
        .collect();
    assert_eq!(left, vec![at(30), at(20)]);
    assert_eq!(
        s.prune_events(at(15)).await.unwrap(),
        0,
        "nothing more to prune"
    );
    // Backups carry only what is left, so they stop growing with the log.
    assert_eq!(s.export().await.unwrap().events.len(), 2);
}

async fn events_come_newest_first_filtered_and_limited(s: Store) {
    let mut ids = Vec::new();
    for (i, acct) in ["a", "b", "a", "a", "b"].iter().enumerate() {
        ids.push(
            s.record_event(event(acct, i as i64, &format!("k{i}")))
                .await
                .unwrap(),
        );
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");

    let newest3 = s.events(None, 3).await.unwrap();
    let kinds: Vec<_> = newest3.iter().map(|(_, e)| e.kind.as_str()).collect();
    assert_eq!(kinds, vec!["k4", "k3", "k2"]);
    assert_eq!(newest3[0].0, ids[4]);
    assert_eq!(newest3[0].1, event("b", 4, "k4"));

    let only_a = s.events(Some("a"), 10).await.unwrap();
    let kinds: Vec<_> = only_a.iter().map(|(_, e)| e.kind.as_str()).collect();
    assert_eq!(kinds, vec!["k3", "k2", "k0"]);
    assert!(s.events(Some("nobody"), 10).await.unwrap().is_empty());
    assert!(s.events(None, 0).await.unwrap().is_empty());
}

async fn lease_is_held_by_one_holder_until_it_is_released(s: Store) {
    // (Expiry is per backend: SQLite on the caller's clock, PostgreSQL on its own; see
    // tests/sqlite.rs and tests/postgres.rs.)
    let ttl = Duration::from_secs(600);
    assert!(s.try_acquire_lease("a", "p1", t0(), ttl).await.unwrap());
    assert!(!s.try_acquire_lease("a", "p2", t0(), ttl).await.unwrap());
    // The holder may extend it.
    assert!(s.try_acquire_lease("a", "p1", t0(), ttl).await.unwrap());
    assert_eq!(s.lease_holder("a").await.unwrap().unwrap().0, "p1");
    // Other accounts are independent.
    assert!(s.try_acquire_lease("b", "p2", t0(), ttl).await.unwrap());
    // Only the holder can release.
    assert!(!s.release_lease("a", "p2").await.unwrap());
    assert!(s.release_lease("a", "p1").await.unwrap());
    assert!(s.lease_holder("a").await.unwrap().is_none());
    assert!(s.try_acquire_lease("a", "p2", t0(), ttl).await.unwrap());
    assert!(!s.try_acquire_lease("a", "p1", t0(), ttl).await.unwrap());
}

async fn concurrent_lease_attempts_have_exactly_one_winner(s: Store) {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.try_acquire_lease("a", &format!("holder-{i}"), t0(), Duration::from_secs(60))
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1);
}

async fn populate(s: &Store) {
    s.upsert_account("a", "live", t0()).await.unwrap();
    s.upsert_account("b", "sandbox", at(1)).await.unwrap();
    s.put_token("a", new_token("A1", at(10)), t0())
        .await
        .unwrap();
    s.put_token("a", new_token("A2", at(20)), at(1))
        .await
        .unwrap();
    s.put_token("b", new_token("B1", at(20)), at(1))
        .await
        .unwrap();
    s.put_secret("a", "refresh_token", &Secret::new("refresh-a"))
        .await
        .unwrap();
    s.record_event(event("a", 0, "token_imported"))
        .await
        .unwrap();
    s.record_event(event("b", 1, "renewal_succeeded"))
        .await
        .unwrap();
}

async fn import_of_an_export_restores_exactly_that_state(s: Store) {
    populate(&s).await;
    let before = s.export().await.unwrap();
    assert_eq!(before.stats().tokens, 3);

    // Change everything, then import the old export.
    s.upsert_account("c", "live", at(2)).await.unwrap();
    s.put_token("a", new_token("A3", at(30)), at(2))
        .await
        .unwrap();
    s.put_secret("a", "refresh_token", &Secret::new("changed"))
        .await
        .unwrap();
    s.record_event(event("c", 2, "renewal_failed"))
        .await
        .unwrap();
    s.import(before.clone()).await.unwrap();

    assert_eq!(s.export().await.unwrap(), before);
    assert_eq!(
        s.previous_token("a").await.unwrap().unwrap().token.expose(),
        token_text("A1")
    );
    // New events continue after the imported ids.
    let max_id = before.events.iter().map(|(id, _)| *id).max().unwrap();
    let next = s
        .record_event(event("a", 3, "renewal_started"))
        .await
        .unwrap();
    assert!(next > max_id, "{next} > {max_id}");
}

async fn failed_import_changes_nothing(s: Store) {
    populate(&s).await;
    let before = s.export().await.unwrap();
    let mut bad = before.clone();
    bad.accounts.retain(|a| a.id != "b"); // b's token now points nowhere
    bad.events.clear();
    let err = s.import(bad).await.unwrap_err();
    assert!(matches!(err, StoreError::UnknownAccount { .. }), "{err}");

    // A backup whose rows collide (same event id twice) fails inside the transaction.
    let mut dup = before.clone();
    dup.accounts.clear();
    dup.tokens.clear();
    dup.secrets.clear();
    let first = dup.events[0].clone();
    dup.events.push(first);
    assert!(s.import(dup).await.is_err());
    assert_eq!(s.export().await.unwrap(), before);
}

async fn health_is_ok_on_an_open_store_and_an_error_once_it_cannot_answer(s: Store) {
    s.health().await.unwrap();
    assert!(["sqlite", "postgres"].contains(&s.backend()));
    // The same store with its connections gone: health must say so, not "ok".
    s.close().await;
    assert!(
        s.health().await.is_err(),
        "health() is Ok on a closed store"
    );
}

async fn api_keys_are_kept_by_digest_revoked_and_never_renamed(s: Store) {
    let d1 = [1u8; 32];
    let d2 = [2u8; 32];
    s.create_api_key("bot1", &d1, "token:read", at(0))
        .await
        .unwrap();
    s.create_api_key("ops", &d2, "admin", at(1)).await.unwrap();
    // A name is never reused, and a digest belongs to one key.
    assert!(matches!(
        s.create_api_key("bot1", &[3u8; 32], "admin", at(2)).await,
        Err(StoreError::ApiKeyExists { .. })
    ));
    assert!(
        s.create_api_key("other", &d1, "admin", at(2))
            .await
            .is_err()
    );
    let keys = s.api_keys().await.unwrap();
    let got: Vec<_> = keys
        .iter()
        .map(|k| (k.name.as_str(), k.digest, k.scope.as_str(), k.revoked_at))
        .collect();
    assert_eq!(
        got,
        vec![("bot1", d1, "token:read", None), ("ops", d2, "admin", None)]
    );
    assert!(s.revoke_api_key("bot1", at(3)).await.unwrap());
    assert!(
        !s.revoke_api_key("bot1", at(4)).await.unwrap(),
        "already revoked"
    );
    assert!(!s.revoke_api_key("nobody", at(4)).await.unwrap());
    let bot1 = s
        .api_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.name == "bot1")
        .unwrap();
    assert_eq!(bot1.revoked_at, Some(at(3)));
    assert!(matches!(
        s.create_api_key("bot1", &[4u8; 32], "admin", at(5)).await,
        Err(StoreError::ApiKeyExists { .. })
    ));
}

async fn a_years_trading_calendar_is_kept_and_replaced_per_year(s: Store) {
    use jiff::civil::date;
    use upkeep_core::calendar::{CalendarDay, Session, TradingCalendar};
    use upkeep_store::StoredCalendar;

    assert_eq!(s.calendar(2026).await.unwrap(), None);
    let saturday = date(2026, 12, 5);
    let session = Session {
        exchange: "NSE".into(),
        start: at(1),
        end: at(7),
    };
    let day = |d, kind: &str, closed: Vec<String>, open: Vec<Session>| CalendarDay {
        date: d,
        description: "listed".into(),
        kind: kind.into(),
        closed,
        open,
    };
    let y2026 = StoredCalendar {
        year: 2026,
        calendar: TradingCalendar::new(
            [2026],
            vec![
                day(date(2026, 12, 1), "SETTLEMENT_HOLIDAY", vec![], vec![]),
                day(
                    saturday,
                    "TRADING_HOLIDAY",
                    vec!["MCX".into()],
                    vec![session],
                ),
            ],
        ),
        fetched_at: at(0),
    };
    s.put_calendar(&y2026).await.unwrap();
    let y2027 = StoredCalendar {
        year: 2027,
        calendar: TradingCalendar::new([2027], vec![]),
        fetched_at: at(2),
    };
    s.put_calendar(&y2027).await.unwrap();
    assert_eq!(s.calendar(2026).await.unwrap(), Some(y2026.clone()));
    assert_eq!(s.calendar(2027).await.unwrap(), Some(y2027));
    // A later fetch replaces that year only.
    let refetched = StoredCalendar {
        calendar: TradingCalendar::new(
            [2026],
            vec![day(
                date(2026, 12, 4),
                "TRADING_HOLIDAY",
                vec!["NSE".into()],
                vec![],
            )],
        ),
        fetched_at: at(3),
        ..y2026
    };
    s.put_calendar(&refetched).await.unwrap();
    assert_eq!(s.calendar(2026).await.unwrap(), Some(refetched));
    assert_eq!(s.calendar(2027).await.unwrap().unwrap().fetched_at, at(2));
}

async fn cached_answers_are_kept_per_account_replaced_and_pruned(s: Store) {
    use upkeep_store::CachedAnswerRecord;
    let answer = |account: &str, query: &str, body: &str, hours: i64| CachedAnswerRecord {
        account: account.into(),
        path: "/v3/market-quote/ltp".into(),
        query: query.into(),
        status: 200,
        content_type: Some("application/json".into()),
        body: body.as_bytes().to_vec(),
        stored_at: at(hours),
    };
    assert!(matches!(
        s.put_cached_answer(&answer("ghost", "k=1", "{}", 0)).await,
        Err(StoreError::UnknownAccount { .. })
    ));
    s.upsert_account("a", "live", t0()).await.unwrap();
    s.upsert_account("b", "live", t0()).await.unwrap();
    s.put_cached_answer(&answer("a", "k=1", "old", 0))
        .await
        .unwrap();
    s.put_cached_answer(&answer("a", "k=1", "new", 1))
        .await
        .unwrap();
    s.put_cached_answer(&answer("a", "k=2", "two", 0))
        .await
        .unwrap();
    let got = s
        .cached_answer("a", "/v3/market-quote/ltp", "k=1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, answer("a", "k=1", "new", 1));
    assert_eq!(
        s.cached_answer("b", "/v3/market-quote/ltp", "k=1")
            .await
            .unwrap(),
        None,
        "another account's answer is not shared"
    );
    let mut bare = answer("b", "", "[]", 2);
    bare.content_type = None;
    s.put_cached_answer(&bare).await.unwrap();
    assert_eq!(
        s.cached_answer("b", "/v3/market-quote/ltp", "")
            .await
            .unwrap(),
        Some(bare)
    );
    assert_eq!(s.prune_cached_answers(at(1)).await.unwrap(), 1);
    assert!(
        s.cached_answer("a", "/v3/market-quote/ltp", "k=2")
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.remove_account("a").await.unwrap());
    assert!(
        s.cached_answer("a", "/v3/market-quote/ltp", "k=1")
            .await
            .unwrap()
            .is_none(),
        "removed with its account"
    );
}

fn tick(instrument: &str, ltt_ms: i64, ltp: f64, depth: bool) -> TickRecord {
    TickRecord {
        account: "main".into(),
        instrument: instrument.into(),
        ltt_ms,
        ltp,
        ltq: 75,
        volume: depth.then_some(1_234_567),
        oi: depth.then_some(89_000.5),
        bid_price: depth.then_some(ltp - 0.05),
        bid_qty: depth.then_some(300),
        ask_price: depth.then_some(ltp + 0.05),
        ask_qty: depth.then_some(150),
        received_ms: ltt_ms + 7,
    }
}

async fn relay_ticks_and_feed_events_are_written_in_batches_and_read_back_by_time_and_instrument(
    s: Store,
) {
    let a = "NSE_EQ|INE669E01016";
    let b = "NSE_FO|45450";
    let batch = vec![
        tick(a, 1_000, 219.3, false),
        tick(b, 1_500, 88.0, true),
        tick(a, 2_000, 219.35, true),
        tick(a, 3_000, 219.4, false),
    ];
    let events = vec![
        FeedConnectionEvent {
            account: "main".into(),
            connection: 0,
            at_ms: 900,
            kind: "up".into(),
            cause: "open".into(),
            detail: String::new(),
        },
        FeedConnectionEvent {
            account: "main".into(),
            connection: 1,
            at_ms: 2_500,
            kind: "down".into(),
            cause: "stall".into(),
            detail: "no data, ping or pong for 30 s".into(),
        },
    ];
    s.record_ticks(&batch, &events).await.unwrap();
    s.record_ticks(&[], &[]).await.unwrap();
    let q = |from_ms, to_ms, instrument: Option<&str>| TickQuery {
        from_ms,
        to_ms,
        instrument: instrument.map(str::to_owned),
        limit: 100,
    };
    assert_eq!(s.ticks(&q(0, 10_000, None)).await.unwrap(), batch);
    let only_a = s.ticks(&q(1_000, 3_000, Some(a))).await.unwrap();
    assert_eq!(
        only_a,
        vec![batch[0].clone(), batch[2].clone()],
        "to is exclusive"
    );
    assert!(
        s.ticks(&q(0, 10_000, Some("NSE_EQ|none")))
            .await
            .unwrap()
            .is_empty()
    );
    let limited = s
        .ticks(&TickQuery {
            limit: 1,
            ..q(0, 10_000, None)
        })
        .await
        .unwrap();
    assert_eq!(limited, vec![batch[0].clone()]);
    assert_eq!(s.feed_connection_events(0, 10_000).await.unwrap(), events);
    assert_eq!(
        s.feed_connection_events(1_000, 10_000).await.unwrap(),
        events[1..].to_vec()
    );
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::common::with_sqlite(super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::common::with_pg(super::$name).await;
                }
            )*
        }
    };
}

contract!(
    a_years_trading_calendar_is_kept_and_replaced_per_year,
    accounts_are_upserted_listed_and_removed,
    removing_an_account_removes_its_tokens_secrets_and_lease_but_keeps_history,
    stored_token_comes_back_with_its_metadata_and_fingerprint,
    new_token_keeps_the_still_valid_old_one_as_previous,
    expired_old_token_is_dropped_not_kept_as_previous,
    storing_the_current_token_again_keeps_the_previous,
    token_or_secret_for_unknown_account_is_refused,
    clear_token_forgets_current_and_previous,
    secrets_round_trip_per_account_and_can_be_replaced_or_deleted,
    events_come_newest_first_filtered_and_limited,
    lease_is_held_by_one_holder_until_it_is_released,
    events_older_than_the_retention_are_pruned_and_newer_ones_kept,
    concurrent_lease_attempts_have_exactly_one_winner,
    import_of_an_export_restores_exactly_that_state,
    failed_import_changes_nothing,
    health_is_ok_on_an_open_store_and_an_error_once_it_cannot_answer,
    api_keys_are_kept_by_digest_revoked_and_never_renamed,
    cached_answers_are_kept_per_account_replaced_and_pruned,
    relay_ticks_and_feed_events_are_written_in_batches_and_read_back_by_time_and_instrument,
);

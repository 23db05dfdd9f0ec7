//! The hub fed by a synthetic frame source: encoded `FeedResponse`s published in process
//! (the upstream side is tested against the simulator elsewhere).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prost::Message;
use upkeep_proto::feed as pb;
use upkeep_upstox::feed::{self, FeedRequest, FeedType, SubscriptionMode};

use super::*;

/// Records what consumers asked upstream, refcounted per key, like the pool's book.
#[derive(Clone, Default)]
struct Book {
    wants: Arc<Mutex<HashMap<String, BTreeMap<u64, SubscriptionMode>>>>,
    next: Arc<Mutex<u64>>,
    refuse_over: Option<usize>,
}

impl Book {
    fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.wants.lock().unwrap().keys().cloned().collect();
        k.sort();
        k
    }
}

struct Sub {
    id: u64,
    book: Book,
}

impl UpstreamLink for Book {
    fn open(&self) -> Box<dyn UpstreamSubscriber> {
        let mut n = self.next.lock().unwrap();
        *n += 1;
        Box::new(Sub {
            id: *n,
            book: self.clone(),
        })
    }
}

impl UpstreamSubscriber for Sub {
    fn subscribe(&self, mode: SubscriptionMode, keys: &[String]) -> Result<(), String> {
        let mut w = self.book.wants.lock().unwrap();
        if let Some(max) = self.book.refuse_over
            && w.len() + keys.len() > max
        {
            return Err(format!("cannot stream more than {max} keys"));
        }
        for k in keys {
            w.entry(k.clone()).or_default().insert(self.id, mode);
        }
        Ok(())
    }
    fn change_mode(&self, mode: SubscriptionMode, keys: &[String]) -> Result<(), String> {
        self.subscribe(mode, keys)
    }
    fn unsubscribe(&self, keys: &[String]) {
        let mut w = self.book.wants.lock().unwrap();
        for k in keys {
            if let Some(m) = w.get_mut(k) {
                m.remove(&self.id);
                if m.is_empty() {
                    w.remove(k);
                }
            }
        }
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let mut w = self.book.wants.lock().unwrap();
        w.retain(|_, m| {
            m.remove(&self.id);
            !m.is_empty()
        });
    }
}

fn ltpc(ltp: f64) -> pb::Feed {
    pb::Feed {
        request_mode: 0,
        feed_union: Some(pb::feed::FeedUnion::Ltpc(pb::Ltpc {
            ltp,
            ltt: 1,
            ..Default::default()
        })),
    }
}

fn full(ltp: f64) -> pb::Feed {
    pb::Feed {
        request_mode: 1,
        feed_union: Some(pb::feed::FeedUnion::FullFeed(pb::FullFeed {
            full_feed_union: Some(pb::full_feed::FullFeedUnion::MarketFf(pb::MarketFullFeed {
                ltpc: Some(pb::Ltpc {
                    ltp,
                    ..Default::default()
                }),
                ..Default::default()
            })),
        })),
    }
}

fn tick(ts: i64, feeds: &[(&str, pb::Feed)]) -> Bytes {
    Bytes::from(
        pb::FeedResponse {
            r#type: 1,
            feeds: feeds
                .iter()
                .map(|(k, f)| ((*k).to_owned(), f.clone()))
                .collect(),
            current_ts: ts,
            market_info: None,
        }
        .encode_to_vec(),
    )
}

fn market_info() -> Bytes {
    Bytes::from(
        pb::FeedResponse {
            r#type: 2,
            current_ts: 7,
            market_info: Some(pb::MarketInfo {
                segment_status: [("NSE_EQ".to_owned(), 2), ("NSE_FO".to_owned(), 2)].into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec(),
    )
}

fn sub(c: &Consumer, mode: SubscriptionMode, keys: &[&str]) {
    c.request(&FeedRequest::subscribe(mode, keys.iter().copied()))
        .unwrap();
}

/// Everything queued for `c`, decoded: (type, sorted keys, ltp of each).
fn drain(c: &Consumer) -> Vec<(FeedType, Vec<(String, f64)>)> {
    let mut out = Vec::new();
    while let Some(d) = c.try_next() {
        let Delivery::Frame(b) = d else { break };
        let f = feed::decode(&b).unwrap();
        let mut feeds: Vec<(String, f64)> = f
            .feeds
            .iter()
            .map(|(k, x)| ((*k).to_owned(), x.ltpc().map_or(f64::NAN, |l| l.ltp)))
            .collect();
        feeds.sort_by(|a, b| a.0.cmp(&b.0));
        out.push((f.kind, feeds));
    }
    out
}

fn hub(queue: usize) -> (Hub, Book) {
    let book = Book::default();
    (Hub::new(HubConfig { queue }, book.clone()), book)
}

#[test]
fn each_consumer_gets_only_the_instruments_it_subscribed_to() {
    let (hub, _) = hub(16);
    let a = hub.connect("a", ConsumerKind::Protobuf);
    let b = hub.connect("b", ConsumerKind::Json);
    sub(&a, SubscriptionMode::Ltpc, &["NSE_EQ|A", "NSE_EQ|B"]);
    sub(&b, SubscriptionMode::Ltpc, &["NSE_EQ|B"]);
    hub.publish(tick(
        10,
        &[("NSE_EQ|A", ltpc(1.0)), ("NSE_EQ|B", ltpc(2.0))],
    ));
    hub.publish(tick(11, &[("NSE_EQ|C", ltpc(3.0))]));
    assert_eq!(
        drain(&a),
        vec![(
            FeedType::LiveFeed,
            vec![("NSE_EQ|A".into(), 1.0), ("NSE_EQ|B".into(), 2.0)]
        )]
    );
    assert_eq!(
        drain(&b),
        vec![(FeedType::LiveFeed, vec![("NSE_EQ|B".into(), 2.0)])]
    );
}

#[test]
fn a_new_consumer_starts_with_market_info_then_a_snapshot_from_the_cache() {
    let (hub, _) = hub(16);
    hub.publish(market_info());
    hub.publish(tick(
        10,
        &[("NSE_EQ|A", ltpc(1.0)), ("NSE_EQ|B", ltpc(2.0))],
    ));
    hub.publish(tick(11, &[("NSE_EQ|A", ltpc(1.5))]));
    let c = hub.connect("late", ConsumerKind::Protobuf);
    sub(&c, SubscriptionMode::Ltpc, &["NSE_EQ|A", "NSE_EQ|Z"]);
    hub.publish(tick(12, &[("NSE_EQ|A", ltpc(1.6))]));
    let got = drain(&c);
    assert_eq!(got[0], (FeedType::MarketInfo, vec![]));
    assert_eq!(
        got[1],
        (FeedType::InitialFeed, vec![("NSE_EQ|A".into(), 1.5)]),
        "the snapshot holds the last state of the keys it asked for that the relay has"
    );
    assert_eq!(got[2], (FeedType::LiveFeed, vec![("NSE_EQ|A".into(), 1.6)]));
    assert_eq!(got.len(), 3);
}

#[test]
fn a_repeated_market_info_is_not_passed_on_a_changed_one_is() {
    let (hub, _) = hub(16);
    let c = hub.connect("c", ConsumerKind::Protobuf);
    hub.publish(market_info());
    // The second upstream connection's: the same status, its map in another order.
    hub.publish(Bytes::from(
        pb::FeedResponse {
            r#type: 2,
            current_ts: 9,
            market_info: Some(pb::MarketInfo {
                segment_status: [("NSE_FO".to_owned(), 2), ("NSE_EQ".to_owned(), 2)].into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec(),
    ));
    let closed = Bytes::from(
        pb::FeedResponse {
            r#type: 2,
            current_ts: 8,
            market_info: Some(pb::MarketInfo {
                segment_status: [("NSE_EQ".to_owned(), 3)].into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    hub.publish(closed);
    let got = drain(&c);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|(k, _)| *k == FeedType::MarketInfo));
}

#[test]
fn one_consumers_unsubscribe_keeps_a_key_another_still_wants() {
    let (hub, book) = hub(16);
    let a = hub.connect("a", ConsumerKind::Protobuf);
    let b = hub.connect("b", ConsumerKind::Protobuf);
    sub(&a, SubscriptionMode::Ltpc, &["NSE_EQ|A"]);
    sub(&b, SubscriptionMode::Full, &["NSE_EQ|A", "NSE_EQ|B"]);
    a.request(&FeedRequest::unsubscribe(["NSE_EQ|A"])).unwrap();
    assert_eq!(book.keys(), vec!["NSE_EQ|A", "NSE_EQ|B"]);
    hub.publish(tick(10, &[("NSE_EQ|A", full(1.0))]));
    assert!(drain(&a).is_empty());
    assert_eq!(drain(&b).len(), 1);
    drop(b);
    assert!(
        book.keys().is_empty(),
        "a dropped consumer releases its keys"
    );
}

#[test]
fn a_refused_subscription_is_the_consumers_error_and_changes_nothing() {
    let book = Book {
        refuse_over: Some(1),
        ..Book::default()
    };
    let hub = Hub::new(HubConfig::default(), book.clone());
    let c = hub.connect("c", ConsumerKind::Protobuf);
    let err = c
        .request(&FeedRequest::subscribe(
            SubscriptionMode::Ltpc,
            ["NSE_EQ|A", "NSE_EQ|B"],
        ))
        .unwrap_err();
    assert!(err.contains("more than 1 keys"), "{err}");
    hub.publish(tick(10, &[("NSE_EQ|A", ltpc(1.0))]));
    assert!(drain(&c).is_empty());
    assert_eq!(hub.health().consumers[0].keys, 0);
}

#[test]
fn bad_requests_are_refused_with_a_reason() {
    let (hub, _) = hub(16);
    let c = hub.connect("c", ConsumerKind::Protobuf);
    let err = c.request_bytes(b"{\"method\":\"subscribe\"}").unwrap_err();
    assert!(err.contains("unknown"), "{err}");
}

#[test]
fn a_slow_ltpc_consumer_loses_its_oldest_ticks_and_never_slows_the_others() {
    let (hub, _) = hub(4);
    let slow = hub.connect("slow", ConsumerKind::Protobuf);
    let fast = hub.connect("fast", ConsumerKind::Protobuf);
    sub(&slow, SubscriptionMode::Ltpc, &["NSE_EQ|A"]);
    sub(&fast, SubscriptionMode::Ltpc, &["NSE_EQ|A"]);
    let mut fast_got = 0;
    for i in 0..6 {
        hub.publish(tick(i, &[("NSE_EQ|A", ltpc(i as f64))]));
        fast_got += drain(&fast).len();
    }
    assert_eq!(fast_got, 6);
    let got: Vec<f64> = drain(&slow).into_iter().map(|(_, f)| f[0].1).collect();
    assert_eq!(got, vec![2.0, 3.0, 4.0, 5.0], "the oldest two were dropped");
    let h = hub.health();
    let s = h.consumers.iter().find(|c| c.name == "slow").unwrap();
    assert_eq!((s.drops, s.max_lag), (2, 4));
}

#[test]
fn a_consumer_that_keeps_falling_behind_is_closed_with_the_reason() {
    let (hub, book) = hub(4);
    let slow = hub.connect("slow", ConsumerKind::Protobuf);
    let fast = hub.connect("fast", ConsumerKind::Protobuf);
    sub(&slow, SubscriptionMode::Ltpc, &["NSE_EQ|A", "NSE_EQ|S"]);
    sub(&fast, SubscriptionMode::Ltpc, &["NSE_EQ|A"]);
    for i in 0..20 {
        hub.publish(tick(i, &[("NSE_EQ|A", ltpc(i as f64))]));
        assert_eq!(drain(&fast).len(), 1, "tick {i}");
    }
    let Some(Delivery::Closed(why)) = slow.try_next() else {
        panic!("the slow consumer is still open")
    };
    assert!(why.contains("too slow"), "{why}");
    assert_eq!(hub.health().closed_slow, 1);
    assert_eq!(
        book.keys(),
        vec!["NSE_EQ|A"],
        "a closed consumer's keys are released"
    );
}

#[test]
fn a_full_queue_of_full_mode_data_closes_the_consumer_at_once() {
    let (hub, _) = hub(3);
    let slow = hub.connect("slow", ConsumerKind::Protobuf);
    sub(&slow, SubscriptionMode::Full, &["NSE_EQ|A"]);
    for i in 0..4 {
        hub.publish(tick(i, &[("NSE_EQ|A", full(i as f64))]));
    }
    assert!(
        matches!(slow.try_next(), Some(Delivery::Closed(why)) if why.contains("none can be dropped"))
    );
}

#[test]
fn frames_that_are_not_feed_responses_are_counted_and_dropped() {
    let (hub, _) = hub(4);
    let c = hub.connect("c", ConsumerKind::Protobuf);
    sub(&c, SubscriptionMode::Ltpc, &["NSE_EQ|A"]);
    hub.publish(Bytes::from_static(&[0x0f, 0x01]));
    assert!(drain(&c).is_empty());
    assert_eq!(hub.health().bad_frames, 1);
}

#[tokio::test]
async fn next_waits_for_a_frame() {
    let (hub, _) = hub(4);
    let c = hub.connect("c", ConsumerKind::Protobuf);
    sub(&c, SubscriptionMode::Ltpc, &["NSE_EQ|A"]);
    let h2 = hub.clone();
    let publisher = tokio::spawn(async move {
        tokio::task::yield_now().await;
        h2.publish(tick(1, &[("NSE_EQ|A", ltpc(9.0))]));
    });
    let Delivery::Frame(b) = c.next().await else {
        panic!("closed")
    };
    assert_eq!(feed::decode(&b).unwrap().feeds.len(), 1);
    publisher.await.unwrap();
}

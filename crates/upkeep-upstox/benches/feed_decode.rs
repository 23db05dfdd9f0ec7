//! Feed decode throughput on the benchmark frame of shared/benchmarks.md: one
//! `FeedResponse` with 10 options in full mode, 5 depth levels, 3,299 bytes.
//!
//! `bench/feed-decode.sh` runs this and prints frames/s. Reported per frame:
//! - `upkeep_zero_copy`: `upkeep_upstox::feed::decode` into borrowed typed structs;
//! - `prost_generated`: prost decode into the generated `upkeep_proto` types, for comparison;
//! - `upkeep_to_sdk_json`: decode plus the SDK's JSON view as a `serde_json::Value`;
//! - `upkeep_to_sdk_json_text`: the same, serialized to a `String` (the old `/ws/ticks` path);
//! - `upkeep_sdk_json_writer`: decode plus `SdkJsonWriter` into a reused buffer (same text).
//!
//! `feed_reshape` (the relay's fan-out, per frame): `split_filter_copy` splits the frame
//! and writes a copy with every entry as it came (what a consumer of a subset costs);
//! `split_reshape_ltpc` / `split_reshape_option_greeks` write it with all 10 entries
//! reshaped for a consumer that asked for a poorer mode.

#![allow(clippy::unwrap_used)] // tests and benches may unwrap (TEAM-BRIEF)

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;

fn frame() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/feed/live_full_d5_10.bin");
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn feed_decode(c: &mut Criterion) {
    let bytes = frame();
    assert_eq!(bytes.len(), 3299, "the benchmark frame changed");
    let mut g = c.benchmark_group("feed_decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("upkeep_zero_copy", |b| {
        b.iter(|| {
            let frame = upkeep_upstox::feed::decode(black_box(&bytes)).unwrap();
            black_box(frame.feeds.len())
        })
    });
    g.bench_function("prost_generated", |b| {
        b.iter(|| {
            let msg =
                upkeep_proto::feed::FeedResponse::decode(black_box(bytes.as_slice())).unwrap();
            black_box(msg.feeds.len())
        })
    });
    g.bench_function("upkeep_to_sdk_json", |b| {
        b.iter(|| {
            let frame = upkeep_upstox::feed::decode(black_box(&bytes)).unwrap();
            black_box(upkeep_upstox::feed::to_sdk_json(&frame))
        })
    });
    g.bench_function("upkeep_to_sdk_json_text", |b| {
        b.iter(|| {
            let frame = upkeep_upstox::feed::decode(black_box(&bytes)).unwrap();
            black_box(serde_json::to_string(&upkeep_upstox::feed::to_sdk_json(&frame)).unwrap())
        })
    });
    let mut writer = upkeep_upstox::feed::SdkJsonWriter::new();
    g.bench_function("upkeep_sdk_json_writer", |b| {
        b.iter(|| {
            let frame = upkeep_upstox::feed::decode(black_box(&bytes)).unwrap();
            black_box(writer.render(&frame).len())
        })
    });
    g.finish();
}

fn feed_reshape(c: &mut Criterion) {
    use upkeep_upstox::feed::{self, SubscriptionMode};
    let bytes = frame();
    let mut g = c.benchmark_group("feed_reshape");
    g.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(4096);
    g.bench_function("split_filter_copy", |b| {
        b.iter(|| {
            out.clear();
            let parts = feed::split(black_box(&bytes)).unwrap();
            parts.write_filtered(|_, _| true, &mut out);
            black_box(out.len())
        })
    });
    for (name, mode) in [
        ("split_reshape_ltpc", SubscriptionMode::Ltpc),
        (
            "split_reshape_option_greeks",
            SubscriptionMode::OptionGreeks,
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                let parts = feed::split(black_box(&bytes)).unwrap();
                parts.write_others(&mut out);
                for p in &parts.feeds {
                    feed::reshape(p.field, mode, &mut out).unwrap();
                }
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, feed_decode, feed_reshape);
criterion_main!(benches);

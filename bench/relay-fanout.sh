#!/usr/bin/env bash
# Relay fan-out benchmark (issue 16): local consumers of one account's feed while the
# simulator streams 20 ltpc instruments every millisecond on each of the two upstream
# connections of a normal plan (target 20,000 ticks/s). Each mode runs first with 1
# consumer (the baseline: simulator + upstream + one consumer), then with 100.
#
#   bench/relay-fanout.sh [SECONDS]                  # hub mode, default 10 s per run
#   bench/relay-fanout.sh ws [proto|json|both] [SECONDS]   # websocket mode, default both, 10 s
#
# Hub mode (crates/upkeep-server/examples/relay_fanout.rs): the upstream pool and the
# relay's hub only; the added latency is a frame's arrival at the relay to the consumer
# task dequeuing it (no local websocket).
# Websocket mode (crates/upkeep-server/examples/relay_fanout_ws.rs): the daemon itself
# (App with its HTTP server and relay doors) and N tokio-tungstenite clients on one door:
# `proto` is /upstox/v3/feed/market-data-feed (protobuf, as the official SDK uses it),
# `json` is /ws/ticks; the added latency is a frame's arrival at the relay to the
# client's websocket having read it (method in the example's doc comment).
#
# Reported per run: upstream frames/s and ticks/s actually reached, frames delivered,
# drops and consumers closed, the added latency (p50/p99/max, microseconds), process CPU
# (simulator included; websocket mode also splits off the benchmark clients' own CPU)
# and RSS. Goal: p99 added latency under 1 ms and no drops for consumers that keep up.
# Build dir: $CARGO_TARGET_DIR, default target-rel (kept apart from the debug build).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target-rel}"
cd "$root"
if [[ "${1:-}" == "ws" ]]; then
    doors="${2:-both}"
    seconds="${3:-10}"
    [[ "$doors" == "both" ]] && doors="proto json"
    cargo build --release -q -p upkeep-server --example relay_fanout_ws
    bin="$CARGO_TARGET_DIR/release/examples/relay_fanout_ws"
    for door in $doors; do
        for n in 1 100; do
            echo "== $door, $n consumer(s), ${seconds}s"
            "$bin" "$door" "$n" "$seconds" 20
        done
    done
    exit 0
fi
seconds="${1:-10}"
cargo build --release -q -p upkeep-server --example relay_fanout
bin="$CARGO_TARGET_DIR/release/examples/relay_fanout"
for n in 1 100; do
    echo "== $n consumer(s), ${seconds}s"
    "$bin" "$n" "$seconds" 20
done

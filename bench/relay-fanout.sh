#!/usr/bin/env bash
# Relay fan-out benchmark (issue 16): 100 local consumers of one account's feed while the
# simulator streams 20 ltpc instruments every millisecond on each of the two upstream
# connections of a normal plan (target 20,000 ticks/s). Runs
# crates/upkeep-server/examples/relay_fanout.rs in release, first with 1 consumer (the
# baseline: simulator + upstream + one consumer), then with 100.
#
#   bench/relay-fanout.sh [SECONDS]      # default 10 s of measurement per run
#
# Reported per run: upstream frames/s and ticks/s actually reached, frames delivered,
# drops and consumers closed, the added latency (p50/p99/max, microseconds: a frame's
# arrival at the relay to the consumer task dequeuing it; the local websocket write is
# not included), process CPU (simulator included) and RSS.
# Goal: p99 added latency under 1 ms and no drops for consumers that keep up.
# Build dir: $CARGO_TARGET_DIR, default target-rel (kept apart from the debug build).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target-rel}"
cd "$root"
cargo build --release -q -p upkeep-server --example relay_fanout
bin="$CARGO_TARGET_DIR/release/examples/relay_fanout"
for n in 1 100; do
    echo "== $n consumer(s), ${seconds}s"
    "$bin" "$n" "$seconds" 20
done

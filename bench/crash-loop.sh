#!/usr/bin/env bash
# Crash loop: does `upkeep serve` survive SIGKILL at random moments?
#
#   bench/crash-loop.sh                       # 100 rounds with target/release/upkeep
#   bench/crash-loop.sh --rounds 20           #   (falls back to target/debug/upkeep)
#   bench/crash-loop.sh --bin /path/to/upkeep --seed 42 --work /tmp/crash-loop
#
# Needs bash, python3 (stdlib only; the work is done by bench/crash_loop.py) and
# optionally the sqlite3 CLI (`apt-get install sqlite3`; Python's sqlite3 module is used
# without it). Builds nothing: build the binary first (`cargo build --release`).
#
# Setup: `upkeep sim` on a free port (its demo app's redirect URI and notifier URL point
# at the daemon's port), an upkeep.toml (0600) in a fresh temp folder with every
# [upstox] URL at the sim, a SQLite store + key file + [sinks] json_file/env_file in that
# folder, [server] listen/public_url on a second free port, one [[account]] "main" with
# the sim's client id/secret/redirect URI/UCC, renew = ["totp", "token_request",
# "oauth"], [account.totp] from the sim's credentials and health_check_interval = "10s";
# `upkeep config check` must pass. A first serve logs in with TOTP (the baseline).
#
# Each round picks a scenario at random, starts `upkeep serve` and kill -9s it 0-2 s
# later (half of the kills within the first 0.3 s, where startup, renewal and writes are):
#   renewal  the current token is revoked at the sim (POST /sim/tokens/revoke) first,
#            so the daemon's first health check renews at once with TOTP
#   webhook  3-8 fresh daily tokens (POST /sim/tokens) are POSTed, Upstox-shaped, to the
#            daemon's /webhooks/upstox/token in a row
#   oauth    1-3 times: `upkeep login` prints the dialog link, which is followed through
#            the sim's login page (mobile, RFC 6238 TOTP, PIN) to /auth/upstox/callback
# After the kill:
#   - PRAGMA integrity_check on a copy of the db (+ WAL) must answer `ok` (a copy, so
#     the daemon's own next start is what recovers the real files);
#   - `.NAME.tmp-<12 hex>` files beside db/key/sinks are counted (reported; the daemon
#     removes such leftovers at start, so they must be gone after the restart);
#   - serve is started again (no kill); within 60 s /healthz must answer and
#     `upkeep token` must exit 0 with a token the sim's GET /v2/user/profile accepts
#     (200); the seconds are measured (a revoked token must be renewed by the restarted
#     daemon's health check). Both token files must hold that token too (they get 20 s
#     more, twice the health-check interval), and no temp file may be left;
#   - that serve is stopped with SIGTERM and must exit, with status 0, within 15 s.
# Then a summary: rounds per scenario, integrity failures, rounds without a working
# token in 60 s, max/median seconds to a working token, stale token files, temp files
# found after crashes, SIGTERM exit times, and every daemon stderr line with ERROR or
# "panicked".
# Exit status: 0 all requirements held (and no ERROR/panicked line), 1 something
# failed, 2 bad arguments.
#
# The temp folder (default /tmp/upkeep-crash-loop.XXXXXX) is kept: logs/ holds each
# serve's stderr (rNNN-SCENARIO-killed/-restart.stderr), rounds.jsonl one record per
# round; --seed repeats a run's choices. Every process started is killed on exit.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rounds=100
bin=""
work=""
seed=()
usage() { echo "usage: $0 [--rounds N] [--bin PATH] [--seed S] [--work DIR]" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ && "$2" -ge 1 ]] || usage; rounds="$2"; shift 2 ;;
        --bin) [[ $# -ge 2 ]] || usage; bin="$2"; shift 2 ;;
        --seed) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || usage; seed=(--seed "$2"); shift 2 ;;
        --work) [[ $# -ge 2 ]] || usage; work="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) usage ;;
    esac
done
if [[ -z "$bin" ]]; then
    for b in "$root/target/release/upkeep" "$root/target/debug/upkeep"; do
        [[ -x "$b" ]] && { bin="$b"; break; }
    done
    [[ -n "$bin" ]] || { echo "crash-loop: no target/release/upkeep or target/debug/upkeep; build one or pass --bin" >&2; exit 2; }
fi
[[ -x "$bin" ]] || { echo "crash-loop: $bin is not an executable" >&2; exit 2; }
command -v python3 >/dev/null || { echo "crash-loop: python3 is required" >&2; exit 2; }
command -v sqlite3 >/dev/null || echo "crash-loop: no sqlite3 CLI; using Python's sqlite3 module" >&2

if [[ -z "$work" ]]; then
    work="$(mktemp -d /tmp/upkeep-crash-loop.XXXXXX)"
else
    mkdir -p "$work"
    [[ -z "$(ls -A "$work")" ]] || { echo "crash-loop: $work is not empty" >&2; exit 2; }
fi
work="$(cd "$work" && pwd)"
echo "crash-loop: binary $bin, work folder $work"

py_pid=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [[ -n "$py_pid" ]] && kill -0 "$py_pid" 2>/dev/null; then
        kill -TERM "$py_pid" 2>/dev/null || true   # it kills its children itself
        for _ in $(seq 1 50); do kill -0 "$py_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$py_pid" 2>/dev/null || true
    fi
    # whatever it could not clean up: pids it recorded, only if they still run our copy
    if [[ -f "$work/pids" ]]; then
        while read -r p; do
            [[ "$p" =~ ^[0-9]+$ ]] || continue
            if [[ "$(readlink "/proc/$p/exe" 2>/dev/null)" == "$work/upkeep" ]]; then
                kill -KILL "$p" 2>/dev/null || true
            fi
        done <"$work/pids"
    fi
    rm -f "$work/upkeep"   # the copy of the binary; logs and records stay
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# In the background + wait, so that a signal to this script runs the trap at once.
python3 "$root/bench/crash_loop.py" --rounds "$rounds" --bin "$bin" --work "$work" "${seed[@]}" &
py_pid=$!
set +e
wait "$py_pid"
rc=$?
set -e
py_pid=""
exit "$rc"

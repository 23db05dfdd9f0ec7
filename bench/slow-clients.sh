#!/usr/bin/env bash
# Slow and hostile clients against a real `upkeep serve` on loopback (measurements in
# bench/slow_clients.py, Python 3 standard library only).
#
#   bench/slow-clients.sh                   # target/release/upkeep, else target/debug/upkeep
#   bench/slow-clients.sh --bin PATH        # any prebuilt binary (nothing is built here)
#
# What it measures, one line per figure (about 3 minutes in all):
#  1. 1,000 stalled clients: 1,000 connections each send a partial request
#     ("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ") and stall. Then 20 GET /healthz on
#     fresh connections: median and max latency.  Goal: all answered, max < 2 s.
#     Then the time until the daemon has closed all 1,000.  Goal: within 60 s
#     (header_read_timeout is 15 s).
#     Again with the daemon under `ulimit -n 256` (its connection cap drops to 192):
#     Goal: /healthz still answers, and no "Too many open files" in the daemon's log.
#  2. SIGTERM with 50 stalled clients: time from SIGTERM to process exit, and the exit
#     code.  Goal: exit within 15 s (shutdown_timeout is 10 s), exit code 0.
#  3. Webhook flood: forged notifier payloads POSTed for 5 s by 32 threads (a third
#     garbage JSON, a third for another app's client id, a third valid-shaped for our
#     app and user with a forged unsigned JWT), validated against `upkeep sim`:
#     requests/s handled, the status mix, and the bytes and lines the daemon wrote to
#     stderr over the 5 s plus the next 65 s.  Goal: a few lines (one summary a minute;
#     the script flags more than 10), not one per request.
#
# Everything runs in a temporary folder (kept when KEEP_WORK=1); every process started
# here is stopped on exit.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pyscript="$root/bench/slow_clients.py"
bin=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --bin) bin="${2:?--bin needs a path}"; shift 2 ;;
        --bin=*) bin="${1#--bin=}"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: $0 [--bin PATH]" >&2; exit 2 ;;
    esac
done
if [[ -z "$bin" ]]; then
    for b in "$root/target/release/upkeep" "$root/target/debug/upkeep"; do
        [[ -x "$b" ]] && { bin="$b"; break; }
    done
    [[ -n "$bin" ]] || { echo "no upkeep binary in target/release or target/debug; build one or pass --bin PATH" >&2; exit 2; }
fi
[[ -x "$bin" ]] || { echo "not an executable: $bin" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/upkeep-slow-clients.XXXXXX")"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [[ "${KEEP_WORK:-0}" == 1 ]]; then echo "work folder kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# forget PID: it has been reaped, so cleanup must not signal it (the number may be reused).
forget() { local p keep=(); for p in "${pids[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done; pids=("${keep[@]}"); }
say() { echo "== $*" >&2; }

# py ARGS...: bench/slow_clients.py in the background, waited for, so that a signal to
# this script is handled at once (and the cleanup stops it too).
py() {
    local p rc=0
    python3 "$pyscript" "$@" &
    p=$!; pids+=("$p")
    wait "$p" || rc=$?
    forget "$p"
    return "$rc"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# write_config DIR PORT [API_URL]: a daemon config with its own SQLite store and key.
write_config() {
    local dir="$1" port="$2" api="${3:-}"
    mkdir -p "$dir"
    {
        printf '[server]\nlisten = "127.0.0.1:%s"\npublic_url = "http://127.0.0.1:%s"\n' "$port" "$port"
        printf '[store]\nurl = "sqlite://%s/upkeep.db"\nkey_file = "%s/upkeep.key"\n' "$dir" "$dir"
        if [[ -n "$api" ]]; then
            printf '[upstox]\napi_url = "%s"\norder_url = "%s"\nlogin_url = "%s"\n' "$api" "$api" "$api"
        fi
        printf '[[account]]\nid = "main"\nclient_id = "bench-app"\nuser_id = "AB1234"\nrenew = ["static"]\n'
    } > "$dir/upkeep.toml"
}

# start_daemon DIR [NOFILE]: `upkeep serve` in the background, stderr to DIR/daemon.log;
# sets $daemon_pid and waits for /healthz.
start_daemon() {
    local dir="$1" nofile="${2:-}" port
    port="$(sed -n 's/^listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$dir/upkeep.toml")"
    if [[ -n "$nofile" ]]; then
        bash -c 'ulimit -n "$1"; exec "$2" --config "$3" serve' _ "$nofile" "$bin" "$dir/upkeep.toml" \
            2>"$dir/daemon.log" &
    else
        "$bin" --config "$dir/upkeep.toml" serve 2>"$dir/daemon.log" &
    fi
    daemon_pid=$!
    pids+=("$daemon_pid")
    if ! py wait --port "$port"; then
        echo "daemon did not come up; its log:" >&2; cat "$dir/daemon.log" >&2; exit 1
    fi
    sleep 1 # let its start-up logging settle
}

# stop_daemon: SIGTERM and reap $daemon_pid.
stop_daemon() {
    kill -TERM "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
    forget "$daemon_pid"
}

echo "upkeep slow-clients bench: $bin ($(date -u +%FT%TZ), $(nproc) cores)"

# --- 1. 1,000 stalled clients, default limits
say "1. 1,000 stalled clients (default limits)"
port="$(free_port)"; write_config "$work/stall" "$port"
start_daemon "$work/stall"
py stall --port "$port" --n 1000 --probes 20 --pid "$daemon_pid" \
    --log "$work/stall/daemon.log" --label "1000 stalled, default limits"
stop_daemon

# --- 1b. the same with the daemon under ulimit -n 256
say "1b. 1,000 stalled clients, daemon under ulimit -n 256"
port="$(free_port)"; write_config "$work/stall256" "$port"
start_daemon "$work/stall256" 256
echo "[1000 stalled, ulimit -n 256] daemon soft open-file limit: $(awk '/^Max open files/ {print $4}' "/proc/$daemon_pid/limits")"
py stall --port "$port" --n 1000 --probes 20 --pid "$daemon_pid" \
    --log "$work/stall256/daemon.log" --label "1000 stalled, ulimit -n 256"
emfile="$(grep -c 'Too many open files' "$work/stall256/daemon.log" || true)"
echo "[1000 stalled, ulimit -n 256] daemon logged \"Too many open files\": $([[ "$emfile" -gt 0 ]] && echo "yes ($emfile lines) -> MISSED" || echo "no -> OK")"
stop_daemon

# --- 2. SIGTERM with 50 stalled clients
say "2. SIGTERM with 50 stalled clients"
port="$(free_port)"; write_config "$work/term" "$port"
start_daemon "$work/term"
py sigterm --port "$port" --pid "$daemon_pid" --n 50 --log "$work/term/daemon.log"
rc=0; wait "$daemon_pid" || rc=$?
forget "$daemon_pid"
echo "SIGTERM with 50 stalled clients: exit code $rc (goal 0) -> $([[ $rc -eq 0 ]] && echo OK || echo MISSED)"

# --- 3. webhook flood, validations against the simulator
say "3. webhook flood (validations against upkeep sim)"
sim_port="$(free_port)"; mkdir -p "$work/sim"
"$bin" sim --listen "127.0.0.1:$sim_port" --credentials-out "$work/sim/creds.json" \
    >"$work/sim/sim.out" 2>"$work/sim/sim.log" &
pids+=($!)
for _ in $(seq 1 100); do [[ -s "$work/sim/creds.json" ]] && break; sleep 0.1; done
[[ -s "$work/sim/creds.json" ]] || { echo "simulator did not start:" >&2; cat "$work/sim/sim.log" >&2; exit 1; }
port="$(free_port)"; write_config "$work/flood" "$port" "http://127.0.0.1:$sim_port"
start_daemon "$work/flood"
py flood --port "$port" --secs 5 --tail 65 --threads 32 --pid "$daemon_pid" \
    --log "$work/flood/daemon.log"
stop_daemon

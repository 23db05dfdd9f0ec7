#!/usr/bin/env bash
# Token read API throughput (shared/benchmarks.md, "Token read API"):
# GET /api/v1/accounts/main/token with a `token:read` API key, served by a real
# `upkeep serve` (logged in against `upkeep sim` with TOTP), against its anchor, a bare
# hyper 1 server (bench/bare-hyper: tokio multi-thread, HTTP/1.1 keep-alive) answering
# every request with a JSON body of exactly the size of upkeep's answer. Both run on
# this machine in the same run; wrk (Debian's) sends the same request, Authorization
# header included, to both, in alternating rounds (bare, upkeep, bare, upkeep, bare,
# upkeep), after a 1 s warm-up of each:
#   - 32 connections: wrk -t2 -c32 -d<duration>s --latency
#   - 1 connection:   wrk -t1 -c1  -d<duration>s --latency
# Printed: every round's requests/s, p50 and p99, then per row the medians and the
# ratio upkeep/bare, and how many lines the daemon logged during the runs (its default
# level, info, must not log per request).
#
# Goal: upkeep >= 80 % of bare hyper's requests/s at 32 connections, same run.
#
#   bench/api-token.sh                     # target/release/upkeep (built if missing;
#                                          # $CARGO_TARGET_DIR/release/upkeep if set)
#   bench/api-token.sh --bin PATH          # any prebuilt upkeep binary
#   bench/api-token.sh --duration 5        # seconds per round (default 10)
#   bench/api-token.sh --with-healthz      # diagnosis: also upkeep's GET /healthz (no
#                                          # key, 15-byte body) in every round, to tell
#                                          # the listener + router cost from the handler's
#
# bare-hyper is built (cargo, release) into $CARGO_TARGET_DIR or target/; wrk is
# installed with apt-get when missing. Everything runs in a temporary folder (kept,
# with the raw wrk outputs and the daemon's log, when KEEP_WORK=1); every process
# started here is stopped on exit. About 12 x duration s plus start-up (18 x with
# --with-healthz).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin=""
duration=10
with_healthz=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --bin) bin="${2:?--bin needs a path}"; shift 2 ;;
        --bin=*) bin="${1#--bin=}"; shift ;;
        --duration) duration="${2:?--duration needs seconds}"; shift 2 ;;
        --duration=*) duration="${1#--duration=}"; shift ;;
        --with-healthz) with_healthz=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: $0 [--bin PATH] [--duration S] [--with-healthz]" >&2; exit 2 ;;
    esac
done
[[ "$duration" =~ ^[1-9][0-9]*$ ]] || { echo "--duration takes whole seconds, not '$duration'" >&2; exit 2; }

say() { echo "== $*" >&2; }

# --- what this needs: the upkeep binary, bare-hyper, wrk, curl, python3
target_dir="${CARGO_TARGET_DIR:-$root/target}"
if [[ -z "$bin" ]]; then
    bin="$target_dir/release/upkeep"
    if [[ ! -x "$bin" ]]; then
        say "building upkeep (release; several minutes)"
        (cd "$root" && cargo build --release -p upkeep)
    fi
fi
[[ -x "$bin" ]] || { echo "not an executable: $bin" >&2; exit 2; }
bare="$target_dir/release/bare-hyper"
# Always asked (a no-op when up to date), so an edited bare-hyper is never stale.
cargo build --release --quiet --manifest-path "$root/bench/bare-hyper/Cargo.toml" --target-dir "$target_dir"
if ! command -v wrk >/dev/null 2>&1; then
    say "installing wrk (apt-get)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
for tool in wrk curl python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool is required" >&2; exit 2; }
done

work="$(mktemp -d "${TMPDIR:-/tmp}/upkeep-api-token.XXXXXX")"
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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for WHAT CMD...: up to 30 s
    local what="$1"; shift
    for _ in $(seq 1 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "gave up waiting for $what" >&2; return 1
}

# --- upkeep: simulator, daemon, logged-in account, API key
sim_port=$(free_port); daemon_port=$(free_port)
"$bin" sim --listen "127.0.0.1:$sim_port" --credentials-out "$work/creds.json" \
    --redirect-uri "http://127.0.0.1:$daemon_port/auth/upstox/callback" \
    >"$work/sim.log" 2>&1 &
pids+=($!)
wait_for "the simulator's credentials" test -s "$work/creds.json"
python3 - "$work" "$daemon_port" <<'PY'
import json, sys
work, port = sys.argv[1], sys.argv[2]
c = json.load(open(f"{work}/creds.json"))
open(f"{work}/upkeep.toml", "w").write(f'''
[server]
listen = "127.0.0.1:{port}"
[store]
url = "sqlite://{work}/upkeep.db"
key_file = "{work}/upkeep.key"
[upstox]
api_url = "{c['base_url']}"
order_url = "{c['base_url']}"
login_url = "{c['base_url']}"
[[account]]
id = "main"
client_id = "{c['client_id']}"
client_secret = "{c['client_secret']}"
redirect_uri = "{c['redirect_uri']}"
user_id = "{c['ucc']}"
renew = ["totp"]
[account.totp]
mobile = "{c['mobile']}"
pin = "{c['pin']}"
secret = "{c['totp_secret']}"
''')
PY
cfg="$work/upkeep.toml"
chmod 600 "$cfg"
# The daemon's default log level (info): UPKEEP_LOG from the caller's shell is ignored.
env -u UPKEEP_LOG -u UPKEEP_MASTER_KEY "$bin" --config "$cfg" serve 2>"$work/serve.log" &
pids+=($!)
wait_for "the daemon's /healthz" curl -fsS "http://127.0.0.1:$daemon_port/healthz"
wait_for "a token from the daemon (TOTP login against the simulator)" "$bin" --config "$cfg" token
key="$("$bin" --config "$cfg" apikey create --name bench --scope token:read)"
[[ -n "$key" ]] || { echo "apikey create printed no key" >&2; exit 1; }
url_upkeep="http://127.0.0.1:$daemon_port/api/v1/accounts/main/token"
auth="Authorization: Bearer $key"
# The key cache re-reads the store every 2 s: wait until the daemon knows the new key.
wait_for "the daemon to accept the new key" curl -fsS -H "$auth" -o /dev/null "$url_upkeep"
size="$(curl -fsS -H "$auth" -o /dev/null -w '%{size_download}' "$url_upkeep")"
curl -fsS -H "$auth" -D "$work/upkeep.headers" -o "$work/upkeep.body" "$url_upkeep"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["account"]=="main" and d["access_token"], d' \
    "$work/upkeep.body" || { echo "unexpected token response" >&2; exit 1; }

# --- the anchor, answering with a body of the same size
"$bare" 127.0.0.1:0 "$size" >"$work/bare.addr" 2>"$work/bare.log" &
pids+=($!)
wait_for "bare-hyper's address" test -s "$work/bare.addr"
url_bare="http://$(head -n1 "$work/bare.addr")/api/v1/accounts/main/token"
bare_size="$(curl -fsS -H "$auth" -o /dev/null -w '%{size_download}' "$url_bare")"
[[ "$bare_size" == "$size" ]] || { echo "bare-hyper answered $bare_size bytes, not $size" >&2; exit 1; }

say "upkeep: $bin ($(date -r "$bin" '+%F %T'))"
say "body: $size bytes from both; $(nproc) cores; ${duration}s rounds; load $(cut -d' ' -f1-3 /proc/loadavg)"

# --- the rounds
results="$work/results.tsv"   # row, round, server, req/s, p50 us, p99 us, errors
: >"$results"
# wrk_round ROW ROUND SERVER URL THREADS CONNS
wrk_round() {
    local row="$1" round="$2" server="$3" url="$4" t="$5" c="$6" out
    out="$work/wrk-$row-$round-$server.txt"
    wrk -t"$t" -c"$c" -d"${duration}s" --latency -H "$auth" "$url" >"$out" 2>&1
    python3 - "$out" "$row" "$round" "$server" >>"$results" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def us(v, unit):
    return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
if not (rps and p50 and p99):
    sys.exit(f"cannot read wrk's output:\n{text}")
errors = []
m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if m:
    errors.append(f"non-2xx={m.group(1)}")
m = re.search(r"Socket errors: (.*)", text)
if m:
    errors.append("socket errors: " + m.group(1))
print("\t".join([sys.argv[2], sys.argv[3], sys.argv[4], rps.group(1),
                 f"{us(*p50.groups()):.0f}", f"{us(*p99.groups()):.0f}",
                 "; ".join(errors) or "-"]))
PY
}
log_before=$(wc -l <"$work/serve.log")
for row in "32 conns" "1 conn"; do
    if [[ "$row" == "32 conns" ]]; then t=2; c=32; else t=1; c=1; fi
    say "$row: warm-up, then 3 rounds each, alternating"
    wrk -t"$t" -c"$c" -d1s -H "$auth" "$url_bare" >/dev/null 2>&1
    wrk -t"$t" -c"$c" -d1s -H "$auth" "$url_upkeep" >/dev/null 2>&1
    for round in 1 2 3; do
        wrk_round "$row" "$round" bare "$url_bare" "$t" "$c"
        wrk_round "$row" "$round" upkeep "$url_upkeep" "$t" "$c"
        if [[ "$with_healthz" == 1 ]]; then
            wrk_round "$row" "$round" healthz "http://127.0.0.1:$daemon_port/healthz" "$t" "$c"
        fi
    done
done
log_after=$(wc -l <"$work/serve.log")

# --- the report
python3 - "$results" "$size" "$((log_after - log_before))" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
size, log_lines = sys.argv[2], int(sys.argv[3])
print(f"GET /api/v1/accounts/main/token, {size}-byte body; wrk, alternating rounds\n")
print(f"{'load':<9} {'round':>5}  {'server':<7} {'req/s':>10} {'p50':>9} {'p99':>9}  errors")
for row, rnd, server, rps, p50, p99, err in rows:
    print(f"{row:<9} {rnd:>5}  {server:<7} {float(rps):>10,.0f} {p50:>7}us {p99:>7}us  {err}")
print()
print(f"medians of the rounds; ratio = server / bare\n")
print(f"{'load':<9} {'server':<7} {'req/s':>10} {'ratio':>7} {'p50':>9} {'p99':>9}")
verdict = ""
for load in dict.fromkeys(r[0] for r in rows):
    med = {}
    for server in dict.fromkeys(r[2] for r in rows if r[0] == load):
        rs = [r for r in rows if r[0] == load and r[2] == server]
        med[server] = [statistics.median(float(r[i]) for r in rs) for i in (3, 4, 5)]
    for server, (rps, p50, p99) in med.items():
        ratio = rps / med["bare"][0]
        print(f"{load:<9} {server:<7} {rps:>10,.0f} {ratio:>6.1%} {p50:>7.0f}us {p99:>7.0f}us")
        if load == "32 conns" and server == "upkeep":
            verdict = f"goal (upkeep >= 80% of bare hyper at 32 connections): {'met' if ratio >= 0.8 else 'NOT met'} ({ratio:.1%})"
print()
print(verdict)
if "healthz" in {r[2] for r in rows}:
    print("healthz = upkeep's GET /healthz (no key, 15-byte body): the listener + router floor")
print(f"daemon log lines written during the runs: {log_lines}")
if any(r[6] != "-" for r in rows):
    print("WARNING: some rounds had errors or non-2xx answers (see the errors column)")
PY

#!/usr/bin/env bash
# Gateway throughput (shared/benchmarks.md, "Gateway"): upkeep's /upstox/... against nginx
# as a keep-alive reverse proxy that sets the token, both in front of the same bare
# upstream (bench/bare-hyper, a fixed JSON body the size of an LTP answer), and the
# upstream direct. Same run, alternating rounds (direct, nginx, upkeep; three times),
# after a 1 s warm-up of each:
#   - 1 connection:   wrk -t1 -c1  -d<duration>s --latency
#   - 32 connections: wrk -t2 -c32 -d<duration>s --latency
# nginx (Debian's nginx-light, installed with apt-get when missing): worker_processes
# auto, upstream keepalive 64, proxy_http_version 1.1, Connection "", proxy_set_header
# Authorization "Bearer <token>", access_log off. upkeep: `upkeep serve` with one
# account (static strategy, a token whose claims decode), [upstox] api_url and order_url
# = the bare upstream, a token:read key sent by wrk as its Bearer token.
#
# Printed: every round's requests/s, p50 and CPU time per request (user + system, of the
# serving process: bare-hyper, nginx's workers, the daemon), then per row the medians,
# each proxy's ratio to direct, upkeep/nginx, and the p50 each proxy adds over direct;
# and how many lines the daemon logged during the runs (it must not log per request).
# CPU per request is the steadier figure when other work shares the machine.
#
# Goal: upkeep's requests/s >= nginx's on both rows, p50 added no worse.
#
#   bench/gateway.sh                  # target/release/upkeep ($CARGO_TARGET_DIR if set;
#                                     # built if missing)
#   bench/gateway.sh --bin PATH       # any prebuilt upkeep binary
#   bench/gateway.sh --duration 5     # seconds per round (default 8)
#
# Everything runs in a temporary folder (kept with the raw wrk outputs and the logs when
# KEEP_WORK=1); every process started here is stopped on exit. About 20 x duration s.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin=""
duration=8
while [[ $# -gt 0 ]]; do
    case "$1" in
        --bin) bin="${2:?--bin needs a path}"; shift 2 ;;
        --bin=*) bin="${1#--bin=}"; shift ;;
        --duration) duration="${2:?--duration needs seconds}"; shift 2 ;;
        --duration=*) duration="${1#--duration=}"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: $0 [--bin PATH] [--duration S]" >&2; exit 2 ;;
    esac
done
[[ "$duration" =~ ^[1-9][0-9]*$ ]] || { echo "--duration takes whole seconds, not '$duration'" >&2; exit 2; }

say() { echo "== $*" >&2; }

# --- what this needs: upkeep, bare-hyper, nginx, wrk, curl, python3
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
cargo build --release --quiet --manifest-path "$root/bench/bare-hyper/Cargo.toml" --target-dir "$target_dir"
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
if [[ ${#missing[@]} -gt 0 ]]; then
    say "installing ${missing[*]} (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    # The package starts a system nginx on port 80; this benchmark runs its own.
    if [[ " ${missing[*]} " == *" nginx-light "* ]]; then
        systemctl stop nginx 2>/dev/null || service nginx stop 2>/dev/null || nginx -s stop 2>/dev/null || true
    fi
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
for tool in wrk curl python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool is required" >&2; exit 2; }
done

work="$(mktemp -d "${TMPDIR:-/tmp}/upkeep-gateway.XXXXXX")"
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

# --- the bare upstream: an LTP-sized JSON answer to everything
size=230
"$bare" 127.0.0.1:0 "$size" >"$work/bare.addr" 2>"$work/bare.log" &
pids+=($!)
wait_for "bare-hyper's address" test -s "$work/bare.addr"
upstream="$(head -n1 "$work/bare.addr")"
path="/v3/market-quote/ltp?instrument_key=NSE_EQ%7CINE848E01016"

# A token whose claims decode (the daemon judges its expiry from them): a day from now.
token="$(python3 - <<'PY'
import base64, json, time
b = lambda o: base64.urlsafe_b64encode(json.dumps(o, separators=(",", ":")).encode()).rstrip(b"=").decode()
now = int(time.time())
print(b({"alg": "HS256", "typ": "JWT"}) + "." + b({
    "sub": "BENCH1", "jti": "0" * 24, "iat": now, "exp": now + 86400,
    "iss": "udapi-gateway-service", "isMultiClient": False, "isPlusPlan": False,
}) + "." + "c2ln")
PY
)"

# --- nginx
nginx_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    upstream upstox { server $upstream; keepalive 64; }
    server {
        listen 127.0.0.1:$nginx_port;
        location /upstox/ {
            proxy_pass http://upstox/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer $token";
        }
    }
}
EOF
"$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' 2>"$work/nginx/stderr.log" &
pids+=($!)

# --- upkeep
daemon_port=$(free_port)
cat >"$work/upkeep.toml" <<EOF
[server]
listen = "127.0.0.1:$daemon_port"
[store]
url = "sqlite://$work/upkeep.db"
key_file = "$work/upkeep.key"
[upstox]
api_url = "http://$upstream"
order_url = "http://$upstream"
[[account]]
id = "main"
client_id = "bench-app"
client_secret = "bench-secret"
redirect_uri = "http://127.0.0.1:$daemon_port/auth/upstox/callback"
user_id = "BENCH1"
renew = ["static"]
access_token = "$token"
# The proxy alone is measured: the shared rate budget (50 calls/s per user and API at
# Upstox's published limits) would answer most of a benchmark's calls with upkeep's 429.
[gateway.budget]
enabled = false
EOF
chmod 600 "$work/upkeep.toml"
cfg="$work/upkeep.toml"
env -u UPKEEP_MASTER_KEY "$bin" --config "$cfg" keygen >/dev/null 2>&1
key="$(env -u UPKEEP_MASTER_KEY "$bin" --config "$cfg" apikey create --name bench --scope token:read)"
[[ -n "$key" ]] || { echo "apikey create printed no key" >&2; exit 1; }
env -u UPKEEP_LOG -u UPKEEP_MASTER_KEY "$bin" --config "$cfg" serve 2>"$work/serve.log" &
pids+=($!)

url_direct="http://$upstream$path"
url_nginx="http://127.0.0.1:$nginx_port/upstox$path"
url_upkeep="http://127.0.0.1:$daemon_port/upstox$path"
auth_token="Authorization: Bearer $token"
auth_key="Authorization: Bearer $key"
wait_for "nginx" curl -fsS -o /dev/null "$url_nginx"
wait_for "upkeep's gateway" curl -fsS -H "$auth_key" -o /dev/null "$url_upkeep"
for u in "$url_direct|$auth_token" "$url_nginx|" "$url_upkeep|$auth_key"; do
    got="$(curl -fsS -H "${u#*|}" -o /dev/null -w '%{size_download}' "${u%%|*}")"
    [[ "$got" == "$size" ]] || { echo "${u%%|*} answered $got bytes, not $size" >&2; exit 1; }
done

say "upkeep: $bin ($(date -r "$bin" '+%F %T')); nginx: $("$nginx_bin" -v 2>&1 | sed 's/.*: //')"
say "$size-byte body; $(nproc) cores; ${duration}s rounds; load $(cut -d' ' -f1-3 /proc/loadavg)"

# --- the rounds
results="$work/results.tsv"   # row, round, server, req/s, p50 us, p99 us, errors, user us/req, sys us/req
: >"$results"
# The processes whose CPU time a round charges to its server: what serves the request
# (bare-hyper for direct, nginx's workers, the daemon). Read from /proc/PID/stat
# (utime, stime in clock ticks), summed over the processes.
bare_pid="${pids[0]}"
nginx_workers="$(pgrep -P "${pids[1]}" | tr '\n' ' ')"
upkeep_pid="${pids[2]}"
clk_tck="$(getconf CLK_TCK)"
cpu_ticks() {
    local u=0 s=0 a b p
    for p in "$@"; do
        read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat")
        u=$((u + a)); s=$((s + b))
    done
    echo "$u $s"
}
# wrk_round ROW ROUND SERVER URL AUTH THREADS CONNS
wrk_round() {
    local row="$1" round="$2" server="$3" url="$4" auth="$5" t="$6" c="$7" out procs u0 s0 u1 s1
    out="$work/wrk-${row// /}-$round-$server.txt"
    case "$server" in
        direct) procs="$bare_pid" ;;
        nginx) procs="$nginx_workers" ;;
        *) procs="$upkeep_pid" ;;
    esac
    # shellcheck disable=SC2086
    read -r u0 s0 < <(cpu_ticks $procs)
    if [[ -n "$auth" ]]; then
        wrk -t"$t" -c"$c" -d"${duration}s" --latency -H "$auth" "$url" >"$out" 2>&1
    else
        wrk -t"$t" -c"$c" -d"${duration}s" --latency "$url" >"$out" 2>&1
    fi
    # shellcheck disable=SC2086
    read -r u1 s1 < <(cpu_ticks $procs)
    python3 - "$out" "$row" "$round" "$server" "$((u1 - u0))" "$((s1 - s0))" "$clk_tck" >>"$results" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
user_ticks, sys_ticks, hz = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
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
total = re.search(r"(\d+) requests in", text)
n = int(total.group(1)) if total else 0
per_req = lambda ticks: f"{ticks * 1e6 / hz / n:.1f}" if n else "0"
print("\t".join([sys.argv[2], sys.argv[3], sys.argv[4], rps.group(1),
                 f"{us(*p50.groups()):.0f}", f"{us(*p99.groups()):.0f}",
                 "; ".join(errors) or "-", per_req(user_ticks), per_req(sys_ticks)]))
PY
}
log_before=$(wc -l <"$work/serve.log")
for row in "1 conn" "32 conns"; do
    if [[ "$row" == "32 conns" ]]; then t=2; c=32; else t=1; c=1; fi
    say "$row: warm-up, then 3 rounds each, alternating"
    wrk -t"$t" -c"$c" -d1s -H "$auth_token" "$url_direct" >/dev/null 2>&1
    wrk -t"$t" -c"$c" -d1s "$url_nginx" >/dev/null 2>&1
    wrk -t"$t" -c"$c" -d1s -H "$auth_key" "$url_upkeep" >/dev/null 2>&1
    for round in 1 2 3; do
        wrk_round "$row" "$round" direct "$url_direct" "$auth_token" "$t" "$c"
        wrk_round "$row" "$round" nginx "$url_nginx" "" "$t" "$c"
        wrk_round "$row" "$round" upkeep "$url_upkeep" "$auth_key" "$t" "$c"
    done
done
log_after=$(wc -l <"$work/serve.log")

# --- the report
python3 - "$results" "$size" "$((log_after - log_before))" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
size, log_lines = sys.argv[2], int(sys.argv[3])
print(f"GET {{upstream}}/v3/market-quote/ltp, {size}-byte body; wrk, alternating rounds\n")
print(f"{'load':<9} {'round':>5}  {'server':<7} {'req/s':>10} {'p50':>9} {'p99':>9} "
      f"{'cpu/req':>14}  errors")
for row, rnd, server, rps, p50, p99, err, u, s in rows:
    print(f"{row:<9} {rnd:>5}  {server:<7} {float(rps):>10,.0f} {p50:>7}us {p99:>7}us "
          f"{u:>5}+{s:>5}us  {err}")
print()
print("medians of the rounds; vs direct = req/s ratio to the upstream direct; added = p50 - direct's;")
print("cpu/req = user + system CPU time per request of the serving process(es): steadier than")
print("req/s on a shared machine (the direct row is bare-hyper's own)\n")
print(f"{'load':<9} {'server':<7} {'req/s':>10} {'vs direct':>9} {'p50':>9} {'added':>9} {'cpu/req':>14}")
verdicts = []
for load in dict.fromkeys(r[0] for r in rows):
    med = {}
    for server in dict.fromkeys(r[2] for r in rows if r[0] == load):
        rs = [r for r in rows if r[0] == load and r[2] == server]
        med[server] = [statistics.median(float(r[i]) for r in rs) for i in (3, 4, 5, 7, 8)]
    for server, (rps, p50, _p99, u, s) in med.items():
        print(f"{load:<9} {server:<7} {rps:>10,.0f} {rps / med['direct'][0]:>8.1%} "
              f"{p50:>7.0f}us {p50 - med['direct'][1]:>+7.0f}us {u:>5.1f}+{s:>5.1f}us")
    ratio = med["upkeep"][0] / med["nginx"][0]
    added_u = med["upkeep"][1] - med["direct"][1]
    added_n = med["nginx"][1] - med["direct"][1]
    ok = ratio >= 1.0 and added_u <= added_n
    verdicts.append(f"{load}: upkeep/nginx req/s {ratio:.2f}, p50 added {added_u:+.0f}us vs "
                    f"nginx {added_n:+.0f}us: {'met' if ok else 'NOT met'}")
print()
print("goal (upkeep >= nginx on req/s, p50 added no worse):")
for v in verdicts:
    print("  " + v)
print(f"daemon log lines written during the runs: {log_lines}")
if any(r[6] != "-" for r in rows):
    print("WARNING: some rounds had errors or non-2xx answers (see the errors column)")
PY

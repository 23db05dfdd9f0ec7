#!/usr/bin/env bash
# Daemon memory (shared/benchmarks.md, "Memory"): RSS of `upkeep serve` idle with one
# account (logged in against `upkeep sim` with TOTP) and with N static accounts.
#
#   bench/memory.sh            # 1 account, then 10,000 accounts
#   bench/memory.sh 2000       # 1 account, then 2,000 accounts
#   UPKEEP_BIN=path bench/memory.sh   # use an existing release binary
#
# Goal: <= 20 MB idle with one account, <= 100 MB with 10,000.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
many="${1:-10000}"
bin="${UPKEEP_BIN:-}"
if [[ -z "$bin" ]]; then
    (cd "$root" && cargo build --release -p upkeep >/dev/null)
    bin="$root/target/release/upkeep"
fi
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 600); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }
rss() { awk '/^VmRSS/ {printf "%.1f MB", $2/1024}' "/proc/$1/status"; }
hwm() { awk '/^VmHWM/ {printf "%.1f MB", $2/1024}' "/proc/$1/status"; }

# --- one account, logged in through the simulator
sim_port=$(free_port); daemon_port=$(free_port)
"$bin" sim --listen "127.0.0.1:$sim_port" --credentials-out "$work/creds.json" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [[ -s "$work/creds.json" ]] && break; sleep 0.1; done
python3 - "$work" "$daemon_port" <<'PY'
import json, sys
work, port = sys.argv[1], sys.argv[2]
c = json.load(open(f"{work}/creds.json"))
open(f"{work}/one.toml", "w").write(f'''
[server]
listen = "127.0.0.1:{port}"
[store]
url = "sqlite://{work}/one.db"
key_file = "{work}/one.key"
[upstox]
api_url = "{c['base_url']}"
order_url = "{c['base_url']}"
login_url = "{c['base_url']}"
[[account]]
id = "main"
client_id = "{c['client_id']}"
client_secret = "{c['client_secret']}"
redirect_uri = "{c['redirect_uri']}"
renew = ["totp"]
[account.totp]
mobile = "{c['mobile']}"
pin = "{c['pin']}"
secret = "{c['totp_secret']}"
''')
PY
"$bin" --config "$work/one.toml" serve 2>"$work/one.log" &
pid=$!; pids+=($pid)
wait_http "http://127.0.0.1:$daemon_port/healthz"
for _ in $(seq 1 100); do "$bin" --config "$work/one.toml" token >/dev/null 2>&1 && break; sleep 0.1; done
sleep 5
echo "1 account (logged in, idle):      RSS $(rss $pid), peak $(hwm $pid)"
kill "$pid"

# --- many static accounts
daemon_port=$(free_port)
{
    printf '[server]\nlisten = "127.0.0.1:%s"\n[store]\nurl = "sqlite://%s/many.db"\nkey_file = "%s/many.key"\n' "$daemon_port" "$work" "$work"
    for i in $(seq 1 "$many"); do printf '[[account]]\nid = "a%s"\nrenew = ["static"]\n' "$i"; done
} > "$work/many.toml"
"$bin" --config "$work/many.toml" serve 2>"$work/many.log" &
pid=$!; pids+=($pid)
wait_http "http://127.0.0.1:$daemon_port/healthz"
sleep 10
echo "$many static accounts (idle):   RSS $(rss $pid), peak $(hwm $pid)"

#!/usr/bin/env bash
# Feed decode benchmark (shared/benchmarks.md, "Feed decode"): one FeedResponse with 10
# options in full mode, 5 depth levels, 3,299 bytes (tests/fixtures/feed/live_full_d5_10.bin).
#
#   bench/feed-decode.sh            # criterion defaults (about half a minute after the build)
#   bench/feed-decode.sh --quick    # shorter runs
#
# Prints frames/s for the Rust decoder (upkeep_upstox::feed::decode), for prost into the
# generated types, for decode + the SDK JSON view (as a Value, as text through serde_json,
# and through SdkJsonWriter into a reused buffer); then, when a Python with
# upstox-python-sdk 2.30.0 is found, the official SDK's figures (bench/feed_decode_sdk.py)
# and the ratios. The Python is, in order: $UPKEEP_SDK_PYTHON, /tmp/sdkvenv/bin/python,
# .venv-sdk/bin/python (made by scripts/sdk-venv.sh). To make one:
#   python3 -m venv /tmp/sdkvenv && /tmp/sdkvenv/bin/pip install upstox-python-sdk==2.30.0
# Goals: >= 320,000 frames/s for the Rust decoder (2x the SDK's upb parse of 161,552);
# >= 100,000 frames/s for decode + the SDK-shaped JSON text (`/ws/ticks`, SdkJsonWriter).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
frame="$root/tests/fixtures/feed/live_full_d5_10.bin"
crit_args=()
py_seconds=1
if [[ "${1:-}" == "--quick" ]]; then
    crit_args=(--warm-up-time 1 --measurement-time 3)
    py_seconds=0.5
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--quick]" >&2
    exit 2
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! (cd "$root" && cargo bench -p upkeep-upstox --bench feed_decode -- "${crit_args[@]}") >"$log" 2>&1; then
    cat "$log" >&2
    echo "feed-decode: cargo bench failed" >&2
    exit 1
fi

# criterion: a line "feed_decode/NAME" (possibly followed by text), then "thrpt: [lo mid hi]".
rates="$(awk '
    /^feed_decode\// { name = $1; sub("feed_decode/", "", name) }
    /thrpt:/ && name != "" {
        v = $4; u = $5
        f = (u ~ /^Gelem/) ? 1e9 : (u ~ /^Melem/) ? 1e6 : (u ~ /^Kelem/) ? 1e3 : 1
        printf "%s %.0f\n", name, v * f
        name = ""
    }' "$log")"
rate_of() { awk -v n="$1" '$1 == n { print $2 }' <<<"$rates"; }
rust="$(rate_of upkeep_zero_copy)"
prost="$(rate_of prost_generated)"
rust_json="$(rate_of upkeep_to_sdk_json)"
rust_json_text="$(rate_of upkeep_to_sdk_json_text)"
rust_writer="$(rate_of upkeep_sdk_json_writer)"
if [[ -z "$rust" ]]; then
    cat "$log" >&2
    echo "feed-decode: could not read criterion's output" >&2
    exit 1
fi

printf 'frame: %s (%s bytes)\n' "${frame#"$root"/}" "$(wc -c <"$frame")"
printf '%-44s %12s frames/s\n' "rust upkeep_upstox::feed::decode" "$rust"
printf '%-44s %12s frames/s\n' "rust prost into upkeep_proto types" "${prost:-?}"
printf '%-44s %12s frames/s\n' "rust decode + to_sdk_json (Value)" "${rust_json:-?}"
printf '%-44s %12s frames/s\n' "rust decode + to_sdk_json + to_string" "${rust_json_text:-?}"
printf '%-44s %12s frames/s\n' "rust decode + SdkJsonWriter (same text)" "${rust_writer:-?}"
verdict="$(awk -v r="$rust" 'BEGIN { print (r >= 320000) ? "met" : "NOT met" }')"
echo "goal >= 320000 frames/s (decode): $verdict"
verdict="$(awk -v r="${rust_writer:-0}" 'BEGIN { print (r >= 100000) ? "met" : "NOT met" }')"
echo "goal >= 100000 frames/s (decode + JSON text, /ws/ticks): $verdict"

py=""
for cand in "${UPKEEP_SDK_PYTHON:-}" /tmp/sdkvenv/bin/python "$root/.venv-sdk/bin/python"; do
    if [[ -n "$cand" && -x "$cand" ]] && "$cand" -c 'import upstox_client' 2>/dev/null; then
        py="$cand"
        break
    fi
done
if [[ -z "$py" ]]; then
    echo "official SDK: skipped (no Python with upstox-python-sdk found; see the header of $0)"
    exit 0
fi
sdk="$("$py" "$root/bench/feed_decode_sdk.py" "$frame" "$py_seconds")"
sdk_parse="$(sed -n 's/^parse_frames_per_s=//p' <<<"$sdk")"
sdk_dict="$(sed -n 's/^dict_frames_per_s=//p' <<<"$sdk")"
printf '%-44s %12s frames/s   (%s)\n' "sdk FeedResponse.ParseFromString" "$sdk_parse" "$(head -1 <<<"$sdk")"
printf '%-44s %12s frames/s\n' "sdk ParseFromString + MessageToDict" "$sdk_dict"
awk -v r="$rust" -v p="$sdk_parse" -v rj="$rust_json" -v d="$sdk_dict" 'BEGIN {
    printf "ratio rust decode / sdk parse:               %.2fx\n", r / p
    if (rj != "" && d > 0) printf "ratio rust decode+json / sdk parse+dict:     %.2fx\n", rj / d
}'

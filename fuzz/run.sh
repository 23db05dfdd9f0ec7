#!/usr/bin/env bash
# Runs the fuzz targets one after the other, niced, one libFuzzer process at a time.
#
#   fuzz/run.sh [target|all] [seconds]     default: every target, 600 s each
#
# Environment:
#   CARGO_TARGET_DIR  build directory (default /tmp/fuzz-target, away from the
#                     workspace's target/)
#   SANITIZER         address (default) or none; falls back to none if the address
#                     sanitizer build fails
#   FUZZ_ARGS         extra libFuzzer flags, e.g. "-max_len=16384"
#
# The toolchain is stable (rust-toolchain.toml); cargo-fuzz needs nightly flags, so
# RUSTC_BOOTSTRAP=1 is set for these builds only. Not part of CI.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root"

all=(jwt_claims notifier error_envelope feed_frame config_toml config_import)
target=${1:-all}
seconds=${2:-600}
if [[ $target == all ]]; then
    targets=("${all[@]}")
else
    [[ " ${all[*]} " == *" $target "* ]] || { echo "unknown target $target; one of: ${all[*]}" >&2; exit 2; }
    targets=("$target")
fi

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/fuzz-target}
sanitizer=${SANITIZER:-address}

command -v cargo-fuzz >/dev/null || {
    echo "cargo-fuzz is missing: nice -n 19 cargo install --locked cargo-fuzz" >&2
    exit 2
}

dict_for() {
    case $1 in
        config_toml) echo "$here/dict/config_toml.dict" ;;
        jwt_claims | notifier | error_envelope | config_import) echo "$here/dict/json.dict" ;;
        *) ;;
    esac
}

build() {
    nice -n 19 cargo fuzz build -a -s "$sanitizer" "$1"
}

for t in "${targets[@]}"; do
    if ! build "$t"; then
        if [[ $sanitizer != none ]]; then
            echo "== $t: $sanitizer sanitizer build failed; retrying with --sanitizer none" >&2
            sanitizer=none
            build "$t"
        else
            exit 1
        fi
    fi
    corpus=$here/corpus/$t
    mkdir -p "$corpus"
    dict=$(dict_for "$t")
    echo "== $t: ${seconds}s (sanitizer $sanitizer, corpus $(find "$corpus" -type f | wc -l) files)"
    # New inputs go to the first directory (corpus/); seeds/ is only read.
    # shellcheck disable=SC2086
    nice -n 19 cargo fuzz run -a -s "$sanitizer" "$t" "$corpus" "$here/seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        ${dict:+-dict="$dict"} ${FUZZ_ARGS:-}
    if (($(find "$corpus" -type f | wc -l) > 300)); then
        echo "== $t: minimizing the corpus"
        nice -n 19 cargo fuzz cmin -a -s "$sanitizer" "$t" "$corpus" -- -set_cover_merge=1
    fi
done

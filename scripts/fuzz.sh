#!/usr/bin/env bash
# Coverage-guided fuzzing of the three targets in fuzz/ (libFuzzer via
# cargo-fuzz), each for SECONDS, one after another. Corpora persist in
# fuzz/corpus/<target>, so runs add up; crashes land in fuzz/artifacts/<target>.
# A summary line per target ends the output; docs/RELIABILITY.md quotes them.
#
# Needs a nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
# Built without a sanitizer (-s none): wasmtime's signal-based traps and
# guard pages do not run under AddressSanitizer, and every property checked
# here is a panic or a returned finding, which libFuzzer catches either way.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(reset_invariant load_module guest_output)
command -v cargo-fuzz >/dev/null || { echo "needs cargo-fuzz: cargo install cargo-fuzz" >&2; exit 2; }

declare -A max_len=([reset_invariant]=16384 [load_module]=8192 [guest_output]=2048)
summary=()
for target in "${targets[@]}"; do
    log=$(mktemp)
    mkdir -p "fuzz/corpus/$target"
    set +e
    cargo +nightly fuzz run -O -s none "$target" -- \
        -max_total_time="$seconds" -max_len="${max_len[$target]:-4096}" \
        -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 2>&1 | tee "$log" | grep -E "^#[0-9]+[[:space:]]+(pulse|DONE)" | tail -3
    status=${PIPESTATUS[0]}
    set -e
    runs=$(grep -oP 'stat::number_of_executed_units: *\K[0-9]+' "$log" | tail -1)
    corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
    crashes=$(find "fuzz/artifacts/$target" -type f 2>/dev/null | wc -l)
    summary+=("$target: ${runs:-?} executions in ${seconds}s, corpus $corpus inputs, ${crashes} crash files, exit $status")
    rm -f "$log"
done
printf '%s\n' "${summary[@]}"

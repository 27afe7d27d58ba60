#!/bin/bash
# Runs every fuzz target for RUNS executions (default 1,000,000), starting from the seeds in
# fuzz/seeds/ and keeping what it finds in fuzz/corpus/ (crashes go to fuzz/artifacts/).
# Usage, from the repository root: fuzz/run-all.sh [RUNS] [target...]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1000000}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(idx checkpoint spec config image)
cargo +nightly fuzz build
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    echo "== $t: $runs runs"
    start=$(date +%s)
    cargo +nightly fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -runs="$runs" -rss_limit_mb=4096 -timeout=30 -print_final_stats=1 2>&1 |
        grep -E "stat::number_of_executed_units|stat::peak_rss_mb|^==|SUMMARY|panicked|Done [0-9]+ runs" || true
    echo "== $t: $(( $(date +%s) - start )) s"
done

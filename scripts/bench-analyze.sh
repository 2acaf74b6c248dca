#!/usr/bin/env bash
# analyze against the seed's pandas/matplotlib analysis on N generated LLMPerf-format records
# (default 1,000,000): wall time and peak memory of each, and the ratio. Offline except for the
# one-time install of pandas and matplotlib from PyPI into bench-results/analyze/venv.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000000}"
out="bench-results/analyze"
mkdir -p "$out"
cargo build --release --locked -p analyze >&2
if [ ! -x "$out/venv/bin/python" ]; then
    python3 -m venv "$out/venv"
    "$out/venv/bin/pip" install -q pandas matplotlib
fi
data="$out/big_${n}_individual_responses.json"
[ -f "$data" ] || python3 scripts/gen_llmperf.py "$n" "$data"
echo "input: $data ($(du -h "$data" | cut -f1))" >&2

measure() { # measure NAME COMMAND...: prints "NAME wall_s peak_rss_mib"
    local name=$1; shift
    /usr/bin/time -f "%e %M" -o "$out/$name.time" "$@" >/dev/null
    awk -v n="$name" '{ printf "%s %.2f %.0f\n", n, $1, $2 / 1024 }' "$out/$name.time"
}
rm -rf "$out/pandas" "$out/analyze"
p=$(measure pandas "$out/venv/bin/python" scripts/seed_analysis.py "$data" "$out/pandas")
a=$(measure analyze "${CARGO_TARGET_DIR:-target}/release/analyze" "$data" --out "$out/analyze" --quiet \
    --chart e2e_latencies --chart inter_token_latencies --chart time_to_first_token --chart inter_token_vs_throughput)
echo "$p" | tee "$out/result.txt"
echo "$a" | tee -a "$out/result.txt"
awk 'NR == 1 { p = $2 } NR == 2 { printf "ratio (pandas / analyze wall time): %.1fx\n", p / $2 }' "$out/result.txt" | tee -a "$out/result.txt"

#!/usr/bin/env bash
# analyze on N generated LLMPerf-format records (default 1,000,000): wall time and peak memory, beside
# the seed's pandas/matplotlib analysis of the same file, and beside analyze built from another
# revision when REV is given. The seed's four charts and the summary, as the seed document drew them.
#
# Usage: scripts/bench-analyze.sh [N] [REV]
#   PANDAS=0 skips pandas (at 10M records it needs ~30 GB and most of an hour).
# Offline except for the one-time install of pandas and matplotlib from PyPI into
# bench-results/analyze/venv.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/rev-build.sh
n="${1:-1000000}"
rev="${2:-}"
out="bench-results/analyze"
mkdir -p "$out"
before_and_now "$rev" analyze
data="$out/big_${n}_individual_responses.json"
[ -f "$data" ] || python3 scripts/gen_llmperf.py "$n" "$data"
echo "input: $data ($(du -h "$data" | cut -f1))" >&2

measure() { # measure NAME COMMAND...: prints "NAME wall_s peak_rss_mib"
    local name=$1; shift
    /usr/bin/time -f "%e %M" -o "$out/$name.time" "$@" >/dev/null
    awk -v n="$name" '{ printf "%s %.2f %.0f\n", n, $1, $2 / 1024 }' "$out/$name.time"
}
charts=(--chart e2e_latencies --chart inter_token_latencies --chart time_to_first_token
    --chart inter_token_vs_throughput)
: > "$out/result.txt"
if [ "${PANDAS:-1}" != 0 ]; then
    if [ ! -x "$out/venv/bin/python" ]; then
        python3 -m venv "$out/venv"
        "$out/venv/bin/pip" install -q pandas matplotlib
    fi
    rm -rf "$out/pandas"
    measure pandas "$out/venv/bin/python" scripts/seed_analysis.py "$data" "$out/pandas" | tee -a "$out/result.txt"
fi
if [ -n "$rev" ]; then
    rm -rf "$out/analyze-$rev"
    measure "analyze@$rev" "$old_bin/analyze" "$data" --out "$out/analyze-$rev" --quiet "${charts[@]}" | tee -a "$out/result.txt"
fi
for k in 1 2 3; do
    rm -rf "$out/analyze"
    measure "analyze#$k" "$bin/analyze" "$data" --out "$out/analyze" --quiet "${charts[@]}" | tee -a "$out/result.txt"
done

#!/usr/bin/env bash
# The mock given one core versus both: loadgen's self-check with its in-process mock at 1,000 streams
# × 10 ms (100,000 tokens/s, 30 tokens), the mock on 1 worker thread (one pacer heap), on 2 with one
# heap per worker (--pacer-shards 0), and on 2 with a single heap (the default), alternating over
# ROUNDS rounds (default 3). Nothing is pinned: loadgen shares the two cores.
#
# Usage: scripts/bench-cores.sh        ROUNDS=5 scripts/bench-cores.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/rev-build.sh
rounds="${ROUNDS:-3}"
out="bench-results/cores"
mkdir -p "$out"
rev_build "" loadgen
rm -f "$out"/*.json
for round in $(seq "$rounds"); do
    for cfg in "1 1" "2 0" "2 1"; do
        set -- $cfg
        "$bin/loadgen" selfcheck --concurrency 1000 --requests 3000 --ttft-ms 50 --itl-ms 10 --tokens 30 \
            --mock-threads "$1" --mock-pacer-shards "$2" --json "$out/t$1-s$2-r$round.json" >/dev/null
    done
done
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
print("| mock | lateness mean ms | lateness p50 ms | lateness p99 ms | mock CPU s | TTFT error p50 ms |")
print("|---|---|---|---|---|---|")
for key, label in (("t1-s1", "1 worker, 1 heap"), ("t2-s0", "2 workers, 2 heaps"), ("t2-s1", "2 workers, 1 heap")):
    rs = [json.load(open(os.path.join(out, f))) for f in sorted(os.listdir(out)) if f.startswith(key + "-")]
    late = lambda s: ", ".join(f"{r['error']['mock_lateness_ms'][s]:.1f}" for r in rs)
    cpu = ", ".join(f"{r['mock_cpu_s']:.2f}" for r in rs)
    ttft = ", ".join(f"{r['error']['ttft_error_ms']['p50']:.1f}" for r in rs)
    print(f"| {label} | {late('mean')} | {late('p50')} | {late('p99')} | {cpu} | {ttft} |")
PY

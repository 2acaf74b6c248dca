#!/usr/bin/env bash
# analyze merging shard results, for BENCHMARKS.md: 16 shards × 250,000 records (4 million) read
# from a folder of shard-I-of-16 folders into one run, with its summary and the seed's four charts.
# One shard's records are real (loadgen --shard 0/16 against a release mock at 0 ms per token); the
# other fifteen are copies with their ids moved to their own shard, as 16 machines would write them.
#
# Usage: scripts/bench-merge.sh [SHARDS] [PER_SHARD]      (defaults 16 and 250000)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/rev-build.sh
shards="${1:-16}"
per="${2:-250000}"
out="bench-results/merge"
data="$out/shards-$shards-x-$per"
cargo build --release --locked -p mock-server -p loadgen -p analyze >&2
bin="${CARGO_TARGET_DIR:-target}/release"
mkdir -p "$out"

if [ ! -d "$data/shard-$((shards - 1))-of-$shards" ]; then
    rm -rf "$data"
    start_mock "$out/mock.log" "$bin/mock-server" --port 0 --host 127.0.0.1 --ttft-ms 0 --itl-ms 0
    "$bin/loadgen" --api-base "$url" --api-key k --model m --tokenizer tokenperf \
        --mean-input-tokens 16 --stddev-input-tokens 0 --mean-output-tokens 4 --stddev-output-tokens 0 \
        --num-concurrent-requests "$((shards * 16))" --max-num-completed-requests "$((shards * per))" \
        --timeout 7200 --quiet --shard "0/$shards" --results-dir "$data" >/dev/null
    kill "$mock_pid"
    python3 - "$data" "$shards" <<'PY'
import json, os, sys
data, n = sys.argv[1], int(sys.argv[2])
src = os.path.join(data, f"shard-0-of-{n}")
jsonl = next(f for f in os.listdir(src) if f.endswith("_requests.jsonl"))
run = next(f for f in os.listdir(src) if f.endswith("_run.json"))
lines = open(os.path.join(src, jsonl)).read().splitlines()
info = json.load(open(os.path.join(src, run)))
for i in range(1, n):
    dst = os.path.join(data, f"shard-{i}-of-{n}")
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(dst, jsonl), "w") as f:
        for line in lines:
            r = json.loads(line)
            r["id"] += i
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    info["shard"] = {"index": i, "count": n}
    info["run_started_unix_us"] += 1000  # each shard 1 ms after the previous one
    json.dump(info, open(os.path.join(dst, run), "w"))
PY
fi
echo "input: $data ($(du -sh "$data" | cut -f1), $(cat "$data"/shard-*/*_requests.jsonl | wc -l) records)" | tee "$out/result.txt"
rm -rf "$out/analysis"
/usr/bin/time -f "%e %M" -o "$out/analyze.time" "$bin/analyze" "$data" --out "$out/analysis" --quiet \
    --chart e2e_latencies --chart inter_token_latencies --chart time_to_first_token \
    --chart inter_token_vs_throughput
awk '{ printf "analyze, merged with the four seed charts: %.1f s, peak RSS %.0f MiB\n", $1, $2 / 1024 }' \
    "$out/analyze.time" | tee -a "$out/result.txt"

#!/usr/bin/env bash
# loadgen's CPU per SSE event (issue 17), for BENCHMARKS.md: plain loadgen runs (no self-check, no
# ground truth) against a release mock, 1,000 streams, 32 prompt / 100 output tokens, 50 ms to the
# first token then 10 ms per token, no ramp. Three cases: "pinned" (mock on CPU 0, loadgen on CPU 1,
# so loadgen's CPU is its own core's), "unpinned" (both free on both cores), and "saturated" (pinned,
# with a mock that sends every token at once, 0 ms, so loadgen's core is the limit and each read
# carries whatever has arrived). CPU is loadgen's
# user + system time from launch to exit; events are counted in the records it wrote. With a REV,
# loadgen built from REV alternates with this tree's over ROUNDS rounds (default 3), against the
# same mock (this tree's).
#
# Usage: scripts/bench-client-cpu.sh [REV]      ROUNDS=5 scripts/bench-client-cpu.sh ...
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/rev-build.sh
rev="${1:-}"
before_and_now "$rev" mock-server loadgen
out="bench-results/client-cpu"
rounds="${ROUNDS:-3}"
mkdir -p "$out"
rm -f "$out"/*.txt
ulimit -n 20000 2>/dev/null || true
export OPENAI_API_KEY=unused

mock=(--port 0 --host 127.0.0.1 --ttft-ms 50 --itl-ms 10 --max-waiting 100000)
start_mock "$out/mock-pinned.log" taskset -c 0 "$bin/mock-server" "${mock[@]}"
pinned_pid=$mock_pid pinned_url=$url
start_mock "$out/mock-fast.log" taskset -c 0 "$bin/mock-server" --port 0 --host 127.0.0.1 \
    --ttft-ms 0 --itl-ms 0 --max-waiting 100000
fast_pid=$mock_pid fast_url=$url
start_mock "$out/mock-free.log" "$bin/mock-server" "${mock[@]}"
trap 'kill $pinned_pid $fast_pid $mock_pid 2>/dev/null || true' EXIT

run() { # run VARIANT CASE LOADGEN ROUND
    local variant="$1" case="$2" lg="$3" round="$4" prefix=() api="$url" n=3000
    if [ "$case" = pinned ]; then prefix=(taskset -c 1); api="$pinned_url"; n=5000; fi
    if [ "$case" = saturated ]; then prefix=(taskset -c 1); api="$fast_url"; n=20000; fi
    local dir="$out/$variant-$case-r$round"
    rm -rf "$dir"
    /usr/bin/time -f "%e %U %S" -o "$dir.time" "${prefix[@]}" "$lg" --model m --tokenizer tokenperf \
        --api-base "$api" --num-concurrent-requests 1000 --max-num-completed-requests "$n" \
        --mean-input-tokens 32 --stddev-input-tokens 0 --mean-output-tokens 100 \
        --stddev-output-tokens 0 --results-dir "$dir" >/dev/null 2>&1
    python3 - "$dir" "$variant" "$case" >>"$out/$variant-$case.txt" <<'PY'
import glob, json, sys
d, variant, case = sys.argv[1:]
wall, user, sys_s = map(float, open(d + ".time").read().split()[-3:])
events = ok = 0
for line in open(glob.glob(d + "/*_requests.jsonl")[0]):
    r = json.loads(line)
    events += len(r.get("events") or [])
    ok += r["outcome"]["kind"] == "ok"
cpu = user + sys_s
print(f"{events} {ok} {wall:.2f} {cpu:.2f} {cpu / events * 1e5:.3f} {events / wall:.0f} {100 * cpu / wall:.0f}")
PY
    rm -rf "$dir"
}

variants=("now")
[ -n "$rev" ] && variants=("$rev" now)
for round in $(seq "$rounds"); do
    for v in "${variants[@]}"; do
        lg="$bin/loadgen"
        [ "$v" = now ] || lg="$old_bin/loadgen"
        for c in pinned unpinned saturated; do run "$v" "$c" "$lg" "$round"; done
    done
done
python3 - "$out" "${variants[@]}" <<'PY'
import sys
out, variants = sys.argv[1], sys.argv[2:]
print("| loadgen | case | events | ok requests | CPU s per 100k events | events/s | loadgen CPU % of wall |")
print("|---|---|---:|---:|---|---|---|")
for v in variants:
    for case in ("pinned", "unpinned", "saturated"):
        rows = [l.split() for l in open(f"{out}/{v}-{case}.txt")]
        col = lambda i: ", ".join(r[i] for r in rows)
        print(f"| {v} | {case} | {rows[0][0]} | {rows[0][1]} | {col(4)} | {col(5)} | {col(6)} |")
PY

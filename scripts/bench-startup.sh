#!/usr/bin/env bash
# loadgen's start-up, for BENCHMARKS.md: wall time from launching the process to its first request
# leaving (the run's start plus the earliest send in its records), against a release mock-server on
# loopback. Three runs per case; the table shows each.
#
# Usage: scripts/bench-startup.sh [REV]     REV: measure a git revision instead (built in a worktree)
#        TOKENIZER=/path/to/tokenizer.json scripts/bench-startup.sh   (default: the built-in one)
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:-}"
out="bench-results/startup${rev:+-$rev}"
mkdir -p "$out"
. scripts/rev-build.sh
rev_build "$rev"
tok="${TOKENIZER:-tokenperf}"

start_mock "$out/mock.log" "$bin/mock-server" --port 0 --host 127.0.0.1 --ttft-ms 0 --itl-ms 0

first_send_ms() { # first_send_ms LAUNCH_NS DIR: ms from launch to the first request's send
    python3 - "$1" "$2" <<'PY'
import glob, json, sys
launch_ns, d = int(sys.argv[1]), sys.argv[2]
info = json.load(open(glob.glob(d + "/*_run.json")[0]))
sent = min(json.loads(l)["sent_at_us"] for l in open(glob.glob(d + "/*_requests.jsonl")[0])
           if json.loads(l).get("sent_at_us") is not None)
print(f"{(info['run_started_unix_us'] + sent) / 1e3 - launch_ns / 1e6:.1f}")
PY
}

: >"$out/table.txt"
echo "loadgen $(cd "$src" && git describe --always --dirty); tokenizer $tok" | tee -a "$out/table.txt"
for case in "10 requests:10" "100,000-request plan (stopped at 50):100000"; do
    name="${case%%:*}"; n="${case##*:}"
    times=()
    for k in 1 2 3; do
        dir="$out/run"; rm -rf "$dir"
        launch=$(date +%s%N)
        "$bin/loadgen" --api-base "$url" --api-key k --model m --tokenizer "$tok" \
            --num-concurrent-requests 1 --max-num-completed-requests "$n" --timeout 0.5 --quiet \
            --results-dir "$dir" >/dev/null 2>&1 || true
        times+=("$(first_send_ms "$launch" "$dir")")
    done
    printf '%-40s launch → first request: %s ms\n' "$name" "${times[*]}" | tee -a "$out/table.txt"
done
rm -rf "$out/run"

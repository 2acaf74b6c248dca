#!/usr/bin/env bash
# loadgen's start-up, for BENCHMARKS.md: wall time from launching the process to its first request
# leaving (the run's start plus the earliest send in its records), against a release mock-server on
# loopback.
#
# Usage: scripts/bench-startup.sh [REV]     three runs per case of this tree's loadgen, or of REV's
#                                           (built in a worktree) instead
#        TOKENIZER=/path/to/tokenizer.json scripts/bench-startup.sh   (default: the built-in one)
#        COMPARE=REV scripts/bench-startup.sh   REV's loadgen and this tree's launched in turn, RUNS
#                                           times each (default 20; 10 requests), so the VM's drift
#                                           falls on both alike; prints both series and medians
#        IDLE_S=3 ...                       sleep that long before each launch: on this VM, memory
#                                           freed a few seconds earlier is handed back to the host
#                                           and is slow to touch again (BENCHMARKS.md), which a
#                                           launch after a pause pays and one right after another
#                                           does not
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:-}"
compare="${COMPARE:-}"
out="bench-results/startup${rev:+-$rev}${compare:+-vs-$compare}"
mkdir -p "$out"
. scripts/rev-build.sh
tok="${TOKENIZER:-tokenperf}"
idle="${IDLE_S:-0}"
if [ -n "$compare" ]; then
    rev_build "$compare" loadgen
    old_loadgen="$bin/loadgen"
fi
rev_build "$rev"

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

launch() { # launch LOADGEN REQUESTS: one run; prints ms from launch to the first request
    local dir="$out/run"
    rm -rf "$dir"
    sleep "$idle"
    local t0; t0=$(date +%s%N)
    "$1" --api-base "$url" --api-key k --model m --tokenizer "$tok" \
        --num-concurrent-requests 1 --max-num-completed-requests "$2" --timeout 0.5 --quiet \
        --results-dir "$dir" >/dev/null 2>&1 || true
    first_send_ms "$t0" "$dir"
}

: >"$out/table.txt"
if [ -n "$compare" ]; then
    echo "loadgen $compare against $(git describe --always --dirty), in turn; tokenizer $tok; idle ${idle} s before each" | tee -a "$out/table.txt"
    old=(); new=()
    for _ in $(seq "${RUNS:-20}"); do
        old+=("$(launch "$old_loadgen" 10)")
        new+=("$(launch "$bin/loadgen" 10)")
    done
    median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
    printf '%-12s launch → first request: %s ms (median %s)\n' "$compare" "${old[*]}" "$(median "${old[@]}")" | tee -a "$out/table.txt"
    printf '%-12s launch → first request: %s ms (median %s)\n' "now" "${new[*]}" "$(median "${new[@]}")" | tee -a "$out/table.txt"
    rm -rf "$out/run"
    exit 0
fi

echo "loadgen $(cd "$src" && git describe --always --dirty); tokenizer $tok; idle ${idle} s before each" | tee -a "$out/table.txt"
for case in "10 requests:10" "100,000-request plan (stopped at 50):100000"; do
    name="${case%%:*}"; n="${case##*:}"
    times=()
    for _ in 1 2 3; do times+=("$(launch "$bin/loadgen" "$n")"); done
    printf '%-40s launch → first request: %s ms\n' "$name" "${times[*]}" | tee -a "$out/table.txt"
done
rm -rf "$out/run"

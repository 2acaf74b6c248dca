#!/usr/bin/env bash
# loadgen's peak memory against run length, for BENCHMARKS.md: the same load for more and more
# requests (short outputs: the per-request cost) and for more and more SSE events (long outputs: the
# per-event cost), each a release build against a release mock-server at 0 ms per token on loopback.
# Memory that does not grow with the run is the target; peak RSS is GNU time's maximum resident set.
#
# Usage: scripts/bench-memory.sh [REV]      REV: a git revision to measure instead of the working tree
#        (built in a worktree under /tmp with its own target dir), for before/after figures.
#        SIZES="100000 1000000" EVENT_REQUESTS="2000 10000" STREAMS=1000 scripts/bench-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:-}"
out="bench-results/memory${rev:+-$rev}"
mkdir -p "$out"
. scripts/rev-build.sh
rev_build "$rev"
streams="${STREAMS:-1000}"
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

start_mock "$out/mock.log" "$bin/mock-server" --port 0 --host 127.0.0.1 --ttft-ms 0 --itl-ms 0 --max-waiting 100000

run() { # run NAME REQUESTS OUTPUT_TOKENS: one line of figures
    local name=$1 n=$2 tokens=$3 dir="$out/$1"
    rm -rf "$dir"
    /usr/bin/time -f "%M %e %U %S" -o "$out/$name.time" "$bin/loadgen" --api-base "$url" --api-key k \
        --model m --tokenizer tokenperf --mean-input-tokens 16 --stddev-input-tokens 0 \
        --mean-output-tokens "$tokens" --stddev-output-tokens 0 --num-concurrent-requests "$streams" \
        --max-num-completed-requests "$n" --timeout 7200 --idle-timeout 600 --quiet \
        --results-dir "$dir" >"$out/$name.txt" 2>&1 || true
    local events; events=$(python3 -c "
import json,glob
s=json.load(open(glob.glob('$dir/*_summary.json')[0]))['tokenperf']
print(s.get('summary',s).get('events_read', 'n/a'))" 2>/dev/null || echo n/a)
    read -r rss_kib wall user sys <"$out/$name.time"
    local ok; ok=$(grep -o '^[0-9]* of [0-9]* requests succeeded' "$out/$name.txt" | cut -d' ' -f1 || echo "?")
    printf '%-14s %9s requests %5s tokens  %9s ok  events %11s  peak RSS %7.1f MiB  wall %7.1f s  CPU %7.1f s\n' \
        "$name" "$n" "$tokens" "$ok" "$events" "$(echo "$rss_kib / 1024" | bc -l)" "$wall" "$(echo "$user + $sys" | bc -l)" |
        tee -a "$out/table.txt"
    rm -rf "$dir"
}

: >"$out/table.txt"
echo "streams: $streams; loadgen $(cd "$src" && git describe --always --dirty)${rev:+ ($rev)}" | tee -a "$out/table.txt"
for n in ${SIZES:-10000 100000 1000000}; do run "requests-$n" "$n" 4; done
for n in ${EVENT_REQUESTS:-2000 10000 30000}; do run "events-$n" "$n" 1000; done

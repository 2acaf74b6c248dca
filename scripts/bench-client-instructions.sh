#!/usr/bin/env bash
# loadgen's instructions and cache misses per SSE event and per request (issue 17), counted by
# cachegrind rather than timed: the VM's speed drifts by ±10 % within an hour, which hides any change
# worth a few percent. The counts are steadier but not exact (batching under valgrind still depends
# on timing): two runs of one binary gave 11,618 and 12,334 instructions and 32.4 and 33.3 L2 misses
# per event (BENCHMARKS.md). Plain loadgen runs (1,000
# streams, 32 prompt tokens) under `valgrind --tool=cachegrind` on CPU 1, against a release mock on
# CPU 0 that sends a token every 2 s (slow enough that loadgen, some 50 times slower under valgrind,
# keeps up, so each read still carries one event). The caches simulated are one core's own: L1d
# 32 KiB and L2 512 KiB (this machine's; the shared L3 is not simulated), so "L2 misses" are the
# reads and writes that leave the core. Three runs per variant: 1,000 requests of 20 output tokens,
# 2,000 of 20, and 1,000 of 40. One more event costs (third − first) ÷ (its events − first's events):
# everything that grows with the stream, token counting included. One more request costs
# (second − first) ÷ 1,000 less its events at that price: the prompt, the request, the connection
# handed on, the record. Start-up cancels out of both. With a REV, loadgen built from REV is counted
# alike; a REV whose rustix reads the vDSO itself crashes under valgrind, so the script turns on
# rustix's `use-libc` in REV's worktree first (it changes how rustix reaches the kernel, not
# loadgen's code). The kernel's share is not counted here: bench-client-cpu.sh measures it.
#
# The floor is counted alike: `tcp_floor`'s bare reader (one task and one read per message, no
# HTTP, SSE or JSON) under cachegrind on CPU 1, its writer on CPU 0 sending 1,000 streams a message
# every 2 s, for 20 s and for 40 s; one more message costs the difference over the extra 10,000.
#
# With KEEP=1 each run's cachegrind file stays beside the tables (VARIANT-REQUESTS-TOKENS.cg), for
# `cg_diff A.cg B.cg > d && cg_annotate d`: where the difference between two runs went, by function.
#
# With READ_STAMPS=1, this tree's loadgen is also counted with `--rx-timestamps read`
# ("now-read").
#
# Usage: scripts/bench-client-instructions.sh [REV]      KEEP=1 scripts/bench-client-instructions.sh
#        READ_STAMPS=1 scripts/bench-client-instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }
source scripts/rev-build.sh
rev="${1:-}"
if [ -n "$rev" ]; then
    src="/tmp/tokenperf-$rev"
    [ -d "$src" ] || git worktree add --detach "$src" "$rev" >&2
    grep -q '"use-libc"' "$src/Cargo.toml" ||
        sed -i 's/^\(rustix = .*features = \[[^]]*\)\]/\1, "use-libc"]/' "$src/Cargo.toml"
fi
before_and_now "$rev" mock-server loadgen
cargo build --release --locked -p mock-server --example tcp_floor >&2
out="bench-results/client-instructions"
mkdir -p "$out"
rm -f "$out"/*.txt
ulimit -n 20000 2>/dev/null || true
export OPENAI_API_KEY=unused

start_mock "$out/mock.log" taskset -c 0 "$bin/mock-server" --port 0 --host 127.0.0.1 \
    --ttft-ms 100 --itl-ms 2000 --max-waiting 100000

count() { # count VARIANT LOADGEN REQUESTS TOKENS: a line of "events Ir D1-misses L2-misses I1-misses"
    local dir="$out/$1-$3-$4" extra=()
    [ "$1" = now-read ] && extra=(--rx-timestamps read)
    rm -rf "$dir"
    taskset -c 1 valgrind --tool=cachegrind --cache-sim=yes --D1=32768,8,64 --LL=524288,8,64 \
        --cachegrind-out-file="$dir.cg" "$2" --model m --tokenizer tokenperf --api-base "$url" \
        --num-concurrent-requests 1000 --max-num-completed-requests "$3" \
        --mean-input-tokens 32 --stddev-input-tokens 0 --mean-output-tokens "$4" \
        --stddev-output-tokens 0 --results-dir "$dir" "${extra[@]}" >/dev/null 2>&1
    python3 - "$dir" <<'PY'
import glob, json, sys
d = sys.argv[1]
events = bad = 0
for line in open(glob.glob(d + "/*_requests.jsonl")[0]):
    r = json.loads(line)
    events += len(r.get("events") or [])
    bad += r["outcome"]["kind"] != "ok"
if bad:
    sys.exit(f"{d}: {bad} requests failed; the counts would not be comparable")
# cachegrind's summary line: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw.
v = [int(x) for x in [l for l in open(d + ".cg") if l.startswith("summary:")][0].split()[1:]]
print(events, v[0], v[4] + v[7], v[5] + v[8], v[1])
PY
    rm -rf "$dir"
    [ -n "${KEEP:-}" ] || rm -f "$dir.cg"
}

floor() { # floor SECONDS: a line of "messages Ir D1-misses L2-misses I1-misses", the bare reader
    local port=$((7940 + $1)) cg="$out/floor-$1.cg"
    taskset -c 0 "$bin/examples/tcp_floor" write --port "$port" --streams 1000 \
        --gap-us 2000000 --seconds "$1" >"$out/floor-writer-$1.log" &
    local w=$!
    sleep 0.3
    taskset -c 1 valgrind --tool=cachegrind --cache-sim=yes --D1=32768,8,64 --LL=524288,8,64 \
        --cachegrind-out-file="$cg" "$bin/examples/tcp_floor" read --port "$port" --streams 1000 \
        >"$out/floor-reader-$1.log" 2>&1
    wait "$w"
    python3 - "$cg" "$out/floor-reader-$1.log" <<'PY'
import re, sys
cg, log = sys.argv[1:]
msgs = int(re.search(r"reader: (\d+) messages", open(log).read()).group(1))
v = [int(x) for x in [l for l in open(cg) if l.startswith("summary:")][0].split()[1:]]
print(msgs, v[0], v[4] + v[7], v[5] + v[8], v[1])
PY
    [ -n "${KEEP:-}" ] || rm -f "$cg"
}
floor 20 >"$out/floor.txt"
floor 40 >>"$out/floor.txt"

variants=("now")
[ -n "$rev" ] && variants=("$rev" now)
[ -n "${READ_STAMPS:-}" ] && variants+=(now-read)
for v in "${variants[@]}"; do
    lg="$bin/loadgen"
    [ "$v" = now ] || [ "$v" = now-read ] || lg="$old_bin/loadgen"
    for run in "1000 20" "2000 20" "1000 40"; do
        # shellcheck disable=SC2086
        count "$v" "$lg" $run >>"$out/$v.txt"
    done
done
python3 - "$out" "${variants[@]}" <<'PY'
import sys
out, variants = sys.argv[1], sys.argv[2:]
print("| loadgen | per event: instructions | L1d misses | L2 misses | L1i misses | per request: instructions | L1d misses | L2 misses |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for v in variants:
    (e1, *a), (e2, *b), (e3, *c) = [list(map(int, l.split())) for l in open(f"{out}/{v}.txt")]
    event = [(z - x) / (e3 - e1) for x, z in zip(a, c)]
    request = [((y - x) - (e2 - e1) * ev) / 1000 for x, y, ev in zip(a, b, event)]
    print(f"| {v} | {event[0]:,.0f} | {event[1]:.1f} | {event[2]:.1f} | {event[3]:.1f} | "
          f"{request[0]:,.0f} | {request[1]:,.0f} | {request[2]:,.0f} |")
(m1, *a), (m2, *b) = [list(map(int, l.split())) for l in open(f"{out}/floor.txt")]
m = [(y - x) / (m2 - m1) for x, y in zip(a, b)]
print(f"| bare reader, per message | {m[0]:,.0f} | {m[1]:.1f} | {m[2]:.1f} | {m[3]:.1f} | | | |")
PY

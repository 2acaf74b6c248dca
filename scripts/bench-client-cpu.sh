#!/usr/bin/env bash
# loadgen's CPU per SSE event (issue 17), for BENCHMARKS.md: plain loadgen runs (no self-check, no
# ground truth) against a release mock, 1,000 streams, 32 prompt / 100 output tokens, 50 ms to the
# first token then 10 ms per token, no ramp. Three cases: "pinned" (mock on CPU 0, loadgen on CPU 1,
# so loadgen's CPU is its own core's), "unpinned" (both free on both cores), and "saturated" (pinned,
# with a mock that sends every token at once, 0 ms, so loadgen's core is the limit and each read
# carries whatever has arrived). CPU is loadgen's
# user + system time from launch to exit; events are counted in the records it wrote. Each round
# also runs the kernel's floor alike: `tcp_floor`'s bare writer on CPU 0, 1,000 streams × 10 ms, and
# its bare reader (one tokio task per stream, no HTTP or JSON) on CPU 1, whose CPU per message is
# what any client pays on this VM in the pinned case; the table gives loadgen's pinned cost as a
# ratio to it (both whole processes, launch to exit), round by round. The pinned case also reads
# each of loadgen's threads' CPU, to tell per-event work (the runtime's worker) from per-request
# work (token counting, prompt building). Each run also reports events per read (events that share
# a read's time stamp came in one read) and the floor its messages per read: above 1 in the paced
# case, the server fell behind its pace (a slow spell of the VM) and reads batched, which lowers the
# CPU per event without loadgen doing anything cheaper. With a REV,
# loadgen built from REV alternates with this tree's over ROUNDS rounds (default 3), against the
# same mock (this tree's).
#
# With READ_STAMPS=1, this tree's loadgen also runs with `--rx-timestamps read` ("now-read").
# With LTO=1, this tree's loadgen also runs built with fat LTO and one codegen unit ("now-lto",
# built in target/lto), which the release profile does not use (see BENCHMARKS.md, issue 17).
# CASES picks the cases (default "pinned unpinned saturated"); "pinned" alone makes a round short,
# for more rounds of the case with the target. A fourth case, "floor-paced", is loadgen pinned on
# CPU 1 against `tcp_floor sse` on CPU 0: the bare writer's own loop (the same absolute deadlines,
# one write per event, 1,000 streams x 10 ms) speaking just enough HTTP and SSE, so that loadgen
# and the bare reader are offered the same writes, and a server that falls behind (the mock on one
# core at this rate) does not lower loadgen's cost per event; the last table then gives loadgen's
# cost per event in this case as a ratio to the bare reader's per message, and both writers'
# lateness and time inside write() (what each reader's socket costs the server side).
#
# Usage: scripts/bench-client-cpu.sh [REV]      ROUNDS=5 scripts/bench-client-cpu.sh ...
#        READ_STAMPS=1 scripts/bench-client-cpu.sh      CASES=pinned LTO=1 ROUNDS=6 scripts/...
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/rev-build.sh
rev="${1:-}"
before_and_now "$rev" mock-server loadgen
cargo build --release --locked -p mock-server --example tcp_floor >&2
out="bench-results/client-cpu"
rounds="${ROUNDS:-3}"
read -ra cases <<<"${CASES:-pinned unpinned saturated}"
if [ -n "${LTO:-}" ]; then
    CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
        cargo build --release --locked -p loadgen --target-dir target/lto >&2
fi
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

# Each thread's CPU (`schedstat`'s run time, in ns, exact where `/proc`'s tick counts are sampled),
# read every 50 ms while the process lives: the last reading per thread is within 50 ms of its end.
thread_cpu() { # thread_cpu PID: lines of "NAME TID NS"
    [ -n "$1" ] || return 0
    while kill -0 "$1" 2>/dev/null; do
        for t in /proc/"$1"/task/*; do
            echo "$(cat "$t/comm" 2>/dev/null) ${t##*/} $(cut -d' ' -f1 "$t/schedstat" 2>/dev/null)"
        done 2>/dev/null
        sleep 0.05
    done
}

run() { # run VARIANT CASE LOADGEN ROUND
    local variant="$1" case="$2" lg="$3" round="$4" prefix=() api="$url" n=3000 extra=()
    [ "$variant" = now-read ] && extra=(--rx-timestamps read)
    if [ "$case" = pinned ]; then prefix=(taskset -c 1); api="$pinned_url"; n=5000; fi
    if [ "$case" = saturated ]; then prefix=(taskset -c 1); api="$fast_url"; n=20000; fi
    local dir="$out/$variant-$case-r$round" writer=""
    rm -rf "$dir"
    if [ "$case" = floor-paced ]; then
        # It serves until loadgen's connections have all closed (at most 120 s).
        local port=$((7800 + RANDOM % 100))
        taskset -c 0 "$bin/examples/tcp_floor" sse --port "$port" --streams 1000 --gap-us 10000 \
            --tokens 100 --seconds 120 >"$dir.writer.log" 2>&1 &
        writer=$!
        sleep 0.3
        prefix=(taskset -c 1); api="http://127.0.0.1:$port/v1"; n=5000
    fi
    /usr/bin/time -f "%e %U %S" -o "$dir.time" "${prefix[@]}" "$lg" --model m --tokenizer tokenperf \
        --api-base "$api" --num-concurrent-requests 1000 --max-num-completed-requests "$n" \
        --mean-input-tokens 32 --stddev-input-tokens 0 --mean-output-tokens 100 \
        --stddev-output-tokens 0 --results-dir "$dir" "${extra[@]}" >/dev/null 2>&1 &
    local timer=$! pid=""
    for _ in $(seq 100); do pid=$(pgrep -P "$timer" || true); [ -n "$pid" ] && break; sleep 0.01; done
    thread_cpu "$pid" >"$dir.threads"
    wait "$timer"
    [ -z "$writer" ] || wait "$writer"
    python3 - "$dir" "$variant" "$case" >>"$out/$variant-$case.txt" <<'PY'
import glob, json, sys
d, variant, case = sys.argv[1:]
wall, user, sys_s = map(float, open(d + ".time").read().split()[-3:])
events = ok = reads = 0
for line in open(glob.glob(d + "/*_requests.jsonl")[0]):
    r = json.loads(line)
    evs = r.get("events") or []
    events += len(evs)
    # Events one read brought share its time stamp: distinct times are the reads that carried events.
    reads += len({e[0] for e in evs})
    ok += r["outcome"]["kind"] == "ok"
cpu = user + sys_s
# µs per event: user, system, then each kind of thread (the last reading of each thread's run time).
last = {}
for line in open(d + ".threads"):
    f = line.split()
    if len(f) == 3 and f[2].isdigit():
        last[(f[0], f[1])] = int(f[2])
kinds = {}
for (name, _), ns in last.items():
    kind = "worker" if name.startswith("tokio") else "main" if name == "loadgen" else name.removeprefix("loadgen-").rstrip("-0123456789")
    kinds[kind] = kinds.get(kind, 0) + ns
per = lambda s: f"{s * 1e6 / events:.2f}"
threads = ",".join(f"{k}={per(ns / 1e9)}" for k, ns in sorted(kinds.items()))
print(f"{events} {ok} {wall:.2f} {cpu:.2f} {cpu / events * 1e5:.3f} {events / wall:.0f} {100 * cpu / wall:.0f} {per(user)} {per(sys_s)} {threads} {events / max(reads, 1):.3f}")
PY
    rm -rf "$dir"
}

floor() { # floor ROUND: the bare writer and reader pinned as in the pinned case, 5 s
    local port=$((7900 + $1))
    taskset -c 0 "$bin/examples/tcp_floor" write --port "$port" --streams 1000 --gap-us 10000 \
        --seconds 5 >"$out/floor-writer-r$1.log" &
    local w=$!
    sleep 0.3
    /usr/bin/time -f "%U %S" -o "$out/floor-r$1.time" taskset -c 1 "$bin/examples/tcp_floor" read \
        --port "$port" --streams 1000 >"$out/floor-reader-r$1.log"
    wait "$w"
    # µs per message: the reader's own figure (its CPU after connecting), then user and system time
    # of the whole process; then messages per read.
    local msgs reads
    msgs=$(grep -o '^reader: [0-9]*' "$out/floor-reader-r$1.log" | grep -o '[0-9]*$')
    reads=$(grep -o 'messages in [0-9]* reads' "$out/floor-reader-r$1.log" | grep -o '[0-9]*')
    echo "$(grep -o '[0-9.]* µs per message' "$out/floor-reader-r$1.log" | grep -o '^[0-9.]*')" \
        "$(awk -v m="$msgs" '{ printf "%.2f %.2f", $1 * 1e6 / m, $2 * 1e6 / m }' "$out/floor-r$1.time")" \
        "$(awk -v m="$msgs" -v r="$reads" 'BEGIN { printf "%.3f", m / (r > 0 ? r : 1) }')" \
        >>"$out/floor.txt"
}

variants=("now")
[ -n "$rev" ] && variants=("$rev" now)
[ -n "${READ_STAMPS:-}" ] && variants+=(now-read)
[ -n "${LTO:-}" ] && variants+=(now-lto)
for round in $(seq "$rounds"); do
    for v in "${variants[@]}"; do
        case "$v" in
            now | now-read) lg="$bin/loadgen" ;;
            now-lto) lg="target/lto/release/loadgen" ;;
            *) lg="$old_bin/loadgen" ;;
        esac
        for c in "${cases[@]}"; do run "$v" "$c" "$lg" "$round"; done
    done
    floor "$round"
done
python3 - "$out" "${cases[*]}" "${variants[@]}" <<'PY'
import sys
import re
out, cases, variants = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
print("| loadgen | case | events | ok requests | CPU s per 100k events | events/s | loadgen CPU % of wall | events per read |")
print("|---|---|---:|---:|---|---|---|---|")
for v in variants:
    for case in cases:
        rows = [l.split() for l in open(f"{out}/{v}-{case}.txt")]
        col = lambda i: ", ".join(r[i] if len(r) > i else "-" for r in rows)
        print(f"| {v} | {case} | {rows[0][0]} | {rows[0][1]} | {col(4)} | {col(5)} | {col(6)} | {col(10)} |")
print()
print("| loadgen | case | µs per event: user | system | by thread (schedstat) |")
print("|---|---|---|---|---|")
for v in variants:
    for case in cases:
        rows = [l.split() for l in open(f"{out}/{v}-{case}.txt")]
        col = lambda i: ", ".join(r[i] if len(r) > i else "-" for r in rows)
        print(f"| {v} | {case} | {col(7)} | {col(8)} | {'; '.join(r[9] if len(r) > 9 else '-' for r in rows)} |")
floor = [l.split() for l in open(f"{out}/floor.txt")]
print()
shown = [(v, c) for c in ("pinned", "floor-paced") if c in cases for v in variants]
print("| round | floor reader µs per message (user, system) | messages per read | " + " | ".join(f"{v} {c} ÷ floor" for v, c in shown) + " |")
print("|---|---|---:|" + "---:|" * len(shown))
for i, row in enumerate(floor):
    f, fu, fs = row[:3]
    per_read = row[3] if len(row) > 3 else "-"
    f = float(f)
    ratios = []
    for v, c in shown:
        per_event = float(open(f"{out}/{v}-{c}.txt").readlines()[i].split()[4]) * 10  # µs per event
        ratios.append(f"{per_event / (float(fu) + float(fs)):.2f}")
    print(f"| {i + 1} | {f:.2f} ({fu}, {fs}) | {per_read} | " + " | ".join(ratios) + " |")
if "floor-paced" in cases:
    # Whether each writer kept its pace, and what its write cost: the bare writer's to the bare
    # reader and the SSE writer's to loadgen, per round (lateness p50 and p99; µs inside write()).
    def writer(path):
        text = open(path).read()
        late = re.search(r"p50 ([0-9.]+) µs, p99 ([0-9.]+) µs", text)
        inside = re.search(r"([0-9.]+) µs inside write", text)
        return f"{late[1]}, {late[2]}; {inside[1]}" if late and inside else "-"
    print()
    print("| round | bare writer: lateness p50, p99 µs; µs inside write() | " + " | ".join(f"{v} floor-paced: SSE writer, the same" for v in variants) + " |")
    print("|---|---|" + "---|" * len(variants))
    for i in range(len(floor)):
        cells = [writer(f"{out}/floor-writer-r{i + 1}.log")] + [writer(f"{out}/{v}-floor-paced-r{i + 1}.writer.log") for v in variants]
        print(f"| {i + 1} | " + " | ".join(cells) + " |")
PY

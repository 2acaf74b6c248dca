#!/usr/bin/env bash
# The mock's CPU per token against the kernel's floor (issue 17), for BENCHMARKS.md.
#
# Each round first measures the floor: tcp_floor's writer (CPU 0) sends one 230-byte message per
# stream every 10 ms over 1,000 loopback connections to its reader (CPU 1), and reports the time
# inside write() per message; then the same writer's loop speaking SSE (`tcp_floor sse`) to loadgen
# (CPU 1, as below), the time inside write() per event when the reader is the mock's own. Then each mock build runs pinned to CPU 0 under plain loadgen (CPU 1;
# no self-check, so no ground truth in the chunks): 1,000 streams, 32 prompt / 100 output tokens,
# 20 ms to the first token, 3,000 requests, at two loads:
#   scheduled  10 ms gaps (100,000 tokens/s), which one core keeps up with. The mock's own clocks
#              time the pacer's token write (from its release to the write's return, and the part
#              inside the system call): the same measure as the floor's, per token on schedule.
#              Builds from before the pacer wrote tokens itself have no such clock: "-".
#   saturated   5 ms gaps (200,000 tokens/s offered), more than one core of this VM writes: CPU
#              (user + system) per socket write and per token, user CPU per token, and tokens per
#              write (above 1 when the mock, behind, sends chunks already due in one write).
# Both report the mock's mean lateness (its /metrics histogram's sum over count). Writes are the
# mock's own count (/metrics), or for builds before it, /proc/PID/io's syscw (their writev calls).
# With a REV, the mock built from REV alternates with this tree's over ROUNDS rounds (default 3);
# loadgen is this tree's.
#
# Usage: scripts/bench-mock-cpu.sh [REV]      ROUNDS=5 scripts/bench-mock-cpu.sh ...
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/rev-build.sh
rev="${1:-}"
before_and_now "$rev" mock-server
cargo build --release --locked -p mock-server --example tcp_floor -p loadgen >&2
out="bench-results/mock-cpu"
rounds="${ROUNDS:-3}"
mkdir -p "$out"
rm -f "$out"/*.txt
ulimit -n 20000 2>/dev/null || true
export OPENAI_API_KEY=unused

floor() { # floor ROUND: appends µs inside write() per message to floor.txt
    local f="$bin/examples/tcp_floor" port=$((7920 + $1))
    taskset -c 0 "$f" write --port $port --streams 1000 --gap-us 10000 --seconds 4 >"$out/floor.writer" &
    local w=$!
    sleep 0.3
    taskset -c 1 "$f" read --port $port --streams 1000 >/dev/null
    wait "$w"
    grep -o '[0-9.]* µs inside write() each' "$out/floor.writer" | cut -d' ' -f1 >>"$out/floor.txt"
    # The same writer's loop speaking SSE (`tcp_floor sse`) with the mock's own reader, loadgen, on
    # CPU 1 and the same load: what a write to loadgen's socket costs with nothing of the mock's.
    taskset -c 0 "$f" sse --port $((port + 40)) --streams 1000 --gap-us 10000 --tokens 100 \
        --seconds 120 >"$out/floor-sse.writer" &
    w=$!
    sleep 0.3
    rm -rf "$out/run"
    taskset -c 1 "$bin/loadgen" --model m --tokenizer tokenperf \
        --api-base "http://127.0.0.1:$((port + 40))/v1" --num-concurrent-requests 1000 \
        --max-num-completed-requests 3000 --mean-input-tokens 32 --stddev-input-tokens 0 \
        --mean-output-tokens 100 --stddev-output-tokens 0 --results-dir "$out/run" >/dev/null 2>&1
    wait "$w"
    grep -o '[0-9.]* µs inside write() each' "$out/floor-sse.writer" | cut -d' ' -f1 >>"$out/floor-sse.txt"
}

proc_s() { # proc_s PID FIELD: user (14) or system (15) CPU seconds
    awk -v t="$(getconf CLK_TCK)" -v i="$(($2 - 2))" \
        '{ s = $0; sub(/.*\) /, "", s); split(s, f, " "); print f[i] / t }' "/proc/$1/stat"
}
scrape() { # scrape URL PID: the mock's counters as one line of NAME=VALUE
    python3 - "$1" "$2" <<'PY'
import sys, urllib.request
url, pid = sys.argv[1], sys.argv[2]
text = urllib.request.urlopen(url.removesuffix("/v1") + "/metrics", timeout=10).read().decode()
want = {
    "vllm:generation_tokens_total": "tokens",
    "tokenperf_mock:socket_writes_total": "writes",
    "tokenperf_mock:direct_write_microseconds_total": "direct_us",
    "tokenperf_mock:direct_send_microseconds_total": "send_us",
    "tokenperf_mock:emission_lateness_seconds_sum": "late_sum",
    "tokenperf_mock:emission_lateness_seconds_count": "late_n",
}
got = {}
for line in text.splitlines():
    name = line.split("{")[0]
    if name in want:
        got[want[name]] = line.split()[-1]
    elif name == "tokenperf_mock:chunks_written_total" and 'path="direct"' in line:
        got["direct_chunks"] = line.split()[-1]
if "writes" not in got:  # a build from before the mock counted its writes
    got["writes"] = next(l.split()[1] for l in open(f"/proc/{pid}/io") if l.startswith("syscw:"))
print(" ".join(f"{k}={v}" for k, v in got.items()))
PY
}

run() { # run VARIANT LOAD MOCK_BIN ROUND: appends one JSON line to VARIANT-LOAD.txt
    local variant="$1" load="$2" mock="$3" round="$4" gap=10
    [ "$load" = saturated ] && gap=5
    start_mock "$out/mock.log" taskset -c 0 "$mock" --port 0 --host 127.0.0.1 --max-waiting 100000 \
        --ttft-ms 20 --itl-ms $gap
    local before after u0 s0
    before=$(scrape "$url" "$mock_pid"); u0=$(proc_s "$mock_pid" 14); s0=$(proc_s "$mock_pid" 15)
    rm -rf "$out/run"
    taskset -c 1 "$bin/loadgen" --model m --tokenizer tokenperf --api-base "$url" \
        --num-concurrent-requests 1000 --max-num-completed-requests 3000 \
        --mean-input-tokens 32 --stddev-input-tokens 0 --mean-output-tokens 100 \
        --stddev-output-tokens 0 --results-dir "$out/run" >/dev/null 2>&1
    after=$(scrape "$url" "$mock_pid")
    python3 - "$before" "$after" "$u0" "$s0" "$(proc_s "$mock_pid" 14)" "$(proc_s "$mock_pid" 15)" "$round" \
        >>"$out/$variant-$load.txt" <<'PY'
import json, sys
kv = lambda s: {k: float(v) for k, v in (p.split("=") for p in s.split())}
a, b = kv(sys.argv[1]), kv(sys.argv[2])
u0, s0, u1, s1 = map(float, sys.argv[3:7])
d = {k: b[k] - a.get(k, 0) for k in b}
d.update(user_s=u1 - u0, sys_s=s1 - s0, round=int(sys.argv[7]))
print(json.dumps(d))
PY
    kill "$mock_pid"
    wait "$mock_pid" 2>/dev/null || true
}

variants=("now")
[ -n "$rev" ] && variants=("$rev" now)
for round in $(seq "$rounds"); do
    floor "$round"
    for v in "${variants[@]}"; do
        mock="$bin/mock-server"
        [ "$v" = now ] || mock="$old_bin/mock-server"
        for load in scheduled saturated; do run "$v" "$load" "$mock" "$round"; done
    done
done
rm -rf "$out/run"
python3 - "$out" "${variants[@]}" <<'PY'
import json, sys
out, variants = sys.argv[1], sys.argv[2:]
floor = [float(l) for l in open(f"{out}/floor.txt")]
floor_sse = [float(l) for l in open(f"{out}/floor-sse.txt")]
cells = lambda xs, f="{:.2f}": ", ".join(f.format(x) for x in xs)
print("floor, µs inside write() per message, by round: " + cells(floor))
print("the same writer speaking SSE to loadgen (tcp_floor sse), by round: " + cells(floor_sse))
print()
print("Scheduled (1,000 streams × 10 ms): the pacer's token write, µs per chunk")
print("| mock | release to written | inside the system call | release to written ÷ floor | ÷ the SSE floor | lateness mean ms |")
print("|---|---|---|---|---|---|")
for v in variants:
    rows = [json.loads(l) for l in open(f"{out}/{v}-scheduled.txt")]
    late = cells([r["late_sum"] / r["late_n"] * 1e3 for r in rows])
    if all(r.get("direct_chunks") for r in rows):
        path = [r["direct_us"] / r["direct_chunks"] for r in rows]
        send = [r["send_us"] / r["direct_chunks"] for r in rows]
        ratio = [p / floor[r["round"] - 1] for p, r in zip(path, rows)]
        ratio_sse = [p / floor_sse[r["round"] - 1] for p, r in zip(path, rows)]
        print(f"| {v} | {cells(path)} | {cells(send)} | {cells(ratio)} | {cells(ratio_sse)} | {late} |")
    else:
        print(f"| {v} | - | - | - | - | {late} |")
print()
print("Saturated (1,000 streams × 5 ms offered): the whole process")
print("| mock | CPU µs per write | CPU µs per token | user µs per token | tokens per write | CPU per write ÷ floor | lateness mean ms |")
print("|---|---|---|---|---|---|---|")
for v in variants:
    rows = [json.loads(l) for l in open(f"{out}/{v}-saturated.txt")]
    cpu = [r["user_s"] + r["sys_s"] for r in rows]
    per_write = [c / r["writes"] * 1e6 for c, r in zip(cpu, rows)]
    print(f"| {v} | {cells(per_write)} | {cells([c / r['tokens'] * 1e6 for c, r in zip(cpu, rows)])} | "
          f"{cells([r['user_s'] / r['tokens'] * 1e6 for r in rows])} | "
          f"{cells([r['tokens'] / r['writes'] for r in rows])} | "
          f"{cells([w / floor[r['round'] - 1] for w, r in zip(per_write, rows)])} | "
          f"{cells([r['late_sum'] / r['late_n'] * 1e3 for r in rows])} |")
PY

#!/usr/bin/env bash
# Benchmarks for BENCHMARKS.md: mock-server emission rate and lateness, loadgen's CPU and memory per
# stream, and the self-check accuracy table. Loopback only, bounded in requests and time.
#
# Usage: scripts/bench.sh [quick|full|c1000|knee|chunk4|floor|ratios]   (quick: a subset in about a minute;
#        full: every row; c1000: only the 1,000-stream accuracy row; knee: 200 to 800 streams; chunk4:
#        200k tokens/s in 4-token chunks; floor: the kernel's cost per loopback write and read, without
#        our code; ratios: the floor, then the mock at 25, 50 and 80 % of the floor's writes per
#        core-second, for scripts/bench-ratios.py)
#        PIN=0 scripts/bench.sh ...        (no CPU pinning: both programs may use both cores)
#        MOCK_BIN=PATH scripts/bench.sh ...  (another mock-server binary, e.g. an earlier revision's
#                                             from scripts/rev-build.sh, against this tree's loadgen)
#        LOADGEN_BIN=PATH scripts/bench.sh ...  (another loadgen binary, against this tree's mock)
#        RX_TIMESTAMPS=kernel scripts/bench.sh ...  (loadgen's self-checks with --rx-timestamps kernel)
#
# Both programs are release builds of just mock-server and loadgen (no polars: a few minutes).
# The mock is pinned to CPU 0 and loadgen to CPU 1, so each one's CPU time is its own.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-full}"
out="bench-results"
mkdir -p "$out"
bin="${CARGO_TARGET_DIR:-target}/release"

cargo build --release --locked -p mock-server -p loadgen >&2
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "open files limit: $(ulimit -n)" >&2

if [ "${PIN:-1}" = 0 ]; then pin0=""; pin1=""; else pin0="taskset -c 0"; pin1="taskset -c 1"; fi
mock_pid=""
start_mock() { # start_mock ARGS... ; sets $url
    # taskset execs the server, so every thread it starts inherits CPU 0 and $! is the server's pid.
    $pin0 "${MOCK_BIN:-$bin/mock-server}" --port 0 --host 127.0.0.1 --max-waiting 100000 "$@" >"$out/mock.log" 2>&1 &
    mock_pid=$!
    for _ in $(seq 100); do grep -q "listening on" "$out/mock.log" && break; sleep 0.05; done
    url=$(grep -o 'http://[^ ]*' "$out/mock.log" | head -n 1)
}
stop_mock() { kill "$mock_pid" 2>/dev/null || true; wait "$mock_pid" 2>/dev/null || true; }
trap stop_mock EXIT
cpu_s() { # CPU seconds (user + system) of a pid
    awk -v t="$(getconf CLK_TCK)" '{ s = $0; sub(/.*\) /, "", s); split(s, f, " "); print (f[12] + f[13]) / t }' "/proc/$1/stat"
}
rss_mib() { awk '/VmHWM/ { print $2 / 1024 }' "/proc/$1/status"; }
# CPU time the hypervisor took from this VM (both vCPUs), in seconds: the noise a run cannot control.
# The mock's write system calls on client sockets, from its own count (its token writes are send(2),
# which /proc/PID/io's syscw does not count); for a build from before that count, syscw (which
# counts its writev calls).
mock_writes() {
    local w
    w=$(python3 -c 'import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1].removesuffix("/v1") + "/metrics", timeout=10).read().decode()
print(next((l.split()[-1] for l in text.splitlines() if l.startswith("tokenperf_mock:socket_writes_total")), ""))' "$url")
    [ -n "$w" ] || w=$(awk '/^syscw:/ { print $2 }' "/proc/$mock_pid/io")
    echo "$w"
}
steal_s() { awk -v t="$(getconf CLK_TCK)" '$1 == "cpu" { print $9 / t }' /proc/stat; }

selfcheck() { # selfcheck NAME CONCURRENCY REQUESTS TTFT ITL TOKENS [MOCK_ARGS...]
    local name=$1 c=$2 n=$3 ttft=$4 itl=$5 tokens=$6
    shift 6
    start_mock --ttft-ms "$ttft" --itl-ms "$itl" "$@"
    local mock_cpu0 steal0 w0; mock_cpu0=$(cpu_s "$mock_pid"); steal0=$(steal_s); w0=$(mock_writes)
    $pin1 "${LOADGEN_BIN:-$bin/loadgen}" selfcheck --api-base "$url" --concurrency "$c" --requests "$n" \
        --ttft-ms "$ttft" --itl-ms "$itl" --tokens "$tokens" --json "$out/$name.json" \
        ${RX_TIMESTAMPS:+--rx-timestamps "$RX_TIMESTAMPS"} | tee "$out/$name.txt" >&2
    local mock_cpu1; mock_cpu1=$(cpu_s "$mock_pid")
    awk -v a="$mock_cpu0" -v b="$mock_cpu1" -v r="$(rss_mib "$mock_pid")" -v s0="$steal0" -v s1="$(steal_s)" \
        -v w0="$w0" -v w1="$(mock_writes)" \
        'BEGIN { printf "{\"mock_cpu_s\": %.3f, \"mock_peak_rss_mib\": %.1f, \"vm_steal_s\": %.2f, \"mock_writes\": %d}\n", b - a, r, s1 - s0, w1 - w0 }' >"$out/$name.mock.json"
    stop_mock
}

floor_port=7911
floor_run() { # floor_run GAP_US NAME: tcp_floor's writer and reader, 1,000 streams for 4 s
    local f="${CARGO_TARGET_DIR:-target}/release/examples/tcp_floor"
    $pin0 "$f" write --port $floor_port --streams 1000 --gap-us "$1" --seconds 4 >"$out/$2.writer.txt" &
    local w=$!
    sleep 0.3
    $pin1 "$f" read --port $floor_port --streams 1000 >"$out/$2.reader.txt"
    wait "$w"
    cat "$out/$2.writer.txt" "$out/$2.reader.txt" >&2
    floor_port=$((floor_port + 1))
}
floor() { # the kernel's own cost per loopback write and read, with no HTTP or JSON on top
    cargo build --release --locked -p mock-server --example tcp_floor >&2
    for gap in 10000 5000; do floor_run $gap "floor-$gap"; done
}

ratios() { # the mock's emission against the kernel's floor measured in the same run
    floor
    # The floor's writes per core-second at 1,000 streams × 10 ms (the writer keeps up there).
    local w; w=$(grep -o '[0-9]*k writes per core-second' "$out/floor-10000.writer.txt" | grep -o '^[0-9]*')
    echo "$w" >"$out/ratios-floor-kwrites.txt"
    for pct in 25 50 80; do
        # 1,000 streams, one token per write: the gap that offers pct % of the floor.
        local gap; gap=$(awk -v w="$w" -v p="$pct" 'BEGIN { printf "%.3f", 1000 * 1000 / (w * 1000 * p / 100) }')
        # The bare writer paced at the same rate: the lateness this VM allows a writer with nothing
        # but the system call to do, so a miss can be told from a slow spell of the VM.
        floor_run "$(awk -v g="$gap" 'BEGIN { printf "%d", g * 1000 }')" "ratio-$pct-floor"
        selfcheck "ratio-$pct" 1000 3000 20 "$gap" 100
    done
}

knee() { # where the targets stop holding: the accuracy profile between 100 and 1,000 streams
    for c in 200 400 600 800; do selfcheck "knee-c$c" "$c" $((c * 3)) 50 10 100; done
}
chunk4() { # 200,000 tokens/s in 4-token chunks (50,000 writes/s), as a server that merges tokens sends
    selfcheck emission-c500-2.5ms-k4 500 1500 20 2.5 200 --tokens-per-chunk 4
}

if [ "$mode" = c1000 ]; then
    selfcheck accuracy-c1000 1000 3000 50 10 100
    exit 0
fi
if [ "$mode" = knee ]; then
    knee
    exit 0
fi
if [ "$mode" = chunk4 ]; then
    chunk4
    exit 0
fi
if [ "$mode" = floor ]; then
    floor
    exit 0
fi
if [ "$mode" = ratios ]; then
    ratios
    python3 scripts/bench-ratios.py "$out" >&2
    exit 0
fi
if [ "$mode" = quick ]; then
    selfcheck accuracy-c1 1 20 50 10 100
    selfcheck accuracy-c100 100 300 50 10 100
    exit 0
fi

# 1. Accuracy table: TTFT 50 ms, gap 10 ms, 100 tokens.
selfcheck accuracy-c1 1 50 50 10 100
selfcheck accuracy-c100 100 400 50 10 100
selfcheck accuracy-c1000 1000 3000 50 10 100
selfcheck accuracy-c10000 10000 10000 50 10 100
# 2. Mock lateness at 1,000 streams with a 5 ms gap (the mock's own target).
selfcheck lateness-c1000-5ms 1000 3000 50 5 200
# 3. Mock emission rate on one core: 2,000 streams at 5 ms = 400,000 tokens/s offered.
selfcheck emission-c2000-5ms 2000 4000 20 5 200
# 4. 200,000 tokens/s in 4-token chunks; 5. where the targets stop holding; 6. the kernel's floor.
chunk4
knee
floor
echo "results in $out/" >&2

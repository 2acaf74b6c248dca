#!/usr/bin/env bash
# The whole pipeline offline: mock-server -> loadgen -> analyze. Prints the summary and where the charts
# are. Usage: ./quickstart.sh [OUTPUT_DIR]   (default: tokenperf-out)
set -euo pipefail
cd "$(dirname "$0")"
out="${1:-tokenperf-out}"
bin="${CARGO_TARGET_DIR:-target}/debug"

echo "==> building (debug). A first build compiles 360 crates: 141 s on an idle 2-core machine," >&2
echo "    much longer on a busy one; cargo shows its progress below." >&2
start=$(date +%s)
cargo build --workspace --bins --locked
echo "==> built in $(( $(date +%s) - start )) s" >&2

mkdir -p "$out"
log="$out/mock-server.log"
"$bin/mock-server" --port 0 --ttft-ms 50 --itl-ms 5 >"$log" 2>&1 &
mock=$!
trap 'kill "$mock" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q "listening on" "$log" && break
    kill -0 "$mock" 2>/dev/null || { cat "$log" >&2; exit 2; }
    sleep 0.1
done
url=$(grep -o 'http://[^ ]*' "$log" | head -n 1)
echo "==> mock-server at $url (50 ms to first token, then 5 ms per token)" >&2

# The seed's first command line, plus the built-in tokenizer so nothing is downloaded.
export OPENAI_API_KEY=dummy OPENAI_API_BASE="$url"
"$bin/loadgen" \
    --model "hf:mgoin/TinyStories-1M-ds" \
    --mean-input-tokens 100 --stddev-input-tokens 50 \
    --mean-output-tokens 100 --stddev-output-tokens 50 \
    --max-num-completed-requests 50 --num-concurrent-requests 4 \
    --llm-api openai --tokenizer tokenperf \
    --results-dir "$out/results"

echo "==> analyzing" >&2
"$bin/analyze" "$out/results" --out "$out/analysis" --quiet
echo "==> charts in $out/analysis (open $out/analysis/report.html to see them all):" >&2
ls -1 "$out/analysis"/*.png >&2

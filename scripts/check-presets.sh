#!/usr/bin/env bash
# Runs the seed document's two LLMPerf command lines against mock-server's presets (release builds),
# for comparing with the seed's published numbers (README, "Presets and config"). About 2 minutes.
# The prompts are sampled as LLMPerf samples them (loadgen's default) from an 84-line corpus: LLMPerf's
# sonnet.txt has 84 lines, and with 84 lines seed 11111 gives the seed runs' own max_tokens and prompt
# lengths, request for request (the sequence depends on the line count, not the text).
set -euo pipefail
cd "$(dirname "$0")/.."
out="bench-results/presets"
mkdir -p "$out"
cargo build --release --locked -p mock-server -p loadgen >&2
bin="${CARGO_TARGET_DIR:-target}/release"
head -n 84 datasets/corpus.txt >"$out/corpus-84.txt"
run() { # run PRESET LOADGEN-ARGS...
    local preset=$1; shift
    "$bin/mock-server" --port 0 --host 127.0.0.1 --preset "$preset" >"$out/$preset.mock.log" 2>&1 &
    local pid=$!
    for _ in $(seq 50); do grep -q "listening on" "$out/$preset.mock.log" && break; sleep 0.1; done
    local url; url=$(grep -o 'http://[^ ]*' "$out/$preset.mock.log" | head -n 1)
    OPENAI_API_KEY=dummy OPENAI_API_BASE="$url" "$bin/loadgen" --tokenizer tokenperf --llm-api openai \
        --corpus "$out/corpus-84.txt" --metrics llmperf --results-dir "$out/$preset" "$@" | tee "$out/$preset.txt"
    kill "$pid"
}
run tinystories1m --model "hf:mgoin/TinyStories-1M-ds" --mean-input-tokens 100 --stddev-input-tokens 50 \
    --mean-output-tokens 100 --stddev-output-tokens 50 --max-num-completed-requests 50 --num-concurrent-requests 1
run minichat3b-batch4 --model "hf:neuralmagic/MiniChat-1.5-3B-pruned50-quant-ds" --mean-input-tokens 100 \
    --stddev-input-tokens 50 --mean-output-tokens 200 --stddev-output-tokens 50 \
    --max-num-completed-requests 20 --num-concurrent-requests 4 --timeout 600

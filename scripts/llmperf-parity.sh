#!/usr/bin/env bash
# Checks that loadgen's --prompt-sampling llmperf builds LLMPerf's requests: the same max_tokens,
# sampled lengths and prompt text, request for request, as LLMPerf's algorithm run in Python with
# CPython's random, for several workloads. Manual (it needs `pip install tokenizers`, a tokenizer.json
# and a corpus, e.g. LLMPerf's LLaMA tokenizer and its sonnet.txt).
# Usage: scripts/llmperf-parity.sh TOKENIZER.json CORPUS
set -euo pipefail
cd "$(dirname "$0")/.."
tok="$1" corpus="$2"
cargo build --locked --workspace --examples >&2
ex="${CARGO_TARGET_DIR:-target}/debug/examples/llmperf_prompts"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
for params in "20 550 150 150 80 11111" "50 100 50 100 50 11111" "40 30 20 20 10 7" "200 100 50 100 50 3"; do
    # shellcheck disable=SC2086 # the parameters are meant to split
    python3 scripts/llmperf_prompts.py "$tok" "$corpus" $params >"$tmp/py.jsonl"
    # shellcheck disable=SC2086
    "$ex" "$tok" "$corpus" $params >"$tmp/rs.jsonl"
    if python3 -c 'import json,sys; a=[json.loads(l) for l in open(sys.argv[1])]; b=[json.loads(l) for l in open(sys.argv[2])]; sys.exit(a != b)' "$tmp/py.jsonl" "$tmp/rs.jsonl"; then
        echo "identical: $(wc -l <"$tmp/py.jsonl") requests ($params)"
    else
        echo "DIFFERENT ($params)"; status=1
    fi
done
exit $status

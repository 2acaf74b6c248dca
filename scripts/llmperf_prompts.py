#!/usr/bin/env python3
"""LLMPerf's prompt sampling, written from its documented algorithm (token_benchmark_ray.py and
utils.py: random.seed, sample_random_positive_int, randomly_sample_sonnet_lines_prompt), printing one
JSON line per request. scripts/llmperf-parity.sh compares it with loadgen's --prompt-sampling llmperf.
Needs the `tokenizers` package (pip install tokenizers).
Usage: llmperf_prompts.py TOKENIZER.json CORPUS N MEAN_IN STD_IN MEAN_OUT STD_OUT SEED"""
import json, math, random, sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
lines_all = open(sys.argv[2]).readlines()
n_req, mean_in, std_in, mean_out, std_out, seed = map(int, sys.argv[3:9])
def L(t): return len(tok.encode(t, add_special_tokens=True).ids)
def spi(m, s):
    r = int(random.gauss(m, s))
    while r <= 0:
        r = int(random.gauss(m, s))
    return r
random.seed(seed)
for i in range(n_req):
    mt = spi(mean_out, std_out)
    prompt = f"Randomly stream lines from the following text with {mt} output tokens. Don't generate eos tokens:\n\n"
    num = spi(mean_in, std_in)
    while num < L(prompt):
        num = spi(mean_in, std_in)
    remaining = num - L(prompt)
    lines = list(lines_all)
    random.shuffle(lines)
    sampling = True
    while sampling:
        for line in lines:
            if remaining - L(line) < 0:
                prompt += line[: int(math.ceil(remaining))]
                sampling = False
                break
            prompt += line
            remaining -= L(line)
    print(json.dumps({"max_tokens": mt, "target": num, "prompt": prompt}))

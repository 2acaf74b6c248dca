"""Writes N LLMPerf-format individual-response records (as LLMPerf's json.dump(indent=4) does), seeded,
with ~1 % errors carrying NaN, for the analyze benchmark. Usage: gen_llmperf.py N OUT"""
import json
import math
import random
import sys

n, out = int(sys.argv[1]), sys.argv[2]
rng = random.Random(11111)
records = []
for _ in range(n):
    if rng.random() < 0.01:
        records.append({"error_code": rng.choice([429, 500, 503]), "error_msg": "overloaded",
                        "inter_token_latency_s": math.nan, "ttft_s": 0, "end_to_end_latency_s": 0,
                        "request_output_throughput_token_per_s": math.nan, "number_total_tokens": 550,
                        "number_output_tokens": 0, "number_input_tokens": 550})
        continue
    inp = max(1, int(rng.gauss(550, 150)))
    out_toks = max(1, int(rng.gauss(150, 80)))
    ttft = rng.lognormvariate(math.log(0.08), 0.5)
    itl = rng.gauss(0.01, 0.002)
    e2e = ttft + out_toks * max(itl, 0.001)
    records.append({"error_code": None, "error_msg": "", "inter_token_latency_s": itl, "ttft_s": ttft,
                    "end_to_end_latency_s": e2e, "request_output_throughput_token_per_s": out_toks / e2e,
                    "number_total_tokens": inp + out_toks, "number_output_tokens": out_toks,
                    "number_input_tokens": inp})
with open(out, "w") as f:
    json.dump(records, f, indent=4)

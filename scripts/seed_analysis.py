"""The seed document's analysis, as a baseline for analyze: read an LLMPerf individual-responses file
with pandas and save the same four matplotlib charts (two 30-bin histograms, two scatters).
Usage: seed_analysis.py FILE OUT_DIR"""
import os
import sys

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

path, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
df = pd.read_json(path)
ok = df[df["error_code"] != ""]  # the seed's own (no-op) filter, kept for a like-for-like baseline

for column, title, scale, name in [
    ("end_to_end_latency_s", "End-to-end Latencies (s)", 1, "e2e_latencies.png"),
    ("inter_token_latency_s", "Inter-token Latencies (ms)", 1000, "inter_token_latencies.png"),
]:
    values = ok[column].apply(pd.Series).stack() * scale
    ax = values.plot.hist(title=title, bins=30)
    ax.figure.savefig(os.path.join(out, name))
    ax.figure.clf()

for x, y, title, name in [
    ("number_input_tokens", "ttft_s", "Number of Input Tokens vs. TTFT", "time_to_first_token.png"),
    ("inter_token_latency_s", "request_output_throughput_token_per_s",
     "Inter-token Latency vs. Output Throughput", "inter_token_vs_throughput.png"),
]:
    ax = ok.plot.scatter(x=x, y=y, title=title)
    ax.figure.savefig(os.path.join(out, name))
    ax.figure.clf()

#!/usr/bin/env python3
"""Prints the self-check table of BENCHMARKS.md from the JSON files scripts/bench.sh wrote.

Usage: scripts/bench-table.py [bench-results]

One row per self-check run (NAME.json from `loadgen selfcheck --json`, NAME.mock.json from bench.sh),
in the order the runs were made. Figures are copied, never re-estimated, so the table and the files
cannot disagree.
"""
import os
import sys

from bench_runs import load_run

out = sys.argv[1] if len(sys.argv) > 1 else "bench-results"
names = [f[: -len(".mock.json")] for f in os.listdir(out) if f.endswith(".mock.json")]
names.sort(key=lambda n: os.path.getmtime(os.path.join(out, n + ".mock.json")))

cols = [
    "run", "streams", "gap ms", "tokens", "requests", "ok/errors", "TTFT error mean / p99",
    "gap error p50 / p99", "receive delay p50 / p99", "request delay p99",
    "mock lateness p50 / p99", "client CPU s per 100k events", "client peak RSS MiB", "mock CPU s",
    "mock peak RSS MiB", "wall s", "tokens per mock CPU-second", "tokens per mock write", "VM steal s",
]
print("| " + " | ".join(cols) + " |")
print("|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|")


def f2(x):
    return f"{x:.2f}"


for n in names:
    r, m = load_run(out, n, "bench-table")
    e = r["error"]
    tokens = r["ok_requests"] * r["tokens"]
    row = [
        n,
        f"{r['concurrency']:,}",
        f"{r['itl_ms']:g}",
        str(r["tokens"]),
        f"{r['requests']:,}",
        f"{r['ok_requests']:,}/{r['errors']}",
        f"{f2(e['ttft_error_ms']['mean'])} / {f2(e['ttft_error_ms']['p99'])}",
        f"{f2(e['gap_error_ms']['p50'])} / {f2(e['gap_error_ms']['p99'])}",
        f"{f2(e['receive_delay_ms']['p50'])} / {f2(e['receive_delay_ms']['p99'])}",
        f2(e["request_delay_ms"]["p99"]),
        f"{f2(e['mock_lateness_ms']['p50'])} / {f2(e['mock_lateness_ms']['p99'])}",
        f2(r["client_cpu_s_per_100k_events"]),
        f"{r['peak_rss_mib']:.0f}",
        f2(m["mock_cpu_s"]),
        f"{m['mock_peak_rss_mib']:.0f}",
        f"{r['wall_s']:.1f}",
        f"{tokens / m['mock_cpu_s'] / 1000:.0f}k" if m["mock_cpu_s"] > 0 else "-",
        # Writes cover the warm-up too: one request per stream, before the measured ones.
        f"{(r['requests'] + r['concurrency']) * r['tokens'] / m['mock_writes']:.2f}"
        if m.get("mock_writes") else "-",
        f2(m["vm_steal_s"]) if "vm_steal_s" in m else "-",
    ]
    print("| " + " | ".join(row) + " |")

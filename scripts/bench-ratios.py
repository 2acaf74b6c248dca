#!/usr/bin/env python3
"""The mock's emission targets as ratios to the kernel's floor, from `scripts/bench.sh ratios`.

Usage: scripts/bench-ratios.py [bench-results]

The floor is the writes per core-second a bare writer reached over 1,000 loopback connections in the
same run (ratios-floor-kwrites.txt). Each ratio-P run offered P % of it: 1,000 streams, one token per
write. Targets (issue 17): at 80 % the mock keeps schedule (lateness p99 under one gap, so no token
slips past the next one's due time); at up to 50 %, lateness p99 ≤ 0.5 ms.
"""
import os
import sys

from bench_runs import load_run

out = sys.argv[1] if len(sys.argv) > 1 else "bench-results"
try:
    with open(os.path.join(out, "ratios-floor-kwrites.txt")) as fh:
        floor_k = float(fh.read().strip())
except (OSError, ValueError) as e:
    sys.exit(f"bench-ratios: the floor figure: {e} (run scripts/bench.sh ratios)")
print(f"floor: {floor_k:.0f}k writes per core-second")
print("| offered, % of floor | tokens/s offered | gap ms | lateness p50 / p99 ms | tokens per mock CPU-second | target | met? |")
print("|---:|---:|---:|---|---:|---|---|")
for pct in (25, 50, 80):
    r, m = load_run(out, f"ratio-{pct}", "bench-ratios")
    late = r["error"]["mock_lateness_ms"]
    gap = r["itl_ms"]
    offered = r["concurrency"] * 1000 / gap
    tokens = r["ok_requests"] * r["tokens"]
    per_cpu = f"{tokens / m['mock_cpu_s'] / 1000:.0f}k" if m["mock_cpu_s"] > 0 else "-"
    if pct <= 50:
        target, met = "lateness p99 ≤ 0.5 ms", late["p99"] <= 0.5
    else:
        target, met = f"on schedule: lateness p99 < one gap ({gap:.1f} ms)", late["p99"] < gap
    ok = r["ok_requests"] == r["requests"]
    print(f"| {pct} % | {offered / 1000:.0f}k | {gap:.2f} | {late['p50']:.2f} / {late['p99']:.2f} | {per_cpu} | "
          f"{target} | {'yes' if met and ok else 'no'}{'' if ok else ' (requests failed)'} |")

#!/usr/bin/env python3
"""The mock's emission targets as ratios to the kernel's floor, from `scripts/bench.sh ratios`.

Usage: scripts/bench-ratios.py [bench-results]

The floor is the writes per core-second a bare writer reached over 1,000 loopback connections in the
same run (ratios-floor-kwrites.txt). Each ratio-P run offered P % of it: 1,000 streams, one token per
write. Targets (issue 17): at 80 % the mock keeps schedule (lateness p99 under one gap, so no token
slips past the next one's due time); at up to 50 %, lateness p99 ≤ 0.5 ms. Beside each, the bare
writer's lateness p99 paced at the same rate in the same run (ratio-P-floor.writer.txt): what this
VM allowed a writer that does nothing but the system call, so a miss in a slow spell shows as such.
"""
import os
import re
import sys

from bench_runs import load_run

out = sys.argv[1] if len(sys.argv) > 1 else "bench-results"
try:
    with open(os.path.join(out, "ratios-floor-kwrites.txt")) as fh:
        floor_k = float(fh.read().strip())
except (OSError, ValueError) as e:
    sys.exit(f"bench-ratios: the floor figure: {e} (run scripts/bench.sh ratios)")
print(f"floor: {floor_k:.0f}k writes per core-second")


def floor_p99_ms(pct):
    """The paced bare writer's lateness p99 at this rate, ms, or None for a run made before it."""
    try:
        with open(os.path.join(out, f"ratio-{pct}-floor.writer.txt")) as fh:
            m = re.search(r"p99 ([0-9.]+) µs", fh.read())
    except OSError:
        return None
    return float(m.group(1)) / 1000 if m else None


print("| offered, % of floor | tokens/s offered | gap ms | lateness p50 / p99 ms | bare writer's p99 ms, same rate | tokens per mock CPU-second | target | met? |")
print("|---:|---:|---:|---|---:|---:|---|---|")
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
    fp = floor_p99_ms(pct)
    fp = "-" if fp is None else f"{fp:.2f}"
    print(f"| {pct} % | {offered / 1000:.0f}k | {gap:.2f} | {late['p50']:.2f} / {late['p99']:.2f} | {fp} | {per_cpu} | "
          f"{target} | {'yes' if met and ok else 'no'}{'' if ok else ' (requests failed)'} |")

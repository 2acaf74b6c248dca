#!/usr/bin/env python3
"""Writes core/tests/data/pyrandom-vectors.json: what CPython's `random` module returns for a few
seeds (random(), getrandbits, gauss with its cached second value, shuffle of several lengths), so that
core's PyRandom is pinned to CPython itself. Usage: python3 scripts/pyrandom-vectors.py"""
import json
import random
import sys

cases = []
for seed in [0, 1, 42, 11111, 2**32 + 5, 2**64 - 1]:
    r = random.Random(seed)
    # random() is k / 2**53 exactly; written as k, so no JSON float parsing stands between.
    case = {"seed": str(seed), "random_times_2_53": [int(r.random() * 2**53) for _ in range(8)]}
    case["getrandbits"] = [[k, r.getrandbits(k)] for k in (1, 5, 13, 31, 32)]
    case["gauss"] = [r.gauss(0.0, 1.0) for _ in range(7)]
    case["gauss_scaled"] = [r.gauss(150.0, 80.0) for _ in range(5)]
    shuffles = []
    for n in (1, 2, 3, 10, 84, 1000):
        xs = list(range(n))
        r.shuffle(xs)
        shuffles.append(xs)
    case["shuffles"] = shuffles
    # Interleaved as LLMPerf calls them: gauss, gauss, shuffle(84), repeated.
    seq = []
    for _ in range(3):
        a = r.gauss(150.0, 80.0)
        b = r.gauss(550.0, 150.0)
        xs = list(range(84))
        r.shuffle(xs)
        seq.append([a, b, xs[:5]])
    case["interleaved"] = seq
    cases.append(case)
json.dump({"python": sys.version.split()[0], "cases": cases}, sys.stdout, indent=1)
sys.stdout.write("\n")

#!/usr/bin/env python3
"""A ShareGPT-shaped dataset for benchmarks (BENCHMARKS.md): N conversations of 2, 4 or 6 turns,
human turns of 20-150 words and replies of 100-400, cut from datasets/corpus.txt; seeded, so the
same N gives the same file.

Usage: python3 scripts/gen_sharegpt.py N OUT.json
"""
import json
import os
import random
import sys


def main():
    n, out = int(sys.argv[1]), sys.argv[2]
    random.seed(1)
    here = os.path.dirname(os.path.abspath(__file__))
    words = open(os.path.join(here, "..", "datasets", "corpus.txt")).read().split()

    def text(k):
        i = random.randrange(len(words) - k)
        return " ".join(words[i : i + k])

    with open(out, "w") as f:
        f.write("[")
        for c in range(n):
            turns = []
            for t in range(random.choice([2, 4, 6])):
                human = t % 2 == 0
                k = random.randint(20, 150) if human else random.randint(100, 400)
                turns.append({"from": "human" if human else "gpt", "value": text(k)})
            if c:
                f.write(",")
            json.dump({"id": f"c{c}", "conversations": turns}, f)
        f.write("]")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The client's own share of TTFT at low load: loadgen's self-check against a release mock pinned to
# CPU 0, loadgen pinned to CPU 1, at 1 and 10 streams (50 ms TTFT, 10 ms gaps, 20 tokens), for this
# tree (reads timed by the kernel's receive stamps, the default), with reads timed when they return
# (--rx-timestamps read), with --busy-poll, with both loadgen and the mock busy-polling (the mock's wake-up on
# a request's arrival taken out, leaving the client's own share), and, when REV is given, for loadgen
# built from REV; the variants alternate over ROUNDS rounds (default 3) so the VM's drift falls on all
# of them alike.
#
# Usage: scripts/bench-ttft-excess.sh [REV]      ROUNDS=5 scripts/bench-ttft-excess.sh ...
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/rev-build.sh
rev="${1:-}"
before_and_now "$rev" mock-server loadgen
old="$old_bin/loadgen"
out="bench-results/ttft-excess"
rounds="${ROUNDS:-3}"
mkdir -p "$out"
mock=(taskset -c 0 "$bin/mock-server" --port 0 --host 127.0.0.1 --ttft-ms 50 --itl-ms 10)

variants=("now" "now-read-stamps" "now-busy-poll" "now-both-busy-poll")
[ -n "$rev" ] && variants=("$rev" "${variants[@]}")
rm -f "$out"/*.json
for round in $(seq "$rounds"); do
    for v in "${variants[@]}"; do
        case "$v" in
            now) cmd=("$bin/loadgen" selfcheck) ;;
            now-read-stamps) cmd=("$bin/loadgen" selfcheck --rx-timestamps read) ;;
            now-busy-poll | now-both-busy-poll) cmd=("$bin/loadgen" selfcheck --busy-poll) ;;
            *) cmd=("$old" selfcheck) ;;
        esac
        # A mock per variant: a busy-polling one must not spin on CPU 0 during the others.
        if [ "$v" = now-both-busy-poll ]; then
            start_mock "$out/mock.log" "${mock[@]}" --busy-poll
        else
            start_mock "$out/mock.log" "${mock[@]}"
        fi
        for c in 1 10; do
            n=$((c * 20 > 40 ? c * 20 : 40))
            taskset -c 1 "${cmd[@]}" --api-base "$url" --concurrency "$c" --requests "$n" \
                --ttft-ms 50 --itl-ms 10 --tokens 20 --json "$out/$v-c$c-r$round.json" >/dev/null
        done
        kill "$mock_pid"
        wait "$mock_pid" 2>/dev/null || true
    done
done
python3 - "$out" "${variants[@]}" <<'PY'
import json, os, sys
out, variants = sys.argv[1], sys.argv[2:]
print("| loadgen | streams | TTFT error mean ms | TTFT error p50 ms | request delay p50 ms | receive delay p50 ms | client CPU s per 100k events |")
print("|---|---:|---|---|---|---|---|")
for v in variants:
    for c in (1, 10):
        runs = sorted(f for f in os.listdir(out) if f.startswith(f"{v}-c{c}-r"))
        rs = [json.load(open(os.path.join(out, f))) for f in runs]
        col = lambda k, s: ", ".join(f"{r['error'][k][s]:.3f}" for r in rs)
        cpu = ", ".join(f"{r['client_cpu_s_per_100k_events']:.1f}" for r in rs)
        print(f"| {v} | {c} | {col('ttft_error_ms', 'mean')} | {col('ttft_error_ms', 'p50')} | "
              f"{col('request_delay_ms', 'p50')} | {col('receive_delay_ms', 'p50')} | {cpu} |")
PY

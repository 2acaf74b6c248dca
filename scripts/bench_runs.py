"""Reading what scripts/bench.sh wrote for one self-check run: NAME.json (`loadgen selfcheck --json`)
and NAME.mock.json (the mock's CPU, memory and writes), shared by the table scripts."""
import json
import os
import sys


def load_run(out, name, tool):
    """The run's self-check report and mock figures; exits naming `tool` and the run if either is bad."""
    try:
        with open(os.path.join(out, name + ".json")) as fh:
            report = json.load(fh)
        with open(os.path.join(out, name + ".mock.json")) as fh:
            mock = json.load(fh)
    except (OSError, ValueError) as e:
        sys.exit(f"{tool}: {name}: {e}")
    return report, mock

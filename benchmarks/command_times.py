"""Wall time of the commands a user runs to look before a sweep starts.

    python benchmarks/command_times.py [--rounds 5] [--smoke-test]

Each command runs `--rounds` times as a fresh process from the repository root with this
interpreter; the median and the slowest are printed in seconds, next to the target the
project holds them to (launch.py --help and --list-spaces and the report's --help under
0.5 s, --dry-run under 1.5 s, and the headline sweep refusing on a machine without a GPU
under 2 s, on 2 cores). The targets hold because those paths import no torch, Ray,
MLflow or Optuna (tests/test_structure.py checks the imports; this script measures the
time). `python -m trainables.train --help` is listed for reference: the trial's own
command line imports torch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
STORE = tempfile.mkdtemp(prefix="command-times-")  # where the refused sweep would have stored
COMMANDS = {  # name: (argv, target in seconds or None, the exit status it must end with)
    "launch --help": ([PY, "launch.py", "--help"], 0.5, 0),
    "launch --list-spaces": ([PY, "launch.py", "--list-spaces"], 0.5, 0),
    "launch --dry-run": ([PY, "launch.py", "--space", "compare_c100", "--dry-run"], 1.5, 0),
    # With every GPU hidden: refused ("this machine has none"), exit 2.
    "launch zsharp_c100, no GPU": ([PY, "launch.py", "--space", "zsharp_c100", "--storage", STORE], 2.0, 2),
    "analysis.report --help": ([PY, "-m", "analysis.report", "--help"], 0.5, 0),
    "trainables.train --help": ([PY, "-m", "trainables.train", "--help"], None, 0),
}


def timed(argv: list[str], code: int) -> float:
    """Seconds one run of `argv` takes, start to exit (it must exit with `code`)."""
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "-1"})
    seconds = time.perf_counter() - start
    if done.returncode != code:
        sys.exit(f"{' '.join(argv[1:])}: exit {done.returncode}, expected {code}: {done.stderr[-500:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs per command (default 5)")
    parser.add_argument("--smoke-test", action="store_true", help="one round of the launch.py commands")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    rounds = 1 if args.smoke_test else args.rounds
    names = [n for n in COMMANDS if n.startswith("launch")] if args.smoke_test else list(COMMANDS)
    print(f"{'command':26s} {'median s':>9s} {'max s':>7s} {'target s':>9s}")
    for name in names:
        argv, target, code = COMMANDS[name]
        times = [timed(argv, code) for _ in range(rounds)]
        shown = f"{target:9.1f}" if target is not None else f"{'-':>9s}"
        print(f"{name:26s} {statistics.median(times):9.2f} {max(times):7.2f} {shown}")


if __name__ == "__main__":
    main()

"""Do the quickstart's intervals hold on a rerun? Run the whole quickstart (replicated
searches, confirm stage, report) under several master seeds, which share no searcher,
training, holdout or confirm seed (tune.seeds), and check, per optimizer and budget arm
and for the primary contrast, how often one sweep's interval holds another sweep's
estimate (target: at least 80% of the ordered pairs) and how far the estimates spread
(target: within 1.5 points); with each sweep's wall time (target: 10 minutes on 2 idle
cores, after setup).

    .venv/bin/python benchmarks/quickstart_spread.py [--seeds 0,1,2] [--storage DIR]

Each sweep is `launch.py --space quickstart --seed S` in a subprocess, as a user runs it;
a sweep already finished in --storage (experiment quickstart-seedS) is read, not rerun.
`--smoke-test` checks the arithmetic on three made-up sweeps and runs nothing.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_COVERAGE = 0.80    # of the (sweep, other sweep) pairs
TARGET_SPREAD = 0.015     # accuracy: 1.5 points between the sweeps' estimates
TARGET_WALL_S = 10 * 60


def run_quickstart(seed: int, storage: Path) -> float | None:
    """Run the quickstart with master seed `seed` unless it already finished there; its
    wall seconds (None when it was read, not run)."""
    from analysis.load import list_sweeps

    experiment = f"quickstart-seed{seed}"
    database = storage / "mlflow.db"
    if database.is_file() and experiment in list_sweeps(f"sqlite:///{database}"):
        return None
    command = [sys.executable, str(ROOT / "launch.py"), "--space", "quickstart", "--seed", str(seed),
               "--experiment", experiment, "--storage", str(storage)]
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"quickstart with seed {seed} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return time.monotonic() - started


def estimates(seed: int, storage: Path) -> dict[str, tuple[float, float, float]]:
    """(estimate, low, high) of each optimizer in each arm ("OPT ARM") and of the primary
    contrast ("primary A-B"), from the sweep's recorded verdict (analysis.verdict)."""
    from analysis.load import load_sweep
    from analysis.verdict import comparison

    result = comparison(load_sweep(f"quickstart-seed{seed}", f"sqlite:///{storage / 'mlflow.db'}"))
    found = {f"{r.optimizer} {arm}": (r.mean, r.low, r.high)
             for arm, arm_result in result.arms.items() for r in arm_result.summary.itertuples()}
    primary = result.primary_row()
    if primary is not None:
        found[f"primary {primary['optimizer']}-{primary['reference']}"] = (
            primary["mean_diff"], primary["low"], primary["high"])
    return found


def coverage(by_sweep: list[dict]) -> dict[str, tuple[float, float, int]]:
    """Per key: (share of ordered (sweep, other) pairs whose interval holds the other's
    estimate, largest spread of the estimates, pairs)."""
    keys = [k for k in by_sweep[0] if all(k in s for s in by_sweep)]
    found = {}
    for key in keys:
        pairs = list(itertools.permutations(range(len(by_sweep)), 2))
        held = sum(by_sweep[i][key][1] <= by_sweep[j][key][0] <= by_sweep[i][key][2] for i, j in pairs)
        values = [s[key][0] for s in by_sweep]
        found[key] = (held / len(pairs), max(values) - min(values), len(pairs))
    return found


def report(seeds: list[int], by_sweep: list[dict], walls: list[float | None]) -> bool:
    """Print the table and the verdict against the targets; True when every target is met."""
    print(f"{'':26s} " + " ".join(f"{'seed ' + str(s):>22s}" for s in seeds) + "   spread  covered")
    table = coverage(by_sweep)
    for key, (share, spread, pairs) in table.items():
        cells = " ".join(f"{100 * e:6.2f} [{100 * lo:6.2f},{100 * hi:6.2f}]" for e, lo, hi in (s[key] for s in by_sweep))
        print(f"{key:26s} {cells}   {100 * spread:5.2f}  {round(share * pairs)}/{pairs}")
    held = sum(round(share * pairs) for share, _, pairs in table.values())
    total = sum(pairs for _, _, pairs in table.values())
    widest = max(spread for key, (_, spread, _) in table.items() if not key.startswith("primary"))
    print(f"\ncoverage {held}/{total} = {held / total:.0%} of (sweep, other sweep) pairs (target "
          f">= {TARGET_COVERAGE:.0%}); largest spread of an optimizer's estimates {100 * widest:.2f} points "
          f"(target <= {100 * TARGET_SPREAD:.1f})")
    timed = [w for w in walls if w is not None]
    if timed:
        print("wall " + ", ".join(f"seed {s}: {w / 60:.1f} min" for s, w in zip(seeds, walls) if w is not None)
              + f" (target <= {TARGET_WALL_S / 60:.0f})")
    met = held / total >= TARGET_COVERAGE and widest <= TARGET_SPREAD and all(w <= TARGET_WALL_S for w in timed)
    print("targets " + ("met" if met else "NOT met"))
    return met


def smoke() -> bool:
    """The report of three made-up sweeps: an optimizer's estimates 0.90, 0.91 and 0.93,
    each with an interval of +-0.02."""
    made = [{"adam equal_epochs": (e, e - 0.02, e + 0.02)} for e in (0.90, 0.91, 0.93)]
    return report([0, 1, 2], made, [None, None, None])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="master seeds, comma-separated")
    parser.add_argument("--storage", help="results folder (default: a temporary one)")
    parser.add_argument("--smoke-test", action="store_true", help="check the arithmetic on made-up sweeps")
    args = parser.parse_args()
    if args.smoke_test:
        smoke()
        return 0
    seeds = [int(s) for s in args.seeds.split(",")]
    storage = Path(args.storage or tempfile.mkdtemp(prefix="quickstart-spread-")).resolve()
    walls = []
    for seed in seeds:
        walls.append(run_quickstart(seed, storage))
        print(f"seed {seed}: " + ("read" if walls[-1] is None else f"{walls[-1] / 60:.1f} min"), flush=True)
    report(seeds, [estimates(s, storage) for s in seeds], walls)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Is the quickstart's verdict luck? Run the whole quickstart (search, confirm, report)
with several searcher seeds and print, per optimizer, the confirm stage's mean final test
accuracy under each seed and the spread between seeds (target: within 3 points), with
the wall time of the search and of the whole run (targets: 5 and 8 minutes on 2 cores).

    .venv/bin/python benchmarks/quickstart_spread.py [--seeds 0,1,2] [--storage DIR]

Each run is `launch.py --space quickstart --seed S` in a subprocess, as a user runs it;
about 6 to 8 minutes each on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_SPREAD = 0.03        # accuracy (3 points) between searcher seeds, per optimizer
TARGET_SEARCH_S = 5 * 60
TARGET_TOTAL_S = 8 * 60


def run_quickstart(seed: int, storage: Path) -> tuple[float, float]:
    """Run the quickstart with searcher seed `seed`; (search seconds, total seconds)."""
    command = [sys.executable, str(ROOT / "launch.py"), "--space", "quickstart", "--seed", str(seed),
               "--experiment", f"quickstart-seed{seed}", "--storage", str(storage)]
    started = time.monotonic()
    search_s = None
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as driver:
        for line in driver.stdout:
            if search_s is None and line.startswith("confirm stage"):
                search_s = time.monotonic() - started
    if driver.returncode != 0:
        raise SystemExit(f"quickstart with seed {seed} failed (exit {driver.returncode})")
    return search_s or float("nan"), time.monotonic() - started


def confirm_means(seed: int, storage: Path) -> dict[str, float]:
    """Each optimizer's mean final test accuracy in the equal-epochs confirm arm."""
    from analysis.load import load_sweep

    sweep = load_sweep(f"quickstart-seed{seed}", f"sqlite:///{storage / 'mlflow.db'}")
    confirm = sweep.stage("confirm")
    confirm = confirm[confirm["budget_arm"] == "equal_epochs"]
    return confirm.groupby("optimizer")["final_test_acc"].mean().to_dict()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="searcher seeds, comma-separated")
    parser.add_argument("--storage", help="results folder (default: a temporary one)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    storage = Path(args.storage or tempfile.mkdtemp(prefix="quickstart-spread-")).resolve()
    means = {}
    for seed in seeds:
        search_s, total_s = run_quickstart(seed, storage)
        means[seed] = confirm_means(seed, storage)
        print(f"seed {seed}: search {search_s:.0f} s (target {TARGET_SEARCH_S}), whole run "
              f"{total_s:.0f} s (target {TARGET_TOTAL_S})", flush=True)
    optimizers = list(dict.fromkeys(o for m in means.values() for o in m))
    print(f"\n{'optimizer':9s} " + " ".join(f"{'seed ' + str(s):>8s}" for s in seeds) + "   spread")
    worst = 0.0
    for optimizer in optimizers:
        values = [means[s].get(optimizer, float("nan")) for s in seeds]
        spread = max(values) - min(values)
        worst = max(worst, spread)
        print(f"{optimizer:9s} " + " ".join(f"{v:8.4f}" for v in values) + f"   {100 * spread:5.2f} pts")
    print(f"\nlargest spread {100 * worst:.2f} points (target {100 * TARGET_SPREAD:.0f}): "
          f"{'met' if worst <= TARGET_SPREAD else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the flatness diagnostics cost a confirm run: their wall time over the run's.

    python benchmarks/flatness_cost.py                      # the quickstart's confirm runs
    python benchmarks/flatness_cost.py --optimizers zsharp --images 2048 --probes 20 \
        --lanczos-steps 20 --ascent-steps 5   # the defaults outside the quickstart
    python benchmarks/flatness_cost.py --results results/quickstart-20261202-153056

Without --results: one confirm run of each of the quickstart's optimizers (res20s on
digits, trained on train + val, scored on test, at the space's epochs and diagnostics
settings, checkpointed each epoch), in this process on its CPU with one thread as a trial
gets it (tune.trainable), after an untimed warm-up run; per run, the diagnostics' seconds
against the training epochs' and against the whole run's (loading, training, evaluation,
checkpoints and the diagnostics). With --results: the confirm runs of a finished sweep as
they ran (Ray's time_total_s of each run: its trainable from start to end, on however
many runs shared the machine), from the result.json files of the confirm stage beside the
sweep's folder (its `results` line). Target on the quickstart:
<= 10% of a run; a 1-pass optimizer's run is cheaper, so its share is higher. Each line
also gives how precise the curvature came out (trainables.flatness.precision): the
report calls a top eigenvalue rough whose Lanczos residual exceeds 10% of it, and a trace
whose standard error exceeds 30% of it (analysis.flatness).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search_spaces import get_space  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402
from trainables.flatness import precision, precision_text  # noqa: E402
from trainables.record import CONFIRM, STAGE_SUFFIX  # noqa: E402
from trainables.train import run_trial  # noqa: E402

TARGET = 0.10


def main() -> int:
    space = get_space("quickstart")
    quick = TrialConfig.from_dict(space.base_config(space.optimizers[0]))  # its fixed settings
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", default=",".join(space.optimizers),
                        help="comma-separated (default: the quickstart's, %(default)s)")
    parser.add_argument("--images", type=int, default=space.flatness_images,
                        help="subset size (default: the quickstart's, %(default)s)")
    parser.add_argument("--probes", type=int, default=quick.flatness_probes,
                        help="Hutchinson probes and random directions (default: the quickstart's, %(default)s)")
    parser.add_argument("--lanczos-steps", type=int, default=quick.flatness_lanczos_steps,
                        help="Lanczos steps at most (default: the quickstart's, %(default)s)")
    parser.add_argument("--ascent-steps", type=int, default=quick.flatness_ascent_steps,
                        help="worst-case ascent steps (default: the quickstart's, %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--results", type=Path,
                        help="a finished sweep's folder (<storage>/<experiment>): its confirm runs")
    parser.add_argument("--smoke-test", action="store_true",
                        help="Adam for 2 epochs, 16 images, 2 probes: that the script runs")
    args = parser.parse_args()
    if args.results is not None:
        return from_sweep(args.results)
    epochs_run = {}
    if args.smoke_test:
        args.optimizers, args.images, args.probes, epochs_run = "adam", 16, 2, {"epochs": 2}
    torch.set_num_threads(args.threads)
    settings = {"eval_split": "test", "refit": True, "seed": 0, "device": "cpu",
                "flatness_images": args.images, "flatness_probes": args.probes,
                "flatness_lanczos_steps": args.lanczos_steps, "flatness_ascent_steps": args.ascent_steps}
    run_trial({**space.base_config("adam"), **settings, "epochs": 1})  # warm-up: first calls' costs
    totals, shares = [0.0, 0.0], {}  # runs, diagnostics: seconds over the runs; per run
    for optimizer in args.optimizers.split(","):
        epochs = []
        with tempfile.TemporaryDirectory() as checkpoints:
            started = time.perf_counter()
            run_trial({**space.base_config(optimizer), **settings, **epochs_run}, report=epochs.append,
                      checkpoint_dir=checkpoints)
            run = time.perf_counter() - started
        training, diagnostics = sum(m["epoch_time_s"] for m in epochs), epochs[-1]["flatness_seconds"]
        totals, shares[optimizer] = [totals[0] + run, totals[1] + diagnostics], diagnostics / run
        print(f"{optimizer:7s} {space.dataset}/{space.model}, {len(epochs)} epochs: training {training:.2f} s, "
              f"run {run:.2f} s, diagnostics ({args.images} images, {args.probes} probes) {diagnostics:.2f} s: "
              f"{diagnostics / training:.1%} of training, {diagnostics / run:.1%} of the run; "
              f"{precision_text(*precision(epochs[-1]))}")
    _print_total(totals[1] / totals[0], shares, "one run of each optimizer")
    return 0


def from_sweep(folder: Path) -> int:
    """Print the diagnostics against the confirm runs' time in the sweep stored at
    `folder` (the last line of each confirm run's result.json), per optimizer and epochs
    (a 1-pass optimizer's equal-compute runs have twice the epochs)."""
    confirm = folder.with_name(folder.name + STAGE_SUFFIX[CONFIRM])
    runs = defaultdict(list)  # (optimizer, epochs) -> [(diagnostics, run) seconds]
    precise = defaultdict(list)  # (optimizer, epochs) -> [flatness.precision of each run]
    for path in sorted(confirm.glob("*/result.json")):
        last = _last_result(path)
        if {"flatness_seconds", "time_total_s"} <= last.keys():
            config = last.get("config", {})
            group = (str(config.get("optimizer", "?")), str(config.get("epochs", "?")))
            runs[group].append((float(last["flatness_seconds"]), float(last["time_total_s"])))
            precise[group].append(precision(last))
    if not runs:
        print(f"no confirm run with diagnostics in {confirm}", file=sys.stderr)
        return 2
    highest = {}
    for (optimizer, epochs), pairs in sorted(runs.items()):
        shares = [flat / run for flat, run in pairs]
        highest[f"{optimizer} {epochs} epochs"] = max(shares)
        largest = precision_text(*map(max, zip(*precise[optimizer, epochs])))
        print(f"{optimizer:7s} {epochs:>3s} epochs, {len(pairs)} runs: diagnostics {sum(f for f, _ in pairs) / len(pairs):.2f} s "
              f"of {sum(r for _, r in pairs) / len(pairs):.2f} s per run ({sum(shares) / len(shares):.1%}; "
              f"highest {max(shares):.1%}); largest {largest}")
    flat, run = (sum(values) for values in zip(*(p for pairs in runs.values() for p in pairs)))
    _print_total(flat / run, highest, "the sweep's confirm runs as they ran")
    return 0


def _print_total(ratio: float, shares: dict[str, float], runs: str) -> None:
    """The last line: the diagnostics' share of all the runs' time and of the run where it
    is highest, against the target (which every run should meet)."""
    run = max(shares, key=shares.get)
    print(f"all     ratio {ratio:.3f}, highest {shares[run]:.3f} ({run}) "
          f"(target <= {TARGET} of each run: {runs})")


def _last_result(path: Path) -> dict:
    """The last JSON object line of a result.json ({} if none can be read)."""
    for line in reversed(path.read_text(errors="replace").splitlines()):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        return row if isinstance(row, dict) else {}
    return {}


if __name__ == "__main__":
    sys.exit(main())

"""What the flatness diagnostics cost a confirm run: their wall time over the run's training.

    python benchmarks/flatness_cost.py                      # the quickstart's confirm run
    python benchmarks/flatness_cost.py --optimizers zsharp --images 2048 --probes 20

Runs one confirm run of each of the quickstart's optimizers (res20s on digits, trained on
train + val, scored on test, at the space's epochs and diagnostics settings), on this
machine's CPU with one thread as a trial gets it (tune.trainable), and prints the
diagnostics' seconds, the training's and their ratio, per run and over all of them. Target
on the quickstart: <= 10%; a 1-pass optimizer's run is cheaper, so its ratio is higher.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search_spaces import get_space  # noqa: E402
from trainables.train import run_trial  # noqa: E402

TARGET = 0.10


def main() -> int:
    space = get_space("quickstart")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", default=",".join(space.optimizers),
                        help="comma-separated (default: the quickstart's, %(default)s)")
    parser.add_argument("--images", type=int, default=space.flatness_images,
                        help="subset size (default: the quickstart's, %(default)s)")
    parser.add_argument("--probes", type=int, default=space.fixed.get("flatness_probes", 20),
                        help="probes, Lanczos steps, directions (default: the quickstart's, %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--smoke-test", action="store_true",
                        help="Adam for 2 epochs, 16 images, 2 probes: that the script runs")
    args = parser.parse_args()
    epochs_run = {}
    if args.smoke_test:
        args.optimizers, args.images, args.probes, epochs_run = "adam", 16, 2, {"epochs": 2}
    torch.set_num_threads(args.threads)
    totals = [0.0, 0.0]  # training, diagnostics: seconds over the runs
    for optimizer in args.optimizers.split(","):
        config = {**space.base_config(optimizer), "eval_split": "test", "refit": True, "seed": 0,
                  "device": "cpu", "flatness_images": args.images, "flatness_probes": args.probes,
                  **epochs_run}
        epochs = []
        run_trial(config, report=epochs.append)
        training, diagnostics = sum(m["epoch_time_s"] for m in epochs), epochs[-1]["flatness_seconds"]
        totals = [totals[0] + training, totals[1] + diagnostics]
        print(f"{optimizer:7s} {space.dataset}/{space.model}, {len(epochs)} epochs: training {training:.2f} s, "
              f"diagnostics ({args.images} images, {args.probes} probes) {diagnostics:.2f} s, "
              f"ratio {diagnostics / training:.3f}")
    print(f"all     ratio {totals[1] / totals[0]:.3f} (target <= {TARGET}: one run of each optimizer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Ray Tune function trainable: one trial, reported every epoch, with its checkpoint
at its first and last epoch and at most every CHECKPOINT_PERIOD_S between."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from ray import tune

from trainables.config import TrialConfig
from trainables.data import load_dataset_once
from trainables.record import split_config
from trainables.train import run_trial

# Training a trial may redo after a crash (driver or worker), in seconds: between its first
# and last epoch, a report carries the trial's checkpoint only when this long has passed
# since the last one. Each checkpoint handed to Ray is copied to storage and forces an
# experiment snapshot first (tune.schedule.SafeSnapshots), which copies every trial's files
# again; on the quickstart (1-2 s epochs) that was most of the driver's work per epoch.
CHECKPOINT_PERIOD_S = 10.0


class CheckpointDue:
    """Whether an epoch's report carries the checkpoint: the trial's first epoch (a restart
    never starts from scratch), its last (the epochs it was given; a finished trial is
    never trained again) and a divergence (its end), and otherwise once `period_s` has
    passed since the last one it carried, or since this run began (a resumed trial)."""

    def __init__(self, epochs: int, period_s: float = CHECKPOINT_PERIOD_S, clock=time.monotonic):
        self.epochs, self.period_s, self.clock = epochs, period_s, clock
        self.last = clock()

    def __call__(self, metrics: dict) -> bool:
        now = self.clock()
        due = (metrics["epoch"] <= 1 or metrics["epoch"] >= self.epochs
               or metrics.get("diverged", 0) != 0 or now - self.last >= self.period_s)
        if due:
            self.last = now
        return due


def tune_trial(config: dict) -> None:
    """Run `config` (a plain TrialConfig dict, with the driver's record beside it) inside a
    Ray worker.

    run_trial writes each epoch's checkpoint before it reports, so a report can carry that
    checkpoint (CheckpointDue says which do); a restarted trial (worker died, driver
    resumed) starts from the last one Ray persisted. Torch uses as many threads as the
    trial was given CPUs. The data set is read once per worker process
    (trainables.data.load_dataset_once): Tune reuses a worker for trial after trial.
    """
    config = TrialConfig.from_dict(split_config(config)[0])
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    due = CheckpointDue(config.epochs)
    with tempfile.TemporaryDirectory(prefix="sharpsweep-") as workdir:
        checkpoint_dir = Path(workdir)
        persisted = tune.get_checkpoint()
        if persisted is not None:
            persisted.to_directory(checkpoint_dir)

        reported = []

        def report(metrics: dict) -> None:
            reported.append(metrics["epoch"])
            tune.report(metrics, checkpoint=(tune.Checkpoint.from_directory(checkpoint_dir)
                                             if due(metrics) else None))

        result = run_trial(config, report, checkpoint_dir,
                           data=load_dataset_once(config.dataset, config.data_dir))
        if not reported and result.metrics:
            # Resumed at its last epoch: it ended after the experiment's last snapshot, which
            # holds an older result. Say how it ended once more, or Ray, ASHA and the
            # searcher would close it on that older result.
            report(result.metrics)

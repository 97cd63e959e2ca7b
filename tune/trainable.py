"""The Ray Tune function trainable: one trial, reported every epoch with its checkpoint."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from ray import tune

from trainables.train import run_trial


def tune_trial(config: dict) -> None:
    """Run `config` (a plain TrialConfig dict) inside a Ray worker.

    run_trial writes each epoch's checkpoint before it reports, so the report carries that
    checkpoint; a restarted trial (worker died, driver resumed) starts from the last one
    Ray persisted. Torch uses as many threads as the trial was given CPUs.
    """
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    with tempfile.TemporaryDirectory(prefix="sharpsweep-") as workdir:
        checkpoint_dir = Path(workdir)
        persisted = tune.get_checkpoint()
        if persisted is not None:
            persisted.to_directory(checkpoint_dir)

        reported = []

        def report(metrics: dict) -> None:
            reported.append(metrics["epoch"])
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))

        result = run_trial(config, report, checkpoint_dir)
        if not reported and result.metrics:
            # Resumed at its last epoch: it ended after the experiment's last snapshot, which
            # holds an older result. Say how it ended once more, or Ray, ASHA and the
            # searcher would close it on that older result.
            report(result.metrics)

"""Trial schedulers: the experiment snapshot never lags what a resume needs, and ASHA runs
per group (a trial is only ever compared with trials of its own optimizer in its own
replicate of the search).

One ASHA across all optimizers would stop the weaker optimizer's trials first and so
hand its best configuration less budget; tuned-against-tuned needs separate rungs, and
independent replicates need separate searches.
"""

from __future__ import annotations

import contextlib
import re

import pyarrow.fs
from ray.tune.result import SHOULD_CHECKPOINT
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from trainables.record import group_of



class SafeSnapshots(FIFOScheduler):
    """FIFO, and the experiment state (trials, searcher, callbacks) is written to storage
    whenever a driver killed before the next timed snapshot would otherwise lose something,
    and each trial keeps its two newest checkpoints (run with Tune's own pruning off):

    - between adding trials and starting them. Tune snapshots on a timer, so a driver
      killed between two snapshots would leave trials that ran, and logged to MLflow,
      unknown to the restored experiment and its searcher: `--resume` would ask the
      searcher for replacements and the lost trials' runs would never end. Tune calls
      `choose_trial_to_run` after it adds a step's new trials and before it starts any of
      them, so one snapshot there covers them.
    - before a trial's checkpoint N is registered: storage's snapshot must name N-1 (Tune
      hands the scheduler a result before it registers the checkpoint that came with it),
      and only then are the trial's checkpoints before N-1 deleted. Tune's own pruning
      (`num_to_keep`) deletes as it registers while it copies snapshots to storage in the
      background, so a killed driver could leave a snapshot naming a deleted checkpoint
      ("does not exist on storage anymore" on --resume), or one listing deleted
      checkpoints, which the resumed Tune fails to delete again and then writes new
      checkpoints over kept ones (both seen in the kill test).

    Cost: one experiment-state write and copy per forced snapshot and one listing of the
    trial's folder per checkpoint (milliseconds); one snapshot covers every trial whose
    checkpoint it names.
    """

    def __init__(self):
        super().__init__()
        self._unsaved = False  # a trial was added since the last forced snapshot
        self._named: dict[str, str] = {}  # trial id -> the checkpoint the last forced snapshot names

    def on_trial_add(self, tune_controller, trial):
        self._unsaved = True

    def on_trial_result(self, tune_controller, trial, result):
        latest = trial.checkpoint  # registered; the result's own checkpoint is not yet
        if result.get(SHOULD_CHECKPOINT) and latest:
            if self._named.get(trial.trial_id) != latest.path:
                self._snapshot(tune_controller)
            delete_checkpoints_before(latest)
        return super().on_trial_result(tune_controller, trial, result)

    def choose_trial_to_run(self, tune_controller):
        if self._unsaved:
            self._snapshot(tune_controller)
        return super().choose_trial_to_run(tune_controller)

    def _snapshot(self, tune_controller):
        # Tune hands schedulers a wrapper that warns on attributes outside its list; the
        # snapshot is the controller's own public method. wait=True: on storage on return.
        controller = getattr(tune_controller, "_tune_controller", tune_controller)
        controller.checkpoint(force=True, wait=True)
        self._unsaved = False
        self._named = {t.trial_id: t.checkpoint.path for t in controller.get_trials() if t.checkpoint}


_CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")  # Tune's folder name: checkpoint_000004


def delete_checkpoints_before(checkpoint) -> None:
    """Delete the checkpoint folders of `checkpoint`'s trial older than it, on its storage
    filesystem (local, or remote such as s3://), skipping any already gone."""
    fs = checkpoint.filesystem
    folder, _, name = checkpoint.path.rpartition("/")
    newest = int(_CHECKPOINT_DIR.match(name).group(1))
    for info in fs.get_file_info(pyarrow.fs.FileSelector(folder)):
        found = _CHECKPOINT_DIR.match(info.base_name)
        if info.type == pyarrow.fs.FileType.Directory and found and int(found.group(1)) < newest:
            with contextlib.suppress(FileNotFoundError):
                fs.delete_dir(info.path)


class PerGroupASHA(SafeSnapshots):
    """Routes every trial event to the ASHA of the trial's group (trainables.record.group_of:
    its optimizer and replicate)."""

    def __init__(self, groups, max_t: int, grace_period: int, reduction_factor: float,
                 metric: str = "val_acc", mode: str = "max"):
        super().__init__()
        self._metric, self._mode = metric, mode
        self._asha = {g: ASHAScheduler(time_attr="epoch", metric=metric, mode=mode, max_t=max_t,
                                       grace_period=grace_period,
                                       reduction_factor=reduction_factor)
                      for g in groups}

    def _of(self, trial):
        return self._asha[group_of(trial.config)]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return all(s.set_search_properties(metric, mode, **spec) for s in self._asha.values())

    def on_trial_add(self, tune_controller, trial):
        super().on_trial_add(tune_controller, trial)
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial):
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        super().on_trial_result(tune_controller, trial, result)  # the snapshot rule; FIFO continues
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "ASHA per group: " + "; ".join(
            f"{o} r{r}: {s.debug_string()}" for (o, r), s in self._asha.items())

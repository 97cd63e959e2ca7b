"""Trial schedulers: the experiment snapshot never lags what a resume needs, and ASHA runs
per optimizer (a trial is only ever compared with trials of its own optimizer).

One ASHA across all optimizers would stop the weaker optimizer's trials first and so
hand its best configuration less budget; tuned-against-tuned needs separate rungs.
"""

from __future__ import annotations

from ray.tune.result import SHOULD_CHECKPOINT
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler


class SafeSnapshots(FIFOScheduler):
    """FIFO, and the experiment state (trials, searcher, callbacks) is written to storage
    whenever a driver killed before the next timed snapshot would otherwise lose something:

    - between adding trials and starting them. Tune snapshots on a timer (every 10 s or
      more), so a driver killed between two snapshots would leave trials that ran, and
      logged to MLflow, unknown to the restored experiment and its searcher: `--resume`
      would ask the searcher for replacements and the lost trials' runs would never end.
      Tune calls `choose_trial_to_run` after it adds a step's new trials and before it
      starts any of them, so one snapshot there covers them.
    - before a trial's checkpoint N is registered, if the storage's snapshot does not
      yet name checkpoint N-1. Registering N deletes N-2 (the sweep keeps 2), and Tune
      copies snapshots to storage in the background, so the storage could name a deleted
      checkpoint and `--resume` would fail on "does not exist on storage anymore". Tune
      hands the scheduler a result before it registers the checkpoint that came with it.

    Cost: one experiment-state write and copy per forced snapshot (milliseconds); the
    checkpoint rule forces at most one per trial epoch, and one snapshot covers every
    trial whose checkpoint it names.
    """

    def __init__(self):
        super().__init__()
        self._unsaved = False  # a trial was added since the last forced snapshot
        self._named: dict[str, str] = {}  # trial id -> the checkpoint the last forced snapshot names

    def on_trial_add(self, tune_controller, trial):
        self._unsaved = True

    def on_trial_result(self, tune_controller, trial, result):
        latest = trial.checkpoint  # registered; the result's own checkpoint is not yet
        if result.get(SHOULD_CHECKPOINT) and latest and self._named.get(trial.trial_id) != latest.path:
            self._snapshot(tune_controller)
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


class PerOptimizerASHA(SafeSnapshots):
    """Routes every trial event to the ASHA of the trial's `optimizer`."""

    def __init__(self, optimizers, max_t: int, grace_period: int, reduction_factor: float,
                 metric: str = "val_acc", mode: str = "max"):
        super().__init__()
        self._metric, self._mode = metric, mode
        self._asha = {o: ASHAScheduler(time_attr="epoch", metric=metric, mode=mode, max_t=max_t,
                                       grace_period=grace_period,
                                       reduction_factor=reduction_factor)
                      for o in optimizers}

    def _of(self, trial):
        return self._asha[trial.config["optimizer"]]

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
        return "ASHA per optimizer: " + "; ".join(
            f"{o}: {s.debug_string()}" for o, s in self._asha.items())

"""Trial schedulers: every new trial is in a snapshot before it starts, and ASHA runs per
optimizer (a trial is only ever compared with trials of its own optimizer).

One ASHA across all optimizers would stop the weaker optimizer's trials first and so
hand its best configuration less budget; tuned-against-tuned needs separate rungs.
"""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler


class SnapshotBeforeStart(FIFOScheduler):
    """FIFO, and the experiment state (trials, searcher, callbacks) is written to storage
    between adding trials and starting them.

    Tune snapshots on a timer (every 10 s or more), so a driver killed between two
    snapshots would leave trials that ran, and logged to MLflow, unknown to the restored
    experiment and its searcher: `--resume` would ask the searcher for replacements and
    the lost trials' runs would never end. Tune calls `choose_trial_to_run` after it adds
    a step's new trials and before it starts any of them, so one snapshot there covers
    them. Cost: one experiment-state write per step that added trials (milliseconds;
    Tune's timer snapshots every step would cost ~10% of a driver core).
    """

    def __init__(self):
        super().__init__()
        self._unsaved = False  # a trial was added since the last forced snapshot

    def on_trial_add(self, tune_controller, trial):
        self._unsaved = True

    def choose_trial_to_run(self, tune_controller):
        if self._unsaved:
            # Tune hands schedulers a wrapper that warns on attributes outside its list;
            # the snapshot is the controller's own public method.
            controller = getattr(tune_controller, "_tune_controller", tune_controller)
            controller.checkpoint(force=True, wait=True)
            self._unsaved = False
        return super().choose_trial_to_run(tune_controller)


class PerOptimizerASHA(SnapshotBeforeStart):
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
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "ASHA per optimizer: " + "; ".join(
            f"{o}: {s.debug_string()}" for o, s in self._asha.items())

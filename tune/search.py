"""One seeded Optuna TPE study per optimizer, behind a single Ray Tune `Searcher`.

Each optimizer gets its own study over its own (conditional) space and exactly
`trials_per_optimizer` trials, handed out round-robin so every optimizer progresses
at the same pace; a suggestion is a complete, plain TrialConfig dict of a search trial
(evaluated on the validation split only).

The studies are driven by Optuna's ask-and-tell interface, so what Optuna learns is what
happened: every epoch's val_acc is an intermediate value, a trial ASHA stopped is told as
PRUNED (TPE weighs it by its last intermediate value instead of mistaking an epoch-2
accuracy for a full run's), a diverged trial as COMPLETE with the accuracy it ended at,
and an error as FAIL.
"""

from __future__ import annotations

import math
import pickle

import optuna
from optuna.samplers import TPESampler
from optuna.trial import TrialState
from ray.tune.search import Searcher

from search_spaces import Distribution, SearchSpace
from trainables.schema import SEARCH_METRIC, trial_status
from tune.budget import random_start

optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per study created


def suggest(trial: optuna.Trial, name: str, distribution: Distribution):
    """Sample `name` from `distribution` in an Optuna trial (the prior of
    `Distribution.sample`). A `loguniform_complement` value is sampled as 1 - value on a
    log scale, under the Optuna name "1-NAME"."""
    d = distribution
    if d.kind == "choice":
        return trial.suggest_categorical(name, list(d.values))
    if d.kind == "int":
        return trial.suggest_int(name, int(d.low), int(d.high))
    if d.kind == "loguniform_complement":
        return 1.0 - trial.suggest_float(f"1-{name}", 1.0 - d.high, 1.0 - d.low, log=True)
    return trial.suggest_float(name, d.low, d.high, log=d.kind == "loguniform")


class PickledSearcher(Searcher):
    """A Searcher whose whole state is its attributes, checkpointed with pickle (Tune
    saves it beside the experiment state, so a resumed sweep keeps its searcher). The file
    is written by this driver and read back by it: trusted, like the code."""

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class OptimizerStudy:
    """One optimizer's TPE study and its live trials, by Ray trial id."""

    def __init__(self, distributions: dict[str, Distribution], seed: int, budget: int):
        self.distributions = distributions
        # constant_liar: trials running at once are imputed a bad value, so concurrent
        # suggestions spread out instead of piling onto one promising point.
        self.study = optuna.create_study(direction="maximize", sampler=TPESampler(
            seed=seed, n_startup_trials=random_start(budget), constant_liar=True))
        self.trials: dict[str, optuna.Trial] = {}
        self.reported: dict[str, int] = {}  # Ray trial id -> last epoch told to Optuna

    def ask(self, trial_id: str) -> dict:
        """A new trial's sampled hyperparameters."""
        trial = self.study.ask()
        self.trials[trial_id] = trial
        self.reported[trial_id] = 0
        return {name: suggest(trial, name, d) for name, d in self.distributions.items()}

    def report(self, trial_id: str, epoch: int, value) -> None:
        """An epoch's val_acc as an intermediate value (an epoch re-reported after a
        restart from an earlier checkpoint is told once)."""
        if trial_id in self.trials and epoch > self.reported[trial_id] and _finite(value):
            self.trials[trial_id].report(float(value), epoch)
            self.reported[trial_id] = epoch

    def tell(self, trial_id: str, status: str, value) -> None:
        """The trial's end: PRUNED if ASHA stopped it, FAIL for an error or no accuracy,
        else COMPLETE with its final val_acc."""
        trial = self.trials.pop(trial_id, None)
        if trial is None:
            return  # told already
        if status == "stopped_early":
            self.study.tell(trial, state=TrialState.PRUNED)
        elif status == "error" or not _finite(value):
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            self.study.tell(trial, float(value))


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


class PerOptimizerSearch(PickledSearcher):
    """Round-robin over optimizers, each with its own seeded TPE study."""

    def __init__(self, space: SearchSpace, fixed: dict):
        super().__init__(metric=SEARCH_METRIC, mode="max")
        self._optimizers = list(space.optimizers)
        # eval_split "val": a search trial is handed its data without the test split.
        self._base = {o: {**space.base_config(o), **fixed, "eval_split": "val"}
                      for o in self._optimizers}
        self._budget = space.trials_per_optimizer
        self._studies = {o: OptimizerStudy(space.distributions_for(o), space.seed + i, self._budget)
                         for i, o in enumerate(self._optimizers)}
        self._suggested = {o: 0 for o in self._optimizers}
        self._owner: dict[str, str] = {}

    def suggest(self, trial_id: str):
        """The next trial's full config, or FINISHED once every optimizer had its trials."""
        waiting = [o for o in self._optimizers if self._suggested[o] < self._budget]
        if not waiting:
            return Searcher.FINISHED
        optimizer = min(waiting, key=lambda o: self._suggested[o])
        params = self._studies[optimizer].ask(trial_id)
        self._suggested[optimizer] += 1
        self._owner[trial_id] = optimizer
        return {**self._base[optimizer], **params}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        study = self._studies[self._owner[trial_id]]
        study.report(trial_id, int(result.get("epoch", 0)), result.get(SEARCH_METRIC))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        optimizer = self._owner[trial_id]
        result = result or {}
        status = trial_status(result, self._base[optimizer]["epochs"], error)
        self._studies[optimizer].tell(trial_id, status, result.get(SEARCH_METRIC))

    def study(self, optimizer: str) -> optuna.Study:
        """The Optuna study of one optimizer (what TPE was told, for tests and analysis)."""
        return self._studies[optimizer].study

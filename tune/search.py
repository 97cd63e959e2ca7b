"""One seeded Optuna TPE searcher per optimizer, behind a single Ray Tune `Searcher`.

Each optimizer gets its own study over its own (conditional) space and exactly
`trials_per_optimizer` trials, handed out round-robin so every optimizer progresses
at the same pace; a suggestion is a complete, plain TrialConfig dict.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import optuna
from optuna.samplers import TPESampler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from search_spaces import Distribution, SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per study created

_SUGGEST = {
    "uniform": lambda trial, name, d: trial.suggest_float(name, d.low, d.high),
    "loguniform": lambda trial, name, d: trial.suggest_float(name, d.low, d.high, log=True),
    "int": lambda trial, name, d: trial.suggest_int(name, int(d.low), int(d.high)),
    "choice": lambda trial, name, d: trial.suggest_categorical(name, list(d.values)),
}


@dataclass(frozen=True)
class DefineByRun:
    """Optuna define-by-run space of one optimizer (picklable, for searcher checkpoints)."""

    distributions: dict[str, Distribution]

    def __call__(self, trial) -> None:
        for name, distribution in self.distributions.items():
            _SUGGEST[distribution.kind](trial, name, distribution)


class PickledSearcher(Searcher):
    """A Searcher whose whole state is its attributes, checkpointed with pickle (Tune
    saves it beside the experiment state, so a resumed sweep keeps its searcher)."""

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class PerOptimizerSearch(PickledSearcher):
    """Round-robin over optimizers, each with its own OptunaSearch (TPE, seeded)."""

    def __init__(self, space: SearchSpace, fixed: dict, metric: str = "val_acc", mode: str = "max"):
        super().__init__(metric=metric, mode=mode)
        self._optimizers = list(space.optimizers)
        self._base = {o: {**space.base_config(o), **fixed} for o in self._optimizers}
        self._budget = space.trials_per_optimizer
        self._searchers = {
            o: OptunaSearch(space=DefineByRun(space.distributions_for(o)), metric=metric,
                            mode=mode, sampler=TPESampler(seed=space.seed + i))
            for i, o in enumerate(self._optimizers)}
        self._suggested = {o: 0 for o in self._optimizers}
        self._owner: dict[str, str] = {}

    def suggest(self, trial_id: str):
        """The next trial's full config, or FINISHED once every optimizer had its trials."""
        waiting = [o for o in self._optimizers if self._suggested[o] < self._budget]
        if not waiting:
            return Searcher.FINISHED
        optimizer = min(waiting, key=lambda o: self._suggested[o])
        params = self._searchers[optimizer].suggest(trial_id)
        self._suggested[optimizer] += 1
        self._owner[trial_id] = optimizer
        return {**self._base[optimizer], **params}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._searchers[self._owner[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._searchers[self._owner[trial_id]].on_trial_complete(trial_id, result, error)

"""One seeded Optuna TPE study per optimizer and replicate, behind a single Ray Tune
`Searcher`.

Each group (an optimizer in one replicate of the search) gets its own study over its own
(conditional) space and exactly its budget of trials, handed out round-robin so every
group progresses at the same pace; a suggestion is a complete, plain TrialConfig dict of
a search trial (evaluated on its replicate's validation split only). The equal-compute
arm's learning-rate re-search is the same machinery with other groups (tune.retune).

The studies live in an Optuna database (SQLite in the storage folder by default), one per
group named "EXPERIMENT/OPTIMIZER/rREPLICATE" (the re-search's with "/retune" after it),
so `optuna-dashboard URL` shows a running or finished sweep; each Optuna trial carries
its Ray trial id and MLflow run id as user attributes. They are driven by Optuna's ask-and-tell interface, so what Optuna learns is what
happened: every epoch's val_acc is an intermediate value, a trial ASHA stopped is told as
PRUNED (TPE weighs it by its last intermediate value instead of mistaking an epoch-2
accuracy for a full run's), a diverged trial as COMPLETE with the accuracy it ended at,
and an error as FAIL.
"""

from __future__ import annotations

import math
import pickle
import warnings
from dataclasses import dataclass, field

import optuna
from optuna.samplers import TPESampler
from optuna.trial import TrialState
from ray.tune.search import Searcher

from search_spaces import Distribution, SearchSpace
from trainables.record import OPTUNA_STUDY_TAG, OPTUNA_TRIAL_TAG, SEARCH, group_of
from trainables.schema import ERROR, SEARCH_METRIC, STOPPED_EARLY, trial_status
from tune.budget import random_start
from tune.seeds import replicate_seeds

optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per study created


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


def study_name(experiment: str, optimizer: str, replicate: int, stage: str = SEARCH) -> str:
    """The Optuna study of one optimizer in one replicate of a sweep's stage:
    "EXPERIMENT/OPTIMIZER/rREPLICATE" (the search), ".../retune" (the re-search)."""
    name = f"{experiment}/{optimizer}/r{replicate}"
    return name if stage == SEARCH else f"{name}/{stage}"


@dataclass(frozen=True)
class SearchGroup:
    """One study's trials: its key (optimizer, replicate), the fixed part of every config
    (`base`: a complete TrialConfig dict but the searched names), the searched
    distributions, the TPE seed, the trial budget, the study's name, and parameters to try
    first (Optuna's enqueue: the re-search starts at the 1x optimum)."""

    key: tuple[str, int]
    base: dict
    distributions: dict[str, Distribution]
    seed: int
    budget: int
    name: str
    first: tuple[dict, ...] = field(default=())


class OptimizerStudy:
    """One optimizer's TPE study, kept in Optuna storage `url` (SQLite or another database,
    so optuna-dashboard can show it), and its live trials by Ray trial id.

    Pickled with the searcher at every Tune snapshot: the pickle holds the sampler (its
    random state) and which Optuna trial each Ray trial is; the trials themselves are in
    the database, which can be ahead of the snapshot after a crash. Unpickling reconciles
    the two (`_reconcile`), so a resumed sweep tells no trial twice and asks no extra one.
    """

    def __init__(self, url: str, name: str, distributions: dict[str, Distribution], seed: int,
                 budget: int, first: tuple[dict, ...] = (), about: dict[str, str] | None = None):
        self.url, self.name, self.distributions = url, name, distributions
        # constant_liar: trials running at once are imputed a bad value, so concurrent
        # suggestions spread out instead of piling onto one promising point. multivariate:
        # one joint density over the searched names (lr and rho interact), said explicitly
        # (Optuna 4's default is independent densities per name).
        self.sampler = TPESampler(seed=seed, n_startup_trials=random_start(budget), constant_liar=True,
                                  multivariate=True)
        # An existing study is one launch.py checked is empty (tune.preflight.check_studies), or
        # a re-search's that no Ray trial ran yet (tune.retune): a driver that stopped
        # before Ray recorded anything.
        self.study = optuna.create_study(study_name=name, storage=url, direction="maximize",
                                         sampler=self.sampler, load_if_exists=True)
        _describe(self.study, distributions, about or {})
        for params in first:
            self.study.enqueue_trial(params, skip_if_exists=True)
        self.trials: dict[str, optuna.Trial] = {}
        self.reported: dict[str, int] = {}  # Ray trial id -> last epoch told to Optuna
        # Asked after the last snapshot, with their last epoch told: handed out again.
        self.orphans: list[tuple[optuna.Trial, int]] = []

    def __getstate__(self):
        return {**self.__dict__, "study": None, "orphans": [],
                "trials": {ray_id: trial.number for ray_id, trial in self.trials.items()}}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        storage = optuna.storages.get_storage(self.url)
        self.study = optuna.load_study(study_name=self.name, storage=storage, sampler=self.sampler)
        self._reconcile(storage, state["trials"])

    def _reconcile(self, storage, numbers: dict[str, int]) -> None:
        """Live trials from a snapshot (Ray id -> trial number) against the database: a
        trial the database has finished is not live (Ray replays its end, told once); a
        live one's last reported epoch is the database's; a RUNNING trial no Ray trial
        owns was asked after the snapshot and is handed out again by `ask`."""
        study_id = storage.get_study_id_from_name(self.name)
        stored = {t.number: t for t in self.study.get_trials(deepcopy=False)}

        def live(number: int) -> optuna.Trial:
            return optuna.Trial(self.study, storage.get_trial_id_from_study_id_trial_number(study_id, number))

        def told(number: int) -> int:
            return max(stored[number].intermediate_values, default=0)

        running = {n for n, t in stored.items() if t.state == TrialState.RUNNING}
        self.trials = {ray_id: live(n) for ray_id, n in numbers.items() if n in running}
        self.reported = {ray_id: told(n) for ray_id, n in numbers.items() if n in running}
        self.orphans = [(live(n), told(n)) for n in sorted(running - set(numbers.values()))]
        if self.orphans:  # the snapshot's random state drew their values: it would again
            self.sampler.reseed_rng()

    def ask(self, trial_id: str) -> dict:
        """A new trial's sampled hyperparameters (an orphan's, if there is one)."""
        trial, reported = self.orphans.pop(0) if self.orphans else (self.study.ask(), 0)
        trial.set_user_attr("ray_trial_id", trial_id)
        self.trials[trial_id] = trial
        self.reported[trial_id] = reported
        return {name: d.suggest(trial, name) for name, d in self.distributions.items()}

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
        if status == STOPPED_EARLY:
            self.study.tell(trial, state=TrialState.PRUNED)
        elif status == ERROR or not _finite(value):
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            self.study.tell(trial, float(value))


def _describe(study: optuna.Study, distributions: dict[str, Distribution], about: dict[str, str]) -> None:
    """What optuna-dashboard shows of a study: its objective's name, `about` (the space, the
    command, the MLflow experiment) and, for a value searched through its complement, how
    the trials' parameter reads."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # stable since 3.2
        study.set_metric_names([SEARCH_METRIC])
    notes = {f"1-{name}": f"1 - {name}, searched on a log scale: {name} = 1 - this value"
             for name, d in distributions.items() if d.transform is not None and d.transform.reflect}
    for key, value in {**about, **notes}.items():
        study.set_user_attr(key, value)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


class OptunaLinks:
    """Links a search trial's MLflow run and its Optuna trial both ways: the run's id as the
    Optuna trial's user attribute `mlflow_run_id` (beside `ray_trial_id`, set when it was
    asked), and the study and trial number for the run's tags. Used by the driver's MLflow
    callback; `stage` names the studies ("search", "retune": `study_name`); the storage
    connection is opened on first use and not pickled."""

    def __init__(self, url: str, experiment: str, stage: str = SEARCH):
        self.url, self.experiment, self.stage = url, experiment, stage
        self._storage = None

    def __getstate__(self):
        return {**self.__dict__, "_storage": None}

    def link(self, config: dict, ray_trial_id: str, run_id: str) -> dict[str, str]:
        """The MLflow tags naming the Optuna trial of `ray_trial_id` (none if it has none),
        after recording `run_id` on it while it runs; `config`: the trial's (its optimizer and
        replicate name the study). A finished trial keeps its attributes (Optuna refuses the
        write): Ray fails a trial it was still starting, and tells the searcher, before the
        callback that creates the run."""
        if self._storage is None:
            self._storage = optuna.storages.get_storage(self.url)
        name = study_name(self.experiment, *group_of(config), self.stage)
        study_id = self._storage.get_study_id_from_name(name)
        for trial in self._storage.get_all_trials(study_id, deepcopy=False):
            if trial.user_attrs.get("ray_trial_id") == ray_trial_id:
                if not trial.state.is_finished():
                    trial_id = self._storage.get_trial_id_from_study_id_trial_number(
                        study_id, trial.number)
                    self._storage.set_trial_user_attr(trial_id, "mlflow_run_id", run_id)
                return {OPTUNA_STUDY_TAG: name, OPTUNA_TRIAL_TAG: str(trial.number)}
        return {}


class GroupedSearch(PickledSearcher):
    """Round-robin over groups (tune.search.SearchGroup: an optimizer in a replicate), each
    with its own seeded TPE study in Optuna storage `url`."""

    def __init__(self, groups: list[SearchGroup], url: str, about: dict[str, str] | None = None):
        super().__init__(metric=SEARCH_METRIC, mode="max")
        self._groups = {g.key: g for g in groups}
        self._studies = {g.key: OptimizerStudy(url, g.name, g.distributions, g.seed, g.budget, g.first, about)
                         for g in groups}
        self._suggested = {g.key: 0 for g in groups}
        self._owner: dict[str, tuple[str, int]] = {}

    def suggest(self, trial_id: str):
        """The next trial's full config, or FINISHED once every group had its trials."""
        waiting = [k for k, g in self._groups.items() if self._suggested[k] < g.budget]
        if not waiting:
            return Searcher.FINISHED
        key = min(waiting, key=lambda k: self._suggested[k])
        params = self._studies[key].ask(trial_id)
        self._suggested[key] += 1
        self._owner[trial_id] = key
        return {**self._groups[key].base, **params}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        study = self._studies[self._owner[trial_id]]
        study.report(trial_id, int(result.get("epoch", 0)), result.get(SEARCH_METRIC))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        key = self._owner[trial_id]
        result = result or {}
        status = trial_status(result, self._groups[key].base["epochs"], error)
        # Tune hands a trial's last result here instead of to on_trial_result.
        self._studies[key].report(trial_id, int(result.get("epoch", 0)), result.get(SEARCH_METRIC))
        self._studies[key].tell(trial_id, status, result.get(SEARCH_METRIC))

    def study(self, optimizer: str, replicate: int = 0) -> optuna.Study:
        """The Optuna study of one group (what TPE was told, for tests and analysis)."""
        return self._studies[(optimizer, replicate)].study


def search_groups(space: SearchSpace, experiment: str, fixed: dict) -> list[SearchGroup]:
    """The search's groups: every optimizer in every replicate, on the replicate's seeds
    (tune.seeds: its training seed and validation holdout for every trial, a TPE seed per
    optimizer), each with the space's trials. `fixed`: settings every trial gets (data_dir)."""
    groups = []
    for replicate in range(space.replicates):
        seeds = replicate_seeds(space.seed, replicate, 0)
        for optimizer in space.optimizers:
            # eval_split "val": a search trial is handed its data without the test split.
            base = {**space.base_config(optimizer), **fixed, "eval_split": "val", "seed": seeds.train,
                    "replicate": replicate, "holdout_seed": seeds.holdout}
            groups.append(SearchGroup((optimizer, replicate), base, space.distributions_for(optimizer),
                                      seeds.searcher(optimizer), space.trials_per_optimizer,
                                      study_name(experiment, optimizer, replicate)))
    return groups

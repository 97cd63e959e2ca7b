"""`SweepPlan`: a search space plus where and how it runs, resolved before anything starts."""

from __future__ import annotations

import os
from dataclasses import dataclass

from search_spaces import SearchSpace
from trainables.errors import ConfigError, one_line, printable
from trainables.record import CONFIRM, RETUNE, STAGE_SUFFIX, runs_confirm_stage, tracking_uri_problem
from trainables.schema import EQUAL_COMPUTE, count
from tune.budget import confirm_runs, random_start, retune_trials, retuned

RAY_DASHBOARD_PORT = 8265  # Ray's own default


class SweepError(ConfigError):
    """The sweep cannot start as asked (unreachable cluster or server, storage, data...)."""


class SweepFailed(RuntimeError):
    """The sweep could not go on for a reason outside what was asked (the local Ray did not
    start): one line and exit 1 at the command line."""


def is_uri(location: str) -> bool:
    """True for `scheme://...` locations (s3://, gs://, file://, http://...)."""
    return "://" in location


def studies_url_problem(url: str) -> str | None:
    """Why `url` is no database URL Optuna can open (None if it is one): malformed, or a
    database kind SQLAlchemy does not know. Whether it answers is the run's to find out."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as error:
        return (f"--optuna-storage must be a database URL (sqlite:////absolute/path.db, "
                f"postgresql://user@host/db, ...), got '{one_line(url)}': {one_line(error, squash_space=True)}")
    return None


def local_storage(location: str) -> str | None:
    """The absolute local path of a storage location, or None for remote storage."""
    if location.startswith("file://"):
        return location[len("file://"):]
    return None if is_uri(location) else os.path.abspath(os.path.expanduser(location))


@dataclass(frozen=True)
class SweepPlan:
    """Everything `run_sweep` needs; `describe()` is what `--dry-run` prints."""

    space: SearchSpace
    experiment: str
    storage: str                # absolute local path, or a URI (s3://, gs://, file://)
    tracking_uri: str           # sqlite:////abs/mlflow.db or http(s)://host:port
    optuna_uri: str             # the searchers' Optuna database: sqlite:////abs/optuna.db, ...
    data_dir: str               # absolute: trial workers run in their own folders
    address: str | None = None  # an existing Ray cluster; None starts a local one
    resume: bool = False
    command: str = ""
    confirm_top_k: int = 0      # the confirm stage: top k configs per optimizer ...
    confirm_seeds: int = 0      # ... each re-run with this many seeds (either 0: none)
    confirm_requested: bool = False  # asked for on the command line (may follow a finished sweep)
    dashboard: bool = False     # Ray's dashboard on 127.0.0.1:RAY_DASHBOARD_PORT (a local Ray)

    def __post_init__(self):
        if not self.experiment or "/" in self.experiment or self.experiment.startswith("."):
            raise SweepError(f"experiment name must be a plain folder name, got {self.experiment!r}")
        # Checked here, so the dry run refuses what the run would.
        problem = tracking_uri_problem(self.tracking_uri) or studies_url_problem(self.optuna_uri)
        if problem:
            raise SweepError(problem)

    @property
    def total_trials(self) -> int:
        """The search's trials: every optimizer's in every replicate."""
        return self.space.trials_per_optimizer * len(self.space.optimizers) * self.space.replicates

    @property
    def retune_path(self) -> str:
        """The equal-compute arm's learning-rate re-search's Ray experiment folder."""
        return self.experiment_path + STAGE_SUFFIX[RETUNE]

    @property
    def retunes(self) -> list[str]:
        """The optimizers whose equal-compute arm gets its own lr re-search (none without a
        confirm stage)."""
        return retuned(self.space) if self.confirms else []

    @property
    def retune_total(self) -> int:
        """The re-search's trials: per retuned optimizer and replicate."""
        return retune_trials(self.space) * len(self.retunes) * self.space.replicates

    @property
    def experiment_path(self) -> str:
        """Ray's experiment folder: storage/experiment."""
        return f"{self.storage.rstrip('/')}/{self.experiment}"

    @property
    def confirms(self) -> bool:
        return runs_confirm_stage(self.record())

    @property
    def confirm_path(self) -> str:
        """The confirm stage's own Ray experiment folder, beside the search's."""
        return self.experiment_path + STAGE_SUFFIX[CONFIRM]

    @property
    def confirm_plan(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(optimizer, arm) -> (runs, epochs each) of the confirm stage (tune.budget.confirm_runs)."""
        return confirm_runs(self.space, self.confirm_top_k, self.confirm_seeds) if self.confirms else {}

    @property
    def confirm_trials(self) -> int:
        return sum(runs for runs, _ in self.confirm_plan.values())

    @property
    def all_trials(self) -> int:
        """Every stage's trials: the search's, the re-search's and the confirm stage's."""
        return self.total_trials + self.retune_total + self.confirm_trials

    def _describe_confirm(self) -> str:
        if not self.confirms:
            return f"none ({'confirm_top_k' if self.confirm_top_k == 0 else 'confirm_seeds'}: 0)"
        s = self.space
        by_arm: dict[tuple[str, int], list[str]] = {}
        for (optimizer, arm), (_, epochs) in self.confirm_plan.items():
            by_arm.setdefault((arm, epochs), []).append(optimizer)
        arms = "; ".join(f"{arm.replace('_', ' ')}: {', '.join(names)} at {epochs} epochs"
                         for (arm, epochs), names in by_arm.items())
        trained = "train + val" if s.refit else "train"
        flat = (f", flatness measured on {s.flatness_images} training images" if s.flatness_images
                else "")
        return (f"top {self.confirm_top_k} per optimizer and replicate x {self.confirm_seeds} seeds, "
                f"trained on {trained}, scored on test, no early stopping{flat} ({self.confirm_trials} "
                f"trials); {arms}")

    def _describe_retune(self) -> str:
        """The equal-compute arm's lr re-search, or why the arm reuses the 1x rate."""
        longer = {o: e for (o, arm), (_, e) in self.confirm_plan.items() if arm == EQUAL_COMPUTE}
        trials = retune_trials(self.space)
        if not longer:
            return "none (no equal-compute arm)"
        if not self.retunes:
            return "none: the equal-compute arm reuses the lr tuned at 1x epochs (retune_trials 0)"
        return (f"lr of {', '.join(self.retunes)} searched again at the equal-compute arm's epochs "
                f"({', '.join(f'{o} {e}' for o, e in longer.items())}), "
                f"{count(trials, 'trial')} per replicate, on val, around the 1x optimum "
                f"({count(self.retune_total, 'trial')})")

    def _describe_refit(self) -> str:
        """How a refit's steps compare with the search's."""
        extra = self.space.refit_extra_steps
        if extra is None:
            return "confirm runs train on train alone: the steps the search tuned for"
        how = ("epochs scaled by |train| / |train + val| (refit_steps matched)" if self.space.refit_factor != 1
               else "the search's epochs on train + val (refit_steps: matched scales them)")
        return f"confirm runs train on train + val, {how}: {extra:+.1%} optimizer steps against the search"

    def describe_replicates(self) -> str:
        """What a replicate is and how many, and the primary contrast."""
        s = self.space
        primary = f"{s.primary[0]} against {s.primary[1]}" if s.primary else "none (every test in one Holm family)"
        conditional = ("" if s.replicates > 1 else
                       "; one replicate: intervals are conditional on one search")
        return (f"{s.replicates} of each optimizer's search and confirm stage (own searcher, training "
                f"and holdout seeds, from master seed {s.seed}){conditional}; primary contrast "
                f"{primary}, equivalence within +-{s.equivalence_margin:g} points")

    def record(self) -> dict:
        """What makes this sweep this sweep: its space (budget, optimizers and trials
        included) and its confirm stage. Stored with the parent run; --resume must ask for
        the same (where it runs, the data folder and the command line may change)."""
        return {**self.space.to_dict(), "confirm_top_k": self.confirm_top_k,
                "confirm_seeds": self.confirm_seeds}

    def describe(self) -> str:
        """The resolved plan, in the words a user checks before spending GPU-hours."""
        s = self.space
        worst_epochs = self.total_trials * s.max_epochs
        lines = [
            f"space        {s.name}: {s.description}",
            f"data, model  {s.dataset} (from {self.data_dir}), {s.model}",
            f"replicates   {self.describe_replicates()}",
            f"optimizers   {', '.join(s.optimizers)}: {count(s.trials_per_optimizer, 'trial')} each per "
            f"replicate, {self.total_trials} in all",
            f"budget       up to {s.max_epochs} epochs per trial (at most {worst_epochs} trial-epochs); "
            f"ASHA per optimizer and replicate on val_acc: grace {s.grace_period}, reduction factor "
            f"{s.reduction_factor:g}; TPE after {random_start(s.trials_per_optimizer)} random trials",
            f"resources    {s.cpus_per_trial:g} CPU and {s.gpus_per_trial:g} GPU per trial, "
            f"{s.max_concurrent} at a time",
            f"cluster      {self.address or 'local Ray, started and stopped by launch.py'}"
            + (f"; its dashboard on http://127.0.0.1:{RAY_DASHBOARD_PORT}" if self.dashboard else ""),
            f"confirm      {self._describe_confirm()}",
            f"re-search    {self._describe_retune()}",
            f"refit        {self._describe_refit()}",
            f"storage      {self.experiment_path}{' (resume)' if self.resume else ''}",
            f"tracking     {self.tracking_uri} (experiment {self.experiment!r})",
            f"studies      {self.optuna_uri} (Optuna: {self.experiment}/OPTIMIZER/rREPLICATE)",
        ]
        for optimizer in s.optimizers:
            searched = ", ".join(f"{n} {d.kind} {_range(d)}"
                                 for n, d in s.distributions_for(optimizer).items())
            lines.append(f"  {optimizer:8s} {searched}")
        return "\n".join(map(printable, lines))  # a space file's description and choices are untrusted


def _range(distribution) -> str:
    if distribution.kind == "choice":
        return "{" + ", ".join(map(str, distribution.values)) + "}"
    return f"[{distribution.low:g}, {distribution.high:g}]"


def record_differences(recorded: dict, requested: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """One "name: recorded -> requested" entry per setting of two `SweepPlan.record`s that
    differs (values shown bounded)."""
    from trainables.errors import shown

    names = [n for n in dict.fromkeys([*recorded, *requested]) if n not in ignore]
    return [f"{n}: {shown(recorded.get(n))} -> {shown(requested.get(n))}"
            for n in names if recorded.get(n) != requested.get(n)]

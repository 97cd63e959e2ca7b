"""`Distribution` and `SearchSpace`: one sweep, as validated data.

A space names a data set, a model and the optimizers to compare, the trial settings held
fixed, how each searched hyperparameter is sampled, and the budget every optimizer gets
(trials, epochs, ASHA's early stopping, Ray resources). It holds no training logic and
imports neither Ray nor Optuna; tune/ turns distributions into Optuna calls.

Which hyperparameters an optimizer is searched over is decided from the optimizer
registry (`hparams_of`): alpha only for zsharp, eta only for asam, and so on, so a new
variant needs no change here. Every check runs on construction, including that each end
of every range makes a valid `TrialConfig`, so a bad space fails before any trial starts.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass

from trainables.config import TrialConfig
from trainables.errors import ConfigError, check_range, shown
from trainables.hparams import TRANSFORMS, Transform
from trainables.catalog import SPLIT_SIZES, all_hparams, hparams_of, list_datasets, list_models, list_optimizers


KINDS = (*TRANSFORMS, "choice")

# Trial settings the sweep sets itself (epochs is max_epochs; eval_split, refit and
# flatness_images follow the stage: a search trial evaluates val, a confirm run test and
# measures flatness; seed, replicate and holdout_seed follow the replicate); never fixed,
# never searched.
_OWN = ("dataset", "model", "optimizer", "epochs", "eval_split", "refit", "flatness_images", "seed",
        "replicate", "holdout_seed")
# How a refit's epochs are counted: as the search's (train + val is larger, so more steps),
# or scaled by |train| / |train + val| so that it takes the steps the search tuned for.
REFIT_STEPS = ("epochs", "matched")
# Space names become experiment folder names.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Budget fields: (whole number?, lowest, lowest allowed?, highest).
_LIMITS = {
    "max_epochs": (True, 1, True, math.inf),
    "grace_period": (True, 1, True, math.inf),
    "reduction_factor": (False, 1, False, math.inf),
    "trials_per_optimizer": (True, 1, True, math.inf),
    "max_concurrent": (True, 1, True, math.inf),
    "cpus_per_trial": (False, 0, False, math.inf),
    "gpus_per_trial": (False, 0, True, math.inf),
    "seed": (True, 0, True, 2 ** 32 - 1),  # the master seed (tune.seeds)
    "confirm_top_k": (True, 0, True, math.inf),
    "confirm_seeds": (True, 0, True, math.inf),
    "replicates": (True, 1, True, math.inf),
    "equivalence_margin": (False, 0, False, 100),
}


class SpaceError(ConfigError):
    """A search space (or its file) is unknown, malformed or would make an invalid trial."""


def _in_range(label: str, value, low=-math.inf, high=math.inf, *, low_open: bool = False,
              integral: bool = False) -> int | float:
    """`check_range` (ints and whole floats from YAML accepted where `integral`), its
    ConfigError a SpaceError: a space's errors are SpaceErrors naming where they are."""
    try:
        return check_range(label, value, low, high, low_open=low_open, integral=integral)
    except ConfigError as err:
        raise SpaceError(str(err)) from None


def _mapping(label: str, value) -> dict:
    """A copy of `value`, which must be a mapping with string keys."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise SpaceError(f"{label}: must be a mapping with string keys, got {shown(value)}")
    return dict(value)


def _trial(label: str, values: dict) -> TrialConfig:
    """`TrialConfig.from_dict(values)`, its ConfigError turned into a SpaceError at `label`."""
    try:
        return TrialConfig.from_dict(values)
    except ConfigError as err:
        raise SpaceError(f"{label}: {err}") from None


def _optimizer_names(label: str, value) -> tuple[str, ...]:
    """`value` as a tuple of registered optimizer names, non-empty and without repeats."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise SpaceError(f"{label}: must be a non-empty list of optimizer names, got {shown(value)}")
    known = list_optimizers()
    for i, name in enumerate(value):
        if name not in known:
            raise SpaceError(f"{label}: unknown optimizer {shown(name)}; choose from {', '.join(known)}")
        if name in value[:i]:
            raise SpaceError(f"{label}: {shown(name)} is listed twice")
    return tuple(value)


def _searchable() -> dict[str, str]:
    """The numeric trial settings a space may search: name -> "int" or "float" (the
    registry's hyperparameters included, so a new optimizer's are searchable at once)."""
    return {name: kind for name, (kind, _) in TrialConfig.settings().items()
            if kind in ("int", "float") and name not in _OWN}


@dataclass(frozen=True)
class Distribution:
    """How one hyperparameter is sampled: uniform, loguniform or int in [low, high], or a choice.

    `loguniform_complement` samples a value in [low, high] (high < 1) whose complement
    1 - value is log-uniform on [1 - high, 1 - low]: ZSharp's alpha searched through the
    fraction of entries it keeps, so that most draws sit near 1, where the method works.
    Validated on construction; range bounds are stored as floats (int bounds as ints),
    choices as a tuple of numbers (searched settings are all numeric).
    """

    kind: str                 # one of KINDS
    low: float | None = None
    high: float | None = None
    values: tuple = ()        # for choice

    def __post_init__(self):
        if self.kind not in KINDS:
            raise SpaceError(f"distribution kind must be one of {', '.join(KINDS)}, got {shown(self.kind)}")
        if self.kind == "choice":
            self._check_choice()
        else:
            self._check_range()

    def _check_range(self) -> None:
        if self.values:
            raise SpaceError(f"{self.kind} takes low and high, not values {shown(self.values)}")
        integral = self.kind == "int"
        low = _in_range(f"{self.kind} low", self.low, integral=integral)
        high = _in_range(f"{self.kind} high", self.high, integral=integral)
        if not low < high:
            raise SpaceError(f"{self.kind} needs low < high, got [{shown(low)}, {shown(high)}]")
        transform = self.transform
        if transform.log and transform.bounds(low, high)[0] <= 0:  # a log scale needs a positive range
            raise SpaceError(f"{self.kind} needs high < 1 (1 - value is log-scaled), got {shown(high)}"
                             if transform.reflect else f"{self.kind} needs low > 0, got {shown(low)}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def _check_choice(self) -> None:
        if self.low is not None or self.high is not None:
            raise SpaceError("choice takes values, not low and high")
        if isinstance(self.values, str) or not isinstance(self.values, (list, tuple)) or not self.values:
            raise SpaceError(f"choice needs a non-empty list of values, got {shown(self.values)}")
        values = tuple(_in_range("choice value", v, integral=isinstance(v, numbers.Integral)) for v in self.values)
        if len(set(values)) < len(values):
            raise SpaceError(f"choice lists a value twice: {shown(list(values))}")
        object.__setattr__(self, "values", values)

    @classmethod
    def from_spec(cls, spec, where: str) -> Distribution:
        """Parse `{kind: [low, high]}` or `{"choice": [v, ...]}`; SpaceError names `where`."""
        if not isinstance(spec, Mapping) or len(spec) != 1:
            raise SpaceError(f"{where}: expected one kind and its arguments, such as "
                             f"{{loguniform: [1e-4, 1e-2]}} or {{choice: [64, 128]}}, got {shown(spec)}")
        ((kind, args),) = spec.items()
        try:
            if not isinstance(args, (list, tuple)):
                raise SpaceError(f"{kind} needs a list, got {shown(args)}")
            if kind == "choice":
                return cls(kind, values=tuple(args))
            if len(args) != 2:
                raise SpaceError(f"{kind} needs [low, high], got {shown(list(args))}")
            return cls(kind, *args)
        except SpaceError as err:
            raise SpaceError(f"{where}: {err}") from None

    def to_spec(self) -> dict:
        """The inverse of `from_spec`: plain, YAML- and JSON-friendly data."""
        if self.kind == "choice":
            return {"choice": list(self.values)}
        return {self.kind: [self.low, self.high]}

    @property
    def transform(self) -> Transform | None:
        """How the range is sampled (None for a choice)."""
        return TRANSFORMS.get(self.kind)

    @property
    def scale(self) -> str:
        """The scale the range is sampled on: linear, log, log_complement or categorical."""
        return self.transform.scale if self.transform else "categorical"

    def position(self, value: float) -> float | None:
        """Where `value` lies in the range on its sampling scale: 0 at low, 1 at high (None
        for a choice, whose values have no order to speak of)."""
        if self.transform is None:
            return None
        low, high = self.transform.unit(self.low), self.transform.unit(self.high)
        return (self.transform.unit(value) - low) / (high - low)

    def sample(self, rng) -> float | int:
        """One draw from this distribution with a numpy Generator: the same prior Optuna
        samples from (`suggest`), for previews (`launch.py --sample`)."""
        if self.transform is None:
            return self.values[int(rng.integers(len(self.values)))]
        return self.transform.sample(rng, self.low, self.high)

    def suggest(self, trial, name: str):
        """`name` drawn from this distribution in an Optuna trial (tune.search)."""
        if self.transform is None:
            return trial.suggest_categorical(name, list(self.values))
        return self.transform.suggest(trial, name, self.low, self.high)

    def _ends(self) -> tuple:
        """The extreme values a trial can get: both bounds, or every choice."""
        return self.values if self.kind == "choice" else (self.low, self.high)


def _distributions(label: str, value) -> dict[str, Distribution]:
    """A copy of a name -> Distribution mapping, checked."""
    found = _mapping(label, value)
    for name, dist in found.items():
        if not isinstance(dist, Distribution):
            raise SpaceError(f"{label}.{name}: must be a Distribution, got {shown(dist)}")
    return found


def _parse_specs(label: str, value) -> dict[str, Distribution]:
    """A name -> spec mapping (file data) as name -> Distribution."""
    return {name: Distribution.from_spec(spec, f"{label}.{name}")
            for name, spec in _mapping(label, value).items()}


def _check_searchable(label: str, name: str, dist: Distribution) -> None:
    searchable = _searchable()
    if name not in searchable:
        raise SpaceError(f"{label}: {shown(name)} is not a searchable trial setting; "
                         f"choose from {', '.join(searchable)}")
    if searchable[name] == "int" and dist.kind not in ("int", "choice"):
        raise SpaceError(f"{label}: {name} is a whole number; use int or choice, not {dist.kind}")


def _specs(dists: dict[str, Distribution]) -> dict[str, dict]:
    return {name: dist.to_spec() for name, dist in dists.items()}


@dataclass(frozen=True)
class SearchSpace:
    """One sweep: data, model, optimizers, fixed and searched settings, budget and resources.

    Every optimizer gets the same trials and the same budget (tuned against tuned).
    Construction validates everything; `from_dict` / `to_dict` are the file format.
    """

    name: str
    description: str
    dataset: str              # trainables.data registry name
    model: str                # trainables.models registry name
    optimizers: tuple[str, ...]
    fixed: dict               # other TrialConfig settings held constant (batch_size, base, ...)
    search: dict              # name -> Distribution, for every optimizer that takes the name
    search_per_optimizer: dict  # optimizer -> {name -> Distribution}: overrides or additions
    max_epochs: int           # epochs per trial: TrialConfig.epochs and ASHA's max_t
    trials_per_optimizer: int
    grace_period: int = 1           # ASHA: epochs before the first stopping decision (Ray's default)
    reduction_factor: float = 4     # ASHA: 1/reduction_factor of the trials go on at each rung (Ray's)
    max_concurrent: int = 1         # trials running at once
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0       # fractional: several small trials share one GPU
    seed: int = 0             # master seed: every replicate's seeds derive from it (tune.seeds)
    # The default confirm stage: the top k configurations of each optimizer re-run with
    # this many seeds, to the full budget (either 0: none).
    confirm_top_k: int = 0
    confirm_seeds: int = 3
    # Confirm runs train on train + val (the usual final training), or on train alone.
    refit: bool = True
    # Independent replicates of each optimizer's search and confirm stage (own searcher,
    # training seed and validation holdout each): the verdict's unit of evidence.
    replicates: int = 1
    # The contrast the sweep asks about, tested alone at 0.05 ([candidate, reference]);
    # None: zsharp against sam when both are compared. Every other test is one Holm family.
    primary_contrast: tuple[str, ...] | None = None
    # Accuracy points within which two pipelines whose interval lies inside count as equivalent.
    equivalence_margin: float = 0.5
    # A refit's epochs: "epochs" as the search's, or "matched" (scaled by |train| / |train + val|).
    refit_steps: str = "epochs"
    # The equal-compute arm's learning-rate re-search at its longer epochs, per replicate:
    # trials per 1-pass optimizer (None: a third of trials_per_optimizer, at least 1; 0: none,
    # the arm reuses the lr tuned at 1x).
    retune_trials: int | None = None
    # Confirm runs end with the flatness diagnostics on this many training images (0: none);
    # their probes, steps and radius are trial settings (fixed: flatness_probes,
    # flatness_lanczos_steps, flatness_ascent_steps, flatness_radius).
    flatness_images: int = 2048

    def __post_init__(self):
        where = f"space {shown(self.name)}"
        self._check_names(where)
        self._set("optimizers", _optimizer_names(f"{where}: optimizers", self.optimizers))
        self._check_budget(where)
        self._check_fixed(where)
        self._set("search", _distributions(f"{where}: search", self.search))
        self._set("search_per_optimizer", self._checked_per_optimizer(where))
        self._check_search(where)
        self._check_ends(where)
        self._check_contrast(where)

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)

    def _check_names(self, where: str) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise SpaceError(f"{where}: name: must be letters, digits, '_', '.' or '-' "
                             f"(it names the experiment folder), got {shown(self.name)}")
        if not isinstance(self.description, str):
            raise SpaceError(f"{where}: description: must be a string, got {shown(self.description)}")
        for field, known in (("dataset", list_datasets()), ("model", list_models())):
            value = getattr(self, field)
            if value not in known:
                raise SpaceError(f"{where}: {field}: unknown {field} {shown(value)}; choose from {', '.join(known)}")

    def _check_budget(self, where: str) -> None:
        for field, (integral, lowest, lowest_ok, highest) in _LIMITS.items():
            self._set(field, _in_range(f"{where}: {field}", getattr(self, field), lowest, highest,
                                       low_open=not lowest_ok, integral=integral))
        if self.confirm_top_k > self.trials_per_optimizer:
            raise SpaceError(f"{where}: confirm_top_k: must be <= trials_per_optimizer "
                             f"({self.trials_per_optimizer}), got {self.confirm_top_k}")
        if not isinstance(self.refit, bool):
            raise SpaceError(f"{where}: refit: must be true or false, got {shown(self.refit)}")
        if self.refit_steps not in REFIT_STEPS:
            raise SpaceError(f"{where}: refit_steps: must be one of {', '.join(REFIT_STEPS)}, "
                             f"got {shown(self.refit_steps)}")
        if self.retune_trials is not None:
            self._set("retune_trials", _in_range(f"{where}: retune_trials", self.retune_trials, 0,
                                                 math.inf, integral=True))
        self._set("flatness_images", _in_range(f"{where}: flatness_images", self.flatness_images, 0,
                                               math.inf, integral=True))
        if self.grace_period > self.max_epochs:
            raise SpaceError(f"{where}: grace_period: must be <= max_epochs ({self.max_epochs}), "
                             f"got {self.grace_period}")
        for field in ("cpus_per_trial", "gpus_per_trial"):
            value = getattr(self, field)
            if value > 1 and not value.is_integer():  # Ray accepts fractions of one unit only
                raise SpaceError(f"{where}: {field}: above 1 must be a whole number, got {shown(value)}")

    def _check_fixed(self, where: str) -> None:
        fixed = _mapping(f"{where}: fixed", self.fixed)
        for key in fixed:
            if key in _OWN:
                raise SpaceError(f"{where}: fixed: {key} is set by the sweep itself "
                                 f"(dataset, model, optimizers, max_epochs, the stage's split, refit, "
                                 f"flatness_images), "
                                 f"not fixed")
            if key not in TrialConfig.field_names():
                raise SpaceError(f"{where}: fixed: unknown trial setting {shown(key)}; "
                                 f"choose from {', '.join(TrialConfig.field_names())}")
        self._set("fixed", fixed)
        trial = _trial(f"{where}: fixed", self.base_config(self.optimizers[0]))
        self._set("fixed", {key: getattr(trial, key) for key in fixed})  # e.g. 128.0 -> 128

    def _check_contrast(self, where: str) -> None:
        if self.primary_contrast is None:
            return
        pair = self.primary_contrast
        if isinstance(pair, str) or not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise SpaceError(f"{where}: primary_contrast: must be [candidate, reference], got {shown(pair)}")
        for name in pair:
            if name not in self.optimizers:
                raise SpaceError(f"{where}: primary_contrast: {shown(name)} is not one of the space's "
                                 f"optimizers ({', '.join(self.optimizers)})")
        if pair[0] == pair[1]:
            raise SpaceError(f"{where}: primary_contrast: compares {shown(pair[0])} with itself")
        self._set("primary_contrast", tuple(pair))

    @property
    def primary(self) -> tuple[str, str] | None:
        """The primary contrast (candidate, reference): the space's, else zsharp against sam
        when both are compared, else none."""
        if self.primary_contrast is not None:
            return self.primary_contrast
        return ("zsharp", "sam") if {"zsharp", "sam"} <= set(self.optimizers) else None

    @property
    def refit_factor(self) -> float:
        """What a confirm run's epochs are multiplied by: |train| / |train + val| when the
        space refits with matched steps, else 1."""
        if not (self.refit and self.refit_steps == "matched"):
            return 1.0
        train, val, _ = SPLIT_SIZES[self.dataset]
        return train / (train + val)

    @property
    def refit_extra_steps(self) -> float | None:
        """How many more optimizer steps a refit confirm run takes than the search trials
        its configuration was tuned by, as a fraction (0.375: 37.5% more), after
        `refit_factor`; None without a refit. Steps per epoch: full batches only."""
        if not self.refit:
            return None
        train, val, _ = SPLIT_SIZES[self.dataset]
        batch = int(self.fixed.get("batch_size", TrialConfig.batch_size))
        searched = max(1, train // batch) * self.max_epochs
        refit_epochs = max(1, round(self.max_epochs * self.refit_factor))
        return max(1, (train + val) // batch) * refit_epochs / searched - 1

    def _checked_per_optimizer(self, where: str) -> dict:
        label = f"{where}: search_per_optimizer"
        per_optimizer = _mapping(label, self.search_per_optimizer)
        for optimizer, dists in per_optimizer.items():
            if optimizer not in self.optimizers:
                raise SpaceError(f"{label}: {shown(optimizer)} is not one of the space's optimizers "
                                 f"({', '.join(self.optimizers)})")
            per_optimizer[optimizer] = _distributions(f"{label}.{optimizer}", dists)
        return per_optimizer

    def _check_search(self, where: str) -> None:
        for name, dist in self.search.items():
            _check_searchable(f"{where}: search.{name}", name, dist)
            if not any(self._takes(o, name) for o in self.optimizers):
                raise SpaceError(f"{where}: search.{name}: none of the optimizers "
                                 f"({', '.join(self.optimizers)}) takes {name}")
        for optimizer, dists in self.search_per_optimizer.items():
            for name, dist in dists.items():
                label = f"{where}: search_per_optimizer.{optimizer}.{name}"
                _check_searchable(label, name, dist)
                if not self._takes(optimizer, name):
                    raise SpaceError(f"{label}: {optimizer} does not take {name}")
        for optimizer in self.optimizers:
            dists = self.distributions_for(optimizer)
            if not dists:
                raise SpaceError(f"{where}: search: nothing is searched for {optimizer}")
            both = sorted(set(dists) & set(self.fixed))
            if both:
                raise SpaceError(f"{where}: fixed: {', '.join(both)} is also searched")

    def _check_ends(self, where: str) -> None:
        """Each end of every range, and every choice, makes a valid trial with the fixed values."""
        for optimizer in self.optimizers:
            base = self.base_config(optimizer)
            for name, dist in self.distributions_for(optimizer).items():
                origin = (f"search_per_optimizer.{optimizer}.{name}"
                          if name in self.search_per_optimizer.get(optimizer, {}) else f"search.{name}")
                for end in dist._ends():
                    _trial(f"{where}: {origin}: {shown(end)} makes an invalid {optimizer} trial",
                           {**base, name: end})

    def _takes(self, optimizer: str, name: str) -> bool:
        """Whether `optimizer` (with the fixed base) uses trial setting `name`: an optimizer
        hyperparameter only if the registry says it (or its base) takes it."""
        if name not in all_hparams():
            return True
        base = self.fixed.get("base", TrialConfig.base)
        return name in {h.name for h in hparams_of(optimizer, base)}

    def _require_optimizer(self, optimizer: str) -> None:
        if optimizer not in self.optimizers:
            raise SpaceError(f"space {shown(self.name)}: optimizer {shown(optimizer)} is not in this space "
                             f"({', '.join(self.optimizers)})")

    @classmethod
    def from_dict(cls, data: dict, where: str) -> SearchSpace:
        """Build from plain data (a YAML file's mapping); strict: unknown or missing keys,
        wrong types and bad values raise a one-line SpaceError naming `where` and the field.

        Required: name, description, dataset, model, optimizers, search, max_epochs and
        trials_per_optimizer. Every other field has a default and may be left out: `fixed`,
        `search_per_optimizer` (empty), ASHA's `grace_period` (1) and `reduction_factor` (4),
        `max_concurrent` (1), `cpus_per_trial` (1), `gpus_per_trial` (0), `seed` (0), the
        confirm stage (none; 3 seeds once `confirm_top_k` is set), `refit` (true),
        `flatness_images` (2048), `replicates` (1), `primary_contrast` (derived),
        `equivalence_margin` (0.5), `refit_steps` (epochs), `retune_trials` (a third of the
        trials).
        """
        if not isinstance(data, Mapping):
            raise SpaceError(f"{where}: a search space must be a mapping of its fields, "
                             f"got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(map(str, set(data) - set(names)))
        if unknown:
            raise SpaceError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(names)}")
        values = {f.name: f.default for f in dataclasses.fields(cls)
                  if f.default is not dataclasses.MISSING}
        values.update({"fixed": {}, "search_per_optimizer": {}, **data})
        missing = [n for n in names if n not in values]
        if missing:
            raise SpaceError(f"{where}: missing key(s) {', '.join(missing)}")
        try:
            label = f"space {shown(values['name'])}"
            values["search"] = _parse_specs(f"{label}: search", values["search"])
            values["search_per_optimizer"] = {
                optimizer: _parse_specs(f"{label}: search_per_optimizer.{optimizer}", specs)
                for optimizer, specs in _mapping(f"{label}: search_per_optimizer",
                                                 values["search_per_optimizer"]).items()}
            return cls(**values)
        except SpaceError as err:
            raise SpaceError(f"{where}: {err}") from None

    def to_dict(self) -> dict:
        """Plain data, what a YAML file holds; `from_dict(to_dict())` equals the space."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data.update(optimizers=list(self.optimizers), fixed=dict(self.fixed), search=_specs(self.search),
                    search_per_optimizer={o: _specs(d) for o, d in self.search_per_optimizer.items()},
                    primary_contrast=None if self.primary_contrast is None else list(self.primary_contrast))
        return data

    def distributions_for(self, optimizer: str) -> dict[str, Distribution]:
        """The searched hyperparameters of one optimizer (its conditional space).

        From `search`, the names this optimizer takes: generic ones (lr, weight_decay, ...)
        always, a variant's own (rho, alpha, eta, sigma, lmbda) only where the optimizer
        registry lists them, momentum only on an sgd base, beta1/beta2 only on adam/adamw;
        then `search_per_optimizer[optimizer]`, which overrides or adds.
        """
        self._require_optimizer(optimizer)
        dists = {name: dist for name, dist in self.search.items() if self._takes(optimizer, name)}
        dists.update(self.search_per_optimizer.get(optimizer, {}))
        return dists

    def unequal_searches(self) -> list[tuple[str, list[str], list[str]]]:
        """(name, optimizers that search it, optimizers that take it but hold it fixed) for
        each searched setting some optimizers search and others only take: a comparison
        that is not tuned against tuned."""
        found = []
        searched = {o: self.distributions_for(o) for o in self.optimizers}
        for name in dict.fromkeys(n for dists in searched.values() for n in dists):
            takers = [o for o in self.optimizers if self._takes(o, name)]
            fixed = [o for o in takers if name not in searched[o]]
            if fixed:
                found.append((name, [o for o in takers if name in searched[o]], fixed))
        return found

    def base_config(self, optimizer: str) -> dict:
        """The fixed part of one optimizer's TrialConfig dict: dataset, model, optimizer,
        epochs (= max_epochs) and `fixed`; a trial adds the sampled values."""
        self._require_optimizer(optimizer)
        return {"dataset": self.dataset, "model": self.model, "optimizer": optimizer,
                "epochs": self.max_epochs, **self.fixed}

    def sample(self, optimizer: str, rng) -> dict:
        """One search trial's config for `optimizer` drawn from the prior (numpy Generator
        `rng`): what the searcher's random start tries, for a preview."""
        drawn = {name: dist.sample(rng) for name, dist in self.distributions_for(optimizer).items()}
        return {**self.base_config(optimizer), **drawn}

    def with_overrides(self, **changes) -> SearchSpace:
        """A copy with some fields changed, validated again.

        Unless also given: new `optimizers` drop the searched names and per-optimizer
        entries that none of them takes (so a subset of a comparison stays valid), and a
        new `max_epochs` lowers `grace_period` to at most itself.
        """
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise SpaceError(f"space {shown(self.name)}: cannot override {', '.join(unknown)}; "
                             f"valid: {', '.join(names)}")
        derived = self._derived(changes)
        return dataclasses.replace(self, **{**derived, **changes})

    def _derived(self, changes: dict) -> dict:
        where = f"space {shown(self.name)}"
        derived = {}
        if "optimizers" in changes:
            optimizers = _optimizer_names(f"{where}: optimizers", changes["optimizers"])
            derived["search"] = {name: dist for name, dist in self.search.items()
                                 if any(self._takes(o, name) for o in optimizers)}
            derived["search_per_optimizer"] = {o: dict(d) for o, d in self.search_per_optimizer.items()
                                               if o in optimizers}
            if self.primary_contrast is not None and not set(self.primary_contrast) <= set(optimizers):
                derived["primary_contrast"] = None  # the pair is no longer compared
        if "max_epochs" in changes:
            max_epochs = _in_range(f"{where}: max_epochs", changes["max_epochs"], integral=True)
            derived["grace_period"] = min(self.grace_period, max_epochs)
        return derived

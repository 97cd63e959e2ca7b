"""`HParam`: one optimizer hyperparameter as the optimizer registry declares it.

An entry of the optimizer registry (`trainables.catalog`: a base optimizer or a
SAM-family variant) lists the hyperparameters it takes as `HParam`s; `TrialConfig` takes its settings of those
names, their defaults and valid ranges from there, the search spaces their default
search distributions, the report its labels and axis scales. Plain Python (no torch).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from trainables.errors import ConfigError, check_range, range_text, shown

KINDS = ("float", "int", "bool")


@dataclass(frozen=True)
class Transform:
    """How a range kind is sampled, in one place for the preview sampler, the searcher and
    the figures (as Optuna's _SearchSpaceTransform): the value itself, or its complement
    1 - value (`reflect`), drawn uniformly on a linear or log scale (`log`), as a float or
    a whole number (`integral`). `scale` names the result for people."""

    scale: str
    log: bool = False
    reflect: bool = False
    integral: bool = False

    @property
    def words(self) -> str:
        """The scale as a reader names it: linear, log or log(1 - value)."""
        kind = "log" if self.log else "linear"
        return f"{kind}(1 - value)" if self.reflect else kind

    @property
    def log_axis(self) -> bool:
        """Whether the value itself lies on a log scale (an axis or a model can say so;
        log(1 - value) they cannot: linear)."""
        return self.log and not self.reflect

    def inner(self, value: float) -> float:
        """What is drawn for `value`: the value, or 1 - value (its own inverse)."""
        return 1.0 - value if self.reflect else value

    def bounds(self, low: float, high: float) -> tuple[float, float]:
        """The drawn quantity's range for a value range [low, high]."""
        return tuple(sorted((self.inner(low), self.inner(high))))

    def unit(self, value: float) -> float:
        """`value` on the sampling scale, increasing in value."""
        drawn = math.log(self.inner(value)) if self.log else float(self.inner(value))
        return -drawn if self.reflect else drawn

    def sample(self, rng, low: float, high: float) -> float | int:
        """One draw in [low, high] with a numpy Generator."""
        a, b = self.bounds(low, high)
        if self.integral:
            return int(rng.integers(a, b + 1))
        drawn = math.exp(rng.uniform(math.log(a), math.log(b))) if self.log else float(rng.uniform(a, b))
        return self.inner(drawn)

    def suggest(self, trial, name: str, low: float, high: float) -> float | int:
        """One draw in [low, high] from an Optuna trial, the same prior as `sample`; a
        reflected value is asked under the name "1-NAME"."""
        a, b = self.bounds(low, high)
        if self.integral:
            return trial.suggest_int(name, int(a), int(b))
        return self.inner(trial.suggest_float(f"1-{name}" if self.reflect else name, a, b, log=self.log))


# Each range kind's transform; "choice" has none (its values are drawn as categories).
TRANSFORMS = {"uniform": Transform("linear"), "int": Transform("linear", integral=True),
              "loguniform": Transform("log", log=True),
              "loguniform_complement": Transform("log_complement", log=True, reflect=True)}


@dataclass(frozen=True)
class HParam:
    """A hyperparameter: a trial setting of the same name, a number ("float", "int") or a
    switch ("bool"), as `kind` says.

    default: the value a trial of the declaring optimizer takes when nothing sets it (its
        published default: SAM's rho 0.05, ASAM's 0.5); every optimizer that takes `rho`
        shares its valid range.
    low, high, low_open, high_open: the valid range, ends included unless open.
    search: the default search distribution of the optimizer that declares it, in the
        space file format ({"loguniform": [low, high]}); None: not searched by default.
    label: how figures and tables name it.
    kind: "float", "int" (a whole number: searched with int or choice) or "bool" (not
        searched; low and high do not apply).
    """

    name: str
    default: float = field(compare=False)
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    search: dict | None = field(default=None, compare=False)
    label: str = field(default="", compare=False)
    kind: str = "float"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    def check(self, value):
        """`value` as its kind (a bool, an int, a float) if it has that kind (true or false;
        a whole number; a finite number) and is in the valid range; ConfigError otherwise."""
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"{self.name} must be true or false, got {shown(value)}")
            return value
        return check_range(self.name, value, self.low, self.high, low_open=self.low_open,
                           high_open=self.high_open, integral=self.kind == "int")

    def describe(self) -> str:
        """Its label and valid range, for help texts."""
        if self.kind == "bool":
            return f"{self.label or self.name}; true or false"
        bounds = range_text(self.low, self.high, self.low_open, self.high_open)
        return f"{self.label or self.name}; {bounds or 'any finite number'}"

    @property
    def transform(self) -> Transform:
        """How its default search samples it and figures plot it (its kind's `Transform`;
        linear where it is not searched or is a choice)."""
        transform = TRANSFORMS.get(next(iter(self.search))) if self.search else None
        return transform or TRANSFORMS["uniform"]

    def searched(self, spec: dict) -> HParam:
        """The same hyperparameter with another default search distribution."""
        return dataclasses.replace(self, search=spec)

    def defaulting_to(self, default: float) -> HParam:
        """The same hyperparameter with another optimizer's published default."""
        return dataclasses.replace(self, default=default)

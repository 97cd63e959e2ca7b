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
    def scale(self) -> str:
        """The scale its default search samples on and figures plot it on: log for a
        log-uniform search, linear otherwise."""
        return "log" if self.search is not None and "loguniform" in self.search else "linear"

    def searched(self, spec: dict) -> HParam:
        """The same hyperparameter with another default search distribution."""
        return dataclasses.replace(self, search=spec)

    def defaulting_to(self, default: float) -> HParam:
        """The same hyperparameter with another optimizer's published default."""
        return dataclasses.replace(self, default=default)

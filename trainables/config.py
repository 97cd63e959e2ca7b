"""`TrialConfig`: the one strict, typed description of a trial.

The same plain dict of names and numbers is Ray's param space entry, MLflow's params and
the seed: `TrialConfig.from_dict(d).to_dict()` returns `d` with defaults filled in.
Defaults are the seed repository's (ZSharp on Adam, lr 1e-3, weight decay 5e-5, batch
256, 200 epochs, 5 warm-up epochs then x0.75 every 30 epochs), on the offline data set.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from dataclasses import dataclass, fields

from trainables.errors import ConfigError, shown

SCHEDULES = ("step", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")
BASES = ("sgd", "adam", "adamw")
EVAL_SPLITS = ("val", "test")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs; `validate` (run on construction) rejects bad values."""

    dataset: str = "digits"        # data-set registry name (trainables.data)
    data_dir: str = "data"         # where data sets are found or downloaded to
    model: str = "res20s"          # model registry name (trainables.models)
    optimizer: str = "zsharp"      # optimizer registry name (trainables.optim)
    base: str = "adam"             # base of a SAM-family optimizer; ignored by plain ones
    lr: float = 1e-3               # peak learning rate, after warm-up
    weight_decay: float = 5e-5     # coupled for sgd/adam, decoupled for adamw
    momentum: float = 0.9          # SGD momentum (base sgd only)
    beta1: float = 0.9             # Adam/AdamW first-moment decay
    beta2: float = 0.999           # Adam/AdamW second-moment decay
    rho: float = 0.05              # ascent radius (SAM family)
    alpha: float = 0.95            # ZSharp: quantile of |z| an entry must exceed to be kept
    eta: float = 0.01              # ASAM: T = |w| + eta
    sigma: float = 1.0             # Friendly-SAM: weight of the removed gradient mean
    lmbda: float = 0.9             # Friendly-SAM: decay of the gradient mean
    batch_size: int = 256          # images per step
    epochs: int = 200              # full passes over the training set
    warmup_epochs: int = 5         # linear warm-up from lr/steps (not 0) to lr
    schedule: str = "step"         # after warm-up: step (x0.75 every step_epochs) | cosine
    step_epochs: int = 30          # step schedule: epochs between decays (the seed's StepLR(30))
    label_smoothing: float = 0.0   # cross-entropy label smoothing
    seed: int = 42                 # model init, data order and augmentation
    device: str = "auto"           # auto | cpu | cuda[:N] | mps
    precision: str = "auto"        # auto (bf16 autocast on CUDA) | fp32 | bf16
    compile: bool = False          # torch.compile the model (CUDA; minutes of warm-up)
    # val: a search trial: trains on train, evaluates val, and never holds the test split.
    # test: a confirm run: evaluates test every epoch, trained on train + val with refit
    # (the usual final-training protocol) or on train alone (then val is evaluated too).
    eval_split: str = "val"
    refit: bool = True             # eval_split test only: train on train + val

    def __post_init__(self):
        for f in fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, f.type, getattr(self, f.name)))
        self.validate()

    @classmethod
    def from_dict(cls, values: dict) -> TrialConfig:
        """Strict construction: unknown keys raise ConfigError naming them."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"unknown trial setting(s): {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of all settings, in declaration order."""
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict:
        """Plain dict of names and numbers (Ray params, MLflow params, checkpoints)."""
        return dataclasses.asdict(self)

    def replace(self, **changes) -> TrialConfig:
        """A copy with some settings changed (validated)."""
        return TrialConfig.from_dict({**self.to_dict(), **changes})

    def validate(self) -> None:
        """Raise ConfigError for a value out of its range or an unknown name."""
        # Imported here: the registries import torch models and data code; the config
        # itself stays importable (and cheap) anywhere.
        from trainables.data import list_datasets
        from trainables.models import list_models
        from trainables.optim import list_optimizers

        _one_of("dataset", self.dataset, list_datasets())
        _one_of("model", self.model, list_models())
        _one_of("optimizer", self.optimizer, list_optimizers())
        _one_of("base", self.base, BASES)
        _one_of("schedule", self.schedule, SCHEDULES)
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("eval_split", self.eval_split, EVAL_SPLITS)
        if not _DEVICE.match(self.device):
            raise ConfigError(f"device must be auto, cpu, mps or cuda[:N], got {shown(self.device)}")
        _in_range("lr", self.lr, 0, math.inf, low_open=True)
        _in_range("weight_decay", self.weight_decay, 0, math.inf)
        _in_range("momentum", self.momentum, 0, 1, high_open=True)
        _in_range("beta1", self.beta1, 0, 1, high_open=True)
        _in_range("beta2", self.beta2, 0, 1, high_open=True)
        _in_range("rho", self.rho, 0, math.inf)
        _in_range("alpha", self.alpha, 0, 1, high_open=True)
        _in_range("eta", self.eta, 0, math.inf)
        _in_range("sigma", self.sigma, -math.inf, math.inf)
        _in_range("lmbda", self.lmbda, 0, 1)
        _in_range("label_smoothing", self.label_smoothing, 0, 1, high_open=True)
        _in_range("batch_size", self.batch_size, 1, math.inf)
        _in_range("epochs", self.epochs, 1, math.inf)
        _in_range("warmup_epochs", self.warmup_epochs, 0, math.inf)
        _in_range("step_epochs", self.step_epochs, 1, math.inf)
        _in_range("seed", self.seed, 0, 2 ** 63 - 1)


def _coerce(name: str, kind: str, value):
    # Annotations are strings (from __future__): "float", "int", "str" or "bool".
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {shown(value)}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {shown(value)}")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {shown(value)}")
    if kind == "int":
        if not float(value).is_integer():
            raise ConfigError(f"{name} must be a whole number, got {shown(value)}")
        return int(value)
    return float(value)


def _one_of(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {shown(value)}; choose from {', '.join(choices)}")


def _in_range(name, value, low, high, low_open=False, high_open=False) -> None:
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below and math.isfinite(value)):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ConfigError(f"{name} must be a finite number in {interval}, got {shown(value)}")

"""`TrialConfig`: the one strict, typed description of a trial.

The same plain dict of names and numbers is Ray's param space entry, MLflow's params and
the seed: `TrialConfig.from_dict(d).to_dict()` returns `d` with defaults filled in.
Defaults are the seed repository's (ZSharp on Adam, lr 1e-3, weight decay 5e-5, batch
256, 200 epochs, 5 warm-up epochs then x0.75 every 30 epochs), on the offline data set.

The optimizer hyperparameters (lr, weight_decay, momentum, beta1, beta2, rho, alpha, ...)
are not listed here: they are the ones the optimizer registry declares
(`trainables.optim.all_hparams`), with their defaults and valid ranges, so a newly
registered optimizer's settings are trial settings at once. They read as attributes
(`config.rho`) like the fields below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from trainables.errors import ConfigError, check_range, one_line, shown

SCHEDULES = ("step", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")
EVAL_SPLITS = ("val", "test")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def registered_hparams() -> dict:
    """The optimizer registry's hyperparameters by name (trainables.optim.all_hparams).
    Imported when used: the registry imports torch; this module stays cheap to import."""
    from trainables.optim import all_hparams

    return all_hparams()


@dataclass(frozen=True, init=False)
class TrialConfig:
    """Everything one trial needs; construction (`TrialConfig(**settings)`, `from_dict`)
    is strict: unknown names and values out of range raise ConfigError."""

    dataset: str = "digits"        # data-set registry name (trainables.data)
    data_dir: str = "data"         # where data sets are found or downloaded to
    model: str = "res20s"          # model registry name (trainables.models)
    optimizer: str = "zsharp"      # optimizer registry name (trainables.optim)
    base: str = "adam"             # base of a SAM-family optimizer; ignored by plain ones
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
    # The registry's hyperparameters, name -> value (every registered one, defaults filled).
    hparams: dict = field(default_factory=dict, repr=False)

    def __init__(self, **settings):
        registered = registered_hparams()
        unknown = sorted(set(settings) - {f.name for f in _fields()} - set(registered))
        if unknown:
            raise ConfigError(f"unknown trial setting(s): {one_line(', '.join(map(str, unknown)))}")
        for f in _fields():
            object.__setattr__(self, f.name, _coerce(f.name, f.type, settings.get(f.name, f.default)))
        object.__setattr__(self, "hparams", {
            name: _coerce(name, "float", settings.get(name, hparam.default))
            for name, hparam in registered.items()})
        self.validate()

    def __getattr__(self, name: str):
        # Only reached for names that are not fields: the registry's hyperparameters.
        hparams = self.__dict__.get("hparams", {})
        if name in hparams:
            return hparams[name]
        raise AttributeError(f"TrialConfig has no setting {name!r}")

    @classmethod
    def from_dict(cls, values: dict) -> TrialConfig:
        """Strict construction from a plain dict: unknown keys raise ConfigError naming them."""
        return cls(**values)

    @classmethod
    def settings(cls) -> dict[str, tuple[str, object]]:
        """Every trial setting: name -> (type name: "str", "int", "float" or "bool",
        default), the fields in declaration order, then the registry's hyperparameters."""
        found = {f.name: (f.type, f.default) for f in _fields()}
        found.update({name: ("float", h.default) for name, h in registered_hparams().items()})
        return found

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of all settings, in the order of `settings`."""
        return list(cls.settings())

    def to_dict(self) -> dict:
        """Plain dict of names and numbers (Ray params, MLflow params, checkpoints)."""
        return {**{f.name: getattr(self, f.name) for f in _fields()}, **self.hparams}

    def replace(self, **changes) -> TrialConfig:
        """A copy with some settings changed (validated)."""
        return TrialConfig.from_dict({**self.to_dict(), **changes})

    def validate(self) -> None:
        """Raise ConfigError for a value out of its range or an unknown name."""
        # Imported here: the registries import torch models and data code; the config
        # itself stays importable (and cheap) anywhere.
        from trainables.data import list_datasets
        from trainables.models import list_models
        from trainables.optim import list_bases, list_optimizers

        _one_of("dataset", self.dataset, list_datasets())
        _one_of("model", self.model, list_models())
        _one_of("optimizer", self.optimizer, list_optimizers())
        _one_of("base", self.base, list_bases())
        _one_of("schedule", self.schedule, SCHEDULES)
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("eval_split", self.eval_split, EVAL_SPLITS)
        if not _DEVICE.match(self.device):
            raise ConfigError(f"device must be auto, cpu, mps or cuda[:N], got {shown(self.device)}")
        for name, hparam in registered_hparams().items():
            hparam.check(self.hparams[name])
        check_range("label_smoothing", self.label_smoothing, 0, 1, high_open=True)
        check_range("batch_size", self.batch_size, 1)
        check_range("epochs", self.epochs, 1)
        check_range("warmup_epochs", self.warmup_epochs, 0)
        check_range("step_epochs", self.step_epochs, 1)
        check_range("seed", self.seed, 0, 2 ** 63 - 1)


def _fields():
    """The dataclass fields that are settings (all but the hparams mapping)."""
    return [f for f in fields(TrialConfig) if f.name != "hparams"]


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
    return check_range(name, value, integral=kind == "int")


def _one_of(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {shown(value)}; choose from {', '.join(choices)}")

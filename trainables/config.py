"""`TrialConfig`: the one strict, typed description of a trial.

The same plain dict of names and numbers is Ray's param space entry, MLflow's params and
the seed: `TrialConfig.from_dict(d).to_dict()` returns `d` with defaults filled in.
Defaults are the seed repository's (ZSharp on Adam, lr 1e-3, weight decay 5e-5, batch
256, 200 epochs, 5 warm-up epochs then x0.75 every 30 epochs), on the offline data set.

The optimizer hyperparameters (lr, weight_decay, momentum, beta1, beta2, rho, alpha, ...)
are not listed here: they are the ones the optimizer registry declares
(`trainables.catalog.all_hparams`), with their valid ranges and each optimizer's own
defaults (ASAM's rho 0.5, SAM's 0.05), so a newly registered optimizer's settings are
trial settings at once. They read as attributes (`config.rho`) like the fields below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from trainables.catalog import (all_hparams, hparam_defaults, ignored_settings, list_bases, list_datasets,
                                list_models, list_optimizers)
from trainables.errors import ConfigError, check_range, one_line, shown
from trainables.lr_schedule import SCHEDULES as lr_schedules

SCHEDULES = tuple(lr_schedules)
PRECISIONS = ("auto", "fp32", "bf16")
EVAL_SPLITS = ("val", "test")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _setting(default, help_text: str):
    """A TrialConfig field: its default and the help line its command-line flag shows."""
    return field(default=default, metadata={"help": help_text})


# The settings that name one of a list, and where the list comes from (each said once).
CHOICES = {"dataset": list_datasets, "model": list_models, "optimizer": list_optimizers,
           "base": list_bases, "schedule": lambda: list(SCHEDULES),
           "precision": lambda: list(PRECISIONS), "eval_split": lambda: list(EVAL_SPLITS)}


@dataclass(frozen=True, init=False)
class TrialConfig:
    """Everything one trial needs; construction (`TrialConfig(**settings)`, `from_dict`)
    is strict: unknown names and values out of range raise ConfigError."""

    # Each setting's help is its command-line help (python -m trainables.train --help).
    dataset: str = _setting("digits", "data set (registry name)")
    data_dir: str = _setting("data", "where data sets are found or downloaded to")
    model: str = _setting("res20s", "model (registry name)")
    optimizer: str = _setting("zsharp", "optimizer (registry name)")
    base: str = _setting("adam", "base optimizer of a SAM-family optimizer; ignored by plain ones")
    batch_size: int = _setting(256, "images per step")
    epochs: int = _setting(200, "full passes over the training set")
    warmup_epochs: int = _setting(5, "linear warm-up from lr/steps (not 0) to lr")
    schedule: str = _setting("step", "after warm-up: step (x0.75 every step_epochs) or cosine")
    step_epochs: int = _setting(30, "step schedule: epochs between decays (the seed's StepLR(30))")
    label_smoothing: float = _setting(0.0, "cross-entropy label smoothing, in [0, 1)")
    seed: int = _setting(42, "model init, data order and augmentation")
    # A sweep's replicates are independent searches (each with its own searcher, training
    # seed and validation holdout) and their confirm runs: the verdict's unit of evidence.
    replicate: int = _setting(0, "the sweep replicate this trial belongs to (groups trials; "
                                 "changes no training)")
    holdout_seed: int = _setting(0, "the validation holdout: 0 the data set's own, another a "
                                    "stratified holdout of the same size drawn from train + val "
                                    "with this seed")
    device: str = _setting("auto", "auto, cpu, cuda[:N] or mps")
    precision: str = _setting("auto", "auto (bf16 autocast on CUDA), fp32 or bf16")
    compile: bool = _setting(False, "torch.compile the model (CUDA; minutes of warm-up)")
    # val: a search trial: trains on train, evaluates val, and never holds the test split.
    # test: a confirm run: evaluates test every epoch, trained on train + val with refit
    # (the usual final-training protocol) or on train alone (then val is evaluated too).
    eval_split: str = _setting("val", "val (a search trial: the test split never loaded) or test (a confirm run)")
    refit: bool = _setting(True, "eval_split test only: train on train + val")
    # Curvature and sharpness after the last epoch (trainables.flatness): the confirm stage
    # sets flatness_images from its space; a search trial never measures.
    flatness_images: int = _setting(0, "after the last epoch, measure curvature and sharpness on "
                                       "this many training images (0: not at all)")
    flatness_probes: int = _setting(20, "Hutchinson probes of the diagnostics' Hessian trace, and draws "
                                        "of their adaptive average-case sharpness")
    flatness_lanczos_steps: int = _setting(20, "Lanczos steps of the diagnostics (their basis also "
                                               "deflates the trace estimate)")
    flatness_ascent_steps: int = _setting(5, "ascent steps of the diagnostics' worst-case sharpness")
    flatness_radius: float = _setting(0.05, "radius of the sharpness ball (one for every optimizer "
                                            "of a sweep)")
    # The registry's hyperparameters, name -> value (every registered one, defaults filled).
    hparams: dict = field(default_factory=dict, repr=False)

    def __init__(self, **settings):
        registered = all_hparams()
        unknown = sorted(set(settings) - {f.name for f in _fields()} - set(registered))
        if unknown:
            raise ConfigError(f"unknown trial setting(s): {one_line(', '.join(map(str, unknown)))}")
        for f in _fields():
            object.__setattr__(self, f.name, _coerce(f.name, f.type, settings.get(f.name, f.default)))
        # The optimizer's own defaults (ASAM's rho is 0.5, SAM's 0.05); an unknown
        # optimizer's are the first declarations', and validate() names it. Each value is
        # checked here, once (its kind and range: HParam.check); the config is frozen after.
        defaults = hparam_defaults(self.optimizer, self.base)
        object.__setattr__(self, "hparams", {
            name: hparam.check(settings.get(name, defaults[name])) for name, hparam in registered.items()})
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
        found.update({name: (h.kind, h.default) for name, h in all_hparams().items()})
        return found

    @classmethod
    def defaults(cls, optimizer: str, base: str | None = None) -> dict:
        """Every setting's default for a trial of `optimizer` (on `base`, else the default
        base): what a config that leaves a setting out runs with."""
        base = cls.base if base is None else base
        fields_ = {f.name: f.default for f in _fields()}
        return {**fields_, "optimizer": optimizer, "base": base, **hparam_defaults(optimizer, base)}

    @classmethod
    def help(cls, name: str) -> str:
        """A setting's help line: what it is, its valid names or its valid range."""
        fields_by_name = {f.name: f for f in _fields()}
        if name not in fields_by_name:
            return all_hparams()[name].describe()
        text = fields_by_name[name].metadata["help"]
        return f"{text}: {', '.join(CHOICES[name]())}" if name in CHOICES else text

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of all settings, in the order of `settings`."""
        return list(cls.settings())

    def to_dict(self) -> dict:
        """Plain dict of names and numbers (Ray params, MLflow params, checkpoints)."""
        return {**{f.name: getattr(self, f.name) for f in _fields()}, **self.hparams}

    def acting(self) -> dict:
        """`to_dict` less the settings this trial's optimizer does not read (an Adam trial
        has no rho): what its MLflow run logs as params."""
        ignored = ignored_settings(self.optimizer, self.base)
        return {k: v for k, v in self.to_dict().items() if k not in ignored}

    def replace(self, **changes) -> TrialConfig:
        """A copy with some settings changed (validated)."""
        return TrialConfig.from_dict({**self.to_dict(), **changes})

    def validate(self) -> None:
        """Raise ConfigError for a value out of its range or an unknown name (the registry's
        hyperparameters were checked as they were set)."""
        for name, choices in CHOICES.items():
            _one_of(name, getattr(self, name), choices())
        if not _DEVICE.match(self.device):
            raise ConfigError(f"device must be auto, cpu, mps or cuda[:N], got {shown(self.device)}")
        check_range("label_smoothing", self.label_smoothing, 0, 1, high_open=True)
        check_range("batch_size", self.batch_size, 1)
        check_range("epochs", self.epochs, 1)
        check_range("warmup_epochs", self.warmup_epochs, 0)
        check_range("step_epochs", self.step_epochs, 1)
        check_range("seed", self.seed, 0, 2 ** 63 - 1)
        check_range("replicate", self.replicate, 0)
        check_range("holdout_seed", self.holdout_seed, 0, 2 ** 63 - 1)
        check_range("flatness_images", self.flatness_images, 0)
        check_range("flatness_probes", self.flatness_probes, 2)
        check_range("flatness_lanczos_steps", self.flatness_lanczos_steps, 1)
        check_range("flatness_ascent_steps", self.flatness_ascent_steps, 1)
        check_range("flatness_radius", self.flatness_radius, 0, low_open=True)


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

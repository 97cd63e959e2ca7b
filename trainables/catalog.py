"""The registries of optimizers, models and data sets, without torch.

Every fact about an optimizer's hyperparameters is stated here once, in its entry: name,
valid range, default, default search distribution, label (trainables.hparams.HParam).
TrialConfig, the trial's optimizer arguments, the search spaces and the report derive
theirs from it. The code behind an entry (an optimizer class, a model builder, a data
loader) is named as "module:attribute" and imported when first used, or given as the
object itself; so listing the spaces, validating a TrialConfig or planning a sweep never
imports torch (about 2 s). Adding an optimizer: one class (trainables/optim.py, or your
own module) and one `register_optimizer` call.
"""

from __future__ import annotations

import importlib
import itertools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

from trainables.hparams import HParam

Ref = str | Callable  # "package.module:attribute", or the class or function itself


def resolve(ref: Ref):
    """The object a registry entry names: imports "module:attribute" (torch, for the
    project's own entries), returns anything else as it is."""
    if not isinstance(ref, str):
        return ref
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


# ---- optimizers --------------------------------------------------------------------------

# Shared by every base: the peak learning rate (searched log-uniform over 100x around
# Adam's 1e-3) and weight decay (coupled, L2 in the gradient, for sgd and adam: searched
# around the seed's 5e-5; decoupled for adamw: around torch's AdamW default 1e-2).
LR = HParam("lr", 1e-3, 0, math.inf, low_open=True, search={"loguniform": [1e-4, 1e-2]},
            label="learning rate")
WEIGHT_DECAY = HParam("weight_decay", 5e-5, 0, math.inf, search={"loguniform": [5e-6, 5e-4]},
                      label="weight decay")
_BETAS = (HParam("beta1", 0.9, 0, 1, high_open=True, label="Adam beta1"),
          HParam("beta2", 0.999, 0, 1, high_open=True, label="Adam beta2"))


def _adam_kwargs(values: dict) -> dict:
    """beta1 and beta2 are torch's `betas` pair."""
    kwargs = {k: v for k, v in values.items() if k not in ("beta1", "beta2")}
    return {**kwargs, "betas": (values["beta1"], values["beta2"])}


@dataclass(frozen=True)
class BaseOptimizer:
    """A torch optimizer the registry builds directly or that a SAM variant wraps.

    cls: the torch.optim class (or its "module:Class"). hparams: the trial settings it
    takes; to_kwargs maps their values to the class's keyword arguments. `extra` lists
    further keyword arguments the class accepts from a direct `create_optimizer` call
    (not trial settings)."""

    name: str
    cls: Ref
    hparams: tuple[HParam, ...]
    to_kwargs: Callable[[dict], dict] = dict
    extra: frozenset[str] = frozenset()


_BASES: dict[str, BaseOptimizer] = {b.name: b for b in (
    BaseOptimizer("sgd", "torch.optim:SGD",
                  (LR, WEIGHT_DECAY, HParam("momentum", 0.9, 0, 1, high_open=True, label="momentum")),
                  extra=frozenset({"nesterov"})),
    BaseOptimizer("adam", "torch.optim:Adam", (LR, WEIGHT_DECAY, *_BETAS), _adam_kwargs,
                  frozenset({"betas", "eps"})),
    BaseOptimizer("adamw", "torch.optim:AdamW",
                  (LR, WEIGHT_DECAY.searched({"loguniform": [1e-3, 1e-1]}), *_BETAS),
                  _adam_kwargs, frozenset({"betas", "eps"})),
)}


@dataclass(frozen=True)
class OptimizerInfo:
    """What the registry knows about one optimizer name.

    wrapper: the SAM-family class (or its "module:Class") that wraps a base optimizer;
    None: the name is a base optimizer itself. hparams: the hyperparameters of its own (a
    SAM variant's; a base's own are in its `BaseOptimizer`), each with its default search
    distribution for this optimizer. param_groups: model -> torch parameter groups.
    label: how reports and summaries name it (the name itself if empty)."""

    name: str
    description: str
    passes_per_step: int  # forward/backward passes per step: 1, or 2 for the SAM family
    wrapper: Ref | None = None
    hparams: tuple[HParam, ...] = ()
    param_groups: Ref = "trainables.optim:trainable_groups"
    label: str = ""

    def __post_init__(self):
        if not self.label:
            object.__setattr__(self, "label", self.name)

    @property
    def own_hparams(self) -> frozenset[str]:
        """The names of its own hyperparameters."""
        return frozenset(h.name for h in self.hparams)


_OPTIMIZERS: dict[str, OptimizerInfo] = {}


def all_hparams() -> dict[str, HParam]:
    """Every registered hyperparameter by name (the bases' first, then the variants', in
    registration order): the optimizer settings a TrialConfig holds."""
    found: dict[str, HParam] = {}
    for hparam in itertools.chain(*(b.hparams for b in _BASES.values()),
                                  *(i.hparams for i in _OPTIMIZERS.values())):
        found.setdefault(hparam.name, hparam)
    return found


def register_optimizer(info: OptimizerInfo) -> None:
    """Add an optimizer. A hyperparameter name another entry already declares must mean the
    same setting (valid range); its default and search distribution are the optimizer's own."""
    declared = all_hparams()
    for hparam in info.hparams:
        if hparam.name in declared and declared[hparam.name] != hparam:
            raise ValueError(f"{info.name}: {hparam.name} is declared with another range by "
                             f"another optimizer ({declared[hparam.name]})")
    _OPTIMIZERS[info.name] = info


for _base, _label, _description in [("sgd", "SGD", "SGD (momentum, nesterov optional)"),
                                    ("adam", "Adam", "Adam (weight decay coupled, as the seed's baselines)"),
                                    ("adamw", "AdamW", "AdamW (decoupled weight decay)")]:
    register_optimizer(OptimizerInfo(_base, _description, passes_per_step=1, label=_label))

# The SAM family's searched ranges are for an Adam base (the ZSharp paper's CIFAR setting),
# each on its own optimizer's scale: log-uniform over at least 30x with the published
# default strictly inside (the papers' defaults: the entries below). ZSharp rescales every filtered tensor to norm
# rho, so its whole perturbation is about rho x sqrt(layers) (0.22 on res20s at rho 0.05,
# against 0.05 for SAM): its rho range sits lower. ASAM's ascent is scaled by |w| + eta,
# so its rho is 10x SAM's. alpha is searched through the fraction kept (1 - alpha
# log-uniform on [0.01, 0.5]: most draws at alpha >= 0.9, where the method works), lmbda
# likewise through 1 - lmbda on [0.01, 0.3].
RHO = HParam("rho", 0.05, 0, math.inf, search={"loguniform": [0.005, 0.5]},
             label="rho (ascent radius)")
register_optimizer(OptimizerInfo("sam", "SAM around a base optimizer", 2, "trainables.optim:SAM", (RHO,),
                                 label="SAM"))
register_optimizer(OptimizerInfo(
    "asam", "Adaptive SAM around a base optimizer", 2, "trainables.optim:ASAM",
    (RHO.searched({"loguniform": [0.05, 5.0]}).defaulting_to(0.5),
     HParam("eta", 0.01, 0, math.inf, search={"loguniform": [1e-3, 0.1]}, label="ASAM eta")),
    "trainables.optim:asam_groups", label="ASAM"))
register_optimizer(OptimizerInfo(
    "fsam", "Friendly-SAM around a base optimizer", 2, "trainables.optim:FriendlySAM",
    (RHO, HParam("sigma", 1.0, search={"loguniform": [0.1, 3.0]}, label="Friendly-SAM sigma"),
     HParam("lmbda", 0.9, 0, 1, search={"loguniform_complement": [0.7, 0.99]},
            label="Friendly-SAM lambda")), label="Friendly-SAM"))
register_optimizer(OptimizerInfo(
    "zsharp", "ZSharp: SAM with z-score gradient filtering", 2, "trainables.optim:ZSharp",
    (RHO.searched({"loguniform": [0.002, 0.2]}),
     HParam("alpha", 0.95, 0, 1, high_open=True, search={"loguniform_complement": [0.5, 0.99]},
            label="ZSharp alpha (|z| quantile kept above)")), label="ZSharp"))


def list_optimizers() -> list[str]:
    """Registered optimizer names."""
    return sorted(_OPTIMIZERS)


def list_bases() -> list[str]:
    """Base optimizer names (what a SAM variant's `base` may be)."""
    return list(_BASES)


def get_optimizer_info(name: str) -> OptimizerInfo:
    """The registry entry for `name`; ValueError naming the valid names if unknown."""
    try:
        return _OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(list_optimizers())}") from None


def optimizer_label(name: str) -> str:
    """The name people read for an optimizer: its registry label (the name itself if it is
    not registered, as in results of an optimizer since removed)."""
    try:
        return get_optimizer_info(name).label
    except ValueError:
        return name


def entry_of(wrapper: type) -> OptimizerInfo:
    """The registry entry of a SAM-family class (the first registered with it); ValueError
    if none names it."""
    for info in _OPTIMIZERS.values():
        if info.wrapper is not None and resolve(info.wrapper) is wrapper:
            return info
    raise ValueError(f"{wrapper.__name__} has no registry entry; register it with register_optimizer first")


def get_base(name: str) -> BaseOptimizer:
    """The base optimizer `name`; ValueError naming the valid names if unknown."""
    try:
        return _BASES[name]
    except KeyError:
        raise ValueError(f"unknown base optimizer {name!r}; choose from {', '.join(_BASES)}") from None


def epochs_factor(optimizer: str, optimizers) -> int:
    """How many times its epochs `optimizer` runs in the equal-compute arm beside
    `optimizers`: the most passes per step among them over its own, so both spend the same
    gradient evaluations (1: it runs no longer arm; 2 for a 1-pass optimizer beside SAM)."""
    most = max(get_optimizer_info(o).passes_per_step for o in optimizers)
    return max(1, most // get_optimizer_info(optimizer).passes_per_step)


def hparams_of(optimizer: str, base: str) -> tuple[HParam, ...]:
    """The hyperparameters `optimizer` takes with base `base` (ignored for a base
    optimizer): its base's, then its own, each with its default search for `optimizer`."""
    info = get_optimizer_info(optimizer)
    return get_base(base if info.wrapper else optimizer).hparams + info.hparams


def hparam_defaults(optimizer: str, base: str) -> dict[str, float]:
    """Every registered hyperparameter's default for a trial of `optimizer` on `base`: its
    own entry's (ASAM's rho 0.5), the first declaration's for the names it does not take
    (unknown names: the first declarations' only)."""
    defaults = {name: h.default for name, h in all_hparams().items()}
    if optimizer in _OPTIMIZERS and (base in _BASES or not _OPTIMIZERS[optimizer].wrapper):
        defaults.update({h.name: h.default for h in hparams_of(optimizer, base)})
    return defaults


def ignored_settings(optimizer: str, base: str) -> frozenset[str]:
    """The trial settings `optimizer` (with base `base`) does not read: the other entries'
    hyperparameters, and `base` for a plain optimizer. What its MLflow run and the CSV
    export leave out."""
    taken = {h.name for h in hparams_of(optimizer, base)}
    ignored = set(all_hparams()) - taken
    if not get_optimizer_info(optimizer).wrapper:
        ignored.add("base")
    return frozenset(ignored)


def optimizer_kwargs(config) -> dict:
    """`create_optimizer` keyword arguments for a TrialConfig's optimizer: the values of
    the hyperparameters it takes (and the base of a SAM variant)."""
    info = get_optimizer_info(config.optimizer)
    base = get_base(config.base if info.wrapper else config.optimizer)
    kwargs = base.to_kwargs({h.name: getattr(config, h.name) for h in base.hparams})
    kwargs.update({h.name: getattr(config, h.name) for h in info.hparams})
    return {**kwargs, "base": base.name} if info.wrapper else kwargs


# ---- models and data sets ----------------------------------------------------------------

_MODELS: dict[str, Ref] = {
    # (num_classes, in_channels, image_size) -> nn.Module; trainables/models.py
    "res8s": "trainables.models:res8s",
    "res20s": "trainables.models:res20s",
    "res56s": "trainables.models:res56s",
    "vgg16_bn": "trainables.models:vgg16_bn",
    "vit": "trainables.models:vit",
}
_DATASETS: dict[str, Ref] = {
    # (data_dir, download, **options) -> ImageData; trainables/readers.py
    "digits": "trainables.readers:_load_digits",
    "c10": "trainables.readers:_load_c10",
    "c100": "trainables.readers:_load_c100",
    "tinyimagenet": "trainables.readers:_load_tinyimagenet",
    "synthetic": "trainables.readers:_load_synthetic",
}


# The data sets fetched on first use: the folder each unpacks to under the data folder and
# its archive's size in bytes (CIFAR's folders are torchvision's base_folder). digits ships
# with scikit-learn and synthetic is generated: neither is downloaded.
DOWNLOADS: dict[str, tuple[str, int]] = {
    "c10": ("cifar-10-batches-py", 170_498_071),
    "c100": ("cifar-100-python", 169_001_437),
    "tinyimagenet": ("tiny-imagenet-200", 248_100_043),
}


# Images per split (train, val, test) of each data set as its loader returns them: val is
# held out of the official training data, test is the official test split (digits: a
# fixed 20% of scikit-learn's 1,797; synthetic: its default options). What a plan needs
# to count a refit's steps without loading the data (trainables.data reads the val sizes
# from here).
SPLIT_SIZES: dict[str, tuple[int, int, int]] = {
    "digits": (1149, 288, 360),
    "c10": (45_000, 5_000, 10_000),
    "c100": (45_000, 5_000, 10_000),
    "tinyimagenet": (90_000, 10_000, 10_000),
    "synthetic": (50_000, 5_000, 10_000),
}


def download_note(name: str, data_dir: str) -> str | None:
    """What fetching data set `name` into `data_dir` will take, if it is not there yet
    (None if it is, or needs no download). Reads the folder only: no torch."""
    if name not in DOWNLOADS:
        return None
    folder, size = DOWNLOADS[name]
    if os.path.isdir(os.path.join(data_dir, folder)):
        return None
    return (f"{name} is not in {data_dir} ({folder}/): the sweep downloads it first, "
            f"{size / 2 ** 20:.0f} MiB")


def _register(table: dict, kind: str, name: str, ref: Ref) -> None:
    if name in table:
        raise ValueError(f"{kind} {name!r} is registered twice")
    table[name] = ref


def register_model(name: str, builder: Ref) -> None:
    """Add a model: `builder(num_classes, in_channels, image_size)` returns an nn.Module."""
    _register(_MODELS, "model", name, builder)


def list_models() -> list[str]:
    """Registered model names."""
    return sorted(_MODELS)


def model_builder(name: str) -> Callable:
    """The builder registered as `name`, imported (torch); KeyError if none."""
    return resolve(_MODELS[name])


def register_dataset(name: str, loader: Ref | None = None):
    """Add a data set: `loader(data_dir, download, *, **options)` returns a
    trainables.data.ImageData; its keyword-only parameters are the options `load_dataset`
    accepts. Without `loader`, a decorator that registers the function it decorates."""
    if loader is not None:
        _register(_DATASETS, "data set", name, loader)
        return None

    def add(function: Callable) -> Callable:
        _register(_DATASETS, "data set", name, function)
        return function

    return add


def list_datasets() -> list[str]:
    """Registered data set names."""
    return sorted(_DATASETS)


def dataset_loader(name: str) -> Callable:
    """The loader registered as `name`, imported (torch); KeyError if none."""
    return resolve(_DATASETS[name])

"""The built-in search spaces, as the plain data a YAML file would hold.

Ranges are for an Adam base (the ZSharp paper's CIFAR setting). Budgets: every optimizer
of a space gets the same trials and epochs; ASHA stops poor trials after `grace_period`
epochs and keeps 1/`reduction_factor` at each rung.
"""

from __future__ import annotations

import functools

from search_spaces.registry import register_space
from search_spaces.space import SearchSpace

# Searched ranges, Adam base.
RANGES = {
    "lr": {"loguniform": [1e-4, 3e-3]},
    "rho": {"uniform": [0.01, 0.2]},       # sam, fsam, zsharp
    "alpha": {"uniform": [0.5, 0.99]},     # zsharp: quantile of |z| kept (alpha < 1)
    "eta": {"loguniform": [1e-3, 0.1]},    # asam
    "sigma": {"uniform": [0.5, 1.0]},      # fsam
    "lmbda": {"uniform": [0.6, 0.95]},     # fsam
}
# ASAM's ascent is scaled by |w| + eta, so its rho lives on a larger scale (default 0.5).
# AdamW's weight decay is decoupled: at the seed's 5e-5 it is nearly plain Adam, so it is
# searched on AdamW's own scale, or AdamW would not be tuned fairly.
PER_OPTIMIZER = {"asam": {"rho": {"uniform": [0.1, 2.0]}},
                 "adamw": {"weight_decay": {"loguniform": [1e-4, 1e-1]}}}


def _per_optimizer(optimizers: list[str]) -> dict:
    return {o: PER_OPTIMIZER[o] for o in optimizers if o in PER_OPTIMIZER}

# The seed's recipe (TrialConfig's defaults), written out so each space records it.
SEED_RECIPE = {"base": "adam", "batch_size": 256, "warmup_epochs": 5, "schedule": "step"}

QUICKSTART_OPTIMIZERS = ["adam", "sam", "asam", "fsam", "zsharp"]
# The demo: the whole sweep within 5 minutes on 2 CPU cores. Measured numbers go here.
QUICKSTART = {
    "name": "quickstart",
    "description": "Adam, SAM, ASAM, Friendly-SAM and ZSharp on digits with res20s, "
                   "in minutes on 2 CPU cores",
    "dataset": "digits",
    "model": "res20s",
    "optimizers": QUICKSTART_OPTIMIZERS,
    "fixed": {"batch_size": 128, "warmup_epochs": 1, "schedule": "cosine", "base": "adam"},
    "search": RANGES,
    "search_per_optimizer": _per_optimizer(QUICKSTART_OPTIMIZERS),
    "max_epochs": 6,
    "grace_period": 2,
    "reduction_factor": 3,
    "trials_per_optimizer": 3,
    "max_concurrent": 2,
    "cpus_per_trial": 1,
    "gpus_per_trial": 0,
    "confirm_top_k": 1,     # the best configuration of each optimizer ...
    "confirm_seeds": 3,     # ... re-run with 3 seeds to the full budget
}

# ASHA and Ray resources of the larger spaces. GPU fractions: several small trials share a
# GPU; one CPU each is enough, since the data set lives on the GPU and is augmented there
# (4 CPUs a trial would let a 4-vCPU g5.xlarge run one quarter-GPU trial only).
CIFAR_BUDGET = {"max_epochs": 200, "grace_period": 20, "reduction_factor": 3,
                "max_concurrent": 8, "cpus_per_trial": 1, "gpus_per_trial": 0.25}
TINYIMAGENET_BUDGET = {"max_epochs": 100, "grace_period": 10, "reduction_factor": 3,
                       "max_concurrent": 4, "cpus_per_trial": 2, "gpus_per_trial": 0.5}

_LABELS = {"c10": "CIFAR-10", "c100": "CIFAR-100", "tinyimagenet": "Tiny ImageNet (64x64)"}


def _zsharp_space(dataset: str, budget: dict, trials: int) -> dict:
    """ZSharp alone over rho, alpha and lr, res56s on an Adam base."""
    return {
        "name": f"zsharp_{dataset}",
        "description": f"ZSharp (Adam base) on {_LABELS[dataset]} with res56s, over rho, alpha and lr",
        "dataset": dataset, "model": "res56s", "optimizers": ["zsharp"],
        "fixed": SEED_RECIPE,
        "search": {name: RANGES[name] for name in ("lr", "rho", "alpha")},
        "trials_per_optimizer": trials, **budget,
    }


def _compare_space(dataset: str, trials: int) -> dict:
    """Adam, AdamW and the SAM family on res56s, each tuned with the same trials and epochs."""
    return {
        "name": f"compare_{dataset}",
        "description": f"Adam, AdamW, SAM, ASAM, Friendly-SAM and ZSharp on {_LABELS[dataset]} "
                       f"with res56s, each tuned with the same trials and epochs",
        "dataset": dataset, "model": "res56s",
        "optimizers": ["adam", "adamw", "sam", "asam", "fsam", "zsharp"],
        "fixed": SEED_RECIPE, "search": RANGES, "search_per_optimizer": PER_OPTIMIZER,
        "trials_per_optimizer": trials, **CIFAR_BUDGET,
        # Paired tests need seeds: 5 is the fewest reported as significant.
        "confirm_top_k": 1, "confirm_seeds": 5,
    }


SPACES = [
    QUICKSTART,
    _zsharp_space("c10", CIFAR_BUDGET, trials=32),
    _zsharp_space("c100", CIFAR_BUDGET, trials=32),
    _zsharp_space("tinyimagenet", TINYIMAGENET_BUDGET, trials=24),
    _compare_space("c10", trials=16),
    _compare_space("c100", trials=16),
]

for _data in SPACES:
    register_space(functools.partial(SearchSpace.from_dict, _data, __name__), name=_data["name"])

"""The built-in search spaces, as the plain data a YAML file would hold.

Ranges are for an Adam base (the ZSharp paper's CIFAR setting), one per optimizer. Budgets: every optimizer
of a space gets the same trials and epochs; ASHA stops poor trials after `grace_period`
epochs and keeps 1/`reduction_factor` at each rung.
"""

from __future__ import annotations

import functools

from search_spaces.registry import register_space
from search_spaces.space import SearchSpace

# Searched ranges on an Adam base, each on its own optimizer's scale: log-uniform over at
# least 30x, with the published default strictly inside (sam_family.md): lr 1e-3 (Adam);
# rho 0.05 (SAM, Friendly-SAM, ZSharp) and 0.5 (ASAM, whose ascent is scaled by |w| + eta);
# eta 0.01; sigma 1 and lmbda 0.9 (Friendly-SAM); alpha 0.95 (ZSharp). ZSharp rescales every
# filtered tensor to norm rho, so its whole perturbation is about rho x sqrt(layers) (0.22 on
# res20s at rho 0.05, against 0.05 for SAM): its rho range sits lower. alpha is searched
# through the fraction kept: 1 - alpha log-uniform on [0.01, 0.5], so most draws sit at
# alpha >= 0.9, where the method works; lmbda likewise through 1 - lmbda on [0.01, 0.3].
LR = {"loguniform": [1e-4, 1e-2]}
SAM_FAMILY_RANGES = {
    "sam": {"rho": {"loguniform": [0.005, 0.5]}},
    "asam": {"rho": {"loguniform": [0.05, 5.0]}, "eta": {"loguniform": [1e-3, 0.1]}},
    "fsam": {"rho": {"loguniform": [0.005, 0.5]}, "sigma": {"loguniform": [0.1, 3.0]},
             "lmbda": {"loguniform_complement": [0.7, 0.99]}},
    "zsharp": {"rho": {"loguniform": [0.002, 0.2]},
               "alpha": {"loguniform_complement": [0.5, 0.99]}},
}
# Weight decay, searched for every optimizer of a comparison or for none (the same knobs
# for everyone): coupled (L2 in the gradient) around the seed's 5e-5 for Adam and the SAM
# family on Adam; decoupled around torch's AdamW default 1e-2 for AdamW.
COUPLED_DECAY = {"weight_decay": {"loguniform": [5e-6, 5e-4]}}
DECOUPLED_DECAY = {"adamw": {"weight_decay": {"loguniform": [1e-3, 1e-1]}}}


def _per_optimizer(optimizers: list[str], *tables: dict) -> dict:
    """Each optimizer's entries of `tables` (later tables override earlier ones)."""
    merged = {}
    for table in tables:
        for optimizer in optimizers:
            if optimizer in table:
                merged.setdefault(optimizer, {}).update(table[optimizer])
    return merged

# The seed's recipe (TrialConfig's defaults), written out so each space records it.
SEED_RECIPE = {"base": "adam", "batch_size": 256, "warmup_epochs": 5, "schedule": "step"}

QUICKSTART_OPTIMIZERS = ["adam", "sam", "asam", "fsam", "zsharp"]
# On digits with res20s (batch 128, 10 epochs, cosine) every optimizer's validation
# accuracy peaks at lr 0.01 to 0.03 (about 0.97; 0.89 at 1e-3, 0.90 or less at 0.1, chance
# at 0.3: two seeds per point, 2026-12-02), above the CIFAR range: here it is interior.
QUICKSTART_LR = {"loguniform": [1e-3, 1e-1]}
# ASAM at that lr is as good from rho 0.005 to 0.2 (0.967 +- 0.003) and falls off above
# 0.5 (0.950 at 1.5): the range reaches below its CIFAR one so the plateau is inside it.
QUICKSTART_ASAM_RHO = {"loguniform": [0.005, 2.0]}
# The demo: the whole sweep within 5 minutes on 2 CPU cores. Measured numbers go here.
QUICKSTART = {
    "name": "quickstart",
    "description": "Adam, SAM, ASAM, Friendly-SAM and ZSharp on digits with res20s, "
                   "in minutes on 2 CPU cores",
    "dataset": "digits",
    "model": "res20s",
    "optimizers": QUICKSTART_OPTIMIZERS,
    # eta, sigma and lmbda stay at their published defaults here: a 2-D search (lr, rho)
    # for the SAM family, 3-D for ZSharp (alpha too), so a few minutes' budget tunes them.
    "fixed": {"batch_size": 128, "warmup_epochs": 1, "schedule": "cosine", "base": "adam"},
    "search": {"lr": QUICKSTART_LR},
    "search_per_optimizer": {**{o: {k: v for k, v in SAM_FAMILY_RANGES[o].items() if k in ("rho", "alpha")}
                                for o in QUICKSTART_OPTIMIZERS if o in SAM_FAMILY_RANGES},
                             "asam": {"rho": QUICKSTART_ASAM_RHO}},
    # ASHA decides once, at epoch 5: at epoch 3 a good high-lr trial of this cosine
    # schedule can still sit near chance (measured), and grace 3 stopped the best ones.
    "max_epochs": 10,
    "grace_period": 5,
    "reduction_factor": 3,
    "trials_per_optimizer": 15,  # 5 per searched dimension for ZSharp's 3
    "max_concurrent": 2,
    "cpus_per_trial": 1,
    "gpus_per_trial": 0,
    "confirm_top_k": 1,     # the best configuration of each optimizer ...
    "confirm_seeds": 5,     # ... re-run with 5 seeds (the fewest a test is reported on)
}

# ASHA and Ray resources of the larger spaces. GPU fractions: several small trials share a
# GPU; one CPU each is enough, since the data set lives on the GPU and is augmented there
# (4 CPUs a trial would let a 4-vCPU g5.xlarge run one quarter-GPU trial only).
CIFAR_BUDGET = {"max_epochs": 200, "grace_period": 20, "reduction_factor": 3,
                "max_concurrent": 8, "cpus_per_trial": 1, "gpus_per_trial": 0.25}
TINYIMAGENET_BUDGET = {"max_epochs": 100, "grace_period": 10, "reduction_factor": 3,
                       "max_concurrent": 4, "cpus_per_trial": 2, "gpus_per_trial": 0.5}

_LABELS = {"c10": "CIFAR-10", "c100": "CIFAR-100", "tinyimagenet": "Tiny ImageNet (64x64)"}


# Where the zsharp_* spaces still differ from the seed's recipe (main.py), on purpose.
SEED_DEVIATIONS = ("BatchNorm statistics frozen in the second (perturbed) pass, inputs "
                   "normalised once with the data set's own statistics, and the warm-up "
                   "starting at lr/steps instead of 0")


def _zsharp_space(dataset: str, budget: dict, trials: int) -> dict:
    """ZSharp alone over rho, alpha and lr, res56s on an Adam base, in fp32 as the seed."""
    return {
        "name": f"zsharp_{dataset}",
        "description": f"ZSharp (Adam base) on {_LABELS[dataset]} with res56s, over rho, alpha and lr; "
                       f"the seed's recipe in fp32 (bf16 autocast distorts the small difference "
                       f"between the gradients at w and w + e), except: {SEED_DEVIATIONS}",
        "dataset": dataset, "model": "res56s", "optimizers": ["zsharp"],
        "fixed": {**SEED_RECIPE, "precision": "fp32"},
        "search": {"lr": LR}, "search_per_optimizer": {"zsharp": SAM_FAMILY_RANGES["zsharp"]},
        "trials_per_optimizer": trials, **budget,
    }


COMPARE_OPTIMIZERS = ["adam", "adamw", "sam", "asam", "fsam", "zsharp"]


def _compare_space(dataset: str, trials: int) -> dict:
    """Adam, AdamW and the SAM family on res56s, each tuned with the same trials and epochs."""
    return {
        "name": f"compare_{dataset}",
        "description": f"Adam, AdamW, SAM, ASAM, Friendly-SAM and ZSharp on {_LABELS[dataset]} "
                       f"with res56s, each tuned with the same trials and epochs",
        "dataset": dataset, "model": "res56s",
        "optimizers": COMPARE_OPTIMIZERS,
        "fixed": SEED_RECIPE, "search": {"lr": LR, **COUPLED_DECAY},
        "search_per_optimizer": _per_optimizer(COMPARE_OPTIMIZERS, SAM_FAMILY_RANGES, DECOUPLED_DECAY),
        "trials_per_optimizer": trials, **CIFAR_BUDGET,
        # Paired tests need seeds: 5 is the fewest reported as significant.
        "confirm_top_k": 1, "confirm_seeds": 5,
    }


SPACES = [
    QUICKSTART,
    _zsharp_space("c10", CIFAR_BUDGET, trials=32),
    _zsharp_space("c100", CIFAR_BUDGET, trials=32),
    _zsharp_space("tinyimagenet", TINYIMAGENET_BUDGET, trials=24),
    # 25 trials: 5 per searched dimension for Friendly-SAM's 5 (lr, rho, sigma, lmbda, decay).
    _compare_space("c10", trials=25),
    _compare_space("c100", trials=25),
]

for _data in SPACES:
    register_space(functools.partial(SearchSpace.from_dict, _data, __name__), name=_data["name"])

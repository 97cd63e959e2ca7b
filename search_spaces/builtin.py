"""The built-in search spaces, as the plain data a YAML file would hold.

Ranges are for an Adam base (the ZSharp paper's CIFAR setting), one per optimizer. Budgets: every optimizer
of a space gets the same trials and epochs; ASHA stops poor trials after `grace_period`
epochs and keeps 1/`reduction_factor` at each rung.
"""

from __future__ import annotations

import functools

from search_spaces.registry import register_space
from search_spaces.space import SearchSpace
from trainables.catalog import get_base, get_optimizer_info, list_optimizers

# Searched ranges: the optimizer registry's default search distributions (trainables.catalog:
# each on its own optimizer's scale, log-uniform over at least 30x around the published
# default, for an Adam base).
def _own_search(optimizer: str) -> dict:
    """A SAM variant's own hyperparameters, searched as the registry says."""
    return {h.name: h.search for h in get_optimizer_info(optimizer).hparams if h.search}


def _base_search(base: str, name: str) -> dict:
    """A base optimizer's hyperparameter `name`, searched as the registry says."""
    return next(h.search for h in get_base(base).hparams if h.name == name)


LR = _base_search("adam", "lr")
SAM_FAMILY_RANGES = {o: _own_search(o) for o in list_optimizers() if get_optimizer_info(o).wrapper}
# Weight decay, searched for every optimizer of a comparison or for none (the same knobs
# for everyone): coupled for Adam and the SAM family on Adam, decoupled for AdamW.
COUPLED_DECAY = {"weight_decay": _base_search("adam", "weight_decay")}
DECOUPLED_DECAY = {"adamw": {"weight_decay": _base_search("adamw", "weight_decay")}}


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
# On digits with res8s (batch 128, 10 epochs, cosine) Adam's and SAM's validation accuracy
# is flat from lr 0.01 to 0.1 (0.974-0.977; 0.95 at 3e-3, 0.96 at 0.2, 0.93-0.95 at 0.3,
# 0.69-0.74 at 0.5: two seeds per point, 2026-12-03), above the CIFAR range: the range
# centres that plateau.
QUICKSTART_LR = {"loguniform": [3e-3, 3e-1]}
# ASAM at that lr is as good from rho 0.005 to 0.2 (0.967 +- 0.003) and falls off above
# 0.5 (0.950 at 1.5): the range reaches below its CIFAR one so the plateau is inside it.
QUICKSTART_ASAM_RHO = {"loguniform": [0.005, 2.0]}
# The demo: 3 replicates of the whole pipeline within 10 minutes on 2 CPU cores. res8s
# (ResNet-8) trains an epoch in 0.28 s (Adam) and 0.50 s (ZSharp) on one core, against
# res20s' 0.55 s and 1.12 s, at the same val accuracy on digits (0.965 vs 0.962-0.979).
QUICKSTART = {
    "name": "quickstart",
    "description": "Adam, SAM, ASAM, Friendly-SAM and ZSharp on digits with res8s, 3 replicates "
                   "of each search, in minutes on 2 CPU cores",
    "dataset": "digits",
    "model": "res8s",
    "optimizers": QUICKSTART_OPTIMIZERS,
    # eta, sigma and lmbda stay at their published defaults here: a 2-D search (lr, rho)
    # for the SAM family, 3-D for ZSharp (alpha too), so a few minutes' budget tunes them.
    # Flatness diagnostics on 40 images, 6 Lanczos steps, 3 probes (Hutchinson's beyond the
    # Lanczos basis, and the adaptive average's draws) and one ascent step: on quickstart
    # models the Lanczos residual came to at most 4.8% of the top eigenvalue; the trace SE
    # passed 30% of the trace in a few runs (up to 48%: those are marked rough) and stayed
    # at 10-28% of it in the others (the report
    # calls them rough above 10% and 30%; 3 steps and 2 probes gave up to 53% and 45%),
    # at 7.3-7.7% of the confirm stage's run time: 6.4-8.1% of a SAM-family run, 13.5-16%
    # of Adam's 8-epoch runs, the cheapest (benchmarks/flatness_cost.py --results on three
    # quickstart sweeps, 2 shared cores, 2026-12-08). The defaults (2,048 images, 20
    # probes, 20 Lanczos and 5 ascent steps) elsewhere.
    "fixed": {"batch_size": 128, "warmup_epochs": 1, "schedule": "cosine", "base": "adam",
              "flatness_probes": 3, "flatness_lanczos_steps": 6, "flatness_ascent_steps": 1},
    "flatness_images": 40,
    "search": {"lr": QUICKSTART_LR},
    "search_per_optimizer": {**{o: {k: v for k, v in SAM_FAMILY_RANGES[o].items() if k in ("rho", "alpha")}
                                for o in QUICKSTART_OPTIMIZERS if o in SAM_FAMILY_RANGES},
                             "asam": {"rho": QUICKSTART_ASAM_RHO}},
    # 8 epochs: res8s' val accuracy at lr 0.03 is 0.972 (Adam) and 0.976 (SAM), against
    # 0.979-0.980 at 10 and 0.959-0.970 at 6 (three seeds each, 2026-12-03). ASHA decides
    # once, at epoch 4 (half the cosine schedule; analysis.rungs checks that its ranking
    # predicts the final one).
    "max_epochs": 8,
    "grace_period": 4,
    "reduction_factor": 3,
    "trials_per_optimizer": 15,  # 5 per searched dimension for ZSharp's 3
    "max_concurrent": 2,
    "cpus_per_trial": 1,
    "gpus_per_trial": 0,
    "confirm_top_k": 1,     # the best configuration of each optimizer ...
    "confirm_seeds": 3,     # ... re-run with 3 seeds (9 paired runs a contrast) ...
    "replicates": 3,        # ... in each of 3 independent replicates of search and confirm
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
        # 3 replicates of search and confirm stage, 5 seeds each: the verdict's interval
        # covers the search's own variance.
        "confirm_top_k": 1, "confirm_seeds": 5, "replicates": 3,
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

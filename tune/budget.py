"""How a sweep spends its budget: TPE's random start, the confirm stage's budget arms and
how a longer arm stretches a trial. Pure rules (no Ray, Optuna or torch), shared by the
plan a `--dry-run` prints and by the stages that run it."""

from __future__ import annotations

from trainables.catalog import get_optimizer_info
from trainables.schema import EQUAL_COMPUTE, EQUAL_EPOCHS

# Optuna's default: 10 random trials before TPE models anything.
MAX_RANDOM_START = 10


def random_start(budget: int) -> int:
    """TPE's random trials for a budget of `budget` trials: at most half of them (so TPE
    guides at least half, even in a small quickstart), and no more than Optuna's 10."""
    return min(MAX_RANDOM_START, budget // 2)


# Settings measured in epochs, multiplied together so a longer run keeps the schedule's shape.
_EPOCH_SETTINGS = ("epochs", "warmup_epochs", "step_epochs")


def budget_arms(optimizers) -> dict[str, list[tuple[str, int]]]:
    """Per optimizer, its confirm arms as (arm, epoch multiplier): equal epochs for all,
    and equal compute for those whose steps cost fewer passes than the costliest
    optimizer's (a 1-pass optimizer beside the SAM family runs 2x the epochs)."""
    passes = {o: get_optimizer_info(o).passes_per_step for o in optimizers}
    most = max(passes.values())
    return {o: [(EQUAL_EPOCHS, 1)] + ([(EQUAL_COMPUTE, most // p)] if p < most else [])
            for o, p in passes.items()}


def stretched(config: dict, factor: int) -> dict:
    """`config` run `factor` times as long: epochs, warm-up and step period multiplied
    (a cosine schedule stretches with the epochs by itself)."""
    from trainables.config import TrialConfig  # the defaults of settings the config omits

    defaults = TrialConfig()
    return {**config, **{name: config.get(name, getattr(defaults, name)) * factor
                         for name in _EPOCH_SETTINGS}}


def compute_unit(space) -> tuple[str, float]:
    """What one trial of `space` (a SearchSpace) holds, for compute counted as units x wall
    time: ("GPU", its GPUs) when it holds GPUs, else ("CPU", its CPUs)."""
    return ("GPU", space.gpus_per_trial) if space.gpus_per_trial else ("CPU", space.cpus_per_trial)

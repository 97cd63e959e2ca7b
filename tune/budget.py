"""How a sweep spends its budget: TPE's random start, the confirm stage's budget arms and
runs, the equal-compute arm's learning-rate re-search, and how a longer (or a refit's
matched) run stretches a trial. Pure rules (no Ray, Optuna or torch), shared by
the plan a `--dry-run` prints and by the stages that run it."""

from __future__ import annotations

from trainables.catalog import epochs_factor
from trainables.record import EPOCH_SETTINGS
from trainables.schema import EQUAL_COMPUTE, EQUAL_EPOCHS

# Optuna's default: 10 random trials before TPE models anything.
MAX_RANDOM_START = 10


def random_start(budget: int) -> int:
    """TPE's random trials for a budget of `budget` trials: at most half of them (so TPE
    guides at least half, even in a small quickstart), and no more than Optuna's 10."""
    return min(MAX_RANDOM_START, budget // 2)


def budget_arms(optimizers) -> dict[str, list[tuple[str, int]]]:
    """Per optimizer, its confirm arms as (arm, epoch multiplier): equal epochs for all,
    and equal compute for those whose steps cost fewer passes than the costliest
    optimizer's (a 1-pass optimizer beside the SAM family runs 2x the epochs)."""
    factors = {o: epochs_factor(o, optimizers) for o in optimizers}
    return {o: [(EQUAL_EPOCHS, 1)] + ([(EQUAL_COMPUTE, f)] if f > 1 else []) for o, f in factors.items()}


def stretched(config: dict, factor: float) -> dict:
    """`config` run `factor` times as long: epochs, warm-up and step period multiplied and
    rounded (a cosine schedule stretches with the epochs by itself); at least one epoch
    and one epoch per step, warm-up may round to none."""
    from trainables.config import TrialConfig  # the defaults of settings the config omits

    defaults = TrialConfig()
    scaled = {name: round(config.get(name, getattr(defaults, name)) * factor) for name in EPOCH_SETTINGS}
    return {**config, **scaled, "epochs": max(1, scaled["epochs"]), "step_epochs": max(1, scaled["step_epochs"])}


# The equal-compute arm's learning-rate re-search: a third of the 1x search's trials.
RETUNE_SHARE = 3


def retune_trials(space) -> int:
    """Trials of the 1-pass optimizers' learning-rate re-search at the equal-compute arm's
    epochs, per optimizer and replicate: the space's `retune_trials`, else a third of its
    trials_per_optimizer (at least 1); 0 for none."""
    if space.retune_trials is not None:
        return space.retune_trials
    return max(1, space.trials_per_optimizer // RETUNE_SHARE)


def retuned(space) -> list[str]:
    """The optimizers whose equal-compute arm runs longer and gets its own lr re-search."""
    if not retune_trials(space):
        return []
    return [o for o, arms in budget_arms(space.optimizers).items() if len(arms) > 1]


def confirm_runs(space, top_k: int, seeds: int) -> dict[tuple[str, str], tuple[int, int]]:
    """The confirm stage's plan: (optimizer, arm) -> (runs, epochs of each run), every
    replicate's finalists (top_k each) x seeds; a retuned optimizer's equal-compute arm
    reruns its best configuration only (tune.retune)."""
    plan, again = {}, set(retuned(space))
    factor = space.refit_factor
    for optimizer, arms in budget_arms(space.optimizers).items():
        for arm, longer in arms:
            configs = 1 if longer > 1 and optimizer in again else top_k
            epochs = stretched(stretched({"epochs": space.max_epochs}, longer), factor)["epochs"]
            plan[(optimizer, arm)] = (space.replicates * configs * seeds, epochs)
    return plan

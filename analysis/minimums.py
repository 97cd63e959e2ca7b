"""How much evidence the analysis asks for before it shows an estimate, and the words of
the warnings when a sweep has less. The closing summary and the report apply them to what
ran (analysis.warnings); the dry run applies them to the plan before anything runs
(`plan_warnings`). No pandas: the report's command line and the dry run read these and
stay quick."""

from __future__ import annotations

from trainables.schema import count

# fANOVA's importances from fewer finished search trials of one optimizer are noise.
MIN_IMPORTANCE_TRIALS = 5
# A contour interpolated from fewer full-budget trials looks authoritative and is not: below
# this many, the rho-lr map shows the trials alone.
MIN_CONTOUR_TRIALS = 6
# Below this many paired confirm runs of an optimizer no p-value and no "better".
MIN_PAIRS = 3
# A common rule of thumb for a model-based search (TPE): below about 5 trials per searched
# dimension, most of the space is never sampled.
MIN_TRIALS_PER_DIMENSION = 5

ONE_REPLICATE = ("one replicate of the search: every interval is conditional on one search, "
                 "whose own variance (which configuration it picks) is not included; a rerun "
                 "can move the verdict by more than the interval (launch.py ... --replicates 3)")


def no_verdict(what: str) -> str:
    """No confirm run to compare (`what`: "no confirm stage", "no confirm run finished")."""
    return (f"{what}: the search's figures are single runs on the validation split, not a "
            "verdict; rerun the best configurations with several seeds (launch.py ... --confirm 1 --seeds 5)")


def few_runs(names: str) -> str:
    """Fewer than MIN_PAIRS confirm runs for the groups in `names` ("Adam 2, SAM 2")."""
    return (f"fewer than {MIN_PAIRS} confirm runs ({names}): no interval or test can rest on them; "
            "rerun with more --seeds")


def thin_search(label: str, trials: int, dims: list[str]) -> str | None:
    """The warning for `trials` search trials per replicate over the searched `dims` of the
    optimizer labelled `label`; None if they are enough."""
    needed = MIN_TRIALS_PER_DIMENSION * len(dims)
    if trials >= needed:
        return None
    return (f"{label}: {count(trials, 'search trial')} per replicate for "
            f"{count(len(dims), 'searched hyperparameter')} ({', '.join(dims)}): fewer than "
            f"{MIN_TRIALS_PER_DIMENSION} per dimension, so most of the space was never sampled; "
            f"run at least {needed} (--num-samples)")


def plan_warnings(space, confirm_seeds: int, label) -> list[str]:
    """The warnings a sweep of `space` (a SearchSpace) earns before it runs, in the closing
    summary's words where it has them; `confirm_seeds`: its confirm stage's seeds per
    configuration, 0 without one (tune.plan.SweepPlan.confirms decides); `label(optimizer)`
    names an optimizer for people."""
    found = []
    if confirm_seeds == 0:
        found.append(no_verdict("no confirm stage"))
    else:
        if space.replicates == 1:
            found.append(ONE_REPLICATE)
        runs = space.replicates * confirm_seeds
        if runs < MIN_PAIRS:
            found.append(few_runs(", ".join(f"{label(o)} {runs}" for o in space.optimizers)))
    for optimizer in space.optimizers:
        thin = thin_search(label(optimizer), space.trials_per_optimizer, list(space.distributions_for(optimizer)))
        if thin:
            found.append(thin)
    for name, searched, fixed in space.unequal_searches():
        found.append(f"{name} is searched for {', '.join(map(label, searched))} but fixed for "
                     f"{', '.join(map(label, fixed))}: not tuned against tuned; search it for every "
                     "optimizer that takes it (search:) or for none")
    if space.grace_period >= space.max_epochs:
        found.append(f"ASHA stops no trial: its grace period ({space.grace_period} epochs) reaches "
                     f"max_epochs ({space.max_epochs}), so every trial runs its full budget")
    return found

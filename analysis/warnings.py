"""Warnings where a reader of a sweep's results would be misled: a best configuration at
the edge of its searched range, a search too thin for its dimensions, too few confirm
seeds, no confirm stage at all. One line each; the report shows them in a box at the top
and the console summary prints them first.

Pure functions of a `Sweep` (no plotting).
"""

from __future__ import annotations

from analysis.load import Sweep
from analysis.stats import MIN_SEEDS
from analysis.text import count, label, run_label
from analysis.verdict import Comparison, best_configs, comparison

# A best value within this fraction of either end of its range, on the range's own
# sampling scale, suggests the optimum lies beyond the range.
EDGE = 0.05
# A common rule of thumb for a model-based search (TPE): below about 5 trials per searched
# dimension, most of the space is never sampled.
MIN_TRIALS_PER_DIMENSION = 5
_SCALE_WORDS = {"linear": "linear", "log": "log", "log_complement": "log(1 - value)"}


def sweep_warnings(sweep: Sweep, result: Comparison | None = None) -> list[str]:
    """Every warning for this sweep, one line each, the verdict's first: no confirm stage
    or too few seeds, then best values at the edge of their ranges, then thin searches.
    `result`: the sweep's comparison (verdict.comparison), where the caller has it already."""
    result = comparison(sweep) if result is None else result
    return [*_verdict_warnings(sweep, result), *_edge_warnings(sweep, result), *_thin_search_warnings(sweep)]


def _verdict_warnings(sweep: Sweep, result: Comparison) -> list[str]:
    """No confirm stage (the search's numbers are no verdict), or fewer than MIN_SEEDS
    finished seeds for some optimizer in some arm."""
    runs = result.compared_runs
    if runs.empty:
        what = "no confirm stage" if sweep.stage("confirm").empty else "no confirm run finished"
        return [f"{what}: the search's figures are single runs on the validation split, not a "
                "verdict; rerun the best configurations with several seeds "
                "(launch.py ... --confirm 1 --seeds 5)"]
    seeds = runs.groupby(["optimizer", "budget_arm"], sort=False).size()
    few = seeds[seeds < MIN_SEEDS]
    if few.empty:
        return []
    names = ", ".join(f"{run_label(o, arm)} {n}" for (o, arm), n in few.items())
    return [f"fewer than {MIN_SEEDS} confirm seeds ({names}): intervals are too wide to carry a "
            f"claim and no difference is called significant; rerun with --seeds {MIN_SEEDS} or more"]


def _edge_warnings(sweep: Sweep, result: Comparison) -> list[str]:
    """Each searched value of an optimizer's best configuration (verdict.best_configs)
    within EDGE of either end of its range, on the range's scale (choices skipped)."""
    if sweep.space is None:
        return []  # the ranges are the space's
    found = []
    for optimizer, best in best_configs(sweep, result.search_best).items():
        if optimizer not in sweep.space.optimizers:
            continue
        for name, dist in sweep.space.distributions_for(optimizer).items():
            where = dist.position(best[name])
            if where is None or EDGE <= where <= 1 - EDGE:
                continue
            edge, way = ("top", "upwards") if where > 0.5 else ("bottom", "downwards")
            found.append(
                f"{label(optimizer)}: its best {name}, {best[name]:.3g}, lies at the {edge} of the "
                f"searched range [{dist.low:.3g}, {dist.high:.3g}] ({where:.0%} of the way on its "
                f"{_SCALE_WORDS[dist.scale]} scale): the best value may lie outside it; widen "
                f"the range {way} and search again")
    return found


def _thin_search_warnings(sweep: Sweep) -> list[str]:
    """Optimizers with fewer than MIN_TRIALS_PER_DIMENSION search trials per searched
    hyperparameter."""
    search = sweep.stage("sweep")
    found = []
    for optimizer in sweep.optimizers:
        trials = int((search["optimizer"] == optimizer).sum())
        dims = sweep.searched_params(optimizer)
        needed = MIN_TRIALS_PER_DIMENSION * len(dims)
        if trials < needed:
            found.append(
                f"{label(optimizer)}: {count(trials, 'search trial')} for "
                f"{count(len(dims), 'searched hyperparameter')} ({', '.join(dims)}): fewer than "
                f"{MIN_TRIALS_PER_DIMENSION} per dimension, so most of the space was never sampled; "
                f"run at least {needed} (--num-samples)")
    return found

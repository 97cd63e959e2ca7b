"""Warnings where a reader of a sweep's results would be misled: no confirm stage, one
replicate (intervals conditional on one search), too few runs to test, diverged confirm
runs, a called difference whose order flips between the budget arms, a refit that takes more steps than
the search tuned for, ASHA rungs that do not predict the final ranking, best
configurations at the edge of their searched range, searches too thin for their
dimensions, and flatness values rougher than their checks allow (analysis.flatness). One line each; the report shows them in a box at the top and the console
summary prints them first.

Pure functions of a `Sweep` (no plotting).
"""

from __future__ import annotations

import itertools

from analysis.flatness import flatness_warnings
from analysis.rungs import rung_warnings
from analysis.minimums import MIN_PAIRS, ONE_REPLICATE, few_runs, no_verdict, thin_search
from analysis.sweep import Sweep
from analysis.text import ARM_TITLES, label, run_label
from analysis.verdict import Comparison, best_configs, comparison
from trainables.record import CONFIRM, SEARCH
from trainables.schema import DIVERGED, count

# A best value within this fraction of either end of its range, on the range's own
# sampling scale, suggests the optimum lies beyond the range.
EDGE = 0.05
# A refit taking this many more (or fewer) optimizer steps than the search tuned for is
# worth a warning: the configuration was chosen for another schedule length.
REFIT_STEPS_WARNING = 0.10


def sweep_warnings(sweep: Sweep, result: Comparison | None = None) -> list[str]:
    """Every warning for this sweep, one line each, the verdict's first.
    `result`: the sweep's comparison (verdict.comparison), where the caller has it already."""
    result = comparison(sweep) if result is None else result
    return [*_verdict_warnings(sweep, result), *_diverged_warnings(sweep), *_flip_warnings(result),
            *_refit_warnings(sweep), *rung_warnings(sweep), *_edge_warnings(sweep, result),
            *_thin_search_warnings(sweep), *flatness_warnings(sweep)]


def _verdict_warnings(sweep: Sweep, result: Comparison) -> list[str]:
    """No confirm stage (the search's numbers are no verdict), one replicate (the search's
    own variance is not in the intervals), or too few runs for a test."""
    runs = result.compared_runs
    if runs.empty:
        return [no_verdict("no confirm stage" if sweep.stage(CONFIRM).empty else "no confirm run finished")]
    found = [ONE_REPLICATE] if result.conditional else []
    sizes = runs.groupby(["optimizer", "budget_arm"], sort=False).size()
    few = sizes[sizes < MIN_PAIRS]
    if len(few):
        found.append(few_runs(", ".join(f"{result.run_label(o, arm)} {n}" for (o, arm), n in few.items())))
    return found


def _diverged_warnings(sweep: Sweep) -> list[str]:
    """Confirm runs that diverged: they count, at the accuracy they ended with."""
    confirm = sweep.stage(CONFIRM)
    diverged = confirm[confirm["status"] == DIVERGED]
    if diverged.empty:
        return []
    runs = ", ".join(f"{run_label(o, a, sweep.optimizers)} replicate {r} seed {s}" for o, a, r, s in
                     zip(diverged["optimizer"], diverged["budget_arm"], diverged["replicate"], diverged["seed"]))
    return [f"diverged confirm runs count at the accuracy they ended with ({count(len(diverged), 'run')}): "
            f"{runs}"]


def _flip_warnings(result: Comparison) -> list[str]:
    """Pairs of optimizers whose order flips between the budget arms where that matters: a
    difference called (better or worse) in one arm that reverses in the other. A flip of
    two means within each other's noise misleads nobody."""
    if len(result.arms) < 2:
        return []
    means = {arm: dict(zip(r.summary["optimizer"], r.summary["mean"])) for arm, r in result.arms.items()}
    called = {frozenset((row["optimizer"], row["reference"]))
              for r in result.arms.values() for table in r.paired.values()
              for row in table.to_dict("records") if row["verdict"] in ("better", "worse")}
    (first, a_means), (second, b_means) = list(means.items())[:2]
    flips = [(a, b) for a, b in itertools.combinations(sorted(set(a_means) & set(b_means)), 2)
             if (a_means[a] - a_means[b]) * (b_means[a] - b_means[b]) < 0 and frozenset((a, b)) in called]
    return [f"the ranking flips between the arms: {label(a)} is {_order(a_means, a, b)} {label(b)} "
            f"{ARM_TITLES[first]} but {_order(b_means, a, b)} it {ARM_TITLES[second]}, and one of "
            "the two is called a difference; read the verdict per arm" for a, b in flips]


def _order(means: dict, a: str, b: str) -> str:
    return "above" if means[a] > means[b] else "below"


def _refit_warnings(sweep: Sweep) -> list[str]:
    """A refit whose step count differs from the search's by REFIT_STEPS_WARNING or more."""
    extra = sweep.space.refit_extra_steps if sweep.space is not None else None
    if extra is None or abs(extra) < REFIT_STEPS_WARNING or sweep.stage(CONFIRM).empty:
        return []
    return [f"confirm runs refit on train + val and so take {extra:+.1%} optimizer steps against the "
            "search that tuned their configuration (a longer schedule may want another learning "
            "rate); refit_steps: matched in the space scales their epochs by |train| / |train + val|"]


def _edge_warnings(sweep: Sweep, result: Comparison) -> list[str]:
    """Each searched value of an optimizer's best configurations (verdict.best_configs, one
    per replicate) within EDGE of either end of its range, on the range's scale (choices
    skipped), once per optimizer and value, naming the replicates."""
    if sweep.space is None:
        return []  # the ranges are the space's
    at_edge: dict[tuple, list] = {}
    for (optimizer, replicate), best in best_configs(sweep, result.search_best).items():
        if optimizer not in sweep.space.optimizers:
            continue
        for name, dist in sweep.space.distributions_for(optimizer).items():
            where = dist.position(best[name])
            if where is not None and not EDGE <= where <= 1 - EDGE:
                at_edge.setdefault((optimizer, name, where > 0.5), []).append((replicate, best[name], where))
    found = []
    for (optimizer, name, top), hits in at_edge.items():
        dist = sweep.space.distributions_for(optimizer)[name]
        edge, way = ("top", "upwards") if top else ("bottom", "downwards")
        values = ", ".join(f"{v:.3g} (replicate {r}, {w:.0%})" for r, v, w in hits)
        found.append(f"{label(optimizer)}: its best {name} lies at the {edge} of the searched range "
                     f"[{dist.low:.3g}, {dist.high:.3g}] on its {dist.transform.words} scale: "
                     f"{values}; the best value may lie outside it; widen the range {way} and search again")
    return found


def _thin_search_warnings(sweep: Sweep) -> list[str]:
    """Optimizers with fewer than MIN_TRIALS_PER_DIMENSION search trials per searched
    hyperparameter in each replicate."""
    search = sweep.stage(SEARCH)
    found = []
    for optimizer in sweep.optimizers:
        mine = search[search["optimizer"] == optimizer]
        replicates = max(1, mine["replicate"].nunique())
        thin = thin_search(label(optimizer), len(mine) // replicates, sweep.searched_params(optimizer))
        if thin:
            found.append(thin)
    return found

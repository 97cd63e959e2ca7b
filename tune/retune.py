"""The equal-compute arm's learning-rate re-search: a fair longer run for the 1-pass optimizers.

At equal gradient evaluations a 1-pass optimizer (Adam) runs twice the epochs of the SAM
family. Reusing the learning rate tuned at 1x epochs would handicap it (a longer schedule
wants another rate), so within each replicate its finalist's learning rate is searched
again at the longer epochs, on the replicate's validation split: TPE over a log-uniform
range RETUNE_SPAN either side of the 1x optimum, which it tries first (so the re-search
can only match or beat reusing it on val), with `budget.retune_trials` trials and ASHA at
the stretched epochs. Every other setting is the finalist's.
"""

from __future__ import annotations

from search_spaces import Distribution, SearchSpace
from trainables.record import RETUNE, group_of
from trainables.schema import EQUAL_COMPUTE
from tune.budget import budget_arms, retune_trials, retuned, stretched
from tune.search import SearchGroup, study_name
from tune.seeds import replicate_seeds

# The re-searched learning rate: log-uniform on [lr / RETUNE_SPAN, lr * RETUNE_SPAN].
RETUNE_SPAN = 4.0


def longer_factor(space: SearchSpace, optimizer: str) -> int:
    """How many times the space's epochs the optimizer's equal-compute arm runs."""
    return dict(budget_arms(space.optimizers)[optimizer]).get(EQUAL_COMPUTE, 1)


def retune_groups(space: SearchSpace, experiment: str, finalists: list[dict]) -> list[SearchGroup]:
    """One group per rank-1 finalist of a retuned optimizer (tune.budget.retuned) in each
    replicate: its config stretched to the arm's epochs, searched over lr only."""
    groups = []
    for finalist in finalists:
        optimizer, replicate = group_of(finalist["config"])
        if finalist["rank"] != 1 or optimizer not in retuned(space):
            continue
        lr = finalist["config"]["lr"]
        # eval_split "val": a re-search trial, like a search trial, never holds the test split.
        base = {k: v for k, v in stretched(finalist["config"], longer_factor(space, optimizer)).items()
                if k != "lr"} | {"eval_split": "val"}
        seeds = replicate_seeds(space.seed, replicate, 0)
        groups.append(SearchGroup(
            (optimizer, replicate), base, {"lr": Distribution("loguniform", lr / RETUNE_SPAN, lr * RETUNE_SPAN)},
            seeds.searcher(optimizer, RETUNE), retune_trials(space),
            study_name(experiment, optimizer, replicate, RETUNE), first=({"lr": lr},)))
    return groups

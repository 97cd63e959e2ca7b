"""The confirm stage: the top configurations of each optimizer in each replicate, re-run
over several seeds.

A search ranks configurations by one noisy run each on the validation split; a verdict
needs each finalist trained again with several seeds to the full budget, without early
stopping, and scored on the test split, which the search never saw (by default trained
on train + val, the usual final-training protocol). Every replicate has its own seeds
(tune.seeds), the same for every optimizer within it, so runs pair up by replicate and
seed.

Two budget arms: every finalist at the space's epochs (equal epochs, the papers'
protocol), and, where the space mixes 1-pass optimizers with the 2-pass SAM family, the
1-pass optimizers' best configuration again at twice the epochs with the schedule
stretched to match (equal gradient evaluations), at the learning rate re-searched for
those epochs in its replicate (tune.retune); without a re-search it reuses the 1x rate.
"""

from __future__ import annotations

import json

from ray.tune.search import Searcher

from trainables.record import CONFIRM, TrialRecord, group_of, ranked_by_group, with_record
from trainables.schema import EQUAL_EPOCHS, VERDICT_METRIC
from tune.budget import stretched
from tune.search import PickledSearcher


def config_key(config: dict) -> str:
    """A trial config's identity, for tags looked up by config (JSON, keys sorted)."""
    return json.dumps(config, sort_keys=True, default=str)


def select_finalists(rows: list[dict], top_k: int) -> list[dict]:
    """The top_k trials of each group (an optimizer in a replicate), by
    trainables.schema.rank_finalists (full budget first, then final val_acc; errors and
    divergences excluded).

    rows: a search's summary, one per trial with optimizer, config, status, epochs_run,
    final_val_acc and trial_id. Returns rows with a `rank` (1 = best) added.
    """
    return [{**r, "rank": rank} for ranked in ranked_by_group(rows, lambda r: group_of(r["config"])).values()
            for rank, r in enumerate(ranked[:top_k], start=1)]


def confirm_trials(finalists: list[dict], seeds: dict[int, tuple[int, ...]],
                   arms: dict[str, list[tuple[str, int]]], refit: bool, flatness_images: int = 0,
                   refit_factor: float = 1.0, retuned: dict | None = None) -> list[dict]:
    """Trial configs (each finalist x each of its arms x its replicate's seeds), evaluated
    on test and ending with the flatness diagnostics on `flatness_images` images (0: none),
    each carrying its record (trainables.record: arm, rank, the trials it reruns).

    seeds: replicate -> its confirm seeds. refit_factor: what a refit's epochs are
    multiplied by (SearchSpace.refit_factor). retuned: (optimizer, replicate) -> the best
    trial of its equal-compute re-search (tune.retune; a summary row), whose config the
    arm runs; a retuned optimizer's finalists below rank 1 run at equal epochs only.
    """
    configs = []
    for finalist in finalists:
        group = group_of(finalist["config"])
        for arm, factor in arms[finalist["optimizer"]]:
            source, retune_trial_id = _arm_source(finalist, arm, factor, group, retuned or {})
            if source is None:
                continue
            record = TrialRecord(stage=CONFIRM, optimizer=finalist["optimizer"], replicate=group[1],
                                 budget_arm=arm, confirm_rank=finalist["rank"],
                                 source_trial_id=finalist["trial_id"], retune_trial_id=retune_trial_id)
            for seed in seeds[group[1]]:
                configs.append(with_record({**stretched(source, refit_factor), "seed": seed, "eval_split": "test",
                                            "refit": refit, "flatness_images": flatness_images}, record))
    return configs


def _arm_source(finalist: dict, arm: str, factor: int, group: tuple, retuned: dict) -> tuple[dict | None, str | None]:
    """The config an arm reruns for a finalist (None: the arm skips it) and the re-search
    trial it came from: the finalist's at equal epochs; at equal compute its re-searched
    best (rank 1 only) where there was a re-search, else the finalist's stretched by `factor`."""
    if arm == EQUAL_EPOCHS or factor == 1:
        return finalist["config"], None
    if group in retuned:
        best = retuned[group]
        return (best["config"], best["trial_id"]) if finalist["rank"] == 1 else (None, None)
    return stretched(finalist["config"], factor), None


class FixedConfigs(PickledSearcher):
    """Hands out a fixed list of trial configs in order (resumable), then FINISHED."""

    def __init__(self, configs: list[dict]):
        super().__init__(metric=VERDICT_METRIC, mode="max")
        self._configs = list(configs)
        self._next = 0

    def suggest(self, trial_id: str):
        if self._next >= len(self._configs):
            return Searcher.FINISHED
        self._next += 1
        return dict(self._configs[self._next - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # nothing to learn: the configs are fixed

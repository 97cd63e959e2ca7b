"""The confirm stage: the top configurations of each optimizer, re-run over several seeds.

A search ranks configurations by one noisy run each on the validation split; a verdict
needs each finalist trained again with several seeds to the full budget, without early
stopping, and scored on the test split, which the search never saw (by default trained
on train + val, the usual final-training protocol). Seeds are the same for every
optimizer (0, 1, ...), so runs pair up by seed.

Two budget arms: every finalist at the space's epochs (equal epochs, the papers'
protocol), and, where the space mixes 1-pass optimizers with the 2-pass SAM family, the
1-pass finalists again at twice the epochs with the schedule stretched to match (equal
gradient evaluations). The longer runs reuse the learning rate tuned at 1x.
"""

from __future__ import annotations

import json

from ray.tune.search import Searcher

from trainables.schema import VERDICT_METRIC, rank_finalists
from tune.budget import stretched
from tune.search import PickledSearcher


def config_key(config: dict) -> str:
    """A trial config's identity, for tags looked up by config (JSON, keys sorted)."""
    return json.dumps(config, sort_keys=True, default=str)


def select_finalists(rows: list[dict], top_k: int) -> list[dict]:
    """The top_k search trials of each optimizer (trainables.schema.rank_finalists: full
    budget first, then final val_acc; errors and divergences excluded).

    rows: the search's summary, one per trial with optimizer, config, status, epochs_run,
    final_val_acc and trial_id. Returns rows with a `rank` (1 = best) added.
    """
    finalists = []
    for optimizer in dict.fromkeys(r["optimizer"] for r in rows):
        ranked = rank_finalists([r for r in rows if r["optimizer"] == optimizer])
        finalists += [{**r, "rank": rank} for rank, r in enumerate(ranked[:top_k], start=1)]
    return finalists


def confirm_trials(finalists: list[dict], seeds: int, arms: dict[str, list[tuple[str, int]]],
                   refit: bool, flatness_images: int = 0) -> tuple[list[dict], dict[str, dict]]:
    """Trial configs (each finalist x each of its arms x each seed), evaluated on test and
    ending with the flatness diagnostics on `flatness_images` images (0: none), and the
    MLflow tags of each, by config key."""
    configs, tags = [], {}
    for finalist in finalists:
        for arm, factor in arms[finalist["optimizer"]]:
            for seed in range(seeds):
                config = {**stretched(finalist["config"], factor), "seed": seed,
                          "eval_split": "test", "refit": refit, "flatness_images": flatness_images}
                configs.append(config)
                tags[config_key(config)] = {"confirm_rank": str(finalist["rank"]),
                                            "source_trial_id": finalist["trial_id"],
                                            "budget_arm": arm}
    return configs, tags


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

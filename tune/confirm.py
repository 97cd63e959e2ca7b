"""The confirm stage: the top configurations of each optimizer, re-run over several seeds.

A search ranks configurations by one noisy run each; a comparison needs each finalist
trained again with several seeds to the full budget, without early stopping, so that
differences come with intervals and paired tests (analysis/stats.py). Seeds are the same
for every optimizer (0, 1, ...), so runs pair up by seed.
"""

from __future__ import annotations

import json

from ray.tune.search import Searcher

from tune.search import PickledSearcher

CONFIRM_SUFFIX = "-confirm"


def config_key(config: dict) -> str:
    """A trial config's identity, for tags looked up by config (JSON, keys sorted)."""
    return json.dumps(config, sort_keys=True, default=str)


def select_finalists(rows: list[dict], top_k: int) -> list[dict]:
    """The top_k trials of each optimizer by best val_acc (errored trials excluded).

    rows: the sweep's summary, one per trial with optimizer, config, status, best_val_acc
    and trial_id. Returns rows with a `rank` (1 = best) added.
    """
    finalists = []
    for optimizer in dict.fromkeys(r["optimizer"] for r in rows):
        ranked = sorted((r for r in rows if r["optimizer"] == optimizer and r["status"] != "error"
                         and r["best_val_acc"] == r["best_val_acc"]),
                        key=lambda r: r["best_val_acc"], reverse=True)
        finalists += [{**r, "rank": rank} for rank, r in enumerate(ranked[:top_k], start=1)]
    return finalists


def confirm_trials(finalists: list[dict], seeds: int) -> tuple[list[dict], dict[str, dict]]:
    """Trial configs (each finalist x each seed) and the MLflow tags of each, by config key."""
    configs, tags = [], {}
    for finalist in finalists:
        for seed in range(seeds):
            config = {**finalist["config"], "seed": seed}
            configs.append(config)
            tags[config_key(config)] = {"confirm_rank": str(finalist["rank"]),
                                        "source_trial_id": finalist["trial_id"]}
    return configs, tags


class FixedConfigs(PickledSearcher):
    """Hands out a fixed list of trial configs in order (resumable), then FINISHED."""

    def __init__(self, configs: list[dict], metric: str = "val_acc", mode: str = "max"):
        super().__init__(metric=metric, mode=mode)
        self._configs = list(configs)
        self._next = 0

    def suggest(self, trial_id: str):
        if self._next >= len(self._configs):
            return Searcher.FINISHED
        self._next += 1
        return dict(self._configs[self._next - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # nothing to learn: the configs are fixed

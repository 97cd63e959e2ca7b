"""Every seed of a sweep, from its master seed (the space's `seed`, `--seed`).

A replicate is one independent run of the whole tuned pipeline: its own searcher seeds,
its own training seed for the search trials, its own validation holdout, and its own
confirm seeds (shared by the optimizers within it, so their runs pair up). Sweeps with
different master seeds share none of them, so rerunning a sweep with another master seed
is what an independent rerun would be. Plain Python (hashlib), so a dry run derives them
without numpy or torch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from trainables.record import CONFIRM, SEARCH

# Optuna seeds numpy's RandomState: 32 bits.
_BITS = 32


def derived(master: int, *path) -> int:
    """A 32-bit seed for `path` ("search", replicate, ...) under `master`: the first four
    bytes of BLAKE2b of both, so every path gets an unrelated stream."""
    text = "/".join(map(str, (master, *path))).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=_BITS // 8).digest(), "big")


@dataclass(frozen=True)
class ReplicateSeeds:
    """The seeds of one replicate: the searcher's (per optimizer, `searcher`), the search
    trials' training seed, the validation holdout's and the confirm runs'."""

    master: int
    replicate: int
    train: int
    holdout: int
    confirm: tuple[int, ...]

    def searcher(self, optimizer: str, stage: str = SEARCH) -> int:
        """The TPE sampler's seed of one optimizer's study in this replicate and `stage`."""
        return derived(self.master, self.replicate, stage, optimizer)


def replicate_seeds(master: int, replicate: int, confirm_runs: int) -> ReplicateSeeds:
    """The seeds of replicate `replicate` (0-based) of a sweep with master seed `master`,
    with `confirm_runs` confirm seeds."""
    return ReplicateSeeds(master, replicate, train=derived(master, replicate, "train"),
                          holdout=derived(master, replicate, "holdout"),
                          confirm=tuple(derived(master, replicate, CONFIRM, s) for s in range(confirm_runs)))

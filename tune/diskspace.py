"""Storage space: what a sweep's checkpoints need before it starts (tune.preflight), and
the watch that stops it, as a first signal does, before its storage fills (a full disk
killed the driver mid-write through the MLflow and Optuna databases).

A trial keeps its newest two checkpoints (tune.schedule.SafeSnapshots) and writes the next
beside them before it replaces one.
"""

from __future__ import annotations

import shutil

from ray.tune import Callback

from trainables.schema import count
from tune.estimate import at_once
from tune.interrupt import Interrupted, StopSignals
from tune.plan import SweepPlan, local_storage

# Beyond checkpoints: the MLflow and Optuna databases, Ray's experiment state, the report.
SPARE_BYTES = 100 * 2 ** 20


def mib(size: float) -> str:
    return f"{size / 2 ** 20:,.0f} MiB"


def space_needed(plan: SweepPlan, checkpoint: int) -> tuple[int, int]:
    """(bytes the whole sweep may write, bytes it must keep free while it runs) for
    checkpoints of `checkpoint` bytes: every trial of every stage keeping two, and each
    running trial writing a third; SPARE_BYTES on top of both."""
    writing = at_once(plan) * checkpoint
    return plan.all_trials * 2 * checkpoint + writing + SPARE_BYTES, writing + SPARE_BYTES


def free_bytes(plan: SweepPlan) -> int | None:
    """Free bytes where the sweep stores (None for remote storage)."""
    local = local_storage(plan.storage)
    return None if local is None else shutil.disk_usage(local).free


def space_problem(plan: SweepPlan, checkpoint: int) -> str | None:
    """Why local storage cannot hold the sweep (None if it can, or it is remote)."""
    free = free_bytes(plan)
    need, _ = space_needed(plan, checkpoint)
    if free is None or free >= need:
        return None
    return (f"storage {local_storage(plan.storage)} has {mib(free)} free; the sweep may write {mib(need)} "
            f"({count(plan.all_trials, 'trial')} x 2 checkpoints of up to {mib(checkpoint)}, and {mib(SPARE_BYTES)} "
            "for its records): free space, or pass --storage on a larger disk")


class DiskWatch(Callback):
    """After each epoch a trial reports, stops the sweep (StopSignals.current.stop: the
    running trials end at their last checkpoint, `--resume` continues) once the storage
    holds less than `reserve` bytes free: what the running trials' next checkpoints and the
    records need. One statvfs call an epoch."""

    def __init__(self, plan: SweepPlan, reserve: int):
        self.plan, self.reserve = plan, reserve

    def on_trial_result(self, iteration, trials, trial, result, **info):
        free = free_bytes(self.plan)
        signals = StopSignals.current
        if free is None or free >= self.reserve or signals is None:
            return
        signals.stop(Interrupted(reason=(
            f"low disk space: storage {local_storage(self.plan.storage)} has {mib(free)} free, "
            f"under the {mib(self.reserve)} the running trials' next checkpoints and the records need")))

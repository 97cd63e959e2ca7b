"""What a sweep will cost, told before it starts (`launch.py --dry-run`).

The budget in trial-epochs comes from the plan: the search's is an upper bound (every
trial to the full epochs; ASHA stops some), the confirm stage's is exact. With
`--estimate`, a few training steps of each optimizer are timed on this machine
(`trainables.train.epoch_seconds`, at the trials' CPU threads and device) and turned into
wall time and CPU- or GPU-hours, if timing them all fits in `TIMING_BUDGET_S`; otherwise
the budget stays in trial-epochs. The warnings need no torch: a trial asking for GPUs on
a machine without one, and a data set that will be downloaded first.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from analysis.minimums import plan_warnings
from trainables.catalog import download_note, optimizer_label
from trainables.record import CONFIRM, RETUNE, SEARCH, STAGE_NAMES, compute_unit
from trainables.schema import EQUAL_COMPUTE, count, duration_text
from tune.budget import retune_trials
from tune.early import gpus_seen, machine_problem
from tune.plan import SweepPlan

TIMING_BUDGET_S = 20.0
TIMED_STEPS = 3


@dataclass(frozen=True)
class Budget:
    """Trial-epochs per optimizer, every replicate's: `search` and `retune` (the
    equal-compute arm's lr re-search) at most (ASHA may stop trials), `confirm` exact."""

    search: dict[str, int]
    retune: dict[str, int]
    confirm: dict[str, int]

    def stages(self) -> dict[str, dict[str, int]]:
        """The stages by name, in the order they run."""
        return {SEARCH: self.search, RETUNE: self.retune, CONFIRM: self.confirm}


def budget(plan: SweepPlan) -> Budget:
    """The plan's trial-epochs per optimizer, per stage."""
    s = plan.space
    search = {o: s.trials_per_optimizer * s.replicates * s.max_epochs for o in s.optimizers}
    longer = {o: epochs for (o, arm), (_, epochs) in plan.confirm_plan.items() if arm == EQUAL_COMPUTE}
    retune = {o: retune_trials(s) * s.replicates * longer[o] for o in plan.retunes}
    confirm: dict[str, int] = {}
    for (optimizer, _), (runs, epochs) in plan.confirm_plan.items():
        confirm[optimizer] = confirm.get(optimizer, 0) + runs * epochs
    return Budget(search, retune, confirm)


def at_once(plan: SweepPlan) -> int:
    """Trials running at the same time: the space's limit, and on this machine (no
    cluster) what its CPUs and GPUs hold."""
    s = plan.space
    limit = s.max_concurrent
    if plan.address is None:
        limit = min(limit, max(1, int((os.cpu_count() or 1) // s.cpus_per_trial)))
        gpus = gpus_seen()
        if s.gpus_per_trial and gpus is not None:
            limit = min(limit, max(1, int(gpus // s.gpus_per_trial)))
    return limit


def dry_run_warnings(plan: SweepPlan) -> list[str]:
    """Every warning the plan earns before it runs: the closing summary's, as far as the
    plan decides them (analysis.minimums), then what would stop or slow it on this machine
    (no torch imported)."""
    found = plan_warnings(plan.space, plan.confirm_seeds if plan.confirms else 0, optimizer_label)
    s, gpus = plan.space, gpus_seen()
    refused = None if plan.address is not None else machine_problem(plan, os.cpu_count() or 1, gpus)
    if refused:
        found.append(f"the sweep would refuse to start here: {refused}")
    elif plan.address is None and gpus and not s.gpus_per_trial:
        found.append(f"this machine has {count(gpus, 'GPU')} and the trials use none "
                     "(--gpus-per-trial 1, or a fraction to share one)")
    note = download_note(s.dataset, plan.data_dir)
    if note:
        found.append(note)
    return found


def epoch_times(plan: SweepPlan, out=print) -> dict[str, float] | None:
    """Seconds per epoch of each optimizer's trial here, timed; None (and why, to `out`)
    when the data set is not here or timing every optimizer would pass TIMING_BUDGET_S."""
    import torch

    from trainables.data import load_dataset
    from trainables.errors import DataUnavailableError
    from trainables.train import epoch_seconds

    s = plan.space
    try:
        data = load_dataset(s.dataset, plan.data_dir, download=False)
    except DataUnavailableError:
        out(f"no time estimate: {s.dataset} is not in {plan.data_dir} yet")
        return None
    torch.set_num_threads(max(1, int(s.cpus_per_trial)))  # as a trial runs (tune.trainable)
    device = {"device": "cpu"} if not s.gpus_per_trial else {}
    started, times = time.perf_counter(), {}
    for optimizer in s.optimizers:
        config = {**s.base_config(optimizer), **device, "data_dir": plan.data_dir, "eval_split": "val"}
        times[optimizer] = epoch_seconds(config, data, TIMED_STEPS)
        projected = (time.perf_counter() - started) / len(times) * len(s.optimizers)
        if projected > TIMING_BUDGET_S and len(times) < len(s.optimizers):
            out(f"no time estimate: timing every optimizer here would take about "
                f"{duration_text(projected)} (over {TIMING_BUDGET_S:g} s)")
            return None
    return times


def describe(plan: SweepPlan, times: dict[str, float] | None = None) -> str:
    """The budget in trial-epochs and, given each optimizer's epoch seconds, the wall time
    and compute it comes to."""
    b, concurrent = budget(plan), at_once(plan)
    lines = [f"cost         search at most {sum(b.search.values())} trial-epochs (ASHA stops some), "
             f"re-search at most {sum(b.retune.values())}, confirm {sum(b.confirm.values())}; "
             f"{count(concurrent, 'trial')} at a time"]
    if times is None:
        return "\n".join(lines)
    unit, per_trial = compute_unit(plan.space.cpus_per_trial, plan.space.gpus_per_trial)
    epochs = ", ".join(f"{o} {t:.2g} s" for o, t in times.items())
    lines.append(f"             an epoch here ({TIMED_STEPS} steps timed per optimizer): {epochs}; the times "
                 "below are training alone (Ray, checkpoints and tracking add to them, most on a "
                 "few CPU cores)")
    for stage, trial_epochs in b.stages().items():
        seconds = sum(trial_epochs[o] * times[o] for o in trial_epochs)
        if seconds:
            bound = "about " if stage == CONFIRM else "at most "
            lines.append(f"             {STAGE_NAMES[stage]}: {bound}{duration_text(seconds / concurrent)} wall, "
                         f"{seconds * per_trial / 3600:.2g} {unit}-hours")
    return "\n".join(lines)

"""Concise progress lines while a sweep runs, and the closing table of best results."""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass

from ray.tune import Callback

from trainables.record import group_of, ranked_by_group
from trainables.schema import COMPLETED, DIVERGED, ERROR, STATUSES, STOPPED_EARLY, duration_text, trial_summary
from tune.confirm import config_key

_HEARTBEAT_S = 30.0


def _hparams(config: dict, names) -> str:
    return " ".join(f"{n}={config[n]:.3g}" for n in names if n in config)


@dataclass(frozen=True)
class StageBudget:
    """What a stage plans, for the status line's counts, ETA and compute.

    trial_epochs: the epochs of every trial at its full budget (ASHA may stop some early,
    so in the search the ETA is an upper bound). unit, per_trial: what a trial holds
    ("GPU" or "CPU", how many), so that compute = per_trial x its wall time. groups: in the
    confirm stage, config key (tune.confirm.config_key) -> "optimizer arm", the groups whose
    mean so far the line shows; None in the search (its best finished trial per optimizer).
    later_epochs: the trial-epochs of the stages still to come (tune.estimate.budget), so
    that the ETA covers the whole sweep.
    """

    trials: int
    trial_epochs: int
    unit: str
    per_trial: float
    groups: dict[str, str] | None = None
    later_epochs: int = 0

    @property
    def planned(self) -> dict[str, int]:
        """Runs planned per group (confirm stage), in the groups' order."""
        return dict(Counter((self.groups or {}).values()))


class ConciseProgress(Callback):
    """One line per finished trial, and a status line every 30 s (replaces Tune's tables):
    elapsed time, trials and trial-epochs done out of the plan, an ETA from the measured
    epoch times, the compute spent, and the best finished trial per optimizer (in the
    confirm stage: each group's mean so far and its runs done).

    waiting_for: what a trial needs that no node has yet (an autoscaling cluster may add
    it); while trials wait and none runs, every status line says for how long.
    """

    def __init__(self, budget: StageBudget, searched: tuple[str, ...], metric: str, out=print,
                 waiting_for: str | None = None, clock=time.monotonic):
        self.budget = budget
        self.metric = metric  # val_acc in the search, test_acc in the confirm stage
        self.searched = searched
        self.out = out
        self.waiting_for = waiting_for
        self.clock = clock
        self._started = self._last_beat = clock()
        self._idle_since: float | None = None  # since when trials wait and none runs
        # Kept across --resume (get_state): the sweep's counts, not this driver's.
        self._ended: dict[str, dict] = {}     # trial id -> its summary row
        self._epochs: dict[str, int] = {}     # trial id -> last epoch reported
        self._planned: dict[str, int] = {}    # trial id -> its planned epochs
        self._seconds = 0.0                   # wall seconds of every epoch reported

    def __getstate__(self):
        return {**self.__dict__, "out": print, "clock": time.monotonic}

    def setup(self, **info) -> None:
        self._started = self._last_beat = self.clock()  # elapsed: this driver's time

    def get_state(self) -> dict:
        return {"ended": self._ended, "epochs": self._epochs, "planned": self._planned,
                "seconds": self._seconds}

    def set_state(self, state: dict) -> None:
        self._ended, self._epochs = state["ended"], state["epochs"]
        self._planned, self._seconds = state["planned"], state["seconds"]

    # ---- the status line --------------------------------------------------------------

    def _line(self, trials) -> str:
        running = sum(t.status == "RUNNING" for t in trials)
        counts = {s: sum(r["status"] == s for r in self._ended.values()) for s in STATUSES}
        return (f"[{duration_text(self.clock() - self._started):>6s}] trials "
                f"{len(self._ended)}/{self.budget.trials} done (running {running}; completed "
                f"{counts[COMPLETED]}, stopped early {counts[STOPPED_EARLY]}, diverged "
                f"{counts[DIVERGED]}, errors {counts[ERROR]}); trial-epochs "
                f"{sum(self._epochs.values())}/{self.budget.trial_epochs}; {self._eta(running)}; "
                f"compute {self._compute_hours():.3g} {self.budget.unit}-h"
                f"{self._leaders()}{self._waiting()}")

    def _eta(self, running: int) -> str:
        """Epochs left (every unfinished trial at its full budget, and the later stages'
        trial-epochs) x this stage's mean epoch time, over the trials running at once; an
        upper bound while ASHA may stop trials (the search and the re-search). The summary
        and the report after the last stage take seconds, not counted."""
        done = sum(self._epochs.values())
        if not done:
            return "ETA -"
        unseen = self.budget.trial_epochs - sum(self._planned.values())
        left = unseen + sum(self._planned[t] - self._epochs.get(t, 0)
                            for t in self._planned if t not in self._ended)
        per_epoch = self._seconds / done / max(running, 1)
        bound = "<=" if self.budget.groups is None else "~"
        here = f"ETA {bound} {duration_text(left * per_epoch)}"
        if not self.budget.later_epochs:
            return here
        return f"{here} this stage, {duration_text((left + self.budget.later_epochs) * per_epoch)} the sweep"

    def _compute_hours(self) -> float:
        return self._seconds * self.budget.per_trial / 3600

    def _leaders(self) -> str:
        """The best finished trial per optimizer (search), or each group's mean so far
        (confirm)."""
        rows = list(self._ended.values())
        if self.budget.groups is not None:
            means = []
            for label, planned in self.budget.planned.items():
                values = [r["final"] for r in rows if r["group"] == label and not math.isnan(r["final"])]
                if values:
                    means.append(f"{label} {sum(values) / len(values):.4f} ({len(values)}/{planned})")
            return f"; mean {self.metric} so far: {', '.join(means)}" if means else ""
        ranked = ranked_by_group(rows, lambda r: r["optimizer"])  # the search and re-search: on val
        best = [f"{optimizer} {found[0]['final_val_acc']:.4f}" for optimizer, found in ranked.items() if found]
        return f"; best finished {self.metric}: {', '.join(best)}" if best else ""

    def _waiting(self) -> str:
        """"; waiting N s for ..." while trials wait for a node that does not exist yet."""
        if self._idle_since is None:
            return ""
        return f"; waiting {self.clock() - self._idle_since:.0f}s for {self.waiting_for}"

    def _track_idle(self, trials) -> None:
        idle = (self.waiting_for is not None and any(t.status == "PENDING" for t in trials)
                and not any(t.status == "RUNNING" for t in trials))
        if not idle:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = self.clock()

    # ---- Tune's events ----------------------------------------------------------------

    def on_trial_result(self, iteration, trials, trial, result, **info):
        # Tune's wall time of the iteration: the epoch, its evaluation and its checkpoint.
        self._seconds += float(result.get("time_this_iter_s", result.get("epoch_time_s", 0.0)))
        self._epochs[trial.trial_id] = int(result.get("epoch", 0))
        self._planned[trial.trial_id] = int(trial.config["epochs"])

    def _finished(self, trials, trial, errored: bool) -> None:
        last = trial.last_result or {}
        ended = trial_summary(last, trial.config["epochs"], errored)
        status, final = ended["status"], ended[f"final_{self.metric}"]
        self._planned.setdefault(trial.trial_id, int(trial.config["epochs"]))
        self._ended[trial.trial_id] = {
            **ended, "optimizer": trial.config["optimizer"], "final": final,
            "group": (self.budget.groups or {}).get(config_key(trial.config))}
        self.out(f"{trial.trial_id} {trial.config['optimizer']:7s} {status:13s} {self.metric} "
                 f"{final:.4f}  {_hparams(trial.config, self.searched)}")
        self.out(self._line(trials))
        self._last_beat = self.clock()  # that line was the status line

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finished(trials, trial, errored=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finished(trials, trial, errored=True)

    def on_step_end(self, iteration, trials, **info):
        self._track_idle(trials)
        if self.clock() - self._last_beat >= _HEARTBEAT_S:
            self._last_beat = self.clock()
            self.out(self._line(trials))


def best_table(rows: list[dict], searched: tuple[str, ...]) -> str:
    """Each optimizer's finalist per replicate (trainables.schema.rank_finalists: full
    budget first, then final val_acc) with its hyperparameters; rows: one per search trial
    with `optimizer`, `replicate`, `status`, `epochs_run`, `final_val_acc`, `config`."""
    lines = [f"{'optimizer':9s} {'rep':>3s} {'trials':>6s} {'final val_acc':>13s} {'epochs':>6s}  hyperparameters"]
    sizes = Counter((r["optimizer"], r["replicate"]) for r in rows)
    for (optimizer, replicate), ranked in ranked_by_group(rows, group_of).items():
        trials = sizes[(optimizer, replicate)]
        if not ranked:
            lines.append(f"{optimizer:9s} {replicate:3d} {trials:6d} {'-':>13s} {'-':>6s}  "
                         "(no trial ran to an accuracy)")
            continue
        best = ranked[0]
        lines.append(f"{optimizer:9s} {replicate:3d} {trials:6d} {best['final_val_acc']:13.4f} "
                     f"{best['epochs_run']:6d}  {_hparams(best['config'], searched)}")
    return "\n".join(lines)


def seed_table(rows: list[dict]) -> str:
    """Final test_acc over seeds per optimizer and budget arm (the confirm stage): mean,
    min and max. What the driver prints when the analysis summary cannot be made."""
    lines = [f"{'optimizer':9s} {'arm':13s} {'runs':>4s} {'mean test_acc':>13s} {'min':>7s} {'max':>7s}"]
    for key in dict.fromkeys((r["optimizer"], r["budget_arm"]) for r in rows):
        values = [r["final_test_acc"] for r in rows if (r["optimizer"], r["budget_arm"]) == key]
        lines.append(f"{key[0]:9s} {key[1]:13s} {len(values):4d} {sum(values) / len(values):13.4f} "
                     f"{min(values):7.4f} {max(values):7.4f}")
    return "\n".join(lines)

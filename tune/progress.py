"""Concise progress lines while a sweep runs, and the closing table of best results."""

from __future__ import annotations

import time

from ray.tune import Callback

from trainables.schema import STATUSES, rank_finalists, trial_status

_HEARTBEAT_S = 30.0


def _hparams(config: dict, names) -> str:
    return " ".join(f"{n}={config[n]:.3g}" for n in names if n in config)


class ConciseProgress(Callback):
    """One line per finished trial, and a heartbeat every 30 s (replaces Tune's tables).

    waiting_for: what a trial needs that no node has yet (an autoscaling cluster may add
    it); while trials wait and none runs, every heartbeat says for how long.
    """

    def __init__(self, total: int, searched: tuple[str, ...], metric: str, out=print,
                 waiting_for: str | None = None, clock=time.monotonic):
        self.total = total
        self.metric = metric  # val_acc in the search, test_acc in the confirm stage
        self.searched = searched
        self.out = out
        self.waiting_for = waiting_for
        self.clock = clock
        self._started = clock()
        self._last_beat = self._started
        self._idle_since: float | None = None  # since when trials wait and none runs
        self._ended: dict[str, str] = {}
        self._best: tuple[float, str] | None = None

    def __getstate__(self):
        return {**self.__dict__, "out": print, "clock": time.monotonic}

    def _line(self, trials) -> str:
        running = sum(t.status == "RUNNING" for t in trials)
        counts = {s: list(self._ended.values()).count(s) for s in STATUSES}
        best = f"; best {self.metric} {self._best[0]:.4f} ({self._best[1]})" if self._best else ""
        return (f"[{self.clock() - self._started:6.0f}s] running {running}, finished "
                f"{len(self._ended)}/{self.total} (completed {counts['completed']}, stopped early "
                f"{counts['stopped_early']}, diverged {counts['diverged']}, errors {counts['error']})"
                f"{best}{self._waiting(trials)}")

    def _waiting(self, trials) -> str:
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

    def on_trial_result(self, iteration, trials, trial, result, **info):
        accuracy = result.get(self.metric)
        if accuracy is not None and (self._best is None or accuracy > self._best[0]):
            self._best = (accuracy, f"{trial.config['optimizer']} "
                                    f"{_hparams(trial.config, self.searched)}")

    def _finished(self, trials, trial, errored: bool) -> None:
        self._ended[trial.trial_id] = trial_status(trial.last_result or {}, trial.config["epochs"], errored)
        self.out(f"{trial.trial_id} {trial.config['optimizer']:7s} "
                 f"{self._ended[trial.trial_id]:13s} {self.metric} "
                 f"{(trial.last_result or {}).get(self.metric, float('nan')):.4f}  "
                 f"{_hparams(trial.config, self.searched)}")
        self.out(self._line(trials))
        self._last_beat = self.clock()  # that line was the heartbeat

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
    """Each optimizer's finalist (trainables.schema.rank_finalists: full budget first, then
    final val_acc) with its hyperparameters; rows: one per search trial with `optimizer`,
    `status`, `epochs_run`, `final_val_acc`, `config`."""
    lines = [f"{'optimizer':9s} {'trials':>6s} {'final val_acc':>13s} {'epochs':>6s}  hyperparameters"]
    for optimizer in dict.fromkeys(r["optimizer"] for r in rows):
        mine = [r for r in rows if r["optimizer"] == optimizer]
        ranked = rank_finalists(mine)
        if not ranked:
            lines.append(f"{optimizer:9s} {len(mine):6d} {'-':>13s} {'-':>6s}  (no trial ran to an accuracy)")
            continue
        best = ranked[0]
        lines.append(f"{optimizer:9s} {len(mine):6d} {best['final_val_acc']:13.4f} "
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

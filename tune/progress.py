"""Concise progress lines while a sweep runs, and the closing table of best results."""

from __future__ import annotations

import time

from ray.tune import Callback

from tune.tracking import trial_status

_HEARTBEAT_S = 30.0


def _hparams(config: dict, names) -> str:
    return " ".join(f"{n}={config[n]:.3g}" for n in names if n in config)


class ConciseProgress(Callback):
    """One line per finished trial, and a heartbeat every 30 s (replaces Tune's tables)."""

    def __init__(self, total: int, max_epochs: int, searched: tuple[str, ...], out=print):
        self.total = total
        self.max_epochs = max_epochs
        self.searched = searched
        self.out = out
        self._started = time.monotonic()
        self._last_beat = self._started
        self._ended: dict[str, str] = {}
        self._best: tuple[float, str] | None = None

    def __getstate__(self):
        return {**self.__dict__, "out": print}

    def _line(self, trials) -> str:
        running = sum(t.status == "RUNNING" for t in trials)
        counts = {s: list(self._ended.values()).count(s) for s in
                  ("completed", "stopped_early", "diverged", "error")}
        best = f"; best val_acc {self._best[0]:.4f} ({self._best[1]})" if self._best else ""
        return (f"[{time.monotonic() - self._started:6.0f}s] running {running}, finished "
                f"{len(self._ended)}/{self.total} (completed {counts['completed']}, stopped early "
                f"{counts['stopped_early']}, diverged {counts['diverged']}, errors {counts['error']})"
                f"{best}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        accuracy = result.get("val_acc")
        if accuracy is not None and (self._best is None or accuracy > self._best[0]):
            self._best = (accuracy, f"{trial.config['optimizer']} "
                                    f"{_hparams(trial.config, self.searched)}")

    def _finished(self, trials, trial, errored: bool) -> None:
        self._ended[trial.trial_id] = trial_status(trial.last_result or {}, self.max_epochs, errored)
        self.out(f"{trial.trial_id} {trial.config['optimizer']:7s} "
                 f"{self._ended[trial.trial_id]:13s} val_acc "
                 f"{(trial.last_result or {}).get('val_acc', float('nan')):.4f}  "
                 f"{_hparams(trial.config, self.searched)}")
        self.out(self._line(trials))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finished(trials, trial, errored=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finished(trials, trial, errored=True)

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self._last_beat >= _HEARTBEAT_S:
            self._last_beat = time.monotonic()
            self.out(self._line(trials))


def best_table(rows: list[dict], searched: tuple[str, ...]) -> str:
    """Best val_acc per optimizer with its hyperparameters; rows: one per trial with
    `optimizer`, `best_val_acc`, `best_epoch`, `status`, `config`."""
    lines = [f"{'optimizer':9s} {'trials':>6s} {'best val_acc':>12s} {'epoch':>5s}  hyperparameters"]
    for optimizer in dict.fromkeys(r["optimizer"] for r in rows):
        mine = [r for r in rows if r["optimizer"] == optimizer]
        scored = [r for r in mine if r["best_val_acc"] == r["best_val_acc"]]  # drop NaN
        if not scored:
            lines.append(f"{optimizer:9s} {len(mine):6d} {'-':>12s} {'-':>5s}  (no finished epoch)")
            continue
        best = max(scored, key=lambda r: r["best_val_acc"])
        lines.append(f"{optimizer:9s} {len(mine):6d} {best['best_val_acc']:12.4f} "
                     f"{best['best_epoch']:5d}  {_hparams(best['config'], searched)}")
    return "\n".join(lines)


def seed_table(rows: list[dict]) -> str:
    """Final val_acc over seeds per optimizer (the confirm stage): mean, min and max."""
    lines = [f"{'optimizer':9s} {'runs':>4s} {'mean val_acc':>12s} {'min':>7s} {'max':>7s}"]
    for optimizer in dict.fromkeys(r["optimizer"] for r in rows):
        values = [r["final_val_acc"] for r in rows if r["optimizer"] == optimizer]
        lines.append(f"{optimizer:9s} {len(values):4d} {sum(values) / len(values):12.4f} "
                     f"{min(values):7.4f} {max(values):7.4f}")
    return "\n".join(lines)

"""A sweep's results as tidy frames, whichever source they were read from
(analysis.load_mlflow, analysis.load_storage): the `Sweep` and its columns.


- `trials`: one row per trial of both stages (search, confirm): ids, stage, budget_arm
  (a confirm run's arm, trainables.schema.BUDGET_ARMS; None for search trials),
  optimizer, status (completed | stopped_early | diverged | error, or running for a live
  sweep), every `TrialConfig` value as a column (defaults filled in), final and best
  val_acc, the best epoch, final test_acc and test_loss (confirm runs only: search trials
  never evaluate test), the mean per-epoch perturbation_norm (the ascent radius a
  SAM-family trial actually used; NaN for 1-pass optimizers), epochs run, training
  seconds (the sum of `epoch_time_s`, so start-up and evaluation gaps between epochs are
  not counted), cumulative gradient evaluations and compute hours = seconds / 3600 x the
  GPUs (or, with none, the CPUs) a trial held (the space's resources per trial: unknown,
  NaN, for Ray storage without the space.json a sweep writes there).
- `epochs`: one row per trial and epoch with every metric of trainables.schema.METRICS
  (NaN where the trial did not report it).

A trial that failed before its first epoch has a row in `trials` (NaN accuracies, zero
hours) and none in `epochs`.
"""


from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from trainables.catalog import all_hparams, get_base, list_bases
from trainables.config import TrialConfig
from trainables.record import SEARCH, STAGES, UNKNOWN_UNIT, TrialRecord, compute_unit
from trainables.schema import FLATNESS_METRICS, LOSS_PROFILE, METRICS, TEST_CORRECT, final_metrics

# search_spaces (torch, through the registries) is imported where it is used: a notebook
# that only reads storage, or a command line that fails on a bad name, need not wait for it.
if TYPE_CHECKING:
    from search_spaces.space import SearchSpace

_SETTINGS = TrialConfig.settings()  # name -> (type: "int", "float", ..., default)
CONFIG_FIELDS = tuple(_SETTINGS)
TRIAL_DEFAULTS = {name: default for name, (_, default) in _SETTINGS.items()}
FIELD_TYPES = {name: kind for name, (kind, _) in _SETTINGS.items()}

# A trial's record (trainables.record.TrialRecord), its MLflow run and when it started.
KEY_COLUMNS = ["run_id", *TrialRecord.columns(), "start_time"]
RESULT_COLUMNS = ["epochs_run", "final_val_acc", "best_val_acc", "best_epoch", "final_test_acc",
                  "final_test_loss", "perturbation_norm", "train_seconds", "grad_evals",
                  "compute_hours", "compute_unit", *FLATNESS_METRICS]
# A confirm run's loss profile (trainables.flatness): ((t, loss), ...), and which test
# examples it got right at its end (a boolean numpy array), or None.
TRIAL_COLUMNS = (KEY_COLUMNS + [f for f in CONFIG_FIELDS if f not in KEY_COLUMNS] + RESULT_COLUMNS
                 + [LOSS_PROFILE, TEST_CORRECT])
# An epoch row: its trial's keys, then every metric.
_EPOCH_KEYS = ("run_id", "trial_id", "stage", "optimizer", "seed")
EPOCH_COLUMNS = [*_EPOCH_KEYS, *METRICS]
# Never treated as searched, even when they vary between trials.
_NOT_SEARCHED = {"seed", "epochs", "optimizer"}
# The record's columns that may be missing: text (None where a trial has none) and counts
# (pandas' nullable integers).
_TEXT_KEYS = tuple(f.name for f in dataclasses.fields(TrialRecord) if f.type == "str | None")
_COUNT_KEYS = tuple(f.name for f in dataclasses.fields(TrialRecord) if f.type == "int | None")


@dataclass(frozen=True)
class Provenance:
    """Where a sweep came from, as the report's header shows it (None: not recorded)."""

    source: str = ""                     # where it was loaded from
    space: str | None = None             # the space's name
    git_commit: str | None = None
    command: str | None = None
    started: pd.Timestamp | None = None  # UTC
    sweep_path: str | None = None        # its Ray experiment folder
    parent_run_id: str | None = None     # its MLflow parent run
    dataset: str | None = None
    model: str | None = None
    test_reads: int | None = None        # earlier sweeps in its store that confirmed on this test split


@dataclass
class Sweep:
    """One sweep's results as tidy frames (see the module docstring for the columns) and
    its provenance (`meta`)."""

    name: str
    trials: pd.DataFrame
    epochs: pd.DataFrame
    space: SearchSpace | None = None
    meta: Provenance = field(default_factory=Provenance)

    def stage(self, stage: str) -> pd.DataFrame:
        """The trials of one stage (trainables.record.STAGES)."""
        return self.trials[self.trials["stage"] == stage]

    @property
    def optimizers(self) -> list[str]:
        """Optimizer names in the space's order, else in order of appearance."""
        seen = list(dict.fromkeys(self.trials["optimizer"]))
        if self.space is None:
            return seen
        return [o for o in self.space.optimizers if o in seen] + [
            o for o in seen if o not in self.space.optimizers]

    def searched_params(self, optimizer: str) -> list[str]:
        """The hyperparameters searched for one optimizer, in `in_param_order`: from the
        space, or (without one) the numeric settings that vary between its search trials."""
        if self.space is not None and optimizer in self.space.optimizers:
            names = list(self.space.distributions_for(optimizer))
        else:
            trials = self.stage(SEARCH)
            trials = trials[trials["optimizer"] == optimizer]
            names = [name for name in TRIAL_DEFAULTS if name not in _NOT_SEARCHED
                     and pd.api.types.is_numeric_dtype(trials[name])
                     and not pd.api.types.is_bool_dtype(trials[name]) and trials[name].nunique() > 1]
        return in_param_order(names)


def in_param_order(names) -> list[str]:
    """`names` in the order figures and tables show hyperparameters: the learning rate, the
    SAM variants' own (in registration order), the base optimizers' others, the other
    trial settings (in TrialConfig's order), then any unknown name."""
    of_bases = {h.name for b in list_bases() for h in get_base(b).hparams}
    registered = list(all_hparams())  # the bases', then the variants'
    order = ["lr", *(n for n in registered if n not in of_bases), *registered, *CONFIG_FIELDS]
    rank = {}
    for name in order:
        rank.setdefault(name, len(rank))
    return sorted(names, key=lambda n: rank.get(n, len(rank)))


def _typed(name: str, value):
    """A config value in its TrialConfig type (MLflow stores params as strings)."""
    kind = FIELD_TYPES.get(name)
    if not isinstance(value, str) or kind == "str":
        return value
    if kind == "bool":
        return value.lower() == "true"
    if kind == "int":
        return int(float(value))
    try:
        return float(value)
    except ValueError:
        return value


def resolved_config(config: dict) -> dict:
    """A trial config with TrialConfig's defaults filled in and values typed (what the
    trial ran with: MLflow logs this, Ray's params.json only what the searcher set)."""
    return {**TRIAL_DEFAULTS, **{k: _typed(k, v) for k, v in config.items()}}


def epoch_frame(rows: list[dict]) -> pd.DataFrame:
    """One trial's epochs, one row each, in order; an epoch reported twice (after a
    restart) counts once, as MLflow logs it once."""
    frame = pd.DataFrame(rows, columns=list(METRICS), dtype=float)
    # A missing or infinite epoch number (a malformed result.json) is no epoch.
    frame = frame[frame["epoch"].abs() < math.inf].drop_duplicates("epoch", keep="first")
    frame["epoch"] = frame["epoch"].astype(int)
    return frame.sort_values("epoch").reset_index(drop=True)


def _summary(epochs: pd.DataFrame) -> dict:
    """Final and best val_acc, best epoch, final test_acc and test_loss, mean
    perturbation_norm, epochs run, seconds, gradient evaluations and the flatness
    diagnostics."""
    if epochs.empty:
        return {"epochs_run": 0, "final_val_acc": math.nan, "best_val_acc": math.nan,
                "best_epoch": 0, "final_test_acc": math.nan, "final_test_loss": math.nan,
                "perturbation_norm": math.nan, "train_seconds": 0.0, "grad_evals": 0.0,
                **dict.fromkeys(FLATNESS_METRICS, math.nan)}
    val = epochs["val_acc"]
    best = val.idxmax() if val.notna().any() else None
    last = epochs.iloc[-1]  # epochs are in order: the trial's last result
    # The verdict reads the last epoch, never the best one: picking the best of many
    # evaluations of the test split would bias it upwards.
    return {**final_metrics(last.to_dict()),
            "best_val_acc": float(val[best]) if best is not None else math.nan,
            "best_epoch": int(epochs["epoch"][best]) if best is not None else 0,
            "final_test_loss": float(last["test_loss"]),
            "perturbation_norm": float(epochs["perturbation_norm"].mean()),  # NaN if never reported
            "train_seconds": float(epochs["epoch_time_s"].fillna(0).sum()),
            "grad_evals": float(last["grad_evals"]),
            # Measured once, after the last epoch of a confirm run (NaN elsewhere).
            **{name: float(last[name]) for name in FLATNESS_METRICS}}


def trial_row(record: TrialRecord, config: dict, epochs: pd.DataFrame, space: SearchSpace | None,
              run_id: str | None = None, start_time=None) -> dict:
    """One row of the trials frame: the trial's record, run and start, the settings it ran
    with, the summary of its epochs and its compute (the GPUs, or else the CPUs, its space
    gave a trial x its training seconds; unknown without the space)."""
    unit, units = (compute_unit(space.cpus_per_trial, space.gpus_per_trial) if space is not None
                   else (UNKNOWN_UNIT, math.nan))
    keys = {"run_id": run_id, **dataclasses.asdict(record), "start_time": start_time}
    summary = _summary(epochs)
    return {**keys, **{k: v for k, v in config.items() if k not in keys}, **summary,
            "compute_hours": summary["train_seconds"] / 3600 * units, "compute_unit": unit}


def frames(rows: list[dict], epoch_frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The trials and epochs frames, with the promised columns in order."""
    trials = pd.DataFrame(rows)
    for column in TRIAL_COLUMNS:
        if column not in trials:
            trials[column] = pd.Series([None] * len(trials), dtype=object)
    extra = [c for c in trials.columns if c not in TRIAL_COLUMNS]
    trials = trials[TRIAL_COLUMNS + extra]
    for column in _COUNT_KEYS:
        trials[column] = pd.to_numeric(trials[column]).astype("Int64")
    # pandas turns a missing string into NaN: a search trial's arm and links are None, as promised.
    for column in _TEXT_KEYS:
        trials[column] = trials[column].astype(object).where(trials[column].notna(), None)
    trials["start_time"] = pd.to_datetime(trials["start_time"], utc=True)
    trials["stage"] = pd.Categorical(trials["stage"], categories=STAGES)
    trials = trials.sort_values(["stage", "start_time", "trial_id"], kind="stable")
    trials["stage"] = trials["stage"].astype(str)
    trials = trials.reset_index(drop=True)
    epochs = (pd.concat(epoch_frames, ignore_index=True) if epoch_frames
              else pd.DataFrame(columns=EPOCH_COLUMNS))
    epochs = epochs[EPOCH_COLUMNS].sort_values(["stage", "trial_id", "epoch"], kind="stable")
    return trials, epochs.reset_index(drop=True)


def with_trial_keys(epochs: pd.DataFrame, row: dict) -> pd.DataFrame:
    """A trial's epochs with the keys of its trials-frame row."""
    keyed = epochs.copy()
    for column in _EPOCH_KEYS:
        keyed[column] = row.get(column)
    return keyed

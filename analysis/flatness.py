"""The flatness diagnostics of the confirm runs (trainables.flatness, measured after each
run's last epoch), per optimizer: what the report's Flatness section and the console
summary show, and the warnings on values whose own error is too large to read.

The runs compared are the equal-epochs arm's (every optimizer at the space's epochs) at
each optimizer's best configuration (confirm_rank 1: a sweep that confirms K > 1
configurations does not count the others as seeds). Each measure's mean comes with its
95% t interval over seeds or, where the runs come from several independent replicates of
the whole search (a `replicate` column with more than one value), over the replicates'
means (each replicate's mean over its seeds, R - 1 degrees of freedom): the seeds of one
replicate share its configuration, so they are not independent draws of the search.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import stats
from analysis.sweep import Sweep
from analysis.text import label, num
from trainables.record import CONFIRM
from trainables.schema import EQUAL_EPOCHS

REPLICATE = "replicate"  # the trials frame's column of a replicate of the whole search, if any


@dataclass(frozen=True)
class Measure:
    """How a flatness metric is shown: its name on the page, whether a function-preserving
    rescaling of the weights leaves it as it is, and a run's own error of it."""

    label: str
    invariant: bool
    error: str | None = None  # the metric of a run's own error of the value
    error_label: str = ""  # how that error is named beside the value
    limit: float | None = None  # a run's value is rough where its error exceeds limit * |value|
    setting: str = ""  # the TrialConfig setting that lowers the error


# The measures shown, in order: the invariant ones first (on a quickstart res20s, conv weights
# x2 with BatchNorm following moved the top eigenvalue from 66.7 to 20.0 and worst-case
# sharpness from 0.151 to 0.073, and left these two as they were). The limits on a run's own
# error (issue 19): Lanczos' residual bound 10% of the eigenvalue (3 steps gave 88% of the
# converged value, residual 32%), Hutchinson's SE 30% of the trace (2 probes gave 27 +- 15,
# 16 probes 127 +- 32).
MEASURES = {
    "sharpness_adaptive_worst": Measure("adaptive worst-case sharpness", True),
    "sharpness_adaptive_average": Measure("adaptive average-case sharpness", True,
                                          "sharpness_adaptive_average_se", "SE"),
    "hessian_top_eig": Measure("top Hessian eigenvalue", False, "hessian_top_eig_residual", "Lanczos residual",
                               0.10, "flatness_lanczos_steps"),
    "hessian_trace": Measure("Hessian trace", False, "hessian_trace_se", "SE", 0.30, "flatness_probes"),
    "sharpness_worst": Measure("worst-case sharpness", False),
}
NOT_INVARIANT = "not invariant to rescaling"  # how the page labels the measures that rescaling moves


def measure_name(measure: str) -> str:
    """A measure's name on the page, labelled where rescaling the weights moves it."""
    shown = MEASURES[measure]
    return shown.label if shown.invariant else f"{shown.label} ({NOT_INVARIANT})"


def flatness_runs(sweep: Sweep) -> pd.DataFrame:
    """The equal-epochs confirm runs of each optimizer's rank-1 configuration that measured
    flatness, in the sweep's optimizer order."""
    confirm = sweep.stage(CONFIRM)
    runs = confirm[(confirm["budget_arm"] == EQUAL_EPOCHS) & (confirm["confirm_rank"].fillna(1) == 1)
                   & confirm["hessian_top_eig"].notna()]
    order = {o: i for i, o in enumerate(sweep.optimizers)}
    return runs.sort_values("optimizer", key=lambda s: s.map(order), kind="stable")


def replicated(runs: pd.DataFrame) -> bool:
    """Whether `runs` come from more than one replicate of the whole search."""
    return REPLICATE in runs and runs[REPLICATE].nunique(dropna=False) > 1


def _units(runs: pd.DataFrame, measure: str) -> np.ndarray:
    """The independent values of `measure` an interval is over: each replicate's mean over
    its runs where the runs are `replicated`, else each run's value."""
    values = runs[measure].dropna()
    if replicated(runs):
        values = values.groupby(runs.loc[values.index, REPLICATE], dropna=False).mean()
    return values.to_numpy(dtype=float)


def units_text(summary: pd.DataFrame) -> str:
    """What a flatness_summary's means and intervals are over, in words."""
    return "the replicates' means (each over its seeds)" if (summary["replicates"] > 1).any() else "seeds"


def rough_runs(runs: pd.DataFrame, measure: str) -> pd.Series:
    """Per run, whether its own error of `measure` exceeds the measure's limit (False for a
    measure without one, or a run without the error)."""
    shown = MEASURES[measure]
    if shown.limit is None or shown.error not in runs:
        return pd.Series(False, index=runs.index)
    return runs[shown.error] > shown.limit * runs[measure].abs()


def rough_rule() -> str:
    """When a run's value of a measure is rough, and what to raise, in words."""
    return "; ".join(f"a run's {m.error_label} above {m.limit:.0%} of its {m.label} (raise {m.setting})"
                     for m in MEASURES.values() if m.limit is not None)


def flatness_summary(sweep: Sweep, confidence: float = 0.95) -> pd.DataFrame:
    """Per optimizer: runs (n), replicates, and each measure's mean and t interval
    (MEASURE_mean, MEASURE_low, MEASURE_high; see the module docstring), the largest
    error of a run (MEASURE_error, for measures with one) and how many runs' errors
    exceed the measure's limit (MEASURE_rough); empty without diagnostics."""
    rows = []
    for optimizer, runs in flatness_runs(sweep).groupby("optimizer", sort=False):
        row = {"optimizer": optimizer, "n": len(runs),
               "replicates": runs[REPLICATE].nunique(dropna=False) if replicated(runs) else 1}
        for measure, shown in MEASURES.items():
            values = _units(runs, measure)
            low, high = stats.t_interval(values, confidence)
            row.update({f"{measure}_mean": values.mean() if len(values) else float("nan"),
                        f"{measure}_low": low, f"{measure}_high": high,
                        f"{measure}_rough": int(rough_runs(runs, measure).sum())})
            if shown.error is not None:
                row[f"{measure}_error"] = runs[shown.error].max()
        rows.append(row)
    return pd.DataFrame(rows)


def error_text(row: dict, measure: str) -> str:
    """What stands beside an optimizer's value of `measure` (a flatness_summary row): the
    largest error of its runs, and `rough` where some runs' errors exceed the limit."""
    shown = MEASURES[measure]
    if shown.error is None:
        return ""
    rough = row[f"{measure}_rough"]
    return f"{shown.error_label} <= {num(row[f'{measure}_error'], '.2g')}" + (
        f", rough in {rough} of {row['n']} runs" if rough else "")


def flatness_warnings(sweep: Sweep) -> list[str]:
    """One line per measure whose own error exceeds its limit in some runs (the Lanczos
    residual above 10% of the top eigenvalue, the trace's SE above 30% of the trace): how
    many runs of which optimizer, how far, and which setting to raise."""
    runs = flatness_runs(sweep)
    lines = []
    for measure, shown in MEASURES.items():
        rough = rough_runs(runs, measure)
        if not rough.any():
            continue
        counts = [f"{int(r.sum())} of {len(r)} {label(o)} runs"
                  for o, r in rough.groupby(runs["optimizer"], sort=False) if r.any()]
        worst = (runs[shown.error] / runs[measure].abs())[rough].max()
        now = ", ".join(num(v) for v in sorted(runs.loc[rough, shown.setting].dropna().unique()))
        lines.append(f"flatness: the {shown.error_label} of the {shown.label} exceeds {shown.limit:.0%} of it "
                     f"in {', '.join(counts)} (up to {worst:.0%}): those values are rough; raise "
                     f"{shown.setting}" + (f" (now {now})" if now else ""))
    return lines

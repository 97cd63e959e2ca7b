"""Words and number formats that the report, the console summary and the warnings share,
so that a number reads the same on the page and in the terminal.

Plain Python and pandas only (no plotting), so the console summary imports it cheaply.
"""

from __future__ import annotations

import pandas as pd

from trainables.catalog import all_hparams, epochs_factor
from trainables.catalog import optimizer_label as label  # the report's name for it
from trainables.schema import EQUAL_COMPUTE, EQUAL_EPOCHS, count

# How each confirm-stage arm is named in headings and summaries.
ARM_TITLES = {EQUAL_EPOCHS: "at equal epochs", EQUAL_COMPUTE: "at equal gradient evaluations"}
DASH = "–"  # what a missing number shows


def param_label(name: str) -> str:
    """How axes and tables name a hyperparameter: its registry label (the name if none)."""
    hparam = all_hparams().get(name)
    return hparam.label if hparam is not None and hparam.label else name


def run_label(optimizer: str, arm: str | None, optimizers) -> str:
    """An optimizer's label, marked when its runs are the equal-compute arm's longer ones
    with how many times the epochs they ran (trainables.catalog.epochs_factor: the most
    passes per step among the sweep's `optimizers` over the optimizer's)."""
    if arm != EQUAL_COMPUTE:
        return label(optimizer)
    try:
        return f"{label(optimizer)} ({epochs_factor(optimizer, optimizers)}x epochs)"
    except ValueError:  # an optimizer no longer registered
        return f"{label(optimizer)} (longer runs)"


def missing(x) -> bool:
    """Whether a number is absent (None or NaN)."""
    return x is None or pd.isna(x)


def pct(x: float, digits: int = 1) -> str:
    """A fraction as a percentage: 0.9123 -> "91.2%"."""
    return DASH if missing(x) else f"{100 * x:.{digits}f}%"


def num(x: float, fmt: str = ".3g") -> str:
    """A number in `fmt`, or a dash where it is missing."""
    return DASH if missing(x) else format(x, fmt)


def pct_interval(low: float, high: float) -> str:
    """An interval of fractions in percent: "[90.1%, 92.3%]"."""
    return f"[{pct(low)}, {pct(high)}]"


def points(x: float) -> str:
    """A difference of fractions in accuracy points, signed: 0.004 -> "+0.40 pts"."""
    return DASH if missing(x) else f"{100 * x:+.2f} pts"


def points_interval(low: float, high: float) -> str:
    """An interval of differences in points: "[-0.20, +0.99] pts"."""
    return f"[{num(100 * low, '+.2f')}, {num(100 * high, '+.2f')}] pts"


def wins_text(wins: int, ties: int, n: int) -> str:
    """Matched seeds won, with ties counted apart: "wins 3 of 5 (1 tie)"."""
    tied = f" ({count(ties, 'tie')})" if ties else ""
    return f"wins {wins} of {n}{tied}"


# Compute shown in the unit that reads: seconds below 2 minutes, minutes below 2 hours.
_COMPUTE_SCALES = ((2 / 60, 3600, "seconds"), (2.0, 60, "minutes"), (float("inf"), 1, "hours"))


def compute_scale(hours: float) -> tuple[float, str]:
    """(factor from hours, unit name) that reads for an amount of `hours`."""
    hours = 0.0 if missing(hours) else hours  # a scale for an axis without data
    return next((factor, name) for below, factor, name in _COMPUTE_SCALES if hours < below)


def compute_text(hours: float, unit: str) -> str:
    """Compute in the unit that reads: "42 CPU-seconds", "3.5 GPU-minutes", "12 GPU-hours"
    (a dash where it is missing)."""
    if missing(hours):
        return DASH
    factor, name = compute_scale(hours)
    return f"{num(hours * factor, '.3g')} {unit}-{name}"

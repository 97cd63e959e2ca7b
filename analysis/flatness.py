"""The flatness diagnostics of the confirm runs (trainables.flatness, measured after each
run's last epoch), per optimizer: what the report's Flatness section shows.

The runs compared are the equal-epochs arm's (every optimizer at the space's epochs), one
value per seed; each measure's mean comes with its 95% t interval over seeds.
"""

from __future__ import annotations

import pandas as pd

from analysis import stats
from analysis.load import Sweep
from trainables.schema import EQUAL_EPOCHS

# The measures shown, in order, and how the page names them.
MEASURES = {"hessian_top_eig": "top Hessian eigenvalue", "hessian_trace": "Hessian trace",
            "sharpness_worst": "worst-case sharpness",
            "sharpness_adaptive_worst": "adaptive worst-case sharpness",
            "sharpness_average": "average-case sharpness"}


def flatness_runs(sweep: Sweep) -> pd.DataFrame:
    """The equal-epochs confirm runs that measured flatness, in the sweep's optimizer order."""
    confirm = sweep.stage("confirm")
    runs = confirm[(confirm["budget_arm"] == EQUAL_EPOCHS) & confirm["hessian_top_eig"].notna()]
    order = {o: i for i, o in enumerate(sweep.optimizers)}
    return runs.sort_values("optimizer", key=lambda s: s.map(order), kind="stable")


def flatness_summary(sweep: Sweep, confidence: float = 0.95) -> pd.DataFrame:
    """Per optimizer: runs (n), and each measure's mean and t interval (MEASURE_mean,
    MEASURE_low, MEASURE_high); empty without diagnostics."""
    rows = []
    for optimizer, runs in flatness_runs(sweep).groupby("optimizer", sort=False):
        row = {"optimizer": optimizer, "n": len(runs)}
        for measure in MEASURES:
            values = runs[measure].dropna().to_numpy(dtype=float)
            low, high = stats.t_interval(values, confidence)
            row.update({f"{measure}_mean": values.mean() if len(values) else float("nan"),
                        f"{measure}_low": low, f"{measure}_high": high})
        rows.append(row)
    return pd.DataFrame(rows)

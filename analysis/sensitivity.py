"""How forgiving each optimizer is to tune: which quantities its search trials' accuracy
is read against, and the "good region" of each, the values within a margin of its best.

Pure functions of a `Sweep` (no plotting): the sensitivity figure (analysis.figures) and
its tables (analysis.tables) read them.
"""

from __future__ import annotations

import pandas as pd

from analysis.sweep import Sweep
from trainables.record import SEARCH

GOOD_MARGIN = 0.01  # "good region": within 1 accuracy point of the optimizer's best trial
# Accuracy is plotted against these: alpha as searched, and the ascent radius each trial
# actually used (mean ||e||) rather than rho, which means a different radius for ASAM
# (scaled by |w| + eta) than for SAM.
SENSITIVITY_PARAMS = ("perturbation_norm", "alpha")
# Measured per trial (trials frame), not searched: name -> axis title.
MEASURED = {"perturbation_norm": "perturbation radius used (mean ||e|| per step)"}


def has_values(sweep: Sweep, search: pd.DataFrame, optimizer: str, param: str) -> bool:
    """Whether an optimizer's search trials have values of `param` to plot: measured
    (MEASURED: perturbation_norm, the SAM family's) or searched."""
    if param in MEASURED:
        return bool(search.loc[search["optimizer"] == optimizer, param].notna().any())
    return param in sweep.searched_params(optimizer)


def good_region(sweep: Sweep, param: str, margin: float = GOOD_MARGIN) -> pd.DataFrame:
    """Per optimizer whose search trials have `param` (searched, or perturbation_norm):
    how many search trials came within `margin` of its best final val accuracy, the range
    of `param` they span, and the range over all its trials."""
    search = sweep.stage(SEARCH).dropna(subset=["final_val_acc", param])
    rows = []
    for optimizer in sweep.optimizers:
        mine = search[search["optimizer"] == optimizer]
        if mine.empty or not has_values(sweep, search, optimizer, param):
            continue
        good = mine[mine["final_val_acc"] >= mine["final_val_acc"].max() - margin]
        rows.append({"optimizer": optimizer, "trials": len(mine), "good": len(good),
                     "low": good[param].min(), "high": good[param].max(),
                     "tried_low": mine[param].min(), "tried_high": mine[param].max()})
    return pd.DataFrame(rows, columns=["optimizer", "trials", "good", "low", "high",
                                       "tried_low", "tried_high"])

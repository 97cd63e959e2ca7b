"""Whether ASHA's early decisions predict the final ones.

ASHA stops a search trial at a rung (grace_period x reduction_factor^k epochs) on its
val accuracy there. That is only sound if the accuracy at the rung ranks trials as their
final accuracy would: on a schedule that anneals late (a cosine's second half, a step
schedule's first decay) an early rung can rank the high learning rates last. Per
optimizer and rung, over the search trials that ran the full budget (the only ones with
a final accuracy; all replicates pooled), the Spearman rank correlation of the two.
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from analysis.sweep import Sweep
from analysis.text import label
from trainables.record import SEARCH
from trainables.schema import COMPLETED

# Fewer completed trials than this give no correlation worth reading.
MIN_TRIALS = 5
# Below this, a rung's ranking says little about the final one: the warning's threshold.
WARN_BELOW = 0.5
COLUMNS = ["optimizer", "rung", "trials", "spearman"]


def rung_epochs(space) -> list[int]:
    """The epochs at which ASHA decides: grace_period x reduction_factor^k below max_epochs
    (Ray's ASHA: rungs at grace x rf^k, up to max_t, the last being no decision)."""
    rungs, epoch = [], space.grace_period
    while epoch < space.max_epochs:
        rungs.append(int(round(epoch)))
        epoch *= space.reduction_factor
    return rungs


def rung_correlations(sweep: Sweep) -> pd.DataFrame:
    """Per optimizer and rung: the completed search trials and the Spearman correlation of
    their val accuracy at the rung with their final one (NaN below MIN_TRIALS). Empty
    without the space (its rungs) or without completed trials."""
    if sweep.space is None:
        return pd.DataFrame(columns=COLUMNS)
    search = sweep.stage(SEARCH)
    done = search[search["status"] == COMPLETED]
    epochs = sweep.epochs[sweep.epochs["stage"] == SEARCH].set_index(["trial_id", "epoch"])["val_acc"]
    rows = []
    for optimizer in sweep.optimizers:
        trials = done[done["optimizer"] == optimizer]
        for rung in rung_epochs(sweep.space):
            keys = [(t, rung) for t in trials["trial_id"] if (t, rung) in epochs.index]
            at_rung = epochs.loc[keys].to_numpy(dtype=float)
            final = trials.set_index("trial_id").loc[[t for t, _ in keys], "final_val_acc"].to_numpy(dtype=float)
            rows.append({"optimizer": optimizer, "rung": rung, "trials": len(keys),
                         "spearman": _spearman(at_rung, final)})
    return pd.DataFrame(rows, columns=COLUMNS)


def _spearman(x, y) -> float:
    """Spearman's rho (scipy), NaN below MIN_TRIALS or where either side is constant."""
    if len(x) < MIN_TRIALS or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def rung_warnings(sweep: Sweep) -> list[str]:
    """One line naming, per rung, the optimizers whose ranking there correlates below
    WARN_BELOW with the final one (with their correlation and completed trials)."""
    table = rung_correlations(sweep)
    weak = table[table["spearman"] < WARN_BELOW]
    return [f"ASHA's rung at epoch {rung} ranks the completed search trials unlike their final val "
            f"accuracy (Spearman below {WARN_BELOW}: "
            + ", ".join(f"{label(r.optimizer)} {r.spearman:.2f} over {r.trials}" for r in rows.itertuples())
            + "): early stopping there may drop the configurations that end best; raise grace_period "
            "past the schedule's annealing" for rung, rows in weak.groupby("rung", sort=True)]

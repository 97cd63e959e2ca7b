"""What several parts of one report read, the comparison and the fANOVA importances, each
computed once per report and handed to every figure (analysis.figures) and table
(analysis.tables) that needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from analysis import importance, verdict
from analysis.minimums import MIN_IMPORTANCE_TRIALS
from analysis.sweep import Sweep


# Frozen: a cached result stays valid only while the sweep and min_trials it came from do.
# eq=False: compared and hashed by identity (a Sweep's frames are neither comparable nor
# hashable as values).
@dataclass(frozen=True, eq=False)
class ReportInputs:
    """A sweep and the results its report shares between sections, each computed at most
    once, on first use: a notebook that draws one figure pays for that figure's inputs only.

    min_trials: the finished search trials an optimizer needs for a fANOVA estimate.
    """

    sweep: Sweep
    min_trials: int = MIN_IMPORTANCE_TRIALS

    @cached_property
    def comparison(self) -> verdict.Comparison:
        """The verdict (analysis.verdict.comparison): the comparison's figure and tables,
        the learning curves (its `compared_runs`) and the warnings read it."""
        return verdict.comparison(self.sweep)

    @cached_property
    def importances(self) -> dict:
        """fANOVA importances per optimizer, or why there are none
        (analysis.importance.param_importances): the figure and the notes below it."""
        return importance.param_importances(self.sweep, self.min_trials)

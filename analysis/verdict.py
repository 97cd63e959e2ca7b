"""What the verdict rests on, without plotting: which confirm runs are compared in each
budget arm, the per-optimizer intervals and the paired tests (Holm-corrected across every
test the report prints), each optimizer's best configuration, and the search's finalists.

The verdict is the final-epoch test accuracy of the confirm runs (trainables.schema's
VERDICT_METRIC), compared twice: at equal epochs, and at equal gradient evaluations,
where the 1-pass optimizers (adam, adamw, sgd) ran twice the epochs with the learning rate
tuned at 1x and the SAM family (two passes per step) keeps its equal-epochs runs. The
report (analysis.report) and the console summary (analysis.summary) both read it here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from analysis import stats
from analysis.load import TRIAL_DEFAULTS, Sweep
from analysis.text import label, run_label
from trainables.schema import (BUDGET_ARMS, EQUAL_COMPUTE, EQUAL_EPOCHS, UNFINISHED, VERDICT_METRIC,
                               rank_finalists)

SAM_REFERENCE = "sam"
RESULT_COLUMNS = ["optimizer", "seed", VERDICT_METRIC, "budget_arm", "trial_id", "source_trial_id"]


def base_optimizer(sweep: Sweep) -> str:
    """The base optimizer the SAM family wraps (the space's fixed `base`, else adam)."""
    if sweep.space is not None:
        return sweep.space.fixed.get("base", TRIAL_DEFAULTS["base"])
    bases = sweep.trials["base"].dropna()
    return bases.mode().iloc[0] if len(bases) else TRIAL_DEFAULTS["base"]


def confirm_arms(sweep: Sweep) -> list[str]:
    """The budget arms the confirm stage ran, in BUDGET_ARMS order: equal epochs whenever
    there is a confirm stage, equal gradient evaluations only where equal_compute runs exist."""
    present = set(sweep.stage("confirm")["budget_arm"].dropna())
    return [arm for arm in BUDGET_ARMS if arm in present]


def _arm_runs(confirm: pd.DataFrame, arm: str) -> pd.DataFrame:
    """The confirm runs one arm compares: at equal epochs the equal_epochs runs; at equal
    compute each optimizer's equal_compute runs if it has any, else its equal_epochs runs
    (the SAM family's two passes per step already spend the doubled budget)."""
    if arm not in BUDGET_ARMS:
        raise ValueError(f"unknown budget arm {arm!r}; choose from {', '.join(BUDGET_ARMS)}")
    if arm == EQUAL_EPOCHS:
        return confirm[confirm["budget_arm"] == EQUAL_EPOCHS]
    longer = set(confirm.loc[confirm["budget_arm"] == EQUAL_COMPUTE, "optimizer"])
    own_arm = np.where(confirm["optimizer"].isin(longer), EQUAL_COMPUTE, EQUAL_EPOCHS)
    return confirm[confirm["budget_arm"] == own_arm]


def confirm_results(sweep: Sweep, arm: str = EQUAL_EPOCHS) -> tuple[pd.DataFrame, list[str]]:
    """The confirm runs of one budget arm (`_arm_runs`) as the frame analysis.stats
    expects: one row per optimizer and seed with `test_acc`, the run's test accuracy at
    its final epoch (never its best epoch, never val), its budget_arm, trial_id and
    source_trial_id; and notes on the runs left out.

    Only each optimizer's best configuration (confirm_rank 1) is compared, so seeds are
    not mixed with configs. Runs that failed or are unfinished have no final accuracy and
    are left out, with a note: leaving them out flatters the optimizer that failed.
    """
    confirm = _arm_runs(sweep.stage("confirm"), arm)
    notes = []
    if confirm.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS), notes
    ranks = confirm["confirm_rank"]
    if ranks.notna().any() and (ranks > 1).any():
        notes.append(f"Each optimizer is compared at its best configuration (rank 1); the "
                     f"confirm runs of ranks 2 to {int(ranks.max())} are not compared here.")
        confirm = confirm[ranks.fillna(1) == 1]
    failed = confirm[confirm["status"].isin(["error", *UNFINISHED]) | confirm["final_test_acc"].isna()]
    if len(failed):
        runs = ", ".join(f"{run_label(o, a)} seed {s} ({st})" for o, a, s, st in
                         zip(failed["optimizer"], failed["budget_arm"], failed["seed"], failed["status"]))
        notes.append(f"Left out of the comparison, with no final test accuracy: {runs}. A failed "
                     "run counts against its optimizer; read the tables with that in mind.")
    kept = confirm.drop(failed.index).sort_values(["optimizer", "seed", "start_time"])
    repeated = kept.duplicated(["optimizer", "seed"])
    if repeated.any():
        notes.append(f"{int(repeated.sum())} confirm runs repeat an optimizer and seed with "
                     "another configuration; only the first of each is compared.")
        kept = kept[~repeated]
    frame = kept.rename(columns={"final_test_acc": VERDICT_METRIC})
    return frame[RESULT_COLUMNS].reset_index(drop=True), notes


def search_best(sweep: Sweep) -> pd.DataFrame:
    """Each optimizer's finalist among its search trials, by trainables.schema's
    rank_finalists (full-budget trials first, then the final-epoch val accuracy; errors
    and divergences excluded): single runs on val. Rows best first by final val accuracy."""
    search = sweep.stage("sweep")
    rows = []
    for optimizer in sweep.optimizers:
        ranked = rank_finalists(search[search["optimizer"] == optimizer].to_dict("records"))
        rows += ranked[:1]
    if not rows:
        return search.iloc[0:0]
    best = pd.DataFrame(rows, columns=search.columns)
    return best.sort_values("final_val_acc", ascending=False, kind="stable").reset_index(drop=True)


def best_configs(sweep: Sweep, finalists: pd.DataFrame | None = None) -> dict[str, pd.Series]:
    """Each optimizer's best configuration, as one trial row: its confirm stage's rank-1
    configuration (an equal-epochs run, whose epoch counts are the search's) if the
    optimizer was confirmed, else its search finalist (`search_best`, or `finalists`
    where the caller has them already)."""
    confirm = sweep.stage("confirm")
    confirmed = confirm[(confirm["confirm_rank"].fillna(1) == 1) & (confirm["budget_arm"] == EQUAL_EPOCHS)]
    finalists = (search_best(sweep) if finalists is None else finalists).set_index("optimizer", drop=False)
    best = {}
    for optimizer in sweep.optimizers:
        mine = confirmed[confirmed["optimizer"] == optimizer]
        if len(mine):
            best[optimizer] = mine.iloc[0]
        elif optimizer in finalists.index:
            best[optimizer] = finalists.loc[optimizer]
    return best


@dataclass
class ArmComparison:
    """One budget arm: the runs compared (`confirm_results`), the per-optimizer summary
    (stats.summarize_by_optimizer) and the paired tables by reference optimizer, each
    with an `arm` column (the arm of the runs a row compares: equal_compute where either
    side ran the longer runs) and Holm-adjusted across the whole comparison."""

    frame: pd.DataFrame
    summary: pd.DataFrame
    paired: dict = field(default_factory=dict)


@dataclass
class Comparison:
    """The comparison section: per budget arm (equal epochs first), or, without a confirm
    stage, the search's finalists (`search_best`, single runs on val)."""

    arms: dict = field(default_factory=dict)      # budget arm -> ArmComparison
    notes: list = field(default_factory=list)
    search_best: pd.DataFrame | None = None

    @property
    def single_runs(self) -> bool:
        """True without a confirm stage: the search's best only, not evidence."""
        return not self.arms

    @cached_property
    def compared_runs(self) -> pd.DataFrame:
        """Every confirm run that some arm compares (`confirm_results`), once: the
        equal-epochs runs and the 1-pass optimizers' equal-compute runs."""
        frames = [result.frame for result in self.arms.values()]
        if not frames:
            return pd.DataFrame(columns=RESULT_COLUMNS)
        return pd.concat(frames, ignore_index=True).drop_duplicates("trial_id", ignore_index=True)


def comparison(sweep: Sweep, confidence: float = 0.95) -> Comparison:
    """Intervals per optimizer and paired tests against SAM and against the base
    optimizer, in each budget arm the confirm stage ran. Every paired test in every arm
    is one Holm family (stats.holm_across): a pair printed in two tables counts once."""
    arms, notes = {}, []
    for arm in confirm_arms(sweep):
        result, arm_notes = _arm_comparison(sweep, arm, confidence)
        notes += arm_notes
        if len(result.frame):
            arms[arm] = result
    if not arms:
        notes.append("The comparison needs a confirm stage: rerun the best configurations with "
                     "several seeds (launch.py ... --confirm 1 --seeds 5, on this experiment). "
                     "Below: the search's best trial per optimizer, single runs on val: not "
                     "evidence of a difference.")
        return Comparison({}, list(dict.fromkeys(notes)), search_best(sweep))
    adjusted = iter(stats.holm_across([t for r in arms.values() for t in r.paired.values()]))
    for result in arms.values():
        result.paired = {reference: next(adjusted) for reference in result.paired}
    if any(r.summary["small_sample"].any() for r in arms.values()):
        notes.append(f"Fewer than {stats.MIN_SEEDS} seeds: intervals are shown but too wide or "
                     "too unstable to carry a claim, and no difference is called significant.")
    return Comparison(arms, list(dict.fromkeys(notes)))  # each arm may repeat a note


def _arm_comparison(sweep: Sweep, arm: str, confidence: float) -> tuple[ArmComparison, list[str]]:
    frame, notes = confirm_results(sweep, arm)
    if frame.empty:
        return ArmComparison(frame, pd.DataFrame(columns=stats.SUMMARY_COLUMNS)), notes
    summary = stats.summarize_by_optimizer(frame, VERDICT_METRIC, confidence, method="t")
    present = set(frame["optimizer"])
    runs_arm = frame.groupby("optimizer")["budget_arm"].first()
    paired = {}
    for reference in dict.fromkeys([SAM_REFERENCE, base_optimizer(sweep)]):
        if reference not in present:
            notes.append(f"No {label(reference)} in the confirm stage: no comparison against it.")
        elif len(present) > 1:
            table = stats.paired_differences(frame, reference=reference, value=VERDICT_METRIC)
            longer = table["optimizer"].map(runs_arm).eq(EQUAL_COMPUTE) | (runs_arm[reference] == EQUAL_COMPUTE)
            paired[reference] = table.assign(arm=np.where(longer, EQUAL_COMPUTE, EQUAL_EPOCHS))
    return ArmComparison(frame, summary, paired), notes

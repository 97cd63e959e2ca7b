"""What the verdict rests on, without plotting: which confirm runs are compared in each
budget arm, the per-optimizer intervals and the paired comparisons (the primary contrast
alone, every other test in one Holm family), each optimizer's best configuration, and the
search's finalists.

The verdict is the final-epoch test accuracy of the confirm runs (trainables.schema's
VERDICT_METRIC), compared twice: at equal epochs, and at equal gradient evaluations,
where the 1-pass optimizers (adam, adamw, sgd) ran twice the epochs at a learning rate
re-searched for them (tune.retune) and the SAM family (two passes per step) keeps its
equal-epochs runs. Intervals and tests are analysis.stats' hierarchical bootstrap over the
sweep's replicates, seeds and test examples. The report (analysis.report) and the console
summary (analysis.summary) both read it here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from analysis import stats
from analysis.sweep import TRIAL_DEFAULTS, Sweep
from analysis.text import label, run_label
from trainables.record import CONFIRM, SEARCH, group_of, ranked_by_group
from trainables.schema import BUDGET_ARMS, EQUAL_COMPUTE, EQUAL_EPOCHS, ERROR, UNFINISHED, VERDICT_METRIC

SAM_REFERENCE = "sam"
RESULT_COLUMNS = ["optimizer", "replicate", "seed", VERDICT_METRIC, "test_correct", "budget_arm", "status",
                  "trial_id", "source_trial_id"]


def base_optimizer(sweep: Sweep) -> str:
    """The base optimizer the SAM family wraps (the space's fixed `base`, else adam)."""
    if sweep.space is not None:
        return sweep.space.fixed.get("base", TRIAL_DEFAULTS["base"])
    bases = sweep.trials["base"].dropna()
    return bases.mode().iloc[0] if len(bases) else TRIAL_DEFAULTS["base"]


def confirm_arms(sweep: Sweep) -> list[str]:
    """The budget arms the confirm stage ran, in BUDGET_ARMS order: equal epochs whenever
    there is a confirm stage, equal gradient evaluations only where equal_compute runs exist."""
    present = set(sweep.stage(CONFIRM)["budget_arm"].dropna())
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
    expects: one row per optimizer, replicate and seed with `test_acc`, the run's test
    accuracy at its final epoch (never its best epoch, never val), `test_correct` (which
    test examples it got right, or None), its budget_arm, status, trial_id and
    source_trial_id; and notes on the runs left out.

    Only each replicate's best configuration (confirm_rank 1) is compared, so seeds are
    not mixed with configs. Runs that failed or are unfinished have no final accuracy and
    are left out, with a note: leaving them out flatters the optimizer that failed. A
    diverged run counts at the accuracy it ended with (analysis.warnings names it).
    """
    confirm = _arm_runs(sweep.stage(CONFIRM), arm)
    notes = []
    if confirm.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS), notes
    ranks = confirm["confirm_rank"]
    if ranks.notna().any() and (ranks > 1).any():
        notes.append(f"Each optimizer is compared at its best configuration (rank 1); the "
                     f"confirm runs of ranks 2 to {int(ranks.max())} are not compared here.")
        confirm = confirm[ranks.fillna(1) == 1]
    failed = confirm[confirm["status"].isin([ERROR, *UNFINISHED]) | confirm["final_test_acc"].isna()]
    if len(failed):
        runs = ", ".join(f"{run_label(o, a, sweep.optimizers)} seed {s} ({st})" for o, a, s, st in
                         zip(failed["optimizer"], failed["budget_arm"], failed["seed"], failed["status"]))
        notes.append(f"Left out of the comparison, with no final test accuracy: {runs}. A failed "
                     "run counts against its optimizer; read the tables with that in mind.")
    kept = confirm.drop(failed.index).sort_values(["optimizer", "replicate", "seed", "start_time"])
    repeated = kept.duplicated(["optimizer", "replicate", "seed"])
    if repeated.any():
        notes.append(f"{int(repeated.sum())} confirm runs repeat an optimizer and seed with "
                     "another configuration; only the first of each is compared.")
        kept = kept[~repeated]
    frame = kept.rename(columns={"final_test_acc": VERDICT_METRIC})
    return frame[RESULT_COLUMNS].reset_index(drop=True), notes


def search_best(sweep: Sweep) -> pd.DataFrame:
    """Each optimizer's finalist among its search trials in each replicate, by
    trainables.schema's rank_finalists (full-budget trials first, then the final-epoch val
    accuracy; errors and divergences excluded): single runs on val. Rows best first by
    final val accuracy."""
    search = sweep.stage(SEARCH)
    ranked = ranked_by_group(search[search["optimizer"].isin(sweep.optimizers)].to_dict("records"), group_of)
    order = sorted(ranked, key=lambda group: (sweep.optimizers.index(group[0]), group[1]))
    rows = [ranked[group][0] for group in order if ranked[group]]
    if not rows:
        return search.iloc[0:0]
    best = pd.DataFrame(rows, columns=search.columns)
    return best.sort_values("final_val_acc", ascending=False, kind="stable").reset_index(drop=True)


def best_configs(sweep: Sweep, finalists: pd.DataFrame | None = None) -> dict[tuple[str, int], pd.Series]:
    """Each optimizer's best configuration in each replicate, as one trial row keyed by
    (optimizer, replicate): its search finalist (`search_best`, or `finalists` where the
    caller has them already), the configuration the confirm stage reran at rank 1 (its
    equal-epochs runs carry the search's settings)."""
    finalists = search_best(sweep) if finalists is None else finalists
    return {(row["optimizer"], int(row["replicate"])): row for _, row in finalists.iterrows()}


@dataclass
class ArmComparison:
    """One budget arm: the runs compared (`confirm_results`), the per-optimizer summary
    (stats.summarize) and the paired tables by reference optimizer (rows of
    stats.compare), each with an `arm` column (the arm of the runs a row compares:
    equal_compute where either side ran the longer runs); p_holm and verdicts across the
    whole comparison (stats.holm_across)."""

    frame: pd.DataFrame
    summary: pd.DataFrame
    paired: dict = field(default_factory=dict)


@dataclass
class Comparison:
    """The comparison section: per budget arm (equal epochs first), and the search's
    finalists (`search_best`, single runs on val: all there is without a confirm stage,
    and what the warnings and the re-search's table read otherwise). `replicates`: how
    many replicates the compared runs come from (1: every interval is conditional on one
    search); `primary`: the primary contrast (candidate, reference) or None; `margin`: the
    equivalence margin (accuracy); `secondary`: the tests in the Holm family."""

    arms: dict = field(default_factory=dict)      # budget arm -> ArmComparison
    notes: list = field(default_factory=list)
    search_best: pd.DataFrame | None = None
    replicates: int = 0
    primary: tuple | None = None
    margin: float = stats.EQUIVALENCE_MARGIN
    secondary: int = 0
    optimizers: tuple = ()  # the sweep's: their passes per step set the longer arm's factor

    def run_label(self, optimizer: str, arm: str | None) -> str:
        """`optimizer`'s label for its runs in `arm` (analysis.text.run_label)."""
        return run_label(optimizer, arm, self.optimizers)

    @property
    def test_level(self) -> bool:
        """Whether every compared run recorded its per-example results, so that the
        intervals resample test examples too."""
        return all(r.summary["test_level"].all() for r in self.arms.values())

    @property
    def single_runs(self) -> bool:
        """True without a confirm stage: the search's best only, not evidence."""
        return not self.arms

    @property
    def conditional(self) -> bool:
        """True when the intervals cover seeds and test examples but not the search's own
        variance (one replicate)."""
        return self.replicates == 1

    @cached_property
    def compared_runs(self) -> pd.DataFrame:
        """Every confirm run that some arm compares (`confirm_results`), once: the
        equal-epochs runs and the 1-pass optimizers' equal-compute runs."""
        frames = [result.frame for result in self.arms.values()]
        if not frames:
            return pd.DataFrame(columns=RESULT_COLUMNS)
        return pd.concat(frames, ignore_index=True).drop_duplicates("trial_id", ignore_index=True)

    def primary_row(self) -> dict | None:
        """The primary contrast's row (equal epochs; both sides 2-pass or both 1-pass run
        the same runs in either arm), or None."""
        for result in self.arms.values():
            for table in result.paired.values():
                rows = table[table["primary"]]
                if len(rows):
                    return rows.iloc[0].to_dict()
        return None


def primary_contrast(sweep: Sweep) -> tuple[str, str] | None:
    """The sweep's primary contrast: its space's, else zsharp against sam when both ran."""
    if sweep.space is not None:
        return sweep.space.primary
    return ("zsharp", "sam") if {"zsharp", "sam"} <= set(sweep.optimizers) else None


def equivalence_margin(sweep: Sweep) -> float:
    """The equivalence margin as accuracy (the space's points / 100)."""
    return sweep.space.equivalence_margin / 100 if sweep.space is not None else stats.EQUIVALENCE_MARGIN


def comparison(sweep: Sweep) -> Comparison:
    """Intervals per optimizer and paired comparisons against SAM and against the base
    optimizer (and the primary contrast, wherever it is), in each budget arm the confirm
    stage ran. The primary contrast is tested alone; every other test in every arm is one
    Holm family (stats.holm_across): a pair printed in two tables counts once."""
    arms, notes = {}, []
    primary, margin = primary_contrast(sweep), equivalence_margin(sweep)
    for arm in confirm_arms(sweep):
        result, arm_notes = _arm_comparison(sweep, arm, primary, margin)
        notes += arm_notes
        if len(result.frame):
            arms[arm] = result
    if not arms:
        notes.append("The comparison needs a confirm stage: rerun the best configurations with "
                     "several seeds (launch.py ... --confirm 1 --seeds 5, on this experiment). "
                     "Below: the search's best trial per optimizer, single runs on val: not "
                     "evidence of a difference.")
        return Comparison({}, list(dict.fromkeys(notes)), search_best(sweep), optimizers=tuple(sweep.optimizers))
    tables = [t for r in arms.values() for t in r.paired.values()]
    adjusted = iter(stats.holm_across(tables, margin=margin))
    for result in arms.values():
        result.paired = {reference: next(adjusted) for reference in result.paired}
    replicates = int(max(r.frame["replicate"].nunique() for r in arms.values()))
    return Comparison(arms, list(dict.fromkeys(notes)), search_best(sweep), replicates=replicates,
                      primary=primary, margin=margin, secondary=stats.secondary_tests(tables),
                      optimizers=tuple(sweep.optimizers))


def _references(sweep: Sweep, primary: tuple | None) -> list[str]:
    """The optimizers every other is compared against: SAM, the base optimizer, and the
    primary contrast's reference."""
    return list(dict.fromkeys([SAM_REFERENCE, base_optimizer(sweep), *([primary[1]] if primary else [])]))


def _arm_comparison(sweep: Sweep, arm: str, primary: tuple | None,
                    margin: float) -> tuple[ArmComparison, list[str]]:
    frame, notes = confirm_results(sweep, arm)
    if frame.empty:
        return ArmComparison(frame, pd.DataFrame(columns=stats.SUMMARY_COLUMNS)), notes
    summary = stats.summarize(frame)
    present = list(dict.fromkeys(frame["optimizer"]))
    runs_arm = frame.groupby("optimizer")["budget_arm"].first()
    paired = {}
    for reference in _references(sweep, primary):
        if reference not in present:
            notes.append(f"No {label(reference)} in the confirm stage: no comparison against it.")
            continue
        rows = [stats.compare(frame, o, reference, margin=margin, primary=(o, reference) == primary)
                for o in present if o != reference]
        if not rows:
            continue
        table = pd.DataFrame(rows, columns=stats.PAIRED_COLUMNS)
        longer = table["optimizer"].map(runs_arm).eq(EQUAL_COMPUTE) | (runs_arm[reference] == EQUAL_COMPUTE)
        table = table.assign(arm=np.where(longer, EQUAL_COMPUTE, EQUAL_EPOCHS))
        # The primary contrast is one test, on equal-epochs runs (in the equal-compute arm
        # too when neither side ran longer; a 1-pass side's longer runs are secondary).
        table["primary"] = table["primary"] & (table["arm"] == EQUAL_EPOCHS)
        paired[reference] = table.sort_values("mean_diff", ascending=False, na_position="last",
                                              kind="stable").reset_index(drop=True)
    return ArmComparison(frame, summary, paired), notes

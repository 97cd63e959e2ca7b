"""The report's HTML tables and notes: the comparison (per budget arm, the summary and the
paired tests), the cost of the search, the sensitivity's good regions, and the notes on
optimizers without a fANOVA estimate.

Each section's part takes the report's ReportInputs (analysis.inputs) and returns HTML;
cells are escaped.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from analysis import stats
from analysis.inputs import ReportInputs
from analysis.load import Sweep
from analysis.sensitivity import GOOD_MARGIN, SENSITIVITY_PARAMS, good_region
from analysis.text import (ARM_TITLES, compute_text, label, num, pct, pct_interval, points,
                           points_interval, run_label, wins_text)
from analysis.flatness import MEASURES, flatness_summary
from analysis.verdict import ArmComparison, Comparison
from trainables.schema import EQUAL_COMPUTE, EQUAL_EPOCHS

_ARM_TEXT = {
    EQUAL_EPOCHS: "Every optimizer ran the space's epochs (the papers' protocol). A SAM-family "
                  "step costs two forward/backward passes, so the SAM family spent twice the "
                  "gradient evaluations of the 1-pass optimizers here.",
    EQUAL_COMPUTE: "The 1-pass optimizers ran twice the epochs (marked 2x epochs), so that every "
                   "optimizer spent the same gradient evaluations; the SAM family's runs are its "
                   "equal-epochs runs. The longer runs reuse the learning rate tuned at 1x epochs, "
                   "untuned for the longer budget: if anything, a conservative estimate for the "
                   "1-pass optimizer.",
}


def table(frame: pd.DataFrame) -> str:
    """`frame` as an HTML table, cells escaped, missing values as a dash."""
    return frame.to_html(index=False, escape=True, na_rep="–", border=0, classes="table")


def notes(lines: list[str]) -> str:
    """Notes as an HTML list (nothing when there are none)."""
    if not lines:
        return ""
    return "<ul class='notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in lines) + "</ul>"


# ---- the comparison ------------------------------------------------------------------------

def comparison_tables(inputs: ReportInputs) -> str:
    """The comparison's notes, then its tables: per arm the summary and the paired tables,
    or the search's finalists when there is no confirm stage."""
    result = inputs.comparison
    return "\n".join([notes(result.notes), _search_best_table(result) if result.single_runs
                      else _arm_tables(result)])


def _search_best_table(result: Comparison) -> str:
    best = result.search_best
    if best.empty:
        return "<p>No search trial reached an accuracy.</p>"
    return table(pd.DataFrame({
        "optimizer": best["optimizer"].map(label), "trial": best["trial_id"],
        "final val acc (single run)": best["final_val_acc"].map(pct),
        "epochs run": best["epochs_run"], "status": best["status"]}))


def _arm_tables(result: Comparison) -> str:
    parts = ["<p>The verdict: each optimizer's best configuration rerun with several seeds, read "
             "as the test accuracy at the final epoch. The p-values are Holm-corrected across "
             "every paired test on this page, in both arms; a pair shown in two tables is one "
             "test.</p>"]
    for arm, arm_result in result.arms.items():
        parts += [f"<h3>{html.escape(ARM_TITLES[arm].capitalize())}</h3>",
                  f"<p>{html.escape(_ARM_TEXT[arm])}</p>", _summary_table(arm_result)]
        for reference, paired in arm_result.paired.items():
            against = run_label(reference, _runs_arm(arm_result)[reference])
            parts.append(f"<h4>Paired by seed, against {html.escape(against)}, "
                         f"{html.escape(ARM_TITLES[arm])}</h4>")
            parts.append(_paired_table(arm_result, paired))
    return "\n".join(parts)


def _runs_arm(result: ArmComparison) -> pd.Series:
    """optimizer -> the budget arm of the runs it contributes to this comparison."""
    return result.frame.groupby("optimizer")["budget_arm"].first()


def _summary_table(result: ArmComparison) -> str:
    s, arms = result.summary, _runs_arm(result)
    return table(pd.DataFrame({
        "optimizer": [run_label(o, arms[o]) for o in s["optimizer"]], "seeds": s["n"],
        "final test acc (mean)": s["mean"].map(pct),
        "95% interval": [pct_interval(lo, hi) for lo, hi in zip(s["low"], s["high"])],
        "std": s["std"].map(lambda x: pct(x, 2)),
        "sample": np.where(s["small_sample"], f"small (n < {stats.MIN_SEEDS})", "")}))


def _paired_table(result: ArmComparison, p: pd.DataFrame) -> str:
    arms = _runs_arm(result)
    return table(pd.DataFrame({
        "optimizer": [run_label(o, arms[o]) for o in p["optimizer"]], "pairs": p["n"],
        "mean test difference": p["mean_diff"].map(points),
        "95% interval": [points_interval(lo, hi) for lo, hi in zip(p["low"], p["high"])],
        "p (paired t)": p["p_t"].map(num), "p (Wilcoxon)": p["p_wilcoxon"].map(num),
        "p (Holm, whole page)": p["p_holm"].map(num),
        "seeds won": [wins_text(w, t, n) for w, t, n in zip(p["wins"], p["ties"], p["n"])],
        "verdict": p["verdict"]}))


# ---- the cost of the search ----------------------------------------------------------------

def cost_table(sweep: Sweep, stage: str = "sweep") -> pd.DataFrame:
    """Trials, epochs, gradient evaluations and compute hours per optimizer and status."""
    trials = sweep.stage(stage)
    counted = (trials.groupby(["optimizer", "status"], sort=False)
               .agg(trials=("trial_id", "size"), epochs=("epochs_run", "sum"),
                    grad_evals=("grad_evals", "sum"), hours=("compute_hours", "sum"))
               .reset_index())
    order = {o: i for i, o in enumerate(sweep.optimizers)}
    counted = counted.sort_values(["optimizer", "status"],
                                  key=lambda s: s.map(order) if s.name == "optimizer" else s)
    total = {"optimizer": "all", "status": "all", "trials": int(counted["trials"].sum()),
             "epochs": int(counted["epochs"].sum()), "grad_evals": counted["grad_evals"].sum(),
             "hours": counted["hours"].sum(min_count=1)}
    return pd.concat([counted, pd.DataFrame([total])], ignore_index=True)


def cost_tables(inputs: ReportInputs) -> str:
    """The search's cost per optimizer and status, and a line on what the confirm stage cost."""
    sweep = inputs.sweep
    counted = cost_table(sweep)
    unit = "/".join(sorted(set(sweep.trials["compute_unit"].dropna()))) or "compute"
    shown = counted.assign(optimizer=counted["optimizer"].map(lambda o: label(o) if o != "all" else "all"),
                           grad_evals=counted["grad_evals"].map(lambda x: f"{x:,.0f}"),
                           hours=counted["hours"].map(lambda x: compute_text(x, unit)))
    shown = shown.rename(columns={"hours": "compute", "grad_evals": "gradient evaluations"})
    html_table = table(shown)
    confirm = cost_table(sweep, "confirm")
    if len(confirm) > 1:
        last = confirm.iloc[-1]
        html_table += (f"<p>The confirm stage cost another {int(last['trials'])} trials, "
                       f"{int(last['epochs'])} epochs and {compute_text(last['hours'], unit)}.</p>")
    return html_table


# ---- below the search's figures ------------------------------------------------------------

def good_region_tables(inputs: ReportInputs) -> str:
    """Per sensitivity quantity, each optimizer's good region against all it tried."""
    parts = []
    for param in SENSITIVITY_PARAMS:
        region = good_region(inputs.sweep, param)
        if region.empty:
            continue
        parts.append(table(pd.DataFrame({
            "optimizer": region["optimizer"].map(label),
            f"trials within {100 * GOOD_MARGIN:.0f} pt of its best": [f"{g} of {t}" for g, t in
                                                                  zip(region["good"], region["trials"])],
            f"their {param}": [f"{num(lo)} to {num(hi)}" for lo, hi in zip(region["low"], region["high"])],
            f"{param} over all its trials": [f"{num(lo)} to {num(hi)}" for lo, hi in
                                             zip(region["tried_low"], region["tried_high"])]})))
    return "\n".join(parts)


def importance_notes(inputs: ReportInputs) -> str:
    """Why an optimizer has no fANOVA estimate (too few trials, one parameter), one note each."""
    return notes([f"{label(o)}: {v}" for o, v in inputs.importances.items() if isinstance(v, str)])


# ---- flatness --------------------------------------------------------------------------------

def flatness_tables(inputs: ReportInputs) -> str:
    """Per optimizer, each flatness measure's mean and 95% t interval over the equal-epochs
    confirm runs' seeds (analysis.flatness)."""
    summary = flatness_summary(inputs.sweep)
    if summary.empty:
        return ""
    shown = pd.DataFrame({"optimizer": summary["optimizer"].map(label), "seeds": summary["n"]})
    for measure, name in MEASURES.items():
        shown[name] = [f"{num(m, '.3g')} [{num(lo, '.3g')}, {num(hi, '.3g')}]" for m, lo, hi in
                       zip(summary[f"{measure}_mean"], summary[f"{measure}_low"], summary[f"{measure}_high"])]
    radius = inputs.sweep.stage("confirm")["sharpness_radius"].dropna().unique()
    ball = f" Sharpness within an L2 ball of radius {', '.join(num(r, '.3g') for r in radius)}." if len(radius) else ""
    return table(shown) + f"<p>Mean and 95% t interval over seeds, runs at equal epochs.{ball}</p>"

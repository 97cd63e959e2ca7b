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

from analysis.flatness import MEASURES, error_text, flatness_summary, measure_name, rough_rule, units_text
from analysis.inputs import ReportInputs
from analysis.rungs import rung_correlations
from analysis.sensitivity import GOOD_MARGIN, SENSITIVITY_PARAMS, good_region
from analysis.summary import interval_words, power_line
from analysis.sweep import Sweep
from analysis.text import (ARM_TITLES, compute_text, label, num, pct, pct_interval, points,
                           points_interval, wins_text)
from analysis.verdict import ArmComparison, Comparison
from trainables.record import CONFIRM, RETUNE, SEARCH, group_of, ranked_by_group
from trainables.schema import EQUAL_COMPUTE, EQUAL_EPOCHS, count

_ARM_TEXT = {
    EQUAL_EPOCHS: "Every optimizer ran the space's epochs (the papers' protocol). A SAM-family "
                  "step costs two forward/backward passes, so the SAM family spent twice the "
                  "gradient evaluations of the 1-pass optimizers here.",
    EQUAL_COMPUTE: "The 1-pass optimizers ran more epochs (marked with the factor: the SAM family's "
                   "passes per step), so that every optimizer spent the same gradient evaluations; the SAM family's runs are its "
                   "equal-epochs runs. The longer runs' learning rate was searched again at their "
                   "epochs, on each replicate's validation split, starting from the 1x optimum "
                   "(the re-search stage): each arm is tuned for its own budget.",
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
                      else _arm_tables(result, inputs.sweep)])


def _search_best_table(result: Comparison) -> str:
    best = result.search_best
    if best.empty:
        return "<p>No search trial reached an accuracy.</p>"
    return table(pd.DataFrame({
        "optimizer": best["optimizer"].map(label), "replicate": best["replicate"], "trial": best["trial_id"],
        "final val acc (single run)": best["final_val_acc"].map(pct),
        "epochs run": best["epochs_run"], "status": best["status"]}))


def _arm_tables(result: Comparison, sweep: Sweep) -> str:
    parts = [f"<p>{html.escape(_verdict_text(result, sweep))}</p>", _primary_html(result, sweep)]
    retuned = retune_table(sweep, result.search_best)
    for arm, arm_result in result.arms.items():
        parts += [f"<h3>{html.escape(ARM_TITLES[arm].capitalize())}</h3>",
                  f"<p>{html.escape(_ARM_TEXT[arm])}</p>",
                  retuned if arm == EQUAL_COMPUTE else "", _summary_table(arm_result, result)]
        for reference, paired in arm_result.paired.items():
            against = result.run_label(reference, _runs_arm(arm_result)[reference])
            parts.append(f"<h4>Paired by replicate and seed, against {html.escape(against)}, "
                         f"{html.escape(ARM_TITLES[arm])}</h4>")
            parts.append(_paired_table(arm_result, paired, result))
    return "\n".join(parts)


def _verdict_text(result: Comparison, sweep: Sweep) -> str:
    """How the verdict is read, what its intervals cover and how many steps a refit took."""
    extra = sweep.space.refit_extra_steps if sweep.space is not None else None
    refit = (f" The confirm runs refit on train + val: {extra:+.1%} optimizer steps against the "
             "search that tuned them." if extra is not None else "")
    return ("The verdict: each optimizer's best configuration in each replicate of the search, rerun "
            "with several seeds and read as the test accuracy at the final epoch; the mean of the "
            f"replicates' means with a {interval_words(result)} (a hierarchical bootstrap: "
            "replicates, then seeds within each, then test examples; Student's t at the "
            "replicates' degrees of freedom). Paired rows match runs by replicate and seed; "
            "P(A > B) is the chance that a run of one tuned pipeline beats the matched run of the "
            "other. The primary contrast is tested alone at 0.05; every other test on this page is "
            f"one Holm family ({count(result.secondary, 'test')}), its intervals unadjusted. "
            "\"Better\" needs the difference's interval (or Holm p) to exclude 0 and P(A > B) above "
            f"0.75; \"equivalent\" an interval inside +-{num(100 * result.margin, '.2g')} points."
            + refit)


def _primary_html(result: Comparison, sweep: Sweep) -> str:
    """The primary contrast in one paragraph, with its power line."""
    row = result.primary_row()
    if row is None:
        return "<p>No primary contrast in this sweep (the space names none, and not both ZSharp and SAM ran).</p>"
    a, b = label(row["optimizer"]), label(row["reference"])
    text = (f"Primary contrast, {a} against {b} at equal epochs: {points(row['mean_diff'])} "
            f"{points_interval(row['low'], row['high'])}, P({a} > {b}) {num(row['p_better'], '.2f')} "
            f"[{num(row['p_better_low'], '.2f')}, {num(row['p_better_high'], '.2f')}], p "
            f"{num(row['p'], '.2g')}: {row['verdict']}. {power_line(sweep, result, row).capitalize()}.")
    return f"<p class='primary'><strong>{html.escape(text)}</strong></p>"


def retune_table(sweep: Sweep, finalists: pd.DataFrame) -> str:
    """Per re-searched optimizer and replicate: the learning rate tuned at 1x epochs (of
    `finalists`, verdict.search_best), the one its re-search at the longer epochs found
    (trainables.schema.rank_finalists on val) and that trial's val accuracy."""
    retune = sweep.stage(RETUNE)
    if retune.empty:
        return ""
    finalists = finalists.set_index(["optimizer", "replicate"])
    rows = []
    records = retune.to_dict("records")
    for (optimizer, replicate), best in ranked_by_group(records, group_of).items():
        trials = retune[(retune["optimizer"] == optimizer) & (retune["replicate"] == replicate)]
        one_x = finalists["lr"].get((optimizer, replicate))
        rows.append({"optimizer": label(optimizer), "replicate": replicate, "trials": len(trials),
                     "lr at 1x epochs": num(one_x), "lr re-searched": num(best[0]["lr"]) if best else "–",
                     "its val acc": pct(best[0]["final_val_acc"]) if best else "–",
                     "epochs": int(trials["epochs"].iloc[0])})
    return "<p>The re-search, per replicate (on val):</p>" + table(pd.DataFrame(rows))


def _runs_arm(result: ArmComparison) -> pd.Series:
    """optimizer -> the budget arm of the runs it contributes to this comparison."""
    return result.frame.groupby("optimizer")["budget_arm"].first()


def _summary_table(result: ArmComparison, whole: Comparison) -> str:
    s, arms = result.summary, _runs_arm(result)
    interval = "95% interval" + (" (conditional on one search)" if whole.conditional else "")
    return table(pd.DataFrame({
        "optimizer": [whole.run_label(o, arms[o]) for o in s["optimizer"]], "replicates": s["replicates"],
        "runs": s["runs"], "final test acc (mean of replicates)": s["mean"].map(pct),
        interval: [pct_interval(lo, hi) for lo, hi in zip(s["low"], s["high"])],
        "test examples": np.where(s["test_level"], "resampled", "not recorded: not resampled")}))


def _paired_table(result: ArmComparison, p: pd.DataFrame, whole: Comparison) -> str:
    arms = _runs_arm(result)
    return table(pd.DataFrame({
        "optimizer": [whole.run_label(o, arms[o]) + (" (primary)" if pr else "")
                      for o, pr in zip(p["optimizer"], p["primary"])], "pairs": p["pairs"],
        "mean test difference": p["mean_diff"].map(points),
        "95% interval (unadjusted)": [points_interval(lo, hi) for lo, hi in zip(p["low"], p["high"])],
        "P(A > B)": [f"{num(v, '.2f')} [{num(lo, '.2f')}, {num(hi, '.2f')}]" for v, lo, hi in
                     zip(p["p_better"], p["p_better_low"], p["p_better_high"])],
        "p": p["p"].map(num), "p (Holm, whole page)": [num(h) if not pr else "alone" for h, pr in
                                                     zip(p["p_holm"], p["primary"])],
        "runs won": [wins_text(w, t, n) for w, t, n in zip(p["wins"], p["ties"], p["pairs"])],
        "detectable (80% power)": [f"{num(100 * m, '.2g')} pts" for m in p["mde"]],
        "verdict": p["verdict"]}))


# ---- the cost of the search ----------------------------------------------------------------

def cost_table(sweep: Sweep, stage: str = SEARCH) -> pd.DataFrame:
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


def cost_section(inputs: ReportInputs) -> str:
    """The section on the search's cost: per optimizer and status, and a line on what the
    confirm stage cost."""
    sweep = inputs.sweep
    counted = cost_table(sweep)
    unit = "/".join(sorted(set(sweep.trials["compute_unit"].dropna()))) or "compute"
    shown = counted.assign(optimizer=counted["optimizer"].map(lambda o: label(o) if o != "all" else "all"),
                           grad_evals=counted["grad_evals"].map(lambda x: f"{x:,.0f}"),
                           hours=counted["hours"].map(lambda x: compute_text(x, unit)))
    shown = shown.rename(columns={"hours": "compute", "grad_evals": "gradient evaluations"})
    html_table = table(shown)
    confirm = cost_table(sweep, CONFIRM)
    if len(confirm) > 1:
        last = confirm.iloc[-1]
        html_table += (f"<p>The confirm stage cost another {count(int(last['trials']), 'trial')}, "
                       f"{int(last['epochs'])} epochs and {compute_text(last['hours'], unit)}.</p>")
    return f"<section id='cost'><h2>Cost of the search</h2>{html_table}</section>"


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


def rung_table(inputs: ReportInputs) -> str:
    """Per optimizer and ASHA rung, how well the rung's val accuracy ranks the completed
    trials as their final one does (analysis.rungs)."""
    found = rung_correlations(inputs.sweep)
    if found.empty:
        return ""
    return ("<p>Does a rung's ranking predict the final one? Spearman's rank correlation between the "
            "val accuracy at each rung and the final val accuracy, over the search trials that ran "
            "the full budget (all replicates).</p>" + table(pd.DataFrame({
                "optimizer": found["optimizer"].map(label), "rung (epoch)": found["rung"],
                "completed trials": found["trials"], "Spearman": found["spearman"].map(lambda x: num(x, ".2f"))})))


def importance_notes(inputs: ReportInputs) -> str:
    """Why an optimizer has no fANOVA estimate (too few trials, one parameter), one note each."""
    return notes([f"{label(o)}: {v}" for o, v in inputs.importances.items() if isinstance(v, str)])


# ---- flatness --------------------------------------------------------------------------------

def flatness_tables(inputs: ReportInputs) -> str:
    """Per optimizer, each flatness measure's mean and 95% t interval over the equal-epochs
    confirm runs of its best configuration (analysis.flatness), the invariant measures
    first, with the largest error of a run beside the values that have one."""
    summary = flatness_summary(inputs.sweep)
    if summary.empty:
        return ""
    rows = summary.to_dict("records")
    shown = pd.DataFrame({"optimizer": [label(r["optimizer"]) for r in rows], "seeds": summary["n"]})
    if (summary["replicates"] > 1).any():
        shown["replicates"] = summary["replicates"]
    for measure in MEASURES:
        shown[measure_name(measure)] = [_flatness_cell(r, measure) for r in rows]
    radius = inputs.sweep.stage(CONFIRM)["sharpness_radius"].dropna().unique()
    r = ", ".join(num(v, ".3g") for v in radius) if len(radius) else "r"
    caption = (f"Mean and 95% t interval over {units_text(summary)}; each optimizer's best configuration "
               f"at equal epochs. Sharpness at radius {r}: adaptive worst-case, the largest loss increase "
               f"found over offsets |w| u with ||u|| <= {r}; adaptive average-case, the mean increase at "
               f"offsets {r} |w| z, z standard normal; worst-case, the largest over offsets u with "
               f"||u|| <= {r}. Beside a value: the largest error of a run (its standard error, or Lanczos' "
               f"residual bound). A value is rough where {rough_rule()}.")
    return table(shown) + f"<p>{html.escape(caption)}</p>"


def _flatness_cell(row: dict, measure: str) -> str:
    """An optimizer's mean of `measure`, its interval and what stands beside it."""
    mean, low, high = (row[f"{measure}_{part}"] for part in ("mean", "low", "high"))
    error = error_text(row, measure)
    return f"{num(mean, '.3g')} [{num(low, '.3g')}, {num(high, '.3g')}]" + (f"; {error}" if error else "")
"""A sweep's result in a few lines for the terminal, what the sweep driver prints at the end:

    print(sweep_summary(load_sweep(experiment, tracking_uri)))

Warnings first; then, per budget arm, the verdict (each optimizer's final-epoch test
accuracy, the mean of its replicates' means, with the hierarchical 95% interval over
replicates, seeds and test examples), the primary contrast with P(A > B) and its power
line, and the paired comparisons against SAM and against the base optimizer, each test
printed once, with its Holm p (one family across both arms, as in the report). Without a
confirm stage: each optimizer's best search trial, labelled as the single run on val that
it is.
"""

from __future__ import annotations

from analysis.flatness import MEASURES, NOT_INVARIANT, error_text, flatness_summary, rough_rule, units_text
from analysis.stats import paired_test_id
from analysis.sweep import Sweep
from analysis.text import (ARM_TITLES, compute_text, label, missing, num, pct, pct_interval, points,
                           points_interval, wins_text)
from analysis.verdict import ArmComparison, Comparison, comparison
from analysis.warnings import sweep_warnings
from trainables.record import UNKNOWN_UNIT, confirm_result_key, search_result_key
from trainables.schema import EQUAL_COMPUTE, EQUAL_EPOCHS, count

_ARM_NOTES = {EQUAL_EPOCHS: "every optimizer at the space's epochs",
              EQUAL_COMPUTE: "1-pass optimizers at the SAM family's gradient evaluations, with the lr "
                             "re-searched for their epochs on val"}


def interval_words(result: Comparison) -> str:
    """What the intervals cover: replicates, seeds and test examples, or (one replicate)
    seeds and test examples, conditional on one search; test examples only where the runs
    recorded which they got right."""
    examples = " and the test examples" if result.test_level else " (test examples not recorded: not resampled)"
    if result.conditional:
        return f"95% interval over seeds{examples}, conditional on one search"
    return f"95% interval over {result.replicates} replicates, their seeds{examples}"


def sweep_summary(sweep: Sweep) -> str:
    """The console summary of `sweep` (see the module docstring), lines joined by newlines."""
    result = comparison(sweep)
    lines = [f"warning: {w}" for w in sweep_warnings(sweep, result)]
    if result.single_runs:
        return "\n".join(lines + _search_lines(result.search_best))
    lines += primary_lines(sweep, result)
    printed: set = set()  # tests already printed: each once, however many tables hold it
    for arm, arm_result in result.arms.items():
        lines += _arm_lines(arm, arm_result, result, printed)
    return "\n".join(lines + _flatness_lines(sweep))


def primary_lines(sweep: Sweep, result: Comparison) -> list[str]:
    """The primary contrast: difference, interval, P(A > B), verdict, and its power line."""
    row = result.primary_row()
    if row is None:
        return []
    a, b = label(row["optimizer"]), label(row["reference"])
    return [f"primary contrast, {a} against {b} {ARM_TITLES[EQUAL_EPOCHS]} (alone at alpha 0.05): "
            f"{points(row['mean_diff'])} {points_interval(row['low'], row['high'])}, "
            f"P({a} > {b}) {num(row['p_better'], '.2f')} [{num(row['p_better_low'], '.2f')}, "
            f"{num(row['p_better_high'], '.2f')}], p {num(row['p'], '.2g')}: {row['verdict']}",
            f"  {power_line(sweep, result, row)}"]


def power_line(sweep: Sweep, result: Comparison, row: dict) -> str:
    """"with R replicates x N seeds, differences below X points are not detectable (80%
    power); to resolve the margin, about R' replicates (~H hours at this sweep's cost)"."""
    seeds = round(row["pairs"] / max(1, row["replicates"]))
    what = f"with {count(row['replicates'], 'replicate')} x {count(seeds, 'seed')}"
    if result.conditional:
        return (f"{what}, differences below {num(100 * row['mde'], '.2g')} points are not detectable "
                "(80% power), before the search's own variance, which one replicate cannot measure: "
                "run --replicates 3 or more")
    margin = f"{num(100 * result.margin, '.2g')} points"
    needed = row["replicates_needed"]
    if missing(needed):
        resolve = f"no number of replicates resolves {margin}: the test set's own noise is larger"
    else:
        hours, unit = replicate_cost(sweep, result.replicates)
        resolve = (f"to resolve {margin}, about {count(int(needed), 'replicate')} "
                   f"(~{compute_text(hours * needed, unit)} at this sweep's measured cost)")
    return (f"{what}, differences below {num(100 * row['mde'], '.2g')} points are not detectable "
            f"(80% power); {resolve}")


def replicate_cost(sweep: Sweep, replicates: int) -> tuple[float, str]:
    """The compute one replicate of this sweep took (search, re-search and confirm, hours)
    and its unit (GPU or CPU)."""
    units = sorted(set(sweep.trials["compute_unit"].dropna()) - {UNKNOWN_UNIT})
    return float(sweep.trials["compute_hours"].sum()) / max(1, replicates), "/".join(units) or "compute"


def _flatness_lines(sweep: Sweep) -> list[str]:
    """Each optimizer's flatness measures at its best configuration, means over the
    equal-epochs seeds (diagnostics, not the verdict), the invariant measures first, each
    with the largest error of a run beside it where it has one; nothing without them."""
    summary = flatness_summary(sweep)
    if summary.empty:
        return []
    records = summary.to_dict("records")
    lines = [f"flatness of the equal-epochs runs, means over {units_text(summary)} (diagnostics, not the "
             "verdict; each optimizer's best configuration; intervals in the report):"]
    for invariant, title in ((True, "invariant to rescaling"), (False, NOT_INVARIANT)):
        measures = [m for m, shown in MEASURES.items() if shown.invariant == invariant]
        rows = [[f"{title}:", "seeds", *(MEASURES[m].label for m in measures)]]
        rows += [[label(r["optimizer"]), str(r["n"]), *(_flatness_value(r, m) for m in measures)]
                 for r in records]
        lines += _aligned(rows)
    if any(summary[f"{m}_rough"].any() for m in MEASURES):
        lines.append(f"  rough: {rough_rule()}")
    return lines


def _flatness_value(row: dict, measure: str) -> str:
    """An optimizer's mean of `measure` and, in brackets, what stands beside it."""
    error = error_text(row, measure)
    return num(row[f"{measure}_mean"], ".3g") + (f" ({error})" if error else "")


def summary_metrics(sweep: Sweep) -> dict[str, float]:
    """The sweep's result as flat metrics, for its parent MLflow run (so that sweeps sit
    side by side in the MLflow UI): each optimizer's best search trial's final val accuracy
    (`search.OPT.best_val_acc`, the best over replicates), and per budget arm its confirm
    runs' mean final test accuracy and hierarchical 95% interval
    (`confirm.ARM.OPT.test_acc_mean`, `_low`, `_high`; NaN where there is no interval)."""
    result = comparison(sweep)
    metrics = {}
    for r in result.search_best.itertuples():
        key = search_result_key(r.optimizer)
        metrics[key] = max(metrics.get(key, float("-inf")), float(r.final_val_acc))
    for arm, arm_result in result.arms.items():
        for r in arm_result.summary.itertuples():
            metrics.update({confirm_result_key(arm, r.optimizer, part): float(getattr(r, part))
                            for part in ("mean", "low", "high")})
    return metrics


def _search_lines(best) -> list[str]:
    rows = [[label(r.optimizer), f"replicate {r.replicate}", pct(r.final_val_acc),
             f"trial {r.trial_id}, {r.epochs_run} of {r.epochs} epochs, {r.status}"]
            for r in best.itertuples()]
    return ["no confirm stage: each optimizer's best search trial per replicate, final val accuracy "
            "(single runs, not a verdict):", *_aligned(rows)]


def _arm_lines(arm: str, result: ArmComparison, whole: Comparison, printed: set) -> list[str]:
    """The verdict table of one arm, then its paired tests not printed yet."""
    runs_arm = result.frame.groupby("optimizer")["budget_arm"].first()
    lines = [f"final test accuracy {ARM_TITLES[arm]} ({_ARM_NOTES[arm]}): mean of the replicates' "
             f"means, {interval_words(whole)}:"]
    lines += _aligned([[whole.run_label(r.optimizer, runs_arm[r.optimizer]), count(r.runs, "run"), pct(r.mean),
                        pct_interval(r.low, r.high)] for r in result.summary.itertuples()])
    for reference, table in result.paired.items():
        rows = []
        for row in table.to_dict("records"):
            if paired_test_id(row) in printed or row["primary"]:
                continue
            printed.add(paired_test_id(row))
            rows.append([whole.run_label(row["optimizer"], runs_arm[row["optimizer"]]), points(row["mean_diff"]),
                         points_interval(row["low"], row["high"]), f"P(>) {num(row['p_better'], '.2f')}",
                         f"Holm p {num(row['p_holm'], '.2g')}", wins_text(row["wins"], row["ties"], row["pairs"]),
                         f"detects >= {num(100 * row['mde'], '.2g')} pts", row["verdict"]])
        if rows:
            lines.append(f"  against {whole.run_label(reference, runs_arm[reference])} (Holm over "
                         f"{count(whole.secondary, 'secondary test')}; intervals unadjusted):")
            lines += _aligned(rows, indent=4)
    return lines


def _aligned(rows: list[list[str]], indent: int = 2) -> list[str]:
    """Rows of cells as lines, each column padded to its widest cell."""
    widths = [max(len(cell) for cell in column) for column in zip(*rows)]
    return [" " * indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
            for row in rows]

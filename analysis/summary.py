"""A sweep's result in a few lines for the terminal, what the sweep driver prints at the end:

    print(sweep_summary(load_sweep(experiment, tracking_uri)))

Warnings first; then, per budget arm, the verdict (each optimizer's final-epoch test
accuracy over the confirm seeds, mean and 95% t interval) and the paired comparisons
against SAM and against the base optimizer, each test printed once, with its Holm p (one
family across both arms, as in the report). Without a confirm stage: each optimizer's
best search trial, labelled as the single run on val that it is.
"""

from __future__ import annotations

from analysis.flatness import MEASURES, flatness_summary
from analysis.load import Sweep
from analysis.stats import paired_test_id
from analysis.text import (ARM_TITLES, count, label, num, pct, pct_interval, points, points_interval,
                           run_label, wins_text)
from analysis.verdict import ArmComparison, comparison, search_best
from analysis.warnings import sweep_warnings
from trainables.schema import EQUAL_COMPUTE, EQUAL_EPOCHS

_ARM_NOTES = {EQUAL_EPOCHS: "every optimizer at the space's epochs",
              EQUAL_COMPUTE: "1-pass optimizers at 2x epochs with the lr tuned at 1x, "
                             "if anything conservative for them"}


def sweep_summary(sweep: Sweep) -> str:
    """The console summary of `sweep` (see the module docstring), lines joined by newlines."""
    result = comparison(sweep)
    lines = [f"warning: {w}" for w in sweep_warnings(sweep, result)]
    if result.single_runs:
        return "\n".join(lines + _search_lines(result.search_best))
    printed: set = set()  # tests already printed: each once, however many tables hold it
    for arm, arm_result in result.arms.items():
        lines += _arm_lines(arm, arm_result, printed)
    return "\n".join(lines + _flatness_lines(sweep))


def _flatness_lines(sweep: Sweep) -> list[str]:
    """Each optimizer's flatness measures, means over the equal-epochs seeds (diagnostics,
    not the verdict); nothing without them."""
    summary = flatness_summary(sweep)
    if summary.empty:
        return []
    rows = [["", "seeds", *MEASURES.values()]]
    rows += [[label(r["optimizer"]), str(r["n"]), *(num(r[f"{m}_mean"], ".3g") for m in MEASURES)]
             for r in summary.to_dict("records")]
    return ["flatness of the equal-epochs runs, means over seeds (diagnostics, not the verdict; "
            "intervals in the report):", *_aligned(rows)]


def summary_metrics(sweep: Sweep) -> dict[str, float]:
    """The sweep's result as flat metrics, for its parent MLflow run (so that sweeps sit
    side by side in the MLflow UI): each optimizer's best search trial's final val accuracy
    (`search.OPT.best_val_acc`), and per budget arm its confirm runs' mean final test
    accuracy and 95% t interval (`confirm.ARM.OPT.test_acc_mean`, `_low`, `_high`; NaN
    where one seed gives no interval)."""
    result = comparison(sweep)
    best = result.search_best if result.single_runs else search_best(sweep)
    metrics = {f"search.{r.optimizer}.best_val_acc": float(r.final_val_acc) for r in best.itertuples()}
    for arm, arm_result in result.arms.items():
        for r in arm_result.summary.itertuples():
            metrics.update({f"confirm.{arm}.{r.optimizer}.test_acc_{part}": float(getattr(r, part))
                            for part in ("mean", "low", "high")})
    return metrics


def _search_lines(best) -> list[str]:
    rows = [[label(r.optimizer), pct(r.final_val_acc),
             f"trial {r.trial_id}, {r.epochs_run} of {r.epochs} epochs, {r.status}"]
            for r in best.itertuples()]
    return ["no confirm stage: each optimizer's best search trial, final val accuracy "
            "(single runs, not a verdict):", *_aligned(rows)]


def _arm_lines(arm: str, result: ArmComparison, printed: set) -> list[str]:
    """The verdict table of one arm, then its paired tests not printed yet."""
    runs_arm = result.frame.groupby("optimizer")["budget_arm"].first()
    lines = [f"final test accuracy {ARM_TITLES[arm]} ({_ARM_NOTES[arm]}), mean and 95% t "
             "interval over seeds:"]
    lines += _aligned([[run_label(r.optimizer, runs_arm[r.optimizer]), count(r.n, "seed"), pct(r.mean),
                        pct_interval(r.low, r.high)] for r in result.summary.itertuples()])
    for reference, table in result.paired.items():
        rows = []
        for row in table.to_dict("records"):
            if paired_test_id(row) in printed:
                continue
            printed.add(paired_test_id(row))
            rows.append([run_label(row["optimizer"], runs_arm[row["optimizer"]]), points(row["mean_diff"]),
                         points_interval(row["low"], row["high"]), f"Holm p {num(row['p_holm'], '.2g')}",
                         wins_text(row["wins"], row["ties"], row["n"]), row["verdict"]])
        if rows:
            lines.append(f"  against {run_label(reference, runs_arm[reference])}:")
            lines += _aligned(rows, indent=4)
    return lines


def _aligned(rows: list[list[str]], indent: int = 2) -> list[str]:
    """Rows of cells as lines, each column padded to its widest cell."""
    widths = [max(len(cell) for cell in column) for column in zip(*rows)]
    return [" " * indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
            for row in rows]

"""The report's comparison section: the verdict's runs per optimizer and arm, and the
learning curves of the runs it compares."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis import tables
from analysis.figures.registry import figure
from analysis.inputs import ReportInputs
from analysis.plotstyle import color, epoch_ticks, layout, rgba
from analysis.text import label, run_label
from analysis.verdict import Comparison
from trainables.record import CONFIRM, SEARCH
from trainables.schema import BUDGET_ARMS, EQUAL_COMPUTE, SEARCH_METRIC, VERDICT_METRIC


@figure("comparison", "Comparison", above=tables.comparison_tables)
def figure_comparison(inputs: ReportInputs) -> go.Figure:
    """Final-epoch test accuracy per run of the confirm stage, with the mean of the
    replicates' means and its hierarchical 95% interval, per optimizer and again for each
    1-pass optimizer's equal-compute runs ("Adam (2x epochs)", open markers); without a
    confirm stage, the search's finalist per optimizer and replicate (single runs on val)."""
    result = inputs.comparison
    if result.single_runs:
        return _figure_search_best(result.search_best)
    fig = go.Figure()
    groups = _confirm_groups(result)
    for optimizer, arm, seeds, row in groups:
        _add_seeds_and_mean(fig, optimizer, arm, result.run_label(optimizer, arm), seeds, row)
    shown = pd.concat([seeds[VERDICT_METRIC] for _, _, seeds, _ in groups]
                      + [pd.Series([row.low, row.high]) for *_, row in groups]).dropna()
    yrange = [max(0.0, shown.min() - 0.02), min(1.0, shown.max() + 0.02)]
    what = "conditional on one search" if result.conditional else "replicates, seeds, test examples"
    return layout(fig, f"Confirm stage: final test accuracy per run, mean and 95% interval ({what})",
                  xaxis_title="optimizer (x epochs: the equal-compute arm's longer runs)",
                  yaxis_title="final test accuracy", yaxis_tickformat=".0%", yaxis_range=yrange)


def _figure_search_best(best: pd.DataFrame) -> go.Figure:
    fig = go.Figure(go.Scatter(
        x=[label(o) for o in best["optimizer"]], y=best["final_val_acc"], mode="markers",
        marker={"size": 12, "color": [color(o) for o in best["optimizer"]]},
        text=best["trial_id"], hovertemplate="%{x}: %{y:.2%} (trial %{text})<extra></extra>",
        name="best search trial"))
    return layout(fig, "Search: each optimizer's best trial per replicate, final val accuracy (single "
                  "runs, not evidence of a difference)", xaxis_title="optimizer",
                  yaxis_title="final val accuracy", yaxis_tickformat=".0%", showlegend=False)


def _confirm_groups(result: Comparison) -> list[tuple]:
    """(optimizer, arm of its runs, its per-seed rows, its summary row) for each set of
    confirm runs, once however many arms compare it: in the first arm's order (best
    first), each optimizer's equal-compute runs right after its equal-epochs runs."""
    groups = {}
    for arm_result in result.arms.values():
        summary = arm_result.summary.set_index("optimizer", drop=False)
        for optimizer, seeds in arm_result.frame.groupby("optimizer", sort=False):
            key = (optimizer, seeds["budget_arm"].iloc[0])
            groups.setdefault(key, (*key, seeds, next(summary.loc[[optimizer]].itertuples())))
    first = list(next(iter(result.arms.values())).summary["optimizer"])
    return sorted(groups.values(), key=lambda g: (first.index(g[0]) if g[0] in first else len(first),
                                                  g[1] == EQUAL_COMPUTE))


def _add_seeds_and_mean(fig: go.Figure, optimizer: str, arm: str, name: str, seeds: pd.DataFrame, row) -> None:
    """One optimizer's runs as small markers and its mean with the interval as error bars."""
    c, longer = color(optimizer), arm == EQUAL_COMPUTE
    fig.add_trace(go.Scatter(
        x=[name] * len(seeds), y=seeds[VERDICT_METRIC], mode="markers", name=f"{name} runs",
        marker={"size": 7, "color": rgba(c, 0.5)}, text=[f"replicate {r}, seed {s}" for r, s in
                                                         zip(seeds["replicate"], seeds["seed"])],
        hovertemplate="%{text}: %{y:.2%}<extra></extra>", showlegend=False))
    low = row.mean - row.low if not pd.isna(row.low) else None
    high = row.high - row.mean if not pd.isna(row.high) else None
    fig.add_trace(go.Scatter(
        x=[name], y=[row.mean], mode="markers", name=name, showlegend=False,
        marker={"size": 14, "symbol": "diamond-open" if longer else "diamond", "color": c,
                "line": {"width": 2, "color": c}},
        error_y={"type": "data", "symmetric": False, "array": [high], "arrayminus": [low],
                 "visible": low is not None},
        hovertemplate=f"{name}: mean %{{y:.2%}}, {row.runs} runs in {row.replicates} replicates"
                      "<extra></extra>"))


def curve_trials(inputs: ReportInputs) -> tuple[pd.DataFrame, str]:
    """The epochs the learning curves average over, with each run's budget_arm, and which
    runs they are: "confirm", the runs the comparison compares in either arm
    (Comparison.compared_runs), else "search", the search's trials (budget_arm None)."""
    sweep, runs = inputs.sweep, inputs.comparison.compared_runs
    if len(runs):
        arms = runs.set_index("trial_id")["budget_arm"]
        epochs = sweep.epochs[sweep.epochs["trial_id"].isin(arms.index)]
        return epochs.assign(budget_arm=epochs["trial_id"].map(arms)), CONFIRM
    return sweep.epochs[sweep.epochs["stage"] == SEARCH].assign(budget_arm=None), SEARCH


def _band(fig, x, band: pd.DataFrame, optimizer: str, name: str, col: int, legend: bool, dash: str) -> None:
    """A mean line with a shaded band from band["low"] to band["high"], in subplot column `col`."""
    c = color(optimizer)
    common = {"legendgroup": name, "hoverinfo": "skip", "showlegend": False, "mode": "lines",
              "line": {"width": 0}}
    fig.add_trace(go.Scatter(x=x, y=band["high"], **common), row=1, col=col)
    fig.add_trace(go.Scatter(x=x, y=band["low"], fill="tonexty", fillcolor=rgba(c, 0.18), **common),
                  row=1, col=col)
    fig.add_trace(go.Scatter(x=x, y=band["mean"], mode="lines+markers", name=name, legendgroup=name,
                             showlegend=legend, line={"color": c, "width": 2, "dash": dash},
                             marker={"size": 5}, hovertemplate=f"{name}: %{{y:.2%}}<extra></extra>"),
                  row=1, col=col)


@figure("learning_curves", "Learning curves",
        "Test accuracy of the confirm runs (without a confirm stage: val accuracy of the search "
        "trials) by epoch and by gradient evaluations. A SAM-family step costs two "
        "forward/backward passes, so at equal epochs it has spent twice the compute of its base "
        "optimizer; the dashed lines are the 1-pass optimizers' runs at twice the epochs, which "
        "spend the same.")
def figure_learning_curves(inputs: ReportInputs) -> go.Figure:
    """Accuracy by epoch and by gradient evaluations per optimizer, the mean and the range
    (min to max): test accuracy over the confirm runs' seeds, the 1-pass optimizers'
    equal-compute runs dashed and by gradient evaluations only; without a confirm stage,
    val accuracy over the search's trials."""
    epochs, source = curve_trials(inputs)
    metric, split = (VERDICT_METRIC, "test") if source == CONFIRM else (SEARCH_METRIC, "val")
    fig = make_subplots(1, 2, subplot_titles=("by epoch", "by gradient evaluations"),
                        horizontal_spacing=0.08)
    arm_of = epochs["budget_arm"].fillna("")  # search trials have none
    for optimizer in inputs.sweep.optimizers:
        for arm in ("", *BUDGET_ARMS):
            mine = epochs[(epochs["optimizer"] == optimizer) & (arm_of == arm)]
            if mine.empty:
                continue
            band = mine.groupby("epoch").agg(mean=(metric, "mean"), low=(metric, "min"),
                                             high=(metric, "max"), evals=("grad_evals", "mean"))
            # The longer runs are the equal-compute comparison: by gradient evaluations only.
            longer = arm == EQUAL_COMPUTE
            panels = [(2, band["evals"])] if longer else [(1, band.index), (2, band["evals"])]
            for i, (col, x) in enumerate(panels):
                _band(fig, x, band, optimizer, run_label(optimizer, arm, inputs.sweep.optimizers), col, i == 0,
                      "dash" if longer else "solid")
    if source == CONFIRM:
        dashed = "; dashed: the 1-pass optimizers' longer runs" if (arm_of == EQUAL_COMPUTE).any() else ""
        over = f"confirm stage: {split} accuracy, mean and range over seeds{dashed}"
    else:
        over = (f"search trials: {split} accuracy, mean and range over trials; trials stopped early "
                "drop out of later epochs")
    fig.update_xaxes(title_text="epoch", row=1, col=1,
                     **epoch_ticks(epochs.loc[arm_of != EQUAL_COMPUTE, "epoch"]))
    fig.update_xaxes(title_text="gradient evaluations (samples x passes; SAM family: 2 per step)",
                     row=1, col=2)
    fig.update_yaxes(title_text=f"{split} accuracy", tickformat=".0%")
    return layout(fig, f"Learning curves ({over})", height=460)

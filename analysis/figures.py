"""The report's figures, a registry: each one small function of the report's inputs
(analysis.inputs.ReportInputs), registered with `@figure(key, title, text)` under the
section title and the explanation the page shows with it, in page order.

    FIGURES["learning_curves"].draw(inputs)     # as the page draws it
    figure_learning_curves(sweep)               # as a notebook draws it

Claims rest on the confirm stage (analysis.verdict); the search's numbers are single runs
on val and are labelled as such in the figures' titles.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis import tables
from analysis.flatness import MEASURES, flatness_runs
from analysis.inputs import ReportInputs
from analysis.minimums import MIN_IMPORTANCE_TRIALS
from analysis.plotstyle import color, epoch_ticks, layout, log_scaled, rgba
from analysis.sensitivity import MEASURED, SENSITIVITY_PARAMS, has_values
from analysis.sweep import Sweep, in_param_order
from analysis.text import compute_scale, label, num, param_label, run_label
from analysis.verdict import Comparison
from trainables.record import CONFIRM, SEARCH
from trainables.schema import BUDGET_ARMS, EQUAL_COMPUTE, LOSS_PROFILE, SEARCH_METRIC, VERDICT_METRIC

SectionPart = Callable[[ReportInputs], str]  # HTML a section shows besides its figure


@dataclass(frozen=True)
class Figure:
    """One figure of the page and its section: the title and text shown with it, the
    function that draws it (it returns None where the sweep has no data for it), and the
    HTML shown above and below it (analysis.tables)."""

    key: str
    title: str
    text: str
    draw: Callable[[ReportInputs], go.Figure | None]
    above: SectionPart | None = None
    below: SectionPart | None = None


FIGURES: dict[str, Figure] = {}  # key -> its figure, in page order (the order registered)


def figure(key: str, title: str, text: str = "", *, above: SectionPart | None = None,
           below: SectionPart | None = None):
    """Register the decorated function, which draws from a report's inputs, as the figure
    `key` of the page, under `title` with `text` (and the `above` and `below` HTML).

    The name it is bound to draws it from a `Sweep` instead, as a notebook calls it:
    `figure_x(sweep, min_trials=...)`, `min_trials` being ReportInputs' fANOVA minimum.
    """
    def register(draw: Callable[[ReportInputs], go.Figure | None]):
        FIGURES[key] = Figure(key, title, text, draw, above, below)

        def from_sweep(sweep: Sweep, min_trials: int = MIN_IMPORTANCE_TRIALS) -> go.Figure | None:
            return draw(ReportInputs(sweep, min_trials))
        # Named and documented as the figure, but not through functools.wraps: its __wrapped__
        # would make help() show draw's signature instead of this one.
        from_sweep.__name__, from_sweep.__qualname__ = draw.__name__, draw.__qualname__
        from_sweep.__doc__ = draw.__doc__
        return from_sweep
    return register


def draw_all(inputs: ReportInputs) -> dict[str, go.Figure]:
    """Every registered figure the sweep has data for, by key, in page order."""
    drawn = {key: entry.draw(inputs) for key, entry in FIGURES.items()}
    return {key: fig for key, fig in drawn.items() if fig is not None}


def _ran_full_budget(trials: pd.DataFrame) -> pd.Series:
    """Whether each trial ran all its epochs (ASHA did not stop it)."""
    return trials["epochs_run"] >= trials["epochs"]


def _budget_markers(c: str, full, size: int = 8) -> dict:
    """Markers of search trials in colour `c`: filled where the trial ran the full budget
    (`full`), open where ASHA stopped it."""
    return {"color": c, "size": size, "line": {"color": c, "width": 1.5},
            "symbol": np.where(full, "circle", "circle-open")}


# ---- the comparison --------------------------------------------------------------------------

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
        _add_seeds_and_mean(fig, optimizer, arm, seeds, row)
    shown = pd.concat([seeds[VERDICT_METRIC] for _, _, seeds, _ in groups]
                      + [pd.Series([row.low, row.high]) for *_, row in groups]).dropna()
    yrange = [max(0.0, shown.min() - 0.02), min(1.0, shown.max() + 0.02)]
    what = "conditional on one search" if result.conditional else "replicates, seeds, test examples"
    return layout(fig, f"Confirm stage: final test accuracy per run, mean and 95% interval ({what})",
                  xaxis_title="optimizer (2x epochs: the equal-compute runs)",
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


def _add_seeds_and_mean(fig: go.Figure, optimizer: str, arm: str, seeds: pd.DataFrame, row) -> None:
    """One optimizer's runs as small markers and its mean with the interval as error bars."""
    name, c, longer = run_label(optimizer, arm), color(optimizer), arm == EQUAL_COMPUTE
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


# ---- learning curves -------------------------------------------------------------------------

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
                _band(fig, x, band, optimizer, run_label(optimizer, arm), col, i == 0,
                      "dash" if longer else "solid")
    if source == CONFIRM:
        dashed = "; dashed: 1-pass optimizers at 2x epochs" if (arm_of == EQUAL_COMPUTE).any() else ""
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


# ---- the search ------------------------------------------------------------------------------

@figure("compute", "Accuracy against compute",
        "The best final val accuracy each optimizer's search had found after spending so many "
        "hours, counting every trial, stopped or failed (training time only, times the GPUs, or "
        "with none the CPUs, a trial held).")
def figure_compute(inputs: ReportInputs) -> go.Figure:
    """The best final val accuracy so far against cumulative compute hours of the search,
    per optimizer, trials in start order (stopped and failed trials spend compute too)."""
    sweep = inputs.sweep
    search = sweep.stage(SEARCH)
    units = set(search["compute_unit"].dropna())
    unit = units.pop() if len(units) == 1 else "unknown"
    known = unit in ("CPU", "GPU")
    factor, scale = compute_scale(search.groupby("optimizer")[
        "compute_hours" if known else "train_seconds"].sum().max() / (1 if known else 3600))
    fig = go.Figure()
    for optimizer in sweep.optimizers:
        mine = search[search["optimizer"] == optimizer].sort_values("start_time")
        if mine.empty:
            continue
        hours = mine["compute_hours"] if known else mine["train_seconds"] / 3600
        best = mine["final_val_acc"].cummax().ffill()  # a failed trial keeps the best so far
        fig.add_trace(go.Scatter(
            x=hours.cumsum() * factor, y=best, mode="lines+markers", line_shape="hv", name=label(optimizer),
            line={"color": color(optimizer)}, customdata=np.stack(
                [mine["trial_id"], mine["status"], mine["final_val_acc"]], axis=1),
            hovertemplate="trial %{customdata[0]} (%{customdata[1]}, %{customdata[2]:.2%}): "
                          "best so far %{y:.2%}<extra></extra>"))
    axis = (f"cumulative {unit}-{scale}" if known
            else f"cumulative trial-{scale} (resources unknown)")
    return layout(fig, "Search: best final val accuracy against compute", xaxis_title=axis,
                  yaxis_title="best final val accuracy so far", yaxis_tickformat=".0%")


def _ticks(low: float, high: float, log: bool) -> list[float]:
    """Tick values for an axis from low to high: 1-2-5 steps on a log axis, else 5 even."""
    if low == high:
        return [low]
    if not log:
        return list(np.linspace(low, high, 5))
    nice = [m * 10.0 ** k for k in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
            for m in (1, 2, 5)]
    inside = [v for v in nice if low <= v <= high]
    return inside if len(inside) >= 2 else [low, high]


def _dimension(name: str, values: pd.Series) -> dict:
    """A parallel-coordinates axis. Learning rates and the like on a log scale; trials of
    optimizers without this parameter sit on an "n/a" tick below the range (plotly drops
    a line with a missing value off the chart)."""
    present = values.dropna().astype(float)
    log = log_scaled(name) and (present > 0).all()
    scale = np.log10 if log else (lambda v: v)
    low, high = (present.min(), present.max()) if len(present) else (0.0, 1.0)
    ticks = _ticks(low, high, log)
    span = (scale(high) - scale(low)) or 1.0
    missing = scale(low) - 0.2 * span
    shown = [scale(float(v)) if pd.notna(v) else missing for v in values]
    tickvals, ticktext = [scale(t) for t in ticks], [num(t) for t in ticks]
    if values.isna().any():
        tickvals, ticktext = [missing, *tickvals], ["n/a", *ticktext]
    return {"label": f"{name} (log)" if log else name, "values": shown, "tickvals": tickvals,
            "ticktext": ticktext, "range": [min(shown), scale(high) if high > low else scale(high) + 1]}


@figure("parallel_coordinates", "Hyperparameters (parallel coordinates)",
        "One line per search trial. Trials stopped early reached their accuracy after fewer "
        "epochs (the epochs axis): compare like with like.")
def figure_parallel_coordinates(inputs: ReportInputs) -> go.Figure | None:
    """Parallel coordinates of the search trials: optimizer, each searched hyperparameter
    (n/a where an optimizer has none), the epochs reached, and the final val accuracy
    (colour)."""
    sweep = inputs.sweep
    search = sweep.stage(SEARCH).dropna(subset=["final_val_acc"])
    optimizers = [o for o in sweep.optimizers if (search["optimizer"] == o).any()]
    if not optimizers:
        return None
    params = in_param_order(dict.fromkeys(p for o in optimizers for p in sweep.searched_params(o)))
    codes = {o: i for i, o in enumerate(optimizers)}
    dims = [{"label": "optimizer", "values": search["optimizer"].map(codes), "tickvals": list(codes.values()),
             "ticktext": [label(o) for o in optimizers], "range": [-0.3, len(codes) - 0.7]}]
    for param in params:
        takes = search["optimizer"].map(lambda o, p=param: p in sweep.searched_params(o))
        dims.append(_dimension(param, search[param].where(takes)))
    dims += [{"label": "epochs reached", "values": search["epochs_run"].astype(float)},
             {"label": "final val_acc", "values": search["final_val_acc"], "tickformat": ".0%"}]
    fig = go.Figure(go.Parcoords(dimensions=dims, line={
        "color": search["final_val_acc"], "colorscale": "Viridis", "showscale": True,
        "colorbar": {"title": {"text": "final val_acc"}, "tickformat": ".0%"}}))
    return layout(fig, "Search: hyperparameters against each trial's final val accuracy",
                  height=480, margin={"l": 110, "r": 40, "t": 110, "b": 40})


@figure("sensitivity", "Sensitivity to the perturbation radius and alpha",
        "Final val accuracy against the ascent radius each trial actually used (mean ||e|| over "
        "its steps, comparable across SAM variants where rho is not: ASAM scales it by |w| + eta) "
        "and against ZSharp's alpha. A wide good region means the optimizer is forgiving to tune. "
        "Single runs: differences smaller than the seed spread of the confirm stage are noise.",
        below=tables.good_region_tables)
def figure_sensitivity(inputs: ReportInputs) -> go.Figure | None:
    """Final val accuracy against the perturbation radius each search trial used (mean
    ||e||, SAM family; log axis) and against alpha (ZSharp), one point per search trial;
    filled markers ran the full budget."""
    sweep = inputs.sweep
    search = sweep.stage(SEARCH).dropna(subset=["final_val_acc"])
    panels = [p for p in SENSITIVITY_PARAMS if any(has_values(sweep, search, o, p) for o in sweep.optimizers)]
    if not panels:
        return None
    full = _ran_full_budget(search)
    fig = make_subplots(1, len(panels), subplot_titles=[f"against {p}" for p in panels])
    legend = set()
    for col, param in enumerate(panels, start=1):
        for optimizer in sweep.optimizers:
            mine = search[(search["optimizer"] == optimizer)].dropna(subset=[param])
            if mine.empty or not has_values(sweep, search, optimizer, param):
                continue
            fig.add_trace(go.Scatter(
                x=mine[param], y=mine["final_val_acc"], mode="markers", name=label(optimizer),
                legendgroup=optimizer, showlegend=optimizer not in legend,
                marker=_budget_markers(color(optimizer), full[mine.index], size=9),
                customdata=np.stack([mine["trial_id"], mine["epochs_run"]], axis=1),
                hovertemplate=f"{param}=%{{x:.3g}}: %{{y:.2%}} after %{{customdata[1]}} epochs "
                              "(trial %{customdata[0]})<extra></extra>"), row=1, col=col)
            legend.add(optimizer)
        log = {"type": "log", "dtick": "D2"} if log_scaled(param) else {}  # D2: 1, 2, 5 labels
        fig.update_xaxes(title_text=MEASURED.get(param) or param_label(param), row=1, col=col, **log)
    fig.update_yaxes(title_text="final val accuracy", tickformat=".0%")
    return layout(fig, "Search: accuracy against the perturbation radius used and alpha "
                  "(open markers: stopped early)", height=440)


@figure("importance", "Hyperparameter importance",
        "Optuna's fANOVA on the trials that ran the full budget (ASHA's stopped trials are left "
        "out, as Optuna leaves out pruned trials).",
        below=tables.importance_notes)
def figure_importance(inputs: ReportInputs) -> go.Figure | None:
    """fANOVA hyperparameter importance, one bar chart per optimizer that has enough
    finished trials and more than one parameter (None if no optimizer has)."""
    ranked = {o: v for o, v in inputs.importances.items() if isinstance(v, dict)}
    if not ranked:
        return None
    cols = min(3, len(ranked))
    rows = math.ceil(len(ranked) / cols)
    fig = make_subplots(rows, cols, subplot_titles=[label(o) for o in ranked], horizontal_spacing=0.12)
    for i, (optimizer, importances) in enumerate(ranked.items()):
        names = list(importances)[::-1]
        fig.add_trace(go.Bar(x=[importances[n] for n in names], y=names, orientation="h",
                             marker_color=color(optimizer), name=label(optimizer), showlegend=False,
                             hovertemplate="%{y}: %{x:.1%}<extra></extra>"),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(title_text="share of val accuracy variance (fANOVA)", tickformat=".0%", range=[0, 1])
    fig.update_yaxes(title_text="hyperparameter")
    return layout(fig, "Search: hyperparameter importance per optimizer (finished trials)",
                  height=max(340, 300 * rows))


@figure("asha", "Early stopping (ASHA)",
        "ASHA stops the worst trials at each rung; the trials that reached the last bar got the "
        "full budget.", below=tables.rung_table)
def figure_asha(inputs: ReportInputs) -> go.Figure:
    """How ASHA spent the budget: search trials by the epochs they reached, per optimizer."""
    sweep = inputs.sweep
    counts = sweep.stage(SEARCH).groupby(["optimizer", "epochs_run"]).size().rename("trials").reset_index()
    fig = go.Figure()
    for optimizer in sweep.optimizers:
        mine = counts[counts["optimizer"] == optimizer]
        if mine.empty:
            continue
        fig.add_trace(go.Bar(x=mine["epochs_run"], y=mine["trials"], name=label(optimizer),
                             marker_color=color(optimizer), customdata=mine["epochs_run"] * mine["trials"],
                             hovertemplate="%{y} trials stopped at epoch %{x} "
                                           "(%{customdata} trial-epochs)<extra></extra>"))
    epochs = sorted(counts["epochs_run"].unique().tolist()) if len(counts) else []
    most = int(counts["trials"].max()) if len(counts) else 0
    return layout(fig, "Search: how ASHA spent the budget (trials by epochs reached)", barmode="group",
                  xaxis={"title": {"text": "epochs reached"}, "tickmode": "array", "tickvals": epochs},
                  yaxis={"title": {"text": "trials"}, **({"dtick": 1} if most <= 10 else {})})


# ---- the search per optimizer, as Optuna Dashboard and W&B show it ------------------------------

def _search_by_optimizer(sweep: Sweep) -> dict[str, pd.DataFrame]:
    """Each optimizer's search trials in start order, numbered 1, 2, ... (`number`), with
    whether each ran the full budget (`full`)."""
    search = sweep.stage(SEARCH)
    found = {}
    for optimizer in sweep.optimizers:
        mine = search[search["optimizer"] == optimizer].sort_values("start_time", kind="stable")
        if len(mine):
            found[optimizer] = mine.assign(number=np.arange(1, len(mine) + 1),
                                           full=_ran_full_budget(mine))
    return found


def _grid(count: int, titles: list[str], cols: int = 3, **options):
    """Subplots for `count` panels, up to `cols` a row (the last row's spare cells hidden),
    and that number of columns; panel i sits at row i // cols + 1, column i % cols + 1."""
    cols = min(cols, max(count, 1))
    rows = math.ceil(count / cols)
    fig = make_subplots(rows, cols, subplot_titles=titles, **options)
    for spare in range(count, rows * cols):
        fig.update_xaxes(visible=False, row=spare // cols + 1, col=spare % cols + 1)
        fig.update_yaxes(visible=False, row=spare // cols + 1, col=spare % cols + 1)
    return fig, cols


@figure("history", "Search history",
        "Each search trial's final val accuracy in the order its optimizer's search ran it (open "
        "markers: stopped early by ASHA, after fewer epochs), and the best full-budget trial so "
        "far: whether the search was still improving when its budget ran out.")
def figure_history(inputs: ReportInputs) -> go.Figure | None:
    """Optimization history per optimizer: final val accuracy by trial number, and the best
    trial that ran the full budget so far (Optuna's history, pruned trials marked)."""
    trials = _search_by_optimizer(inputs.sweep)
    if not trials:
        return None
    fig = go.Figure()
    for optimizer, mine in trials.items():
        c = color(optimizer)
        fig.add_trace(go.Scatter(
            x=mine["number"], y=mine["final_val_acc"], mode="markers", name=label(optimizer),
            legendgroup=optimizer, marker=_budget_markers(c, mine["full"]),
            customdata=np.stack([mine["trial_id"], mine["status"], mine["epochs_run"]], axis=1),
            hovertemplate="trial %{x} (%{customdata[0]}, %{customdata[1]} after %{customdata[2]} "
                          "epochs): %{y:.2%}<extra></extra>"))
        best = mine["final_val_acc"].where(mine["full"]).cummax().ffill()
        fig.add_trace(go.Scatter(x=mine["number"], y=best, mode="lines", line_shape="hv",
                                 line={"color": c}, legendgroup=optimizer, showlegend=False,
                                 hovertemplate="best full-budget trial so far: %{y:.2%}<extra></extra>"))
    most = max(len(m) for m in trials.values())
    return layout(fig, "Search: final val accuracy by trial number, and the best so far (line)",
                  xaxis={"title": {"text": "trial number (per optimizer)"}, **epoch_ticks([most])},
                  yaxis_title="final val accuracy", yaxis_tickformat=".0%")


@figure("intermediate", "Intermediate values",
        "Every search trial's val accuracy after each epoch, as Optuna was told it; an x marks "
        "where ASHA stopped a trial.")
def figure_intermediate(inputs: ReportInputs) -> go.Figure | None:
    """Per optimizer, each search trial's val accuracy by epoch, the trials ASHA stopped
    marked at their last epoch."""
    sweep = inputs.sweep
    trials = _search_by_optimizer(sweep)
    if not trials:
        return None
    epochs = sweep.epochs[sweep.epochs["stage"] == SEARCH]
    fig, cols = _grid(len(trials), [label(o) for o in trials], shared_yaxes=True)
    for i, (optimizer, mine) in enumerate(trials.items()):
        row, col, c = i // cols + 1, i % cols + 1, color(optimizer)
        for trial in mine.itertuples():
            curve = epochs[epochs["trial_id"] == trial.trial_id]
            stopped = trial.status == "stopped_early"
            fig.add_trace(go.Scatter(
                x=curve["epoch"], y=curve[SEARCH_METRIC], mode="lines", showlegend=False,
                line={"color": rgba(c, 0.55), "width": 1.5},
                hovertemplate=f"trial {trial.number} ({trial.trial_id}), epoch %{{x}}: %{{y:.2%}}"
                              "<extra></extra>"), row=row, col=col)
            if stopped and len(curve):
                fig.add_trace(go.Scatter(
                    x=curve["epoch"].iloc[-1:], y=curve[SEARCH_METRIC].iloc[-1:], mode="markers",
                    marker={"symbol": "x", "size": 9, "color": c}, showlegend=False,
                    hovertemplate=f"trial {trial.number} stopped by ASHA after epoch %{{x}}"
                                  "<extra></extra>"), row=row, col=col)
        fig.update_xaxes(title_text="epoch", row=row, col=col, **epoch_ticks(epochs["epoch"]))
    fig.update_yaxes(title_text="val accuracy", tickformat=".0%")
    return layout(fig, "Search: val accuracy by epoch of every trial (x: stopped by ASHA)",
                  height=max(360, 320 * math.ceil(len(trials) / cols)))


def _bounds(sweep: Sweep, optimizer: str, param: str) -> tuple[float, float] | None:
    """The search range of `param` for `optimizer` in the sweep's space (None without one,
    or for a choice)."""
    if sweep.space is None or optimizer not in sweep.space.optimizers:
        return None
    d = sweep.space.distributions_for(optimizer).get(param)
    return None if d is None or d.kind == "choice" else (float(d.low), float(d.high))


@figure("slices", "Slices",
        "Final val accuracy of each search trial against each hyperparameter its optimizer "
        "searched, the search range's ends drawn as dashed lines (open markers: stopped early). "
        "A best value at an end means the range should be wider.")
def figure_slices(inputs: ReportInputs) -> go.Figure | None:
    """Slice plots: a panel per optimizer and hyperparameter it searched (lr included; log
    axes where searched log-uniformly), with the search bounds."""
    sweep = inputs.sweep
    trials = _search_by_optimizer(sweep)
    pairs = [(o, p) for o in trials for p in sweep.searched_params(o)]
    if not pairs:
        return None
    fig, cols = _grid(len(pairs), [f"{label(o)}: {param_label(p)}" for o, p in pairs], shared_yaxes=True)
    accuracy = pd.concat([m["final_val_acc"] for m in trials.values()]).dropna()
    span = [accuracy.min(), accuracy.max()] if len(accuracy) else [0.0, 1.0]
    for i, (optimizer, param) in enumerate(pairs):
        row, col, mine = i // cols + 1, i % cols + 1, trials[optimizer]
        fig.add_trace(go.Scatter(
            x=mine[param], y=mine["final_val_acc"], mode="markers", showlegend=False,
            marker=_budget_markers(color(optimizer), mine["full"]),
            customdata=mine["number"],
            hovertemplate=f"{param}=%{{x:.3g}}: %{{y:.2%}} (trial %{{customdata}})<extra></extra>"),
            row=row, col=col)
        ends = _bounds(sweep, optimizer, param)
        if ends:  # a trace, not a shape: a shape does not widen the axis to show itself
            fig.add_trace(go.Scatter(
                x=[ends[0], ends[0], None, ends[1], ends[1]], y=[*span, None, *span], mode="lines",
                name="search range", showlegend=False, hoverinfo="skip",
                line={"dash": "dash", "color": "#999", "width": 1}), row=row, col=col)
        log = {"type": "log", "dtick": "D2"} if log_scaled(param) else {}
        fig.update_xaxes(title_text=param_label(param), row=row, col=col, **log)
    fig.update_yaxes(title_text="final val acc", tickformat=".0%")
    return layout(fig, "Search: final val accuracy against each searched hyperparameter "
                  "(dashed: the search range)", height=max(360, 300 * math.ceil(len(pairs) / cols)))


def _contour_optimizers(sweep: Sweep) -> list[str]:
    """The optimizers that searched both rho and lr."""
    return [o for o in sweep.optimizers if {"rho", "lr"} <= set(sweep.searched_params(o))]


@figure("contour", "rho against learning rate",
        "Final val accuracy of the search trials over rho and the learning rate, interpolated "
        "between the trials (points) that ran the full budget; white where no trials surround a "
        "point. Few trials make a rough map: read it for where the good region lies.")
def figure_contour(inputs: ReportInputs) -> go.Figure | None:
    """Per SAM-family optimizer, a contour of final val accuracy over log rho x log lr,
    linearly interpolated between its full-budget search trials (at least 3, not on one
    line), with every trial as a point (open: stopped early)."""
    from scipy.interpolate import griddata

    sweep = inputs.sweep
    trials = _search_by_optimizer(sweep)
    optimizers = [o for o in _contour_optimizers(sweep) if o in trials]
    if not optimizers:
        return None
    fig, cols = _grid(len(optimizers), [label(o) for o in optimizers])
    for i, optimizer in enumerate(optimizers):
        mine, (row, col) = trials[optimizer].dropna(subset=["final_val_acc"]), (i // cols + 1, i % cols + 1)
        full = mine[mine["full"]]
        x, y = np.log10(full["lr"].astype(float)), np.log10(full["rho"].astype(float))
        if len(full) >= 3 and np.linalg.matrix_rank(np.c_[x - x.mean(), y - y.mean()]) == 2:
            gx, gy = np.meshgrid(np.linspace(x.min(), x.max(), 40), np.linspace(y.min(), y.max(), 40))
            z = griddata((x, y), full["final_val_acc"], (gx, gy), method="linear")
            fig.add_trace(go.Contour(x=10 ** gx[0], y=10 ** gy[:, 0], z=z, colorscale="Viridis",
                                     showscale=i == 0, contours={"coloring": "heatmap"},
                                     colorbar={"title": {"text": "final val_acc"}, "tickformat": ".0%"},
                                     hovertemplate="lr %{x:.3g}, rho %{y:.3g}: %{z:.2%}<extra></extra>"),
                          row=row, col=col)
        fig.add_trace(go.Scatter(
            x=mine["lr"], y=mine["rho"], mode="markers", showlegend=False,
            marker={"color": "white", "size": 8, "line": {"color": "black", "width": 1.2},
                    "symbol": np.where(mine["full"], "circle", "circle-open")},
            customdata=np.stack([mine["number"], mine["final_val_acc"]], axis=1),
            hovertemplate="trial %{customdata[0]}: lr %{x:.3g}, rho %{y:.3g}, "
                          "%{customdata[1]:.2%}<extra></extra>"), row=row, col=col)
        fig.update_xaxes(title_text=param_label("lr"), type="log", row=row, col=col)
        fig.update_yaxes(title_text=param_label("rho"), type="log", row=row, col=col)
    return layout(fig, "Search: final val accuracy over rho and the learning rate (full-budget "
                  "trials interpolated)", height=max(380, 360 * math.ceil(len(optimizers) / cols)))


@figure("zsharp_ascent", "ZSharp: its ascent against SAM's",
        "ZSharp perturbs along the gradient's large-z-score entries only. The cosine between its "
        "ascent and SAM's (the full gradient) says how far the filter turns the ascent; ||e|| is "
        "the radius the ascent actually used (each filtered layer at rho on its own, so it grows "
        "with the number of layers). One point per ZSharp trial, its last epoch's mean over steps.")
def figure_zsharp_ascent(inputs: ReportInputs) -> go.Figure | None:
    """ZSharp's ascent against alpha: its cosine with SAM's ascent direction and the norm of
    its whole perturbation, each ZSharp trial's last epoch (None without ZSharp telemetry)."""
    sweep = inputs.sweep
    epochs = sweep.epochs[(sweep.epochs["optimizer"] == "zsharp") & sweep.epochs["ascent_cosine"].notna()]
    if epochs.empty:
        return None
    last = epochs.sort_values("epoch").groupby("trial_id").last()
    trials = sweep.trials.set_index("trial_id").loc[last.index]
    fig = make_subplots(1, 2, subplot_titles=("cosine with SAM's ascent", "||e||, the radius used"))
    for stage, symbol in ((SEARCH, "circle-open"), (CONFIRM, "circle")):
        mine = trials["stage"] == stage
        if not mine.any():
            continue
        for col, metric in enumerate(("ascent_cosine", "perturbation_norm"), start=1):
            fig.add_trace(go.Scatter(
                x=trials.loc[mine, "alpha"], y=last.loc[mine, metric], mode="markers",
                name="search trials" if stage == SEARCH else "confirm runs", legendgroup=stage,
                showlegend=col == 1, marker={"symbol": symbol, "size": 9, "color": color("zsharp")},
                customdata=np.stack([last.index[mine], trials.loc[mine, "rho"]], axis=1),
                hovertemplate="alpha %{x:.3g}, rho %{customdata[1]:.3g}: %{y:.3g}"
                              "<extra>%{customdata[0]}</extra>"), row=1, col=col)
    fig.update_xaxes(title_text=param_label("alpha"))
    fig.update_yaxes(title_text="cosine", row=1, col=1)
    fig.update_yaxes(title_text="||e|| (log scale)", type="log", row=1, col=2)
    return layout(fig, "ZSharp: cosine of its ascent with SAM's, and its radius, against alpha "
                  "(open: search trials)", height=420)


@figure("flatness", "Flatness",
        "Curvature and sharpness of each confirm run's training loss after its last epoch, on a "
        "fixed subset of training images, with BatchNorm in eval mode (its running statistics, as "
        "PyHessian measures). First the measures that a rescaling of the weights which leaves the "
        "function unchanged (a conv layer's weights x2 with its BatchNorm after it) does not move, "
        "because their perturbations scale with |w|: adaptive worst-case sharpness, the largest "
        "loss increase found over offsets |w| u with ||u|| <= r, and adaptive average-case "
        "sharpness, the mean increase at offsets r |w| z, z standard normal (Andriushchenko et "
        "al., 2023); the plots show these, each seed one point. Then the measures rescaling does "
        "move, labelled so: the Hessian's top eigenvalue (Lanczos) and trace (Hutchinson), and "
        "worst-case sharpness within an L2 ball of radius r. Even the invariant ones correlate "
        "only loosely with generalisation: they are diagnostics of where each optimizer ended, "
        "not the verdict, which is the test accuracy above.",
        above=tables.flatness_tables)
def figure_flatness(inputs: ReportInputs) -> go.Figure | None:
    """Final test accuracy against adaptive worst-case and adaptive average-case sharpness
    (with each run's standard error as a bar), one point per equal-epochs confirm run of
    each optimizer's best configuration, coloured by optimizer (None without diagnostics)."""
    runs = flatness_runs(inputs.sweep)
    if runs.empty:
        return None
    panels = ("sharpness_adaptive_worst", "sharpness_adaptive_average")
    fig = make_subplots(1, 2, subplot_titles=[f"against {MEASURES[m].label}" for m in panels],
                        shared_yaxes=True)
    for optimizer, mine in runs.groupby("optimizer", sort=False):
        for col, measure in enumerate(panels, start=1):
            error = MEASURES[measure].error
            fig.add_trace(go.Scatter(
                x=mine[measure], y=mine["final_test_acc"], mode="markers", name=label(optimizer),
                legendgroup=optimizer, showlegend=col == 1, marker={"color": color(optimizer), "size": 9},
                error_x={"type": "data", "array": mine[error], "thickness": 1} if error else None,
                customdata=mine["seed"],
                hovertemplate=f"seed %{{customdata}}: {MEASURES[measure].label} %{{x:.3g}}, %{{y:.2%}}"
                              "<extra></extra>"), row=1, col=col)
            log = {"type": "log"} if (runs[measure] > 0).all() else {}
            fig.update_xaxes(title_text=MEASURES[measure].label, row=1, col=col, **log)
    fig.update_yaxes(title_text="final test accuracy", tickformat=".1%")  # seeds differ by tenths
    return layout(fig, "Confirm runs: final test accuracy against adaptive sharpness "
                  "(invariant to rescaling; one point per seed, equal epochs)", height=420)


@figure("loss_profiles", "Loss profiles",
        "The training loss of each confirm run along one filter-normalised random direction "
        "through its final weights (each filter of the direction scaled to the norm of the "
        "weights' filter, so networks of different scales compare, and a rescaling of the weights "
        "that keeps the function keeps the profile too; Li et al., 2018), as the rise "
        "above the loss at the weights themselves (t = 0). A narrower, steeper well is a sharper "
        "minimum along that direction; one direction is a slice, not the landscape.")
def figure_loss_profiles(inputs: ReportInputs) -> go.Figure | None:
    """Per optimizer, the mean over its equal-epochs confirm runs of loss(t) - loss(0)
    along the filter-normalised direction, each run a faint line (None without profiles)."""
    runs = flatness_runs(inputs.sweep)
    runs = runs[runs[LOSS_PROFILE].notna()] if LOSS_PROFILE in runs else runs.iloc[0:0]
    if runs.empty:
        return None
    fig = go.Figure()
    for optimizer, mine in runs.groupby("optimizer", sort=False):
        c, rises = color(optimizer), []
        for run in mine.itertuples():
            t, loss = map(np.array, zip(*getattr(run, LOSS_PROFILE)))
            rises.append(pd.Series(loss - loss[np.argmin(np.abs(t))], index=t))
            fig.add_trace(go.Scatter(x=t, y=rises[-1].values, mode="lines", showlegend=False,
                                     legendgroup=optimizer, line={"color": rgba(c, 0.25), "width": 1},
                                     hovertemplate=f"seed {run.seed}: t %{{x:.2f}}, +%{{y:.3g}}<extra></extra>"))
        mean = pd.concat(rises, axis=1).mean(axis=1)
        fig.add_trace(go.Scatter(x=mean.index, y=mean.values, mode="lines", name=label(optimizer),
                                 legendgroup=optimizer, line={"color": c, "width": 2.5},
                                 hovertemplate=f"{label(optimizer)}: t %{{x:.2f}}, mean +%{{y:.3g}}<extra></extra>"))
    return layout(fig, "Confirm runs: loss along a filter-normalised direction (mean over seeds; "
                  "faint: each run)",
                  xaxis_title="step t along the direction (1: one filter norm)",
                  yaxis_title="loss(t) - loss(0)", height=420)

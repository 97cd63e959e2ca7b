"""The report's search sections: accuracy against compute, the hyperparameters
(parallel coordinates, sensitivity, importance) and early stopping."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis import tables
from analysis.figures.registry import budget_markers, figure, ran_full_budget
from analysis.inputs import ReportInputs
from analysis.plotstyle import color, layout, log_scaled
from analysis.sensitivity import MEASURED, SENSITIVITY_PARAMS, has_values
from analysis.sweep import in_param_order
from analysis.text import compute_scale, label, num, param_label
from trainables.record import SEARCH, UNKNOWN_UNIT


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
    unit = units.pop() if len(units) == 1 else UNKNOWN_UNIT
    known = unit != UNKNOWN_UNIT
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
    full = ran_full_budget(search)
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
                marker=budget_markers(color(optimizer), full[mine.index], size=9),
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
        "full budget.", below=tables.rung_table, then=tables.cost_section)
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

"""The report's search per optimizer, as Optuna Dashboard and W&B show it: history,
intermediate values, slices and the rho-learning-rate contour."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.figures.registry import budget_markers, figure, ran_full_budget
from analysis.inputs import ReportInputs
from analysis.minimums import MIN_CONTOUR_TRIALS
from analysis.plotstyle import color, epoch_ticks, layout, log_scaled, rgba
from analysis.sweep import Sweep
from analysis.text import label, param_label
from trainables.record import SEARCH
from trainables.schema import SEARCH_METRIC, STOPPED_EARLY, count


def search_by_optimizer(sweep: Sweep) -> dict[str, pd.DataFrame]:
    """Each optimizer's search trials in start order, numbered 1, 2, ... (`number`), with
    whether each ran the full budget (`full`)."""
    search = sweep.stage(SEARCH)
    found = {}
    for optimizer in sweep.optimizers:
        mine = search[search["optimizer"] == optimizer].sort_values("start_time", kind="stable")
        if len(mine):
            found[optimizer] = mine.assign(number=np.arange(1, len(mine) + 1),
                                           full=ran_full_budget(mine))
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
    trials = search_by_optimizer(inputs.sweep)
    if not trials:
        return None
    fig = go.Figure()
    for optimizer, mine in trials.items():
        c = color(optimizer)
        fig.add_trace(go.Scatter(
            x=mine["number"], y=mine["final_val_acc"], mode="markers", name=label(optimizer),
            legendgroup=optimizer, marker=budget_markers(c, mine["full"]),
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
    trials = search_by_optimizer(sweep)
    if not trials:
        return None
    epochs = sweep.epochs[sweep.epochs["stage"] == SEARCH]
    fig, cols = _grid(len(trials), [label(o) for o in trials], shared_yaxes=True)
    for i, (optimizer, mine) in enumerate(trials.items()):
        row, col, c = i // cols + 1, i % cols + 1, color(optimizer)
        for trial in mine.itertuples():
            curve = epochs[epochs["trial_id"] == trial.trial_id]
            stopped = trial.status == STOPPED_EARLY
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
    trials = search_by_optimizer(sweep)
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
            marker=budget_markers(color(optimizer), mine["full"]),
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
        f"point. Each panel says how many trials its map rests on; below {MIN_CONTOUR_TRIALS} it "
        "shows the trials alone. Few trials make a rough map: read it for where the good region lies.")
def figure_contour(inputs: ReportInputs) -> go.Figure | None:
    """Per SAM-family optimizer, a contour of final val accuracy over log rho x log lr,
    linearly interpolated between its full-budget search trials (at least
    MIN_CONTOUR_TRIALS, not on one line), with every trial as a point (open: stopped
    early); each panel's title says how many trials the map rests on."""
    from scipy.interpolate import griddata

    sweep = inputs.sweep
    trials = search_by_optimizer(sweep)
    optimizers = [o for o in _contour_optimizers(sweep) if o in trials]
    if not optimizers:
        return None
    scored = {o: trials[o].dropna(subset=["final_val_acc"]) for o in optimizers}
    full_counts = {o: int(scored[o]["full"].sum()) for o in optimizers}
    fig, cols = _grid(len(optimizers), [
        f"{label(o)}: map from {count(n, 'full-budget trial')}" if n >= MIN_CONTOUR_TRIALS
        else f"{label(o)}: {count(n, 'full-budget trial')}, too few for a map" for o, n in full_counts.items()])
    for i, optimizer in enumerate(optimizers):
        mine, (row, col) = scored[optimizer], (i // cols + 1, i % cols + 1)
        full = mine[mine["full"]]
        x, y = np.log10(full["lr"].astype(float)), np.log10(full["rho"].astype(float))
        if len(full) >= MIN_CONTOUR_TRIALS and np.linalg.matrix_rank(np.c_[x - x.mean(), y - y.mean()]) == 2:
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

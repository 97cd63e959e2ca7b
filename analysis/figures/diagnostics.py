"""The report's diagnostics: ZSharp's ascent against SAM's, flatness and loss profiles
(diagnostics, not the verdict)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis import tables
from analysis.figures.registry import figure
from analysis.flatness import MEASURES, flatness_runs
from analysis.inputs import ReportInputs
from analysis.plotstyle import color, layout, rgba
from analysis.text import label, param_label
from trainables.record import CONFIRM, SEARCH
from trainables.schema import LOSS_PROFILE

INNER_T = 0.5  # the loss profiles' axis spans the rises at |t| up to this (of the filter norm)


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
    fig, means = go.Figure(), []
    for optimizer, mine in runs.groupby("optimizer", sort=False):
        c, rises = color(optimizer), []
        for run in mine.itertuples():
            t, loss = map(np.array, zip(*getattr(run, LOSS_PROFILE)))
            rises.append(pd.Series(loss - loss[np.argmin(np.abs(t))], index=t))
            fig.add_trace(go.Scatter(x=t, y=rises[-1].values, mode="lines", showlegend=False,
                                     legendgroup=optimizer, line={"color": rgba(c, 0.25), "width": 1},
                                     hovertemplate=f"seed {run.seed}: t %{{x:.2f}}, +%{{y:.3g}}<extra></extra>"))
        mean = pd.concat(rises, axis=1).mean(axis=1)
        means.append(mean)
        fig.add_trace(go.Scatter(x=mean.index, y=mean.values, mode="lines", name=label(optimizer),
                                 legendgroup=optimizer, line={"color": c, "width": 2.5},
                                 hovertemplate=f"{label(optimizer)}: t %{{x:.2f}}, mean +%{{y:.3g}}<extra></extra>"))
    # The rise at |t| = 1 can be 100x the rise inside the well, which then looks flat: the
    # axis spans the inner half (|t| <= INNER_T) and the outer rises leave it (a
    # double-click on the chart shows them all).
    stacked = pd.concat(means)
    inner = stacked[np.abs(stacked.index) <= INNER_T]
    top = float(inner.max()) if len(inner) and inner.max() > 0 else None
    fig = layout(fig, "Confirm runs: loss along a filter-normalised direction (mean over seeds; "
                 f"faint: each run; the axis spans |t| <= {INNER_T:g}, double-click for all)",
                 xaxis_title="step t along the direction (1: one filter norm)",
                 yaxis_title="loss(t) - loss(0)", height=420)
    if top is not None:
        fig.update_yaxes(range=[min(0.0, float(inner.min())) - 0.05 * top, 1.15 * top])
    return fig

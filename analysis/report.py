"""One self-contained HTML report of a sweep: the comparison, its curves, its cost.

    python -m analysis.report --experiment quickstart --out report.html
    python -m analysis.report --storage results/quickstart --out report.html --png figures/

The page embeds plotly.js once, inline, so it opens offline from a file:// URL. Each
figure comes from one function of a `Sweep` (`figure_learning_curves(sweep)`, ...), so a
notebook can call them one at a time; `write_report(sweep, path)` writes the whole page.
Claims rest on the confirm stage (several seeds, the test accuracy at the final epoch,
intervals, paired tests Holm-corrected across the page; analysis.verdict), at equal epochs
and at equal gradient evaluations; the search's numbers are single runs on val and labelled
as such. Warnings (analysis.warnings) come first, in a box above the comparison.
"""

from __future__ import annotations

import argparse
import html
import http.client
import logging
import math
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import sample_colorscale
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from analysis import stats
from analysis.load import HPARAM_ORDER, Sweep, load_sweep, load_sweep_from_storage
from analysis.text import (ARM_TITLES, bounded, label, num, pct, pct_interval, points,
                           points_interval, run_label, wins_text)
from analysis.verdict import ArmComparison, Comparison, comparison, compared_runs
from analysis.warnings import sweep_warnings
from trainables.errors import OneLineArgumentParser
from trainables.schema import BUDGET_ARMS, EQUAL_COMPUTE, EQUAL_EPOCHS, SEARCH_METRIC, VERDICT_METRIC

COLORS = {"adam": "#1f77b4", "adamw": "#17becf", "sgd": "#7f7f7f", "sam": "#ff7f0e",
          "asam": "#2ca02c", "fsam": "#9467bd", "zsharp": "#d62728"}
_SPARE_COLORS = ["#8c564b", "#e377c2", "#bcbd22", "#393b79", "#637939"]
GOOD_MARGIN = 0.01  # "good region": within 1 accuracy point of the optimizer's best trial
# fANOVA fits a random forest to the trials: from fewer points it reports noise.
MIN_IMPORTANCE_TRIALS = 5
LOG_PARAMS = {"lr", "weight_decay", "eta", "rho", "perturbation_norm"}
# Accuracy is plotted against these: alpha as searched, and the ascent radius each trial
# actually used (mean ||e||) rather than rho, which means a different radius for ASAM
# (scaled by |w| + eta) than for SAM.
SENSITIVITY_PARAMS = ("perturbation_norm", "alpha")
# Measured per trial (trials frame), not searched: name -> axis title.
MEASURED = {"perturbation_norm": "perturbation radius used (mean ||e|| per step)"}
_PLOT_CONFIG = {"displaylogo": False, "responsive": True}


class ReportError(ValueError):
    """The report cannot be made as asked (bad input, no Chrome for PNG export)."""


def color(optimizer: str) -> str:
    """The optimizer's colour in every figure (a spare one, fixed by its name, if unknown)."""
    if optimizer in COLORS:
        return COLORS[optimizer]
    return _SPARE_COLORS[sum(map(ord, optimizer)) % len(_SPARE_COLORS)]


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


# ---- figures -------------------------------------------------------------------------------

def _layout(fig: go.Figure, title: str, height: int = 420, **layout) -> go.Figure:
    layout.setdefault("margin", {"l": 70, "r": 30, "t": 70, "b": 60})
    fig.update_layout(title={"text": title, "x": 0.01}, height=height, template="plotly_white", **layout)
    return fig


def _epoch_ticks(epochs) -> dict:
    """Whole epochs on an axis (no 1.5) while there are few of them."""
    most = max(epochs, default=0)
    return {"tickmode": "linear", "tick0": 0, "dtick": 1} if most <= 20 else {"tickformat": "d"}


def figure_comparison(sweep: Sweep) -> go.Figure:
    """Final-epoch test accuracy per seed of the confirm stage, with the mean and its 95% t
    interval, per optimizer and again for each 1-pass optimizer's equal-compute runs
    ("Adam (2x epochs)", open markers); without a confirm stage, the search's finalist per
    optimizer (single runs on val)."""
    result = comparison(sweep)
    if result.single_runs:
        return _figure_search_best(result.search_best)
    fig = go.Figure()
    groups = _confirm_groups(result)
    for optimizer, arm, seeds, row in groups:
        _add_seeds_and_mean(fig, optimizer, arm, seeds, row)
    # A t interval from 2 or 3 seeds can reach past 0% and 100%: the axis stays on [0, 1].
    shown = pd.concat([seeds[VERDICT_METRIC] for _, _, seeds, _ in groups]
                      + [pd.Series([row.low, row.high]) for *_, row in groups]).dropna()
    yrange = [max(0.0, shown.min() - 0.02), min(1.0, shown.max() + 0.02)]
    small = " (fewer than 5 seeds: wide intervals)" if any(row.small_sample for *_, row in groups) else ""
    return _layout(fig, f"Confirm stage: final test accuracy per seed, mean and 95% t interval{small}",
                   xaxis_title="optimizer (2x epochs: the equal-compute runs)",
                   yaxis_title="final test accuracy", yaxis_tickformat=".0%", yaxis_range=yrange)


def _figure_search_best(best: pd.DataFrame) -> go.Figure:
    fig = go.Figure(go.Scatter(
        x=[label(o) for o in best["optimizer"]], y=best["final_val_acc"], mode="markers",
        marker={"size": 12, "color": [color(o) for o in best["optimizer"]]},
        text=best["trial_id"], hovertemplate="%{x}: %{y:.2%} (trial %{text})<extra></extra>",
        name="best search trial"))
    return _layout(fig, "Search: each optimizer's best trial, final val accuracy (single runs, "
                   "not evidence of a difference)", xaxis_title="optimizer",
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
    """One optimizer's seeds as small markers and its mean with the interval as error bars."""
    name, c, longer = run_label(optimizer, arm), color(optimizer), arm == EQUAL_COMPUTE
    fig.add_trace(go.Scatter(
        x=[name] * len(seeds), y=seeds[VERDICT_METRIC], mode="markers", name=f"{name} seeds",
        marker={"size": 7, "color": _rgba(c, 0.5)}, text=seeds["seed"],
        hovertemplate="seed %{text}: %{y:.2%}<extra></extra>", showlegend=False))
    low = row.mean - row.low if not pd.isna(row.low) else None
    high = row.high - row.mean if not pd.isna(row.high) else None
    fig.add_trace(go.Scatter(
        x=[name], y=[row.mean], mode="markers", name=name, showlegend=False,
        marker={"size": 14, "symbol": "diamond-open" if longer else "diamond", "color": c,
                "line": {"width": 2, "color": c}},
        error_y={"type": "data", "symmetric": False, "array": [high], "arrayminus": [low],
                 "visible": low is not None},
        hovertemplate=f"{name}: mean %{{y:.2%}}, n={row.n}"
                      f"{' (small sample)' if row.small_sample else ''}<extra></extra>"))


def curve_trials(sweep: Sweep) -> tuple[pd.DataFrame, str]:
    """The epochs the learning curves average over, with each run's budget_arm, and which
    runs they are: "confirm", the runs the comparison compares in either arm
    (verdict.compared_runs), else "sweep", the search's trials (budget_arm None)."""
    runs = compared_runs(sweep)
    if len(runs):
        arms = runs.set_index("trial_id")["budget_arm"]
        epochs = sweep.epochs[sweep.epochs["trial_id"].isin(arms.index)]
        return epochs.assign(budget_arm=epochs["trial_id"].map(arms)), "confirm"
    return sweep.epochs[sweep.epochs["stage"] == "sweep"].assign(budget_arm=None), "sweep"


def _band(fig, x, band: pd.DataFrame, optimizer: str, name: str, col: int, legend: bool, dash: str) -> None:
    """A mean line with a shaded band from band["low"] to band["high"], in subplot column `col`."""
    c = color(optimizer)
    common = {"legendgroup": name, "hoverinfo": "skip", "showlegend": False, "mode": "lines",
              "line": {"width": 0}}
    fig.add_trace(go.Scatter(x=x, y=band["high"], **common), row=1, col=col)
    fig.add_trace(go.Scatter(x=x, y=band["low"], fill="tonexty", fillcolor=_rgba(c, 0.18), **common),
                  row=1, col=col)
    fig.add_trace(go.Scatter(x=x, y=band["mean"], mode="lines+markers", name=name, legendgroup=name,
                             showlegend=legend, line={"color": c, "width": 2, "dash": dash},
                             marker={"size": 5}, hovertemplate=f"{name}: %{{y:.2%}}<extra></extra>"),
                  row=1, col=col)


def figure_learning_curves(sweep: Sweep) -> go.Figure:
    """Accuracy by epoch and by gradient evaluations per optimizer, the mean and the range
    (min to max): test accuracy over the confirm runs' seeds, the 1-pass optimizers'
    equal-compute runs dashed and by gradient evaluations only; without a confirm stage,
    val accuracy over the search's trials."""
    epochs, source = curve_trials(sweep)
    metric, split = (VERDICT_METRIC, "test") if source == "confirm" else (SEARCH_METRIC, "val")
    fig = make_subplots(1, 2, subplot_titles=("by epoch", "by gradient evaluations"),
                        horizontal_spacing=0.08)
    arm_of = epochs["budget_arm"].fillna("")  # search trials have none
    for optimizer in sweep.optimizers:
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
    if source == "confirm":
        dashed = "; dashed: 1-pass optimizers at 2x epochs" if (arm_of == EQUAL_COMPUTE).any() else ""
        over = f"confirm stage: {split} accuracy, mean and range over seeds{dashed}"
    else:
        over = (f"search trials: {split} accuracy, mean and range over trials; trials stopped early "
                "drop out of later epochs")
    fig.update_xaxes(title_text="epoch", row=1, col=1,
                     **_epoch_ticks(epochs.loc[arm_of != EQUAL_COMPUTE, "epoch"]))
    fig.update_xaxes(title_text="gradient evaluations (samples x passes; SAM family: 2 per step)",
                     row=1, col=2)
    fig.update_yaxes(title_text=f"{split} accuracy", tickformat=".0%")
    return _layout(fig, f"Learning curves ({over})", height=460)


def figure_compute(sweep: Sweep) -> go.Figure:
    """The best final val accuracy so far against cumulative compute hours of the search,
    per optimizer, trials in start order (stopped and failed trials spend compute too)."""
    search = sweep.stage("sweep")
    units = set(search["compute_unit"].dropna())
    unit = units.pop() if len(units) == 1 else "unknown"
    fig = go.Figure()
    for optimizer in sweep.optimizers:
        mine = search[search["optimizer"] == optimizer].sort_values("start_time")
        if mine.empty:
            continue
        hours = mine["compute_hours"] if unit in ("CPU", "GPU") else mine["train_seconds"] / 3600
        best = mine["final_val_acc"].cummax().ffill()  # a failed trial keeps the best so far
        fig.add_trace(go.Scatter(
            x=hours.cumsum(), y=best, mode="lines+markers", line_shape="hv", name=label(optimizer),
            line={"color": color(optimizer)}, customdata=np.stack(
                [mine["trial_id"], mine["status"], mine["final_val_acc"]], axis=1),
            hovertemplate="trial %{customdata[0]} (%{customdata[1]}, %{customdata[2]:.2%}): "
                          "best so far %{y:.2%}<extra></extra>"))
    axis = f"cumulative {unit}-hours" if unit in ("CPU", "GPU") else "cumulative trial-hours (resources unknown)"
    return _layout(fig, "Search: best final val accuracy against compute", xaxis_title=axis,
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
    log = name in LOG_PARAMS and (present > 0).all()
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


def figure_parallel_coordinates(sweep: Sweep) -> go.Figure | None:
    """Parallel coordinates of the search trials: optimizer, each searched hyperparameter
    (n/a where an optimizer has none), the epochs reached, and the final val accuracy
    (colour)."""
    search = sweep.stage("sweep").dropna(subset=["final_val_acc"])
    optimizers = [o for o in sweep.optimizers if (search["optimizer"] == o).any()]
    if not optimizers:
        return None
    params = list(dict.fromkeys(p for o in optimizers for p in sweep.searched_params(o)))
    order = {name: i for i, name in enumerate(HPARAM_ORDER)}
    params.sort(key=lambda n: order.get(n, len(order)))
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
    return _layout(fig, "Search: hyperparameters against each trial's final val accuracy",
                   height=480, margin={"l": 110, "r": 40, "t": 110, "b": 40})


def _has(sweep: Sweep, search: pd.DataFrame, optimizer: str, param: str) -> bool:
    """Whether an optimizer's search trials have values of `param` to plot: measured
    (MEASURED: perturbation_norm, the SAM family's) or searched."""
    if param in MEASURED:
        return bool(search.loc[search["optimizer"] == optimizer, param].notna().any())
    return param in sweep.searched_params(optimizer)


def good_region(sweep: Sweep, param: str, margin: float = GOOD_MARGIN) -> pd.DataFrame:
    """Per optimizer whose search trials have `param` (searched, or perturbation_norm):
    how many search trials came within `margin` of its best final val accuracy, the range
    of `param` they span, and the range over all its trials."""
    search = sweep.stage("sweep").dropna(subset=["final_val_acc", param])
    rows = []
    for optimizer in sweep.optimizers:
        mine = search[search["optimizer"] == optimizer]
        if mine.empty or not _has(sweep, search, optimizer, param):
            continue
        good = mine[mine["final_val_acc"] >= mine["final_val_acc"].max() - margin]
        rows.append({"optimizer": optimizer, "trials": len(mine), "good": len(good),
                     "low": good[param].min(), "high": good[param].max(),
                     "tried_low": mine[param].min(), "tried_high": mine[param].max()})
    return pd.DataFrame(rows, columns=["optimizer", "trials", "good", "low", "high",
                                       "tried_low", "tried_high"])


def figure_sensitivity(sweep: Sweep) -> go.Figure | None:
    """Final val accuracy against the perturbation radius each search trial used (mean
    ||e||, SAM family; log axis) and against alpha (ZSharp), one point per search trial;
    filled markers ran the full budget."""
    search = sweep.stage("sweep").dropna(subset=["final_val_acc"])
    panels = [p for p in SENSITIVITY_PARAMS if any(_has(sweep, search, o, p) for o in sweep.optimizers)]
    if not panels:
        return None
    full = search["epochs_run"] >= search["epochs"]
    fig = make_subplots(1, len(panels), subplot_titles=[f"against {p}" for p in panels])
    legend = set()
    for col, param in enumerate(panels, start=1):
        for optimizer in sweep.optimizers:
            mine = search[(search["optimizer"] == optimizer)].dropna(subset=[param])
            if mine.empty or not _has(sweep, search, optimizer, param):
                continue
            fig.add_trace(go.Scatter(
                x=mine[param], y=mine["final_val_acc"], mode="markers", name=label(optimizer),
                legendgroup=optimizer, showlegend=optimizer not in legend,
                marker={"color": color(optimizer), "size": 9, "line": {"color": color(optimizer), "width": 1.5},
                        "symbol": np.where(full[mine.index], "circle", "circle-open")},
                customdata=np.stack([mine["trial_id"], mine["epochs_run"]], axis=1),
                hovertemplate=f"{param}=%{{x:.3g}}: %{{y:.2%}} after %{{customdata[1]}} epochs "
                              "(trial %{customdata[0]})<extra></extra>"), row=1, col=col)
            legend.add(optimizer)
        log = {"type": "log", "dtick": "D2"} if param in LOG_PARAMS else {}  # D2: 1, 2, 5 labels
        fig.update_xaxes(title_text=MEASURED.get(param, param), row=1, col=col, **log)
    fig.update_yaxes(title_text="final val accuracy", tickformat=".0%")
    return _layout(fig, "Search: accuracy against the perturbation radius used and alpha "
                   "(open markers: stopped early)", height=440)


def param_importances(sweep: Sweep, min_trials: int = MIN_IMPORTANCE_TRIALS) -> dict:
    """Per optimizer, Optuna's fANOVA importances {param: share} of its search trials that
    finished (completed or diverged, with the final val accuracy Optuna saw), or a string
    saying why there are none (too few trials, one parameter).

    Trials ASHA stopped are left out, as Optuna leaves out pruned trials: their accuracy
    after fewer epochs is not comparable. Distributions come from the space (or, without
    one, the observed ranges).
    """
    search = sweep.stage("sweep")
    found = {}
    for optimizer in sweep.optimizers:
        params = sweep.searched_params(optimizer)
        done = search[(search["optimizer"] == optimizer) & search["status"].isin(["completed", "diverged"])
                      & search["final_val_acc"].notna()]
        if len(params) < 2:
            found[optimizer] = f"one parameter searched ({', '.join(params) or 'none'}): nothing to rank"
        elif len(done) < min_trials:
            found[optimizer] = (f"{len(done)} finished trials (fewer than {min_trials}): "
                                "no importance estimate")
        else:
            found[optimizer] = _fanova(sweep, optimizer, params, done)
    return found


def _optuna_distributions(sweep: Sweep, optimizer: str, params: list[str], trials: pd.DataFrame) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if sweep.space is not None and optimizer in sweep.space.optimizers:
        dists = {}
        for name, d in sweep.space.distributions_for(optimizer).items():
            if d.kind == "choice":
                dists[name] = CategoricalDistribution(list(d.values))
            elif d.kind == "int":
                dists[name] = IntDistribution(int(d.low), int(d.high))
            else:
                dists[name] = FloatDistribution(d.low, d.high, log=d.kind == "loguniform")
        return {name: dists[name] for name in params}
    return {name: FloatDistribution(float(trials[name].min()), float(trials[name].max()),
                                    log=bool(name in LOG_PARAMS and (trials[name] > 0).all()))
            for name in params}


def _fanova(sweep: Sweep, optimizer: str, params: list[str], trials: pd.DataFrame) -> dict | str:
    """fANOVA importances from an in-memory study built from the finished trials."""
    import optuna
    from optuna.distributions import CategoricalDistribution, IntDistribution

    dists = _optuna_distributions(sweep, optimizer, params, trials)

    def typed(name, value):
        if isinstance(dists[name], IntDistribution):
            return int(value)
        return value if isinstance(dists[name], CategoricalDistribution) else float(value)

    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" lines
    try:
        study = optuna.create_study(direction="maximize")
        for row in trials.itertuples():
            study.add_trial(optuna.trial.create_trial(
                params={name: typed(name, getattr(row, name)) for name in params},
                distributions=dists, value=float(row.final_val_acc)))
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        return {name: float(share) for name, share in importances.items()}
    except (RuntimeError, ValueError) as error:
        return f"fANOVA failed: {error}"
    finally:
        optuna.logging.set_verbosity(previous)


def figure_importance(sweep: Sweep, min_trials: int = MIN_IMPORTANCE_TRIALS) -> go.Figure | None:
    """fANOVA hyperparameter importance, one bar chart per optimizer that has enough
    finished trials and more than one parameter (None if no optimizer has)."""
    ranked = {o: v for o, v in param_importances(sweep, min_trials).items() if isinstance(v, dict)}
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
    return _layout(fig, "Search: hyperparameter importance per optimizer (finished trials)",
                   height=max(340, 300 * rows))


def figure_asha(sweep: Sweep) -> go.Figure:
    """How ASHA spent the budget: search trials by the epochs they reached, per optimizer."""
    search = sweep.stage("sweep")
    counts = search.groupby(["optimizer", "epochs_run"]).size().rename("trials").reset_index()
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
    return _layout(fig, "Search: how ASHA spent the budget (trials by epochs reached)", barmode="group",
                   xaxis={"title": {"text": "epochs reached"}, "tickmode": "array", "tickvals": epochs},
                   yaxis={"title": {"text": "trials"}, **({"dtick": 1} if most <= 10 else {})})


def figure_kept_fraction(sweep: Sweep) -> go.Figure | None:
    """ZSharp: the fraction of gradient entries its filter kept, by epoch, one line per
    trial, coloured by alpha (None if no ZSharp trial reported it)."""
    epochs = sweep.epochs[(sweep.epochs["optimizer"] == "zsharp") & sweep.epochs["kept_fraction"].notna()]
    if epochs.empty:
        return None
    trials = sweep.trials.set_index("trial_id")
    alphas = trials.loc[epochs["trial_id"].unique(), "alpha"].astype(float)
    low, high = alphas.min(), alphas.max()
    fig = go.Figure()
    for trial_id, mine in epochs.groupby("trial_id", sort=False):
        alpha, stage = alphas[trial_id], trials.at[trial_id, "stage"]
        where = 0.5 if high == low else (alpha - low) / (high - low)
        fig.add_trace(go.Scatter(
            x=mine["epoch"], y=mine["kept_fraction"], mode="lines+markers",
            name=f"{trial_id} ({stage}, alpha={alpha:.3g})",
            line={"color": sample_colorscale("Viridis", [where])[0],
                  "dash": "solid" if stage == "confirm" else "dot"},
            hovertemplate=f"alpha={alpha:.3g}, epoch %{{x}}: %{{y:.2%}} kept<extra>{trial_id}</extra>"))
    return _layout(fig, "ZSharp: fraction of gradient entries kept, by epoch (dotted: search, solid: confirm)",
                   xaxis={"title": {"text": "epoch"}, **_epoch_ticks(epochs["epoch"])},
                   yaxis_title="fraction of gradient entries kept (log scale)",
                   yaxis_type="log", yaxis_tickformat=".1%", height=440)


def cost_table(sweep: Sweep, stage: str = "sweep") -> pd.DataFrame:
    """Trials, epochs, gradient evaluations and compute hours per optimizer and status."""
    trials = sweep.stage(stage)
    table = (trials.groupby(["optimizer", "status"], sort=False)
             .agg(trials=("trial_id", "size"), epochs=("epochs_run", "sum"),
                  grad_evals=("grad_evals", "sum"), hours=("compute_hours", "sum"))
             .reset_index())
    order = {o: i for i, o in enumerate(sweep.optimizers)}
    table = table.sort_values(["optimizer", "status"], key=lambda s: s.map(order) if s.name == "optimizer" else s)
    total = {"optimizer": "all", "status": "all", "trials": int(table["trials"].sum()),
             "epochs": int(table["epochs"].sum()), "grad_evals": table["grad_evals"].sum(),
             "hours": table["hours"].sum(min_count=1)}
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


FIGURES = {  # name -> (section title, function), in page order
    "comparison": ("Comparison", figure_comparison),
    "learning_curves": ("Learning curves", figure_learning_curves),
    "compute": ("Accuracy against compute", figure_compute),
    "parallel_coordinates": ("Hyperparameters (parallel coordinates)", figure_parallel_coordinates),
    "sensitivity": ("Sensitivity to the perturbation radius and alpha", figure_sensitivity),
    "importance": ("Hyperparameter importance", figure_importance),
    "asha": ("Early stopping (ASHA)", figure_asha),
    "kept_fraction": ("ZSharp: gradient entries kept", figure_kept_fraction),
}


def figures(sweep: Sweep, importance_min_trials: int = MIN_IMPORTANCE_TRIALS) -> dict[str, go.Figure]:
    """Every figure this sweep has data for, by name, in page order."""
    made = {}
    for name, (_, make) in FIGURES.items():
        fig = make(sweep, importance_min_trials) if name == "importance" else make(sweep)
        if fig is not None:
            made[name] = fig
    return made


# ---- the page -------------------------------------------------------------------------------

def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, na_rep="–", border=0, classes="table")


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


def _comparison_html(result: Comparison) -> str:
    """The comparison's tables: per arm the summary and the paired tables, or the search's
    finalists when there is no confirm stage."""
    if result.single_runs:
        best = result.search_best
        if best.empty:
            return "<p>No search trial reached an accuracy.</p>"
        return _table(pd.DataFrame({
            "optimizer": best["optimizer"].map(label), "trial": best["trial_id"],
            "final val acc (single run)": best["final_val_acc"].map(pct),
            "epochs run": best["epochs_run"], "status": best["status"]}))
    parts = ["<p>The verdict: each optimizer's best configuration rerun with several seeds, read "
             "as the test accuracy at the final epoch. The p-values are Holm-corrected across "
             "every paired test on this page, in both arms; a pair shown in two tables is one "
             "test.</p>"]
    for arm, arm_result in result.arms.items():
        parts += [f"<h3>{html.escape(ARM_TITLES[arm].capitalize())}</h3>",
                  f"<p>{html.escape(_ARM_TEXT[arm])}</p>", _summary_html(arm_result)]
        for reference, table in arm_result.paired.items():
            against = run_label(reference, _runs_arm(arm_result)[reference])
            parts.append(f"<h4>Paired by seed, against {html.escape(against)}, "
                         f"{html.escape(ARM_TITLES[arm])}</h4>")
            parts.append(_paired_html(arm_result, table))
    return "\n".join(parts)


def _runs_arm(result: ArmComparison) -> pd.Series:
    """optimizer -> the budget arm of the runs it contributes to this comparison."""
    return result.frame.groupby("optimizer")["budget_arm"].first()


def _summary_html(result: ArmComparison) -> str:
    s, arms = result.summary, _runs_arm(result)
    return _table(pd.DataFrame({
        "optimizer": [run_label(o, arms[o]) for o in s["optimizer"]], "seeds": s["n"],
        "final test acc (mean)": s["mean"].map(pct),
        "95% interval": [pct_interval(lo, hi) for lo, hi in zip(s["low"], s["high"])],
        "std": s["std"].map(lambda x: pct(x, 2)),
        "sample": np.where(s["small_sample"], f"small (n < {stats.MIN_SEEDS})", "")}))


def _paired_html(result: ArmComparison, p: pd.DataFrame) -> str:
    arms = _runs_arm(result)
    return _table(pd.DataFrame({
        "optimizer": [run_label(o, arms[o]) for o in p["optimizer"]], "pairs": p["n"],
        "mean test difference": p["mean_diff"].map(points),
        "95% interval": [points_interval(lo, hi) for lo, hi in zip(p["low"], p["high"])],
        "p (paired t)": p["p_t"].map(num), "p (Wilcoxon)": p["p_wilcoxon"].map(num),
        "p (Holm, whole page)": p["p_holm"].map(num),
        "seeds won": [wins_text(w, t, n) for w, t, n in zip(p["wins"], p["ties"], p["n"])],
        "verdict": p["verdict"]}))


def _warnings_html(sweep: Sweep) -> str:
    """The warnings box at the top of the page (nothing when there is no warning)."""
    found = sweep_warnings(sweep)
    if not found:
        return ""
    items = "".join(f"<li>{html.escape(w)}</li>" for w in found)
    return f"<section id='warnings' class='warnings'><h2>Warnings</h2><ul>{items}</ul></section>"


def _cost_html(sweep: Sweep) -> str:
    table = cost_table(sweep)
    unit = "/".join(sorted(set(sweep.trials["compute_unit"].dropna()))) or "compute"
    shown = table.assign(optimizer=table["optimizer"].map(lambda o: label(o) if o != "all" else "all"),
                         grad_evals=table["grad_evals"].map(lambda x: f"{x:,.0f}"),
                         hours=table["hours"].map(lambda x: num(x, ".4g")))
    shown = shown.rename(columns={"hours": f"{unit}-hours", "grad_evals": "gradient evaluations"})
    html_table = _table(shown)
    confirm = cost_table(sweep, "confirm")
    if len(confirm) > 1:
        last = confirm.iloc[-1]
        html_table += (f"<p>The confirm stage cost another {int(last['trials'])} trials, "
                       f"{int(last['epochs'])} epochs and {num(last['hours'], '.4g')} {unit}-hours.</p>")
    return html_table


def _good_region_html(sweep: Sweep) -> str:
    parts = []
    for param in SENSITIVITY_PARAMS:
        region = good_region(sweep, param)
        if region.empty:
            continue
        parts.append(_table(pd.DataFrame({
            "optimizer": region["optimizer"].map(label),
            f"trials within {100 * GOOD_MARGIN:.0f} pt of its best": [f"{g} of {t}" for g, t in
                                                                  zip(region["good"], region["trials"])],
            f"their {param}": [f"{num(lo)} to {num(hi)}" for lo, hi in zip(region["low"], region["high"])],
            f"{param} over all its trials": [f"{num(lo)} to {num(hi)}" for lo, hi in
                                             zip(region["tried_low"], region["tried_high"])]})))
    return "\n".join(parts)


def _importance_notes(sweep: Sweep, min_trials: int) -> str:
    notes = [f"{label(o)}: {v}" for o, v in param_importances(sweep, min_trials).items() if isinstance(v, str)]
    return _notes(notes)


def _notes(notes: list[str]) -> str:
    if not notes:
        return ""
    return "<ul class='notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"


_SECTION_TEXT = {
    "comparison": "",
    "learning_curves": "Test accuracy of the confirm runs (without a confirm stage: val accuracy "
                       "of the search trials) by epoch and by gradient evaluations. A SAM-family "
                       "step costs two forward/backward passes, so at equal epochs it has spent "
                       "twice the compute of its base optimizer; the dashed lines are the 1-pass "
                       "optimizers' runs at twice the epochs, which spend the same.",
    "compute": "The best final val accuracy each optimizer's search had found after spending so many hours, "
               "counting every trial, stopped or failed (training time only, times the "
               "GPUs, or with none the CPUs, a trial held).",
    "parallel_coordinates": "One line per search trial. Trials stopped early reached their accuracy "
                            "after fewer epochs (the epochs axis): compare like with like.",
    "sensitivity": "Final val accuracy against the ascent radius each trial actually used (mean "
                   "||e|| over its steps, comparable across SAM variants where rho is not: ASAM "
                   "scales it by |w| + eta) and against ZSharp's alpha. A wide good region means "
                   "the optimizer is forgiving to tune. Single runs: differences smaller than the "
                   "seed spread of the confirm stage are noise.",
    "importance": "Optuna's fANOVA on the trials that ran the full budget (ASHA's stopped trials "
                  "are left out, as Optuna leaves out pruned trials).",
    "asha": "ASHA stops the worst trials at each rung; the trials that reached the last bar got the "
            "full budget.",
    "kept_fraction": "ZSharp keeps the gradient entries whose z-score is above the alpha quantile "
                     "within each layer.",
}


def _header(sweep: Sweep) -> str:
    meta = sweep.meta
    started = meta.get("started")
    rows = {"experiment": sweep.name, "space": meta.get("space") or "not recorded",
            "git commit": meta.get("git_commit") or "not recorded",
            "started": started.strftime("%Y-%m-%d %H:%M UTC") if started is not None else "unknown",
            "report made": pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC"),
            "command": meta.get("command") or "not recorded", "loaded from": meta.get("source", "")}
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items())
    return f"<h1>Sweep report: {html.escape(sweep.name)}</h1><table class='meta'>{cells}</table>"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; text-align: left; }
table.meta th { color: #666; font-weight: normal; }
.notes li { color: #8a4b00; }
.warnings { border: 2px solid #c77700; background: #fff6e5; padding: 0.3em 1.2em; border-radius: 4px; }
.warnings h2 { color: #8a4b00; margin: 0.4em 0; }
section { margin-bottom: 2.5em; }
"""


def render_html(sweep: Sweep, importance_min_trials: int = MIN_IMPORTANCE_TRIALS,
                made: dict[str, go.Figure] | None = None) -> str:
    """The whole report as one HTML string (plotly.js inline, once, in the head)."""
    made = figures(sweep, importance_min_trials) if made is None else made
    result = comparison(sweep)
    sections = []
    for name, (title, _) in FIGURES.items():
        body = [f"<h2>{html.escape(title)}</h2>"]
        if _SECTION_TEXT[name]:
            body.append(f"<p>{html.escape(_SECTION_TEXT[name])}</p>")
        if name == "comparison":
            body += [_notes(result.notes), _comparison_html(result)]
        if name in made:
            body.append(pio.to_html(made[name], full_html=False, include_plotlyjs=False,
                                    div_id=f"figure-{name}", config=_PLOT_CONFIG))
        else:
            body.append("<p><em>No data for this figure in this sweep.</em></p>")
        if name == "sensitivity":
            body.append(_good_region_html(sweep))
        if name == "importance":
            body.append(_importance_notes(sweep, importance_min_trials))
        sections.append(f"<section id='{name}'>" + "\n".join(body) + "</section>")
    sections.insert(-1, "<section id='cost'><h2>Cost of the search</h2>" + _cost_html(sweep) + "</section>")
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>Sweep report: {html.escape(sweep.name)}</title><style>{_STYLE}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head>"
            f"<body>{_header(sweep)}\n{_warnings_html(sweep)}\n" + "\n".join(sections)
            + "</body></html>\n")


def export_png(made: dict[str, go.Figure], folder: str | Path) -> list[Path]:
    """Each figure as folder/<name>.png through kaleido (which needs a Chrome:
    `apt-get install -y chromium` on Debian)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png" for name in made]
    try:
        pio.write_images(list(made.values()), paths, format="png", width=1200)
    except Exception as error:  # noqa: BLE001 - kaleido raises its own types for a missing Chrome
        raise ReportError(f"PNG export failed (kaleido needs Chrome or Chromium: "
                          f"apt-get install -y chromium): {str(error).splitlines()[0]}") from None
    return paths


def write_report(sweep: Sweep, out_path: str | Path, *, png_dir: str | Path | None = None,
                 importance_min_trials: int = MIN_IMPORTANCE_TRIALS) -> Path:
    """Write the report of `sweep` to `out_path` (one self-contained HTML file) and,
    with `png_dir`, each figure as a PNG there. Returns the report's path."""
    made = figures(sweep, importance_min_trials)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(sweep, importance_min_trials, made), encoding="utf-8")
    if png_dir is not None:
        export_png(made, png_dir)
    return out


# ---- command line ----------------------------------------------------------------------------

# The tracking URIs launch.py accepts (tune/sweep.py's check_tracking), and how long a server
# gets to answer: the same 3 s, so that one that is down is reported at once instead of after
# MLflow's retries (minutes). analysis never imports tune/, hence the copy of the number.
TRACKING_FORMS = "sqlite:////absolute/path.db, sqlite:///relative/path.db or http(s)://host:port"
_CONNECT_TIMEOUT_S = 3.0
# A whole error line is cut to this length too: a message from below (a library's, such as
# kaleido's in PNG export) may quote values nobody bounded.
_MAX_ERROR_LINE = 1000


class _ReportParser(OneLineArgumentParser):
    """Bad flags: one line on stderr, exit 2, the values it quotes bounded (analysis.text)."""

    def error(self, message):
        super().error(bounded(message))


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m analysis.report`."""
    p = _ReportParser(prog="python -m analysis.report", description=__doc__.splitlines()[0])
    p.add_argument("--experiment", help="MLflow experiment (the sweep's --experiment, default its space)")
    p.add_argument("--mlflow-uri", help=f"tracking URI, {TRACKING_FORMS} (default: "
                                        "sqlite:///results/mlflow.db, as launch.py's default storage)")
    p.add_argument("--storage", help="Ray experiment folder (results/NAME) instead of MLflow; "
                                     "with --experiment, the results folder that holds it")
    p.add_argument("--out", default="report.html", help="the HTML file to write")
    p.add_argument("--png", metavar="DIR", help="also write each figure as DIR/<name>.png (needs Chromium)")
    p.add_argument("--importance-min-trials", type=int, default=MIN_IMPORTANCE_TRIALS,
                   help="finished trials an optimizer needs for a fANOVA estimate")
    return p


def _is_server_uri(uri: str) -> bool:
    """Whether `uri` is http(s)://host[:port], without spaces, with a port that is a number
    in range."""
    try:
        parts = urllib.parse.urlsplit(uri)
        port_ok = parts.port is None or parts.port > 0  # .port raises ValueError for a bad one
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port_ok and " " not in uri


def check_tracking_uri(uri: str) -> None:
    """ReportError (one line) unless `uri` is a form launch.py accepts, a SQLite file or a
    tracking server, and a server answers now. Called before MLflow is: MLflow would retry
    an unreachable server for minutes, and accept forms launch.py never writes to."""
    sqlite = uri.startswith("sqlite:///") and len(uri) > len("sqlite:///")
    # No URI holds a control character (and urlsplit would drop some silently).
    if not uri.isprintable() or not (sqlite or _is_server_uri(uri)):
        raise ReportError(f"--mlflow-uri must be {TRACKING_FORMS}, got '{bounded(uri)}'")
    if not sqlite:
        _probe_server(uri)


def _probe_server(uri: str) -> None:
    """ReportError unless the tracking server's /health page answers within
    _CONNECT_TIMEOUT_S (launch.py checks a server the same way before a sweep)."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=_CONNECT_TIMEOUT_S):
            return
    except (OSError, http.client.HTTPException) as error:  # HTTPException: no HTTP server there
        raise ReportError(f"MLflow tracking server '{bounded(uri)}' is unreachable: "
                          f"{bounded(getattr(error, 'reason', error))}") from None


def load(args) -> Sweep:
    """The sweep the command line names (ValueError with one line if it cannot)."""
    if args.storage:
        if args.mlflow_uri:
            raise ReportError("give --storage or --mlflow-uri, not both")
        path = Path(args.storage) / args.experiment if args.experiment else Path(args.storage)
        return load_sweep_from_storage(path)
    if not args.experiment:
        raise ReportError("give --experiment NAME (MLflow) or --storage PATH (Ray storage)")
    uri = args.mlflow_uri or f"sqlite:///{Path('results').resolve() / 'mlflow.db'}"
    check_tracking_uri(uri)
    return load_sweep(args.experiment, uri)


def _error_line(error: Exception) -> str:
    """An error as one bounded line: an OSError as its reason and the file it concerns."""
    if isinstance(error, OSError) and error.filename is not None:
        return f"{bounded(error.strerror or error)}: {bounded(error.filename)}"
    return bounded(error, _MAX_ERROR_LINE)


def main(argv: list[str] | None = None) -> int:
    """Write the report the command line asks for; returns the exit status (2: one line
    on stderr says why not)."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # bad input: one line on stderr
    logging.getLogger("alembic").setLevel(logging.WARNING)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        path = write_report(load(args), args.out, png_dir=args.png,
                            importance_min_trials=args.importance_min_trials)
    except (ValueError, OSError) as error:
        print(f"{parser.prog}: error: {_error_line(error)}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

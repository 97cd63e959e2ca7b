"""How the report's figures look: each optimizer's colour, the common layout, epoch ticks,
and which quantities are drawn on a log scale.

Plotly only, so that every figure of the page (analysis.figures) looks the same.
"""

from __future__ import annotations

import plotly.graph_objects as go

from trainables.catalog import all_hparams

COLORS = {"adam": "#1f77b4", "adamw": "#17becf", "sgd": "#7f7f7f", "sam": "#ff7f0e",
          "asam": "#2ca02c", "fsam": "#9467bd", "zsharp": "#d62728"}
_SPARE_COLORS = ["#8c564b", "#e377c2", "#bcbd22", "#393b79", "#637939"]
# Measured quantities drawn on log axes (ascent radii span decades, as rho does).
_LOG_MEASURED = {"perturbation_norm"}


def color(optimizer: str) -> str:
    """The optimizer's colour in every figure (a spare one, fixed by its name, if unknown)."""
    if optimizer in COLORS:
        return COLORS[optimizer]
    return _SPARE_COLORS[sum(map(ord, optimizer)) % len(_SPARE_COLORS)]


def rgba(hex_color: str, alpha: float) -> str:
    """A "#rrggbb" colour with opacity `alpha`, for seeds and bands drawn fainter."""
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def layout(fig: go.Figure, title: str, height: int = 420, **options) -> go.Figure:
    """`fig` with its title, height and the page's template, plus any other layout `options`."""
    options.setdefault("margin", {"l": 70, "r": 30, "t": 70, "b": 60})
    fig.update_layout(title={"text": title, "x": 0.01}, height=height, template="plotly_white", **options)
    return fig


def epoch_ticks(epochs) -> dict:
    """Whole epochs on an axis (no 1.5) while there are few of them."""
    most = max(epochs, default=0)
    return {"tickmode": "linear", "tick0": 0, "dtick": 1} if most <= 20 else {"tickformat": "d"}


def log_scaled(name: str) -> bool:
    """Whether `name` is drawn on a log axis: a hyperparameter its registry entry searches
    log-uniformly, or a measured ascent radius. fANOVA (analysis.importance) also samples
    these on a log scale when no space gives their distributions."""
    hparam = all_hparams().get(name)
    return name in _LOG_MEASURED or (hparam is not None and hparam.transform.log_axis)


def notebook_renderers() -> None:
    """Show figures in a notebook both as Plotly's own output (JupyterLab draws it) and as
    HTML with plotly.js embedded once (what an exported HTML copy shows, offline)."""
    import plotly.io as pio

    pio.renderers.default = "plotly_mimetype+notebook"

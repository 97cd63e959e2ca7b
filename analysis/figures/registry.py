"""The report's figure registry: `@figure(key, title, text)` registers a function of
the report's inputs (analysis.inputs.ReportInputs) as a figure of the page, in page order;
and the markers the search's figures share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis.inputs import ReportInputs
from analysis.minimums import MIN_IMPORTANCE_TRIALS
from analysis.sweep import Sweep

SectionPart = Callable[[ReportInputs], str]  # HTML a section shows besides its figure


@dataclass(frozen=True)
class Figure:
    """One figure of the page and its section: the title and text shown with it, the
    function that draws it (it returns None where the sweep has no data for it), the HTML
    shown above and below it (analysis.tables), and a section of tables alone that follows
    it (`then`: its whole HTML)."""

    key: str
    title: str
    text: str
    draw: Callable[[ReportInputs], go.Figure | None]
    above: SectionPart | None = None
    below: SectionPart | None = None
    then: SectionPart | None = None


FIGURES: dict[str, Figure] = {}  # key -> its figure, in page order (the order registered)


def figure(key: str, title: str, text: str = "", *, above: SectionPart | None = None,
           below: SectionPart | None = None, then: SectionPart | None = None):
    """Register the decorated function, which draws from a report's inputs, as the figure
    `key` of the page, under `title` with `text` (and the `above`, `below` and `then` HTML).

    The name it is bound to draws it from a `Sweep` instead, as a notebook calls it:
    `figure_x(sweep, min_trials=...)`, `min_trials` being ReportInputs' fANOVA minimum.
    """
    def register(draw: Callable[[ReportInputs], go.Figure | None]):
        FIGURES[key] = Figure(key, title, text, draw, above, below, then)

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


def ran_full_budget(trials: pd.DataFrame) -> pd.Series:
    """Whether each trial ran all its epochs (ASHA did not stop it)."""
    return trials["epochs_run"] >= trials["epochs"]


def budget_markers(c: str, full, size: int = 8) -> dict:
    """Markers of search trials in colour `c`: filled where the trial ran the full budget
    (`full`), open where ASHA stopped it."""
    return {"color": c, "size": size, "line": {"color": c, "width": 1.5},
            "symbol": np.where(full, "circle", "circle-open")}

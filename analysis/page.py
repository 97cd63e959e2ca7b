"""The report's page: every registered figure (analysis.figures) in its section with its
title, text and tables, drawn from inputs computed once (analysis.inputs), plotly.js
inline once, so the file opens offline. `python -m analysis.report` is its command line.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from analysis.figures import FIGURES, Figure, draw_all
from analysis.importance import MIN_IMPORTANCE_TRIALS
from analysis.inputs import ReportInputs
from analysis.sweep import Provenance, Sweep
from analysis.warnings import sweep_warnings
from trainables.schema import count


class ReportError(ValueError):
    """The report cannot be made as asked (no Chrome for PNG export)."""


_PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def figures(sweep: Sweep, importance_min_trials: int = MIN_IMPORTANCE_TRIALS) -> dict[str, go.Figure]:
    """Every figure this sweep has data for, by name, in page order."""
    return draw_all(ReportInputs(sweep, importance_min_trials))


# ---- the page -------------------------------------------------------------------------------

def _warnings_html(inputs: ReportInputs) -> str:
    """The warnings box at the top of the page (nothing when there is no warning)."""
    found = sweep_warnings(inputs.sweep, inputs.comparison)
    if not found:
        return ""
    items = "".join(f"<li>{html.escape(w)}</li>" for w in found)
    return f"<section id='warnings' class='warnings'><h2>Warnings</h2><ul>{items}</ul></section>"


def _partial_html(partial: str | None) -> str:
    if partial is None:
        return ""
    return f"<p id='partial' class='partial'>partial: {html.escape(partial)}</p>\n"


def _header(sweep: Sweep) -> str:
    meta = sweep.meta
    started = meta.started
    rows = {"experiment": sweep.name, "space": meta.space or "not recorded",
            "git commit": meta.git_commit or "not recorded",
            "started": started.strftime("%Y-%m-%d %H:%M UTC") if started is not None else "unknown",
            "report made": pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC"),
            "command": meta.command or "not recorded", "loaded from": meta.source,
            "earlier reads of this test split": _test_reads(meta)}
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items())
    return f"<h1>Sweep report: {html.escape(sweep.name)}</h1><table class='meta'>{cells}</table>"


def _test_reads(meta: Provenance) -> str:
    """How many earlier sweeps in this store scored their confirm runs on the same test
    split (data set and model): each look at the test split is one more chance to fit it."""
    reads = meta.test_reads
    if reads is None:
        return "unknown"
    return (f"{count(reads, 'earlier sweep')} in this store confirmed on the test split of "
            f"{meta.dataset} with {meta.model}")


def _section(entry: Figure, inputs: ReportInputs, fig: go.Figure | None) -> str:
    """A registered figure's section: its title, text, the HTML above it, the figure (or a
    line saying this sweep has no data for it) and the HTML below it."""
    body = [f"<h2>{html.escape(entry.title)}</h2>"]
    if entry.text:
        body.append(f"<p>{html.escape(entry.text)}</p>")
    if entry.above:
        body.append(entry.above(inputs))
    if fig is not None:
        body.append(pio.to_html(fig, full_html=False, include_plotlyjs=False,
                                div_id=f"figure-{entry.key}", config=_PLOT_CONFIG))
    else:
        body.append("<p><em>No data for this figure in this sweep.</em></p>")
    if entry.below:
        body.append(entry.below(inputs))
    return f"<section id='{entry.key}'>" + "\n".join(body) + "</section>"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; text-align: left; }
table.meta th { color: #666; font-weight: normal; }
.notes li { color: #8a4b00; }
.partial { background: #e8f0fe; border: 2px solid #4a7bd0; padding: 0.5em 1em; font-weight: bold; }
.warnings { border: 2px solid #c77700; background: #fff6e5; padding: 0.3em 1.2em; border-radius: 4px; }
.warnings h2 { color: #8a4b00; margin: 0.4em 0; }
section { margin-bottom: 2.5em; }
"""


def _page(inputs: ReportInputs, made: dict[str, go.Figure] | None = None, partial: str | None = None) -> str:
    """The page of `inputs.sweep` with the figures `made` (drawn here if None), under a
    banner saying what is still to come when `partial`."""
    made = draw_all(inputs) if made is None else made
    sections = []
    for key, entry in FIGURES.items():
        sections.append(_section(entry, inputs, made.get(key)))
        if entry.then is not None:
            sections.append(entry.then(inputs))
    name = html.escape(inputs.sweep.name)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>Sweep report: {name}</title><style>{_STYLE}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head>"
            f"<body>{_header(inputs.sweep)}\n{_partial_html(partial)}{_warnings_html(inputs)}\n" + "\n".join(sections)
            + "</body></html>\n")


def render_html(sweep: Sweep, importance_min_trials: int = MIN_IMPORTANCE_TRIALS,
                made: dict[str, go.Figure] | None = None) -> str:
    """The whole report as one HTML string (plotly.js inline, once, in the head), with the
    figures `made` if given."""
    return _page(ReportInputs(sweep, importance_min_trials), made)


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
                 importance_min_trials: int = MIN_IMPORTANCE_TRIALS, partial: str | None = None) -> Path:
    """Write the report of `sweep` to `out_path` (one self-contained HTML file) and,
    with `png_dir`, each figure as a PNG there; `partial`: what is still to come, shown
    in a banner (a sweep that runs on). Returns the report's path."""
    inputs = ReportInputs(sweep, importance_min_trials)
    made = draw_all(inputs)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_page(inputs, made, partial), encoding="utf-8")
    if png_dir is not None:
        export_png(made, png_dir)
    return out

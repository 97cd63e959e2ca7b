"""One self-contained HTML report of a sweep: the comparison, its curves, its cost.

    python -m analysis.report --experiment quickstart --out report.html
    python -m analysis.report --storage results/quickstart --out report.html --png figures/

The page embeds plotly.js once, inline, so it opens offline from a file:// URL. It shows
the registered figures (analysis.figures) in order, each in its section with its title,
text and tables, drawn from inputs computed once per report (analysis.inputs); a notebook
can call each figure on a `Sweep` (`figure_learning_curves(sweep)`, ...), and
`write_report(sweep, path)` writes the whole page. Claims rest on the confirm stage
(several seeds, the test accuracy at the final epoch, intervals, paired tests
Holm-corrected across the page; analysis.verdict), at equal epochs and at equal gradient
evaluations; the search's numbers are single runs on val and labelled as such. Warnings
(analysis.warnings) come first, in a box above the comparison.
"""

from __future__ import annotations

import argparse
import html
import http.client
import logging
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from analysis.figures import FIGURES, Figure, draw_all
from analysis.importance import MIN_IMPORTANCE_TRIALS
from analysis.inputs import ReportInputs
from analysis.load import Sweep, load_sweep, load_sweep_from_storage
from analysis.tables import cost_tables
from analysis.text import bounded
from analysis.warnings import sweep_warnings
from commandline import OneLineArgumentParser

# Notebooks and tests call these through this module (report.figure_asha(sweep),
# report.comparison(sweep), ...); each is defined once, in the module of its concern.
from analysis.figures import (figure_asha, figure_comparison, figure_compute,  # noqa: F401
                              figure_importance, figure_kept_fraction, figure_learning_curves,
                              figure_parallel_coordinates, figure_sensitivity)
from analysis.importance import param_importances  # noqa: F401
from analysis.sensitivity import good_region  # noqa: F401
from analysis.tables import cost_table  # noqa: F401
from analysis.verdict import comparison  # noqa: F401

_PLOT_CONFIG = {"displaylogo": False, "responsive": True}
# The cost of the search follows the section on how ASHA spent it.
_COST_AFTER = "asha"


class ReportError(ValueError):
    """The report cannot be made as asked (bad input, no Chrome for PNG export)."""


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
.warnings { border: 2px solid #c77700; background: #fff6e5; padding: 0.3em 1.2em; border-radius: 4px; }
.warnings h2 { color: #8a4b00; margin: 0.4em 0; }
section { margin-bottom: 2.5em; }
"""


def _page(inputs: ReportInputs, made: dict[str, go.Figure] | None = None) -> str:
    """The page of `inputs.sweep` with the figures `made` (drawn here if None)."""
    made = draw_all(inputs) if made is None else made
    sections = []
    for key, entry in FIGURES.items():
        sections.append(_section(entry, inputs, made.get(key)))
        if key == _COST_AFTER:
            sections.append(f"<section id='cost'><h2>Cost of the search</h2>{cost_tables(inputs)}</section>")
    name = html.escape(inputs.sweep.name)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>Sweep report: {name}</title><style>{_STYLE}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head>"
            f"<body>{_header(inputs.sweep)}\n{_warnings_html(inputs)}\n" + "\n".join(sections)
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
                 importance_min_trials: int = MIN_IMPORTANCE_TRIALS) -> Path:
    """Write the report of `sweep` to `out_path` (one self-contained HTML file) and,
    with `png_dir`, each figure as a PNG there. Returns the report's path."""
    inputs = ReportInputs(sweep, importance_min_trials)
    made = draw_all(inputs)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_page(inputs, made), encoding="utf-8")
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

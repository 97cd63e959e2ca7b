"""One self-contained HTML report of a sweep: the comparison, its curves, its cost.

    python -m analysis.report --out report.html       # the most recent sweep in results/
    python -m analysis.report --experiment NAME --out report.html
    python -m analysis.report --storage results/NAME --out report.html --png figures/

The page embeds plotly.js once, inline, so it opens offline from a file:// URL. It shows
the registered figures (analysis.figures) in order, each in its section with its title,
text and tables, drawn from inputs computed once per report (analysis.inputs); a notebook
can call each figure on a `Sweep` (`figure_learning_curves(sweep)`, ...), and
`write_report(sweep, path)` writes the whole page. Claims rest on the confirm stage
(replicates of the search and several seeds each, the test accuracy at the final epoch,
hierarchical intervals, the primary contrast alone and the other tests Holm-corrected
across the page; analysis.verdict), at equal epochs and at equal gradient evaluations; the search's numbers are single runs on val and labelled as such. Warnings
(analysis.warnings) come first, in a box above the comparison.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.minimums import MIN_IMPORTANCE_TRIALS
from commandline import OneLineArgumentParser, quiet_libraries
from trainables.errors import one_line, printable
from trainables.record import DEFAULT_STORE, TRACKING_FORMS, default_tracking_uri, server_problem, tracking_uri_problem
from trainables.schema import count

# Imported on first use (a page needs pandas, plotly and scipy: 2-5 s, too slow for
# --help): the page's functions, and the figures and tables notebooks call through this
# module (report.figure_asha(sweep), report.comparison(sweep), ...), each defined once in
# the module of its concern; every registered figure (analysis.figures) by its name.
_LAZY = {
    **dict.fromkeys(("figures", "render_html", "export_png", "write_report"), "analysis.page"),
    "param_importances": "analysis.importance", "good_region": "analysis.sensitivity",
    "cost_table": "analysis.tables", "comparison": "analysis.verdict", "FIGURES": "analysis.figures",
}


def __getattr__(name: str):
    import importlib

    if name.startswith("figure_"):
        return getattr(importlib.import_module("analysis.figures"), name)
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


# ---- command line ----------------------------------------------------------------------------

# A whole error line is cut to this length too: a message from below (a library's, such as
# kaleido's in PNG export) may quote values nobody bounded.
_MAX_ERROR_LINE = 1000


class _ReportParser(OneLineArgumentParser):
    """Bad flags: one line on stderr, exit 2, the values it quotes bounded (analysis.text)."""

    def error(self, message):
        super().error(one_line(message))


def command_line(prog: str, doc: str) -> argparse.ArgumentParser:
    """A command line that reads one sweep (`load`): --experiment, --mlflow-uri, --storage."""
    p = _ReportParser(prog=prog, description=doc.splitlines()[0])
    p.add_argument("--experiment", help="MLflow experiment (the sweep's --experiment); default: "
                                        "the most recent sweep in the store")
    p.add_argument("--mlflow-uri", help=f"tracking URI, {TRACKING_FORMS} (default: "
                                        f"{default_tracking_uri(DEFAULT_STORE)}, as launch.py's default storage)")
    p.add_argument("--storage", help=f"Ray experiment folder ({DEFAULT_STORE}/NAME) instead of MLflow; "
                                     "with --experiment, the results folder that holds it "
                                     "(default: read MLflow)")
    return p


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m analysis.report`."""
    p = command_line("python -m analysis.report", __doc__)
    p.add_argument("--out", default="report.html", help="the HTML file to write (default: %(default)s)")
    p.add_argument("--png", metavar="DIR", help="also write each figure as DIR/<name>.png (needs Chromium; "
                                                "default: no PNGs)")
    p.add_argument("--importance-min-trials", type=int, default=MIN_IMPORTANCE_TRIALS, metavar="N",
                   help="finished trials an optimizer needs for a fANOVA estimate (default: %(default)s)")
    return p


def check_tracking_uri(uri: str) -> None:
    """ValueError (one line) unless `uri` is a form launch.py accepts, a SQLite file or a
    tracking server, and a server answers now (trainables.record: the same rules and
    timeout as a sweep's)."""
    problem = tracking_uri_problem(uri) or server_problem(uri)
    if problem:
        raise ValueError(problem)


def load(args):
    """The sweep the command line names (ValueError with one line if it cannot)."""
    from analysis import load as loading

    if args.storage:
        if args.mlflow_uri:
            raise ValueError("give --storage or --mlflow-uri, not both")
        path = Path(args.storage) / args.experiment if args.experiment else Path(args.storage)
        return loading.load_sweep_from_storage(path)
    uri = args.mlflow_uri or default_tracking_uri(Path(DEFAULT_STORE).resolve())
    check_tracking_uri(uri)
    return loading.load_sweep(args.experiment, uri)


def error_line(error: Exception) -> str:
    """An error as one bounded line: an OSError as its reason and the file it concerns."""
    if isinstance(error, OSError) and error.filename is not None:
        return f"{one_line(error.strerror or error)}: {one_line(error.filename)}"
    return one_line(error, _MAX_ERROR_LINE)


def main(argv: list[str] | None = None) -> int:
    """Write the report the command line asks for; returns the exit status (2: one line
    on stderr says why not)."""
    quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    from analysis.page import write_report

    try:
        sweep = load(args)
        path = write_report(sweep, args.out, png_dir=args.png, importance_min_trials=args.importance_min_trials)
    except (ValueError, OSError) as error:
        print(f"{parser.prog}: error: {error_line(error)}", file=sys.stderr)
        return 2
    print(printable(f"{path}: sweep {sweep.name} ({count(len(sweep.trials), 'trial')}), from {sweep.meta.source}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The report's figures, a registry (analysis.figures.registry): each one small function
of the report's inputs (analysis.inputs.ReportInputs), registered with
`@figure(key, title, text)` under the section title and the explanation the page shows
with it, in page order: the sections' modules are imported here in that order.

    FIGURES["learning_curves"].draw(inputs)     # as the page draws it
    figure_learning_curves(sweep)               # as a notebook draws it

Claims rest on the confirm stage (analysis.verdict); the search's numbers are single runs
on val and are labelled as such in the figures' titles.
"""

from analysis.figures import comparison, diagnostics, per_optimizer, search
from analysis.figures.registry import FIGURES, Figure, draw_all, figure

__all__ = ["FIGURES", "Figure", "draw_all", "figure",
           *(name for section in (comparison, search, per_optimizer, diagnostics)
             for name in vars(section) if name.startswith("figure_"))]


def __getattr__(name: str):
    """A registered figure's function by its name (`figure_<key>`), from its section."""
    for section in (comparison, search, per_optimizer, diagnostics):
        if name.startswith("figure_") and hasattr(section, name):
            return getattr(section, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

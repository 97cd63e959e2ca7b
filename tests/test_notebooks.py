"""Both analysis notebooks execute (nbclient, a real kernel) against the session's sweep, and
an executed notebook exported to HTML (nbconvert, as `jupyter nbconvert --to html` does)
draws its figures offline in headless Chromium."""

import re
from pathlib import Path

import nbformat
import pytest
from browser import PlotSvgs, render_in_chromium
from nbclient import NotebookClient
from nbconvert import HTMLExporter

NOTEBOOKS = Path(__file__).resolve().parent.parent / "analysis" / "notebooks"
PLOTLY = "application/vnd.plotly.v1+json"
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["explore_sweep", "compare_optimizers"])
def test_notebook_is_stored_without_outputs_runs_and_draws_in_exported_html(
        digits_sweep, monkeypatch, tmp_path, name):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    # explore_sweep names no experiment: it takes the store's most recent sweep.
    if name == "compare_optimizers":
        monkeypatch.setenv("SWEEP_EXPERIMENT", digits_sweep.experiment)
    else:
        monkeypatch.delenv("SWEEP_EXPERIMENT", raising=False)
    monkeypatch.setenv("SWEEP_TRACKING_URI", digits_sweep.tracking_uri)
    NotebookClient(notebook, kernel_name="python3", timeout=300,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    assert all(c.execution_count for c in code)
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(o.get("text", "").startswith(f"{digits_sweep.experiment} - ") for o in outputs)
    # Each figure as Plotly's own output (JupyterLab) and as HTML (an exported copy).
    figures = [o for o in outputs if PLOTLY in o.get("data", {})]
    assert len(figures) >= 2 and all("text/html" in o["data"] for o in figures)
    if name == "compare_optimizers":  # accuracy in percent and differences in points, as the report
        tables = " ".join(o.get("data", {}).get("text/html", "") for o in outputs)
        assert re.search(r">\d{2,3}\.\d%</td>", tables) and re.search(r">[+-]\d+\.\d\d pts</td>", tables)
    if name == "explore_sweep":
        # 3 finished trials per optimizer: below the report's minimum, no fANOVA either.
        assert any("no importance estimate" in str(o.get("data", {}).get("text/plain", ""))
                   for o in outputs)
    page = tmp_path / f"{name}.html"
    page.write_text(HTMLExporter().from_notebook_node(notebook)[0])
    dom, _ = render_in_chromium(page, tmp_path)
    drawn = PlotSvgs()
    drawn.feed(dom)
    assert len(drawn.plots) == len(figures) and all(drawn.plots), drawn.plots

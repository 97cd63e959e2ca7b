"""Both analysis notebooks execute (nbclient, a real kernel) against the session's sweep."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "analysis" / "notebooks"
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["explore_sweep", "compare_optimizers"])
def test_notebook_is_stored_without_outputs_and_runs(digits_sweep, monkeypatch, name):
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
    # The figures came out as Plotly figures, not as empty cells.
    assert sum("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs) >= 2

"""Read what a sweep left behind into a `Sweep` (analysis.sweep: the same tidy frames from
either source, so a report or a notebook does not care where the results came from):

- `load_sweep(experiment, tracking_uri)`: from MLflow (analysis.load_mlflow);
- `load_sweep_from_storage(path)`: from Ray's experiment folders alone, read as untrusted
  plain JSON (analysis.load_storage);
- `list_sweeps(tracking_uri)`: the sweeps an MLflow store holds, newest first.
- `sweep_rows(tracking_uri)`: the same with start, status, trials and results.
"""

from analysis.load_mlflow import list_sweeps, load_sweep, sweep_rows
from analysis.load_storage import load_sweep_from_storage

__all__ = ["list_sweeps", "load_sweep", "load_sweep_from_storage", "sweep_rows"]

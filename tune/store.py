"""The MLflow store a sweep records into, and the commands that browse it and its Optuna
studies. Imports MLflow and nothing of Ray or torch (~2 s), so
a process that only opens the store does not pay for Ray, Optuna and torch."""

from __future__ import annotations

import sys
from pathlib import Path

from filelock import FileLock
from mlflow.tracking import MlflowClient

from commandline import quiet_libraries
from trainables.errors import store_error
from trainables.record import sqlite_path
from tune.plan import SweepError

quiet_libraries()  # MLflow set its levels as it was imported


def prepare_store(uri: str) -> None:
    """Create and migrate a SQLite MLflow store once, under a file lock: two processes
    opening a fresh store at once (two sweeps, or a sweep and `mlflow ui`) otherwise race
    in MLflow's schema migration and crash."""
    database = sqlite_path(uri)
    if database is None:
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{database}.lock"):
        try:
            MlflowClient(uri).search_experiments(max_results=1)
        except Exception as error:  # noqa: BLE001  MLflow's and SQLAlchemy's errors share no base
            raise SweepError(f"the MLflow database {database} cannot be opened ({store_error(error)}); "
                             "if another process holds it, try again once it is done; if it is damaged, move "
                             "it away and a new one is made") from None



def browse_command(uri: str) -> str:
    """The command that shows the store in MLflow's UI (on 127.0.0.1:5000), runnable as
    printed: this environment's own `mlflow` (a virtualenv's is not on PATH), one worker
    (MLflow's default 4 failed their health checks on a busy 2-core machine and never
    served). A tracking server is its own UI."""
    if sqlite_path(uri) is None:
        return f"open {uri} in a browser"
    return f"{Path(sys.executable).parent / 'mlflow'} ui --workers 1 --backend-store-uri {uri}"


def dashboard_command(url: str) -> str:
    """The command that shows the Optuna studies at `url` in optuna-dashboard (on
    127.0.0.1:8080), runnable as printed where this environment has it (the `dashboard`
    extra)."""
    program = Path(sys.executable).parent / "optuna-dashboard"
    if not program.is_file():
        return f"pip install optuna-dashboard, then: optuna-dashboard {url}"
    return f"{program} {url}"

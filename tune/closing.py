"""Closing a sweep: its runs' ends in MLflow (finished, interrupted), the summary and the
report made from the record (analysis/), and the commands, runnable as printed, that open
what it left."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from mlflow.tracking import MlflowClient

from commandline import python_command
from trainables.record import INTERRUPTED_TAG, SPACE_FILE, STATUS_TAG, children_query
from trainables.schema import INTERRUPTED, count
from tune.interrupt import Interrupted
from tune.plan import SweepPlan, local_storage
from tune.progress import seed_table
from tune.stages import PROJECT_ROOT
from tune.store import browse_command, dashboard_command
from tune.tracking import log_metrics


def end_live_runs(client: MlflowClient, experiment_id: str, parent_run_id: str,
                  status: str) -> int:
    """Mark the sweep's child runs still RUNNING as ended (MLflow KILLED) with `status`
    ("interrupted": stopped by a signal at their last checkpoint, continued by --resume;
    "error": still running after the sweep ended, so they belong to no trial). Returns
    how many."""
    live = client.search_runs([experiment_id], filter_string=children_query(
        parent_run_id, "attributes.status = 'RUNNING'"))
    for run in live:
        client.set_tag(run.info.run_id, STATUS_TAG, status)
        client.set_terminated(run.info.run_id, "KILLED")
    return len(live)


def record_interruption(client: MlflowClient, experiment_id: str, parent_run_id: str,
                        stop: Interrupted) -> int:
    """The sweep was stopped by a signal: its running trials' runs and the parent end
    KILLED, the trials tagged `interrupted` and the parent tagged with the signal. Returns
    the number of trials stopped mid-run."""
    stopped = end_live_runs(client, experiment_id, parent_run_id, INTERRUPTED)
    client.set_tag(parent_run_id, INTERRUPTED_TAG, stop.name)
    client.set_terminated(parent_run_id, "KILLED")
    return stopped


def resume_command(plan: SweepPlan) -> str:
    """The command that continues this sweep."""
    return plan.command if " --resume" in plan.command else f"{plan.command} --resume"


def interruption_note(plan: SweepPlan, stop: Interrupted, stopped: int | None) -> str:
    """What the driver prints when a signal stopped the sweep."""
    trials = ("" if stopped is None else
              f"; {count(stopped, 'running trial')} stopped at {'their' if stopped != 1 else 'its'} "
              "last epoch checkpoint (tagged interrupted)")
    how = " at once, without Tune's last snapshot" if stop.at_once else ""
    return (f"\nsweep interrupted by {stop.name}{how}{trials}; finished trials are kept.\n"
            f"continue it with: {resume_command(plan)}")


def recorded_sweep(plan: SweepPlan):
    """The sweep as MLflow recorded it (analysis.load), or the error that stopped loading
    it: the summary and the report read the record, not the driver's memory."""
    try:
        from analysis.load import load_sweep

        return load_sweep(plan.experiment, plan.tracking_uri)
    except Exception as error:  # noqa: BLE001  the trials are safe whatever went wrong here
        return error


def closing_summary(sweep, confirm_rows: list[dict]) -> str:
    """The verdict with its warnings (analysis.summary), or, if that fails, the confirm
    stage's seeds per optimizer and arm and why the summary is missing."""
    try:
        if isinstance(sweep, Exception):
            raise sweep
        from analysis.summary import sweep_summary

        return sweep_summary(sweep)
    except Exception as error:  # noqa: BLE001  a broken summary must not fail a finished sweep
        table = seed_table(confirm_rows) if confirm_rows else ""
        return f"summary not made ({type(error).__name__}: {error})\n{table}".rstrip()


def log_summary_metrics(client: MlflowClient, parent_run_id: str, sweep, out=print) -> None:
    """The result per optimizer (analysis.summary.summary_metrics) as the parent run's
    metrics; skipped, like the summary, when the sweep could not be read back."""
    try:
        if isinstance(sweep, Exception):
            return
        from analysis.summary import summary_metrics

        log_metrics(client, parent_run_id, summary_metrics(sweep))
    except Exception as error:  # noqa: BLE001  the trials are safe whatever went wrong here
        out(f"summary metrics not logged ({type(error).__name__}: {error})")


def report_path(plan: SweepPlan) -> Path:
    """Where the sweep's report goes: its experiment folder (the working folder for remote
    storage)."""
    local = local_storage(plan.storage)
    return (Path(local, plan.experiment) if local else Path.cwd()) / f"{plan.experiment}-report.html"


def write_sweep_report(plan: SweepPlan, client: MlflowClient, parent_run_id: str, sweep,
                       partial: str | None = None) -> str:
    """The HTML report of the recorded sweep at `report_path`, attached to the parent run
    once whole (`partial`: what is still to come, for the banner of a report written while
    the sweep runs on). A report that fails does not fail the sweep: it says so and how
    to rebuild it."""
    path = report_path(plan)
    if local_storage(plan.storage):  # lets a report be rebuilt from Ray's storage alone (analysis.load)
        (path.parent / SPACE_FILE).write_text(json.dumps(plan.space.to_dict()))
    try:
        if isinstance(sweep, Exception):
            raise sweep
        from analysis.page import write_report

        write_report(sweep, path, partial=partial)
    except Exception as error:  # noqa: BLE001  the trials are safe whatever went wrong here
        rebuild = python_command("-m", "analysis.report", "--experiment", plan.experiment,
                                 "--mlflow-uri", plan.tracking_uri, "--out", "report.html")
        return f"not written ({type(error).__name__}: {error}); rebuild it with {shlex.join(rebuild)}"
    if partial is None:
        client.log_artifact(parent_run_id, str(path))
    return str(path)


def closing_commands(plan: SweepPlan, report: str) -> str:
    """The commands that open what the sweep left, each runnable as printed: its report,
    the MLflow UI, Optuna's dashboard and the notebooks (which read the most recent sweep)."""
    path = Path(report).resolve()
    # webbrowser does nothing, silently, on a machine without a browser: the path comes first.
    opener = (f"{path}  (to open it: {shlex.join(python_command('-m', 'webbrowser', '-t', path.as_uri()))})"
              if path.is_file() else report)
    return (f"report     {opener}\n"
            f"mlflow ui  {browse_command(plan.tracking_uri)}\n"
            f"optuna     {dashboard_command(plan.optuna_uri)}\n"
            f"notebooks  make -C {PROJECT_ROOT} notebooks  (JupyterLab on analysis/notebooks/)")


def rows_for_mlflow(rows: list[dict]) -> list[dict]:
    """The summary rows as plain JSON (configs are already plain dicts)."""
    return json.loads(json.dumps(rows, default=str))

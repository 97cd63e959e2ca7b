"""Load a sweep tracked in MLflow: its parent run, every child run's record (tags),
settings (params), epochs (metrics) and artifacts (read as untrusted)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from analysis.sweep import Provenance, Sweep, epoch_frame, frames, resolved_config, trial_row, with_trial_keys
from analysis.untrusted import file_text, json_object, profile, test_correct
from trainables.errors import one_line
from trainables.record import (COMMAND_TAG, COMMIT_TAG, INTERRUPTED_TAG, LOSS_PROFILE_FILE, SPACE_FILE, SPACE_TAG,
                               SWEEP_PATH_TAG, TEST_CORRECT_FILE, TrialRecord, children_query, confirm_result_key,
                               loss_profile_points, runs_confirm_stage, search_result_key, sqlite_path,
                               sweep_parents)
from trainables.schema import EQUAL_EPOCHS, LOSS_PROFILE, METRICS, TEST_CORRECT

# MLflow is imported where it is used: a notebook that only reads storage need not wait for it.
if TYPE_CHECKING:
    from search_spaces.space import SearchSpace

_LISTED_LIMIT = 500  # characters of the error that lists a store's sweeps


def load_sweep(experiment: str | None, tracking_uri: str) -> Sweep:
    """Load the sweep tracked in MLflow experiment `experiment` at `tracking_uri` (None:
    the experiment of the most recent sweep there).

    The sweep is the experiment's latest parent run (trainables.record.sweep_parents) and
    its child runs (every stage). Raises a one-line ValueError naming the experiment if it or its parent
    run is missing; an unknown name is answered with the sweeps the store holds.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    database = sqlite_path(tracking_uri)
    if database is not None and not database.is_file():
        # MlflowClient would create an empty database there: refuse instead.
        raise ValueError(f"no MLflow database at {one_line(database)}")
    client = MlflowClient(tracking_uri)
    try:
        # The store's sweeps are listed only when no name is given or the name is unknown.
        if experiment is None:
            sweeps = _sweep_experiments(client)
            if not sweeps:
                raise ValueError(f"MLflow at {one_line(tracking_uri)} holds no sweep yet (run launch.py)")
            experiment = sweeps[0]
        found = client.get_experiment_by_name(experiment)
        if found is None:
            sweeps = _sweep_experiments(client)
            held = f"its sweeps, newest first: {', '.join(sweeps)}" if sweeps else "it holds no sweep"
            raise ValueError(one_line(f"no MLflow experiment '{experiment}' at {tracking_uri}; {held}",
                                     _LISTED_LIMIT))
    except MlflowException as error:
        raise ValueError(f"cannot read MLflow at {one_line(tracking_uri)}: {one_line(error.message)}") from None
    parents = sweep_parents(client, [found.experiment_id])
    if not parents:
        raise ValueError(f"MLflow experiment '{one_line(experiment)}' at {one_line(tracking_uri)} "
                         "has no sweep run")
    parent = parents[0]
    space = _mlflow_space(client, parent)
    children = _search_all(client, found.experiment_id,
                           children_query(parent.info.run_id))
    if not children:
        raise ValueError(f"the sweep in MLflow experiment '{one_line(experiment)}' has no trials yet")
    rows, epoch_frames = [], []
    for run in children:
        row, epochs = _mlflow_trial(client, run, space)
        rows.append(row)
        if not epochs.empty:
            epoch_frames.append(epochs)
    trials, epochs = frames(rows, epoch_frames)
    tags = parent.data.tags
    meta = Provenance(
        source=f"MLflow {tracking_uri}, run {parent.info.run_id}",
        space=tags.get(SPACE_TAG, space.name if space else None),
        git_commit=tags.get(COMMIT_TAG), command=tags.get(COMMAND_TAG),
        started=pd.Timestamp(parent.info.start_time, unit="ms", tz="UTC"),
        sweep_path=tags.get(SWEEP_PATH_TAG), parent_run_id=parent.info.run_id,
        dataset=parent.data.params.get("dataset"), model=parent.data.params.get("model"),
        test_reads=_mlflow_test_reads(client, parent))
    return Sweep(name=experiment, trials=trials, epochs=epochs, space=space, meta=meta)


def _mlflow_test_reads(client, parent) -> int | None:
    """How many other sweeps in the store, started before this one, confirmed on the test
    split of the same data set and model (their parent runs' recorded plans)."""
    dataset, model = parent.data.params.get("dataset"), parent.data.params.get("model")
    if dataset is None or model is None or "'" in dataset + model:  # no name to filter by
        return None
    ids = [e.experiment_id for e in client.search_experiments()]
    found = sweep_parents(client, ids, f"params.dataset = '{dataset}' and params.model = '{model}'")
    return sum(1 for r in found if runs_confirm_stage(r.data.params)
               and r.info.start_time < parent.info.start_time and r.info.run_id != parent.info.run_id)


def list_sweeps(tracking_uri: str) -> list[str]:
    """The MLflow experiments at `tracking_uri` that hold a sweep, the most recent sweep
    first (what `load_sweep(None, ...)` would load is the first)."""
    from mlflow.tracking import MlflowClient

    return _sweep_experiments(MlflowClient(tracking_uri))


def sweep_rows(tracking_uri: str) -> list[dict]:
    """Each sweep the MLflow store at `tracking_uri` holds, newest first: its experiment,
    start (UTC), status, trials recorded, and each optimizer's result as its parent run
    records it at the end (`analysis.summary.summary_metrics`: the equal-epochs confirm
    runs' mean test accuracy, else the search's best val accuracy; none while it runs).
    MLflow only: no Ray, no torch."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    names = {e.experiment_id: e.name for e in client.search_experiments()}
    rows = []
    for parent in sweep_parents(client, list(names)):
        trials = _search_all(client, parent.info.experiment_id, children_query(parent.info.run_id))
        optimizers = dict.fromkeys(TrialRecord.from_tags(t.data.tags).optimizer for t in trials)
        rows.append({"experiment": names[parent.info.experiment_id],
                     "started": pd.Timestamp(parent.info.start_time, unit="ms", tz="UTC"),
                     "status": _sweep_status(parent), "trials": len(trials),
                     "results": _sweep_results(parent.data.metrics, optimizers)})
    return rows


def _sweep_status(parent) -> str:
    interrupted = parent.data.tags.get(INTERRUPTED_TAG)
    if interrupted:
        return f"interrupted ({interrupted})"
    return {"RUNNING": "running (or its driver died)", "FINISHED": "finished",
            "FAILED": "failed", "KILLED": "stopped"}.get(parent.info.status, parent.info.status.lower())


def _sweep_results(metrics: dict, optimizers) -> dict[str, tuple[str, float]]:
    """optimizer -> (what, accuracy) for each of `optimizers` the parent run's metrics hold:
    the equal-epochs confirm mean test accuracy, else the search's best val accuracy."""
    found = {}
    for optimizer in optimizers:
        confirmed, searched = confirm_result_key(EQUAL_EPOCHS, optimizer, "mean"), search_result_key(optimizer)
        if confirmed in metrics:
            found[optimizer] = ("test", metrics[confirmed])
        elif searched in metrics:
            found[optimizer] = ("best val", metrics[searched])
    return found


def _sweep_experiments(client) -> list[str]:
    ids = {e.experiment_id: e.name for e in client.search_experiments()}
    return list(dict.fromkeys(ids[r.info.experiment_id] for r in sweep_parents(client, list(ids))))


def _search_all(client, experiment_id: str, filter_string: str) -> list:
    """Every run matching the filter, page by page."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string,
                                  max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _mlflow_space(client, parent) -> SearchSpace | None:
    """The parent run's space.json artifact as a SearchSpace (None if absent or stale)."""
    from mlflow.exceptions import MlflowException

    previous = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # no bars on stderr
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = client.download_artifacts(parent.info.run_id, SPACE_FILE, folder)
            data = json.loads(Path(path).read_text())
        from search_spaces.space import SearchSpace

        return SearchSpace.from_dict(data, f"space.json of run {parent.info.run_id}")
    except (MlflowException, OSError, ValueError):  # no (or an outdated) space.json
        return None
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous


def _mlflow_epochs(client, run) -> pd.DataFrame:
    """Every metric of a run, one row per step (= epoch)."""
    by_step: dict[int, dict] = {}
    for key in run.data.metrics:
        if key not in METRICS:
            continue
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.timestamp)
        for metric in history:
            by_step.setdefault(metric.step, {"epoch": metric.step}).setdefault(key, metric.value)
    return epoch_frame(list(by_step.values()))


def _mlflow_trial(client, run, space: SearchSpace | None) -> tuple[dict, pd.DataFrame]:
    """(trials-frame row, epochs) of one child run: its record from its tags."""
    config = resolved_config(run.data.params)
    record = TrialRecord.from_tags(run.data.tags, optimizer=config.get("optimizer"),
                                   replicate=config.get("replicate", 0))
    epochs = _mlflow_epochs(client, run)
    row = trial_row(record, config, epochs, space, run_id=run.info.run_id,
                    start_time=pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"))
    row[LOSS_PROFILE] = _mlflow_profile(client, run) if "hessian_top_eig" in run.data.metrics else None
    correct = _mlflow_text(client, run, TEST_CORRECT_FILE) if "test_acc" in run.data.metrics else None
    row[TEST_CORRECT] = test_correct(correct, row["final_test_acc"])
    return row, with_trial_keys(epochs, row)


def _mlflow_text(client, run, name: str) -> str | None:
    """The text of one of the run's artifacts (untrusted: at most MAX_ARTIFACT_BYTES), or
    None where it has none. Read in place where the artifacts are a local folder (35 ms a
    file less than MLflow's download, which copies through a temporary folder)."""
    from mlflow.exceptions import MlflowException

    folder = _local_folder(run.info.artifact_uri)
    if folder is not None:
        return file_text(folder / name)
    # One small file per run: no progress bar each (MLflow draws one on stderr by default).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as folder:
        try:
            return file_text(Path(client.download_artifacts(run.info.run_id, name, folder)))
        except (MlflowException, OSError):
            return None


def _local_folder(uri: str | None) -> Path | None:
    """The run's artifact folder where its artifact URI is local (a path or file://),
    else None (a server's: downloaded)."""
    if not uri or ("://" in uri and not uri.startswith("file://")):
        return None
    return Path(uri.removeprefix("file://"))


def _mlflow_profile(client, run) -> tuple[tuple[float, float], ...] | None:
    """The run's loss profile artifact (record.loss_profile_artifact), or None."""
    points = loss_profile_points(json_object(_mlflow_text(client, run, LOSS_PROFILE_FILE)))
    return None if points is None else profile(points)

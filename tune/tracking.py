"""MLflow tracking from the driver: one parent run per sweep, one nested run per trial.

Written by a Tune callback on the driver, so it works with a SQLite store on one machine
and with a tracking server on a cluster. Resume-safe: the parent is found again by the
sweep's storage path, a trial's run by its `trial_id` tag under that parent, so a resumed
trial continues its own run, and epochs already logged are not logged twice. Ray's own MLflowLoggerCallback opens a second run per resumed trial and
leaves the first RUNNING forever; this one does neither.
"""

from __future__ import annotations

import math
import numbers

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.time import get_current_time_millis
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH
from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS

from trainables.config import TrialConfig
from trainables.record import (INTERRUPTED_TAG, LOSS_PROFILE_FILE, PARENT_RUN_TAG, SEARCH, STATUS_TAG,
                               SWEEP_PATH_TAG, TEST_CORRECT_FILE, TRIAL_ID_TAG, TrialRecord, children_query,
                               loss_profile_artifact, split_config, sweep_parents)
from trainables.schema import LOSS_PROFILE, RUNNING, TEST_CORRECT, trial_status


def find_parent_run(client: MlflowClient, experiment: str, sweep_path: str):
    """The newest parent run of the sweep stored at `sweep_path` in MLflow experiment
    `experiment`, or None. MLflow itself is the record, so it survives a driver crash
    wherever the results are stored."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    # Matched here rather than in the filter string: a path may hold quotes of both kinds,
    # which MLflow's filter syntax cannot escape.
    runs = sweep_parents(client, [found.experiment_id], f"tags.{SWEEP_PATH_TAG} LIKE '%'")
    return next((r for r in runs if r.data.tags.get(SWEEP_PATH_TAG) == sweep_path), None)


def open_parent_run(client: MlflowClient, experiment: str, sweep_path: str, resume: bool,
                    tags: dict, artifact_location: str | None = None) -> tuple[str, str]:
    """The sweep's parent run (run id, experiment id): new, or with `resume` the one
    tagged with this sweep's storage path, reopened.

    artifact_location: where a new MLflow experiment keeps artifacts (a SQLite store would
    otherwise use ./mlartifacts in whatever folder the driver was started from).
    """
    found = client.get_experiment_by_name(experiment)
    experiment_id = (found.experiment_id if found
                     else client.create_experiment(experiment, artifact_location=artifact_location))
    parent = find_parent_run(client, experiment, sweep_path) if resume else None
    if parent is not None:
        client.update_run(parent.info.run_id, status="RUNNING")
        if INTERRUPTED_TAG in parent.data.tags:  # a signal stopped it; it runs again
            client.delete_tag(parent.info.run_id, INTERRUPTED_TAG)
        return parent.info.run_id, experiment_id
    run = client.create_run(experiment_id, tags={
        "mlflow.runName": f"sweep {experiment}", SWEEP_PATH_TAG: sweep_path, **tags})
    return run.info.run_id, experiment_id


def flat_params(record: dict, prefix: str = "") -> dict[str, str]:
    """A nested settings dict as MLflow params: dotted names ("search_per_optimizer.sam.rho.
    loguniform"), lists joined by commas, values cut to MLflow's limit."""
    flat = {}
    for name, value in record.items():
        if isinstance(value, dict):
            flat.update(flat_params(value, f"{prefix}{name}."))
        else:
            text = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            flat[f"{prefix}{name}"] = text[:MAX_PARAM_VAL_LENGTH]
    return flat


def log_params(client: MlflowClient, run_id: str, params: dict[str, str]) -> None:
    """Log `params` in batches of MLflow's largest."""
    items = [Param(k, v) for k, v in sorted(params.items())]
    for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=items[start:start + MAX_PARAMS_TAGS_PER_BATCH])


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float]) -> None:
    """Log `metrics` (step 0) in batches of MLflow's largest."""
    now = get_current_time_millis()
    items = [Metric(k, v, now, 0) for k, v in sorted(metrics.items())]
    for start in range(0, len(items), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=items[start:start + MAX_METRICS_PER_BATCH])


def _numeric_metrics(result: dict) -> dict[str, float]:
    """What the trial itself reported: numbers, not Ray's bookkeeping keys."""
    return {k: float(v) for k, v in result.items()
            if k not in AUTO_RESULT_KEYS and isinstance(v, numbers.Real)
            and not isinstance(v, bool) and not k.startswith("time_") and k != "done"}


class MlflowTracking(Callback):
    """Child run per trial under `parent_run_id`: params, per-epoch metrics, status tag."""

    def __init__(self, tracking_uri: str, parent_run_id: str, experiment_id: str,
                 stage: str = SEARCH, optuna_links=None):
        self.tracking_uri = tracking_uri
        self.optuna_links = optuna_links  # tune.search.OptunaLinks of a search stage
        self.parent_run_id = parent_run_id
        self.experiment_id = experiment_id
        self.stage = stage
        self._runs: dict[str, str] = {}       # trial id -> run id
        self._logged: dict[str, int] = {}     # run id -> last epoch logged
        self._client: MlflowClient | None = None
        self._synced: set[str] = set()        # runs checked against MLflow by this process
        self._final: set[str] = set()         # runs that had ended FINISHED when synced

    def __getstate__(self):  # the client holds connections: not pickled with the Tuner
        return {**self.__dict__, "_client": None, "_synced": set(), "_final": set()}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def get_state(self) -> dict:
        return {"runs": dict(self._runs), "logged": dict(self._logged)}

    def set_state(self, state: dict) -> None:
        self._runs.update(state["runs"])
        self._logged.update(state["logged"])

    def _find_run(self, trial_id: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=children_query(self.parent_run_id, f"tags.{TRIAL_ID_TAG} = '{trial_id}'"))
        return runs[0].info.run_id if runs else None

    def _create_run(self, trial) -> str:
        settings, own = split_config(trial.config)
        record = TrialRecord.from_tags(own, trial_id=trial.trial_id, stage=self.stage, status=RUNNING,
                                       optimizer=settings.get("optimizer"), replicate=settings.get("replicate", 0))
        run = self.client.create_run(self.experiment_id, tags={
            PARENT_RUN_TAG: self.parent_run_id, "mlflow.runName": f"{record.optimizer}-{trial.trial_id}",
            **record.to_tags()})
        # Defaults filled in, the settings its optimizer ignores left out.
        acting = TrialConfig.from_dict(settings).acting()
        log_params(self.client, run.info.run_id, {k: str(v) for k, v in acting.items()})
        if self.optuna_links is not None:
            links = self.optuna_links.link(trial.config, trial.trial_id, run.info.run_id)
            self.client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in links.items()])
        self._logged[run.info.run_id] = 0
        return run.info.run_id

    def run_id(self, trial) -> str:
        """The trial's run: known, found again in MLflow, or new; RUNNING again if resumed.

        The first time a run is used by this driver process, the last epoch it holds is read
        from MLflow: a snapshot of this callback's state can be older than what was logged
        before a crash, and an epoch must not be logged twice. A run that ended FINISHED
        stays as it is (its trial ended after the last snapshot, and Ray only replays that
        end); an interrupted (KILLED) or failed one is continued.
        """
        run_id = self._runs.get(trial.trial_id) or self._find_run(trial.trial_id)
        if run_id is None:
            run_id = self._create_run(trial)
            self._synced.add(run_id)
        if run_id not in self._synced:
            run = self.client.get_run(run_id)
            logged = int(run.data.metrics.get("epoch", 0))
            self._logged[run_id] = max(self._logged.get(run_id, 0), logged)
            if run.info.status == "FINISHED":
                self._final.add(run_id)
            elif run.info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
                self.client.set_tag(run_id, STATUS_TAG, RUNNING)
            self._synced.add(run_id)
        self._runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        self.run_id(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self.run_id(trial)
        epoch = int(result.get("epoch", 0))
        if epoch <= self._logged.get(run_id, 0):
            return  # re-reported after a restart from an earlier checkpoint
        now = get_current_time_millis()
        metrics = [Metric(k, v if math.isfinite(v) else float("nan"), now, epoch)
                   for k, v in _numeric_metrics(result).items()]
        self.client.log_batch(run_id, metrics=metrics)
        if isinstance(result.get(LOSS_PROFILE), list):  # the last epoch of a confirm run
            self.client.log_dict(run_id, loss_profile_artifact(result[LOSS_PROFILE]), LOSS_PROFILE_FILE)
        if isinstance(result.get(TEST_CORRECT), str):  # how a confirm run ended, per test example
            self.client.log_text(run_id, result[TEST_CORRECT], TEST_CORRECT_FILE)
        self._logged[run_id] = epoch

    def _finish(self, trial, errored: bool) -> None:
        run_id = self.run_id(trial)
        if run_id in self._final:
            return
        status = trial_status(trial.last_result or {}, trial.config["epochs"], errored)
        self.client.log_batch(run_id, tags=[RunTag(STATUS_TAG, status)])
        self.client.set_terminated(run_id, RunStatus.to_string(
            RunStatus.FAILED if errored else RunStatus.FINISHED))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, errored=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, errored=True)

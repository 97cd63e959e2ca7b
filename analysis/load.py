"""Load what a sweep left behind into tidy frames: `load_sweep` (MLflow) or
`load_sweep_from_storage` (Ray's experiment folders, no MLflow needed).

Both return a `Sweep` with the same columns, so a report or a notebook does not care
where the results came from:

- `trials`: one row per trial of both stages (search, confirm): ids, stage, budget_arm
  (a confirm run's arm, trainables.schema.BUDGET_ARMS; None for search trials),
  optimizer, status (completed | stopped_early | diverged | error, or running for a live
  sweep), every `TrialConfig` value as a column (defaults filled in), final and best
  val_acc, the best epoch, final test_acc and test_loss (confirm runs only: search trials
  never evaluate test), the mean per-epoch perturbation_norm (the ascent radius a
  SAM-family trial actually used; NaN for 1-pass optimizers), epochs run, training
  seconds (the sum of `epoch_time_s`, so start-up and evaluation gaps between epochs are
  not counted), cumulative gradient evaluations and compute hours = seconds / 3600 x the
  GPUs (or, with none, the CPUs) a trial held (the space's resources per trial: unknown,
  NaN, for Ray storage without the space.json a sweep writes there).
- `epochs`: one row per trial and epoch with every metric of trainables.schema.METRICS
  (NaN where the trial did not report it).

A trial that failed before its first epoch has a row in `trials` (NaN accuracies, zero
hours) and none in `epochs`.

A results folder is untrusted: Ray storage is read as plain JSON only, never unpickled
(`load_sweep_from_storage`).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from analysis.text import bounded
from trainables.catalog import all_hparams, get_base, list_bases
from trainables.config import TrialConfig
from trainables.schema import (CONFIRM_SUFFIX, EQUAL_COMPUTE, EQUAL_EPOCHS, FLATNESS_METRICS,
                               LOSS_PROFILE, METRICS, RETUNE_SUFFIX, RUNNING, TEST_CORRECT, decode_correct,
                               rank_finalists, trial_status)

# search_spaces (torch, through the registries) and MLflow are imported where they are
# used, and tune/ (Ray) never: a notebook that only reads storage, or a command line that
# fails on a bad name, need not wait for them. SearchSpace comes from its own module,
# which also works where an editable install maps search_spaces as a namespace package.
if TYPE_CHECKING:
    from search_spaces.space import SearchSpace

_SETTINGS = TrialConfig.settings()  # name -> (type: "int", "float", ..., default)
CONFIG_FIELDS = tuple(_SETTINGS)
TRIAL_DEFAULTS = {name: default for name, (_, default) in _SETTINGS.items()}
_FIELD_TYPES = {name: kind for name, (kind, _) in _SETTINGS.items()}

KEY_COLUMNS = ["run_id", "trial_id", "stage", "budget_arm", "optimizer", "status", "confirm_rank",
               "source_trial_id", "retune_trial_id", "start_time"]
RESULT_COLUMNS = ["epochs_run", "final_val_acc", "best_val_acc", "best_epoch", "final_test_acc",
                  "final_test_loss", "perturbation_norm", "train_seconds", "grad_evals",
                  "compute_hours", "compute_unit", *FLATNESS_METRICS]
# A confirm run's loss profile (trainables.flatness): ((t, loss), ...), and which test
# examples it got right at its end (a boolean numpy array), or None.
TRIAL_COLUMNS = (KEY_COLUMNS + [f for f in CONFIG_FIELDS if f != "optimizer"] + RESULT_COLUMNS
                 + [LOSS_PROFILE, TEST_CORRECT])
EPOCH_COLUMNS = ["run_id", "trial_id", "stage", "optimizer", "seed", *METRICS]
# The search ("sweep"), the equal-compute arm's lr re-search, the confirm stage.
STAGES = ("sweep", "retune", "confirm")
# Never treated as searched, even when they vary between trials.
_NOT_SEARCHED = {"seed", "epochs", "optimizer"}
# Ray's words for a trial that has not ended yet.
_RAY_LIVE = {"PENDING", "RUNNING", "PAUSED"}
# What Ray writes into a trial's folder when the trial fails.
_RAY_ERROR_FILES = ("error.txt", "error.pkl")


@dataclass
class Sweep:
    """One sweep's results as tidy frames (see the module docstring for the columns).

    `meta` holds the provenance the report's header shows: experiment, space, git_commit,
    command, started (a UTC pandas Timestamp or None) and source (where it was loaded from).
    """

    name: str
    trials: pd.DataFrame
    epochs: pd.DataFrame
    space: SearchSpace | None = None
    meta: dict = field(default_factory=dict)

    def stage(self, stage: str) -> pd.DataFrame:
        """The trials of one stage ("sweep" or "confirm")."""
        return self.trials[self.trials["stage"] == stage]

    @property
    def optimizers(self) -> list[str]:
        """Optimizer names in the space's order, else in order of appearance."""
        seen = list(dict.fromkeys(self.trials["optimizer"]))
        if self.space is None:
            return seen
        return [o for o in self.space.optimizers if o in seen] + [
            o for o in seen if o not in self.space.optimizers]

    def searched_params(self, optimizer: str) -> list[str]:
        """The hyperparameters searched for one optimizer, in `in_param_order`: from the
        space, or (without one) the numeric settings that vary between its search trials."""
        if self.space is not None and optimizer in self.space.optimizers:
            names = list(self.space.distributions_for(optimizer))
        else:
            trials = self.stage("sweep")
            trials = trials[trials["optimizer"] == optimizer]
            names = [name for name in TRIAL_DEFAULTS if name not in _NOT_SEARCHED
                     and pd.api.types.is_numeric_dtype(trials[name])
                     and not pd.api.types.is_bool_dtype(trials[name]) and trials[name].nunique() > 1]
        return in_param_order(names)


def in_param_order(names) -> list[str]:
    """`names` in the order figures and tables show hyperparameters: the learning rate, the
    SAM variants' own (in registration order), the base optimizers' others, the other
    trial settings (in TrialConfig's order), then any unknown name."""
    of_bases = {h.name for b in list_bases() for h in get_base(b).hparams}
    registered = list(all_hparams())  # the bases', then the variants'
    order = ["lr", *(n for n in registered if n not in of_bases), *registered, *CONFIG_FIELDS]
    rank = {}
    for name in order:
        rank.setdefault(name, len(rank))
    return sorted(names, key=lambda n: rank.get(n, len(rank)))


# ---- shared: per-trial summaries -----------------------------------------------------------

def _typed(name: str, value):
    """A config value in its TrialConfig type (MLflow stores params as strings)."""
    kind = _FIELD_TYPES.get(name)
    if not isinstance(value, str) or kind == "str":
        return value
    if kind == "bool":
        return value.lower() == "true"
    if kind == "int":
        return int(float(value))
    try:
        return float(value)
    except ValueError:
        return value


def resolved_config(config: dict) -> dict:
    """A trial config with TrialConfig's defaults filled in and values typed (what the
    trial ran with: MLflow logs this, Ray's params.json only what the searcher set)."""
    return {**TRIAL_DEFAULTS, **{k: _typed(k, v) for k, v in config.items()}}


def _epoch_frame(rows: list[dict]) -> pd.DataFrame:
    """One trial's epochs, one row each, in order; an epoch reported twice (after a
    restart) counts once, as MLflow logs it once."""
    frame = pd.DataFrame(rows, columns=list(METRICS), dtype=float)
    # A missing or infinite epoch number (a malformed result.json) is no epoch.
    frame = frame[frame["epoch"].abs() < math.inf].drop_duplicates("epoch", keep="first")
    frame["epoch"] = frame["epoch"].astype(int)
    return frame.sort_values("epoch").reset_index(drop=True)


def _summary(epochs: pd.DataFrame) -> dict:
    """Final and best val_acc, best epoch, final test_acc and test_loss, mean
    perturbation_norm, epochs run, seconds, gradient evaluations and the flatness
    diagnostics."""
    if epochs.empty:
        return {"epochs_run": 0, "final_val_acc": math.nan, "best_val_acc": math.nan,
                "best_epoch": 0, "final_test_acc": math.nan, "final_test_loss": math.nan,
                "perturbation_norm": math.nan, "train_seconds": 0.0, "grad_evals": 0.0,
                **dict.fromkeys(FLATNESS_METRICS, math.nan)}
    val = epochs["val_acc"]
    best = val.idxmax() if val.notna().any() else None
    last = epochs.iloc[-1]
    return {"epochs_run": int(epochs["epoch"].max()),
            "final_val_acc": float(last["val_acc"]),
            "best_val_acc": float(val[best]) if best is not None else math.nan,
            "best_epoch": int(epochs["epoch"][best]) if best is not None else 0,
            # The verdict reads the last epoch, never the best one: picking the best of
            # many evaluations of the test split would bias it upwards.
            "final_test_acc": float(last["test_acc"]), "final_test_loss": float(last["test_loss"]),
            "perturbation_norm": float(epochs["perturbation_norm"].mean()),  # NaN if never reported
            "train_seconds": float(epochs["epoch_time_s"].fillna(0).sum()),
            "grad_evals": float(last["grad_evals"]),
            # Measured once, after the last epoch of a confirm run (NaN elsewhere).
            **{name: float(last[name]) for name in FLATNESS_METRICS}}


def _compute(resources: dict | None) -> tuple[float, str]:
    """(units per trial, "GPU" or "CPU") from a trial's resources {"CPU": c, "GPU": g}."""
    if not resources:
        return math.nan, "unknown"
    gpus = float(resources.get("GPU", 0) or 0)
    return (gpus, "GPU") if gpus > 0 else (float(resources.get("CPU", 0) or 0), "CPU")


def _space_resources(space: SearchSpace | None) -> dict | None:
    if space is None:
        return None
    return {"CPU": space.cpus_per_trial, "GPU": space.gpus_per_trial}


def _trial_row(ids: dict, config: dict, epochs: pd.DataFrame, resources: dict | None) -> dict:
    units, unit = _compute(resources)
    summary = _summary(epochs)
    return {**ids, **{k: v for k, v in config.items() if k != "optimizer"}, **summary,
            "compute_hours": summary["train_seconds"] / 3600 * units, "compute_unit": unit}


def _frames(rows: list[dict], epoch_frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The trials and epochs frames, with the promised columns in order."""
    trials = pd.DataFrame(rows)
    for column in TRIAL_COLUMNS:
        if column not in trials:
            trials[column] = pd.Series([None] * len(trials), dtype=object)
    extra = [c for c in trials.columns if c not in TRIAL_COLUMNS]
    trials = trials[TRIAL_COLUMNS + extra]
    trials["confirm_rank"] = pd.to_numeric(trials["confirm_rank"]).astype("Int64")
    # pandas turns a missing string into NaN: a search trial's arm and links are None, as promised.
    for column in ("budget_arm", "source_trial_id", "retune_trial_id"):
        trials[column] = trials[column].astype(object).where(trials[column].notna(), None)
    trials["start_time"] = pd.to_datetime(trials["start_time"], utc=True)
    trials["stage"] = pd.Categorical(trials["stage"], categories=STAGES)
    trials = trials.sort_values(["stage", "start_time", "trial_id"], kind="stable")
    trials["stage"] = trials["stage"].astype(str)
    trials = trials.reset_index(drop=True)
    epochs = (pd.concat(epoch_frames, ignore_index=True) if epoch_frames
              else pd.DataFrame(columns=EPOCH_COLUMNS))
    epochs = epochs[EPOCH_COLUMNS].sort_values(["stage", "trial_id", "epoch"], kind="stable")
    return trials, epochs.reset_index(drop=True)


def _with_trial_keys(epochs: pd.DataFrame, ids: dict, seed) -> pd.DataFrame:
    keyed = epochs.copy()
    for column in ("run_id", "trial_id", "stage", "optimizer"):
        keyed[column] = ids[column]
    keyed["seed"] = seed
    return keyed


# ---- MLflow ------------------------------------------------------------------------------

_LISTED_LIMIT = 500  # characters of the error that lists a store's sweeps
# The largest artifact read back (a record of 2^20 test examples is 175 kB).
_MAX_ARTIFACT_BYTES = 1 << 20


def load_sweep(experiment: str | None, tracking_uri: str) -> Sweep:
    """Load the sweep tracked in MLflow experiment `experiment` at `tracking_uri` (None:
    the experiment of the most recent sweep there).

    The sweep is the experiment's latest parent run (tag stage=sweep) and its child runs
    (both stages). Raises a one-line ValueError naming the experiment if it or its parent
    run is missing; an unknown name is answered with the sweeps the store holds.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).is_file():
        # MlflowClient would create an empty database there: refuse instead.
        raise ValueError(f"no MLflow database at {bounded(tracking_uri[len('sqlite:///'):])}")
    client = MlflowClient(tracking_uri)
    try:
        # The store's sweeps are listed only when no name is given or the name is unknown.
        if experiment is None:
            sweeps = _sweep_experiments(client)
            if not sweeps:
                raise ValueError(f"MLflow at {bounded(tracking_uri)} holds no sweep yet (run launch.py)")
            experiment = sweeps[0]
        found = client.get_experiment_by_name(experiment)
        if found is None:
            sweeps = _sweep_experiments(client)
            held = f"its sweeps, newest first: {', '.join(sweeps)}" if sweeps else "it holds no sweep"
            raise ValueError(bounded(f"no MLflow experiment '{experiment}' at {tracking_uri}; {held}",
                                     _LISTED_LIMIT))
    except MlflowException as error:
        raise ValueError(f"cannot read MLflow at {bounded(tracking_uri)}: {bounded(error.message)}") from None
    parents = client.search_runs(
        [found.experiment_id], filter_string="tags.stage = 'sweep'",
        order_by=["attributes.start_time DESC"], max_results=1000)
    parents = [r for r in parents if "mlflow.parentRunId" not in r.data.tags]
    if not parents:
        raise ValueError(f"MLflow experiment '{bounded(experiment)}' at {bounded(tracking_uri)} "
                         "has no sweep run")
    parent = parents[0]
    space = _mlflow_space(client, parent)
    children = _search_all(client, found.experiment_id,
                           f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    if not children:
        raise ValueError(f"the sweep in MLflow experiment '{bounded(experiment)}' has no trials yet")
    rows, epoch_frames = [], []
    for run in children:
        row, epochs = _mlflow_trial(client, run, space)
        rows.append(row)
        if not epochs.empty:
            epoch_frames.append(epochs)
    _fill_budget_arms([r for r in rows if r["stage"] == "confirm"])  # untagged runs
    trials, epochs = _frames(rows, epoch_frames)
    tags = parent.data.tags
    meta = {"experiment": experiment, "space": tags.get("space", space.name if space else None),
            "git_commit": tags.get("git_commit"), "command": tags.get("command"),
            "started": pd.Timestamp(parent.info.start_time, unit="ms", tz="UTC"),
            "source": f"MLflow {tracking_uri}, run {parent.info.run_id}",
            "parent_run_id": parent.info.run_id, "sweep_path": tags.get("sweep_path"),
            "dataset": parent.data.params.get("dataset"), "model": parent.data.params.get("model")}
    meta["test_reads"] = _mlflow_test_reads(client, parent)
    return Sweep(name=experiment, trials=trials, epochs=epochs, space=space, meta=meta)


def _reads_test(params: dict) -> bool:
    """Whether a sweep's recorded plan (its parent run's params) ran a confirm stage."""
    try:
        return int(params.get("confirm_top_k", 0)) > 0 and int(params.get("confirm_seeds", 0)) > 0
    except ValueError:
        return False


def _mlflow_test_reads(client, parent) -> int | None:
    """How many other sweeps in the store, started before this one, confirmed on the test
    split of the same data set and model (their parent runs' recorded plans)."""
    dataset, model = parent.data.params.get("dataset"), parent.data.params.get("model")
    if dataset is None or model is None or "'" in dataset + model:  # no name to filter by
        return None
    ids = [e.experiment_id for e in client.search_experiments()]
    same = f"tags.stage = 'sweep' and params.dataset = '{dataset}' and params.model = '{model}'"
    found = client.search_runs(ids, filter_string=same, max_results=5000) if ids else []
    return sum(1 for r in found if "mlflow.parentRunId" not in r.data.tags and _reads_test(r.data.params)
               and r.info.start_time < parent.info.start_time and r.info.run_id != parent.info.run_id)


def list_sweeps(tracking_uri: str) -> list[str]:
    """The MLflow experiments at `tracking_uri` that hold a sweep, the most recent sweep
    first (what `load_sweep(None, ...)` would load is the first)."""
    from mlflow.tracking import MlflowClient

    return _sweep_experiments(MlflowClient(tracking_uri))


def _sweep_experiments(client) -> list[str]:
    ids = {e.experiment_id: e.name for e in client.search_experiments()}
    parents = client.search_runs(list(ids), filter_string="tags.stage = 'sweep'",
                                 order_by=["attributes.start_time DESC"], max_results=1000) if ids else []
    names = [ids[r.info.experiment_id] for r in parents if "mlflow.parentRunId" not in r.data.tags]
    return list(dict.fromkeys(names))


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
            path = client.download_artifacts(parent.info.run_id, "space.json", folder)
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
    return _epoch_frame(list(by_step.values()))


def _mlflow_trial(client, run, space: SearchSpace | None) -> tuple[dict, pd.DataFrame]:
    tags = run.data.tags
    config = resolved_config(run.data.params)
    ids = {"run_id": run.info.run_id, "trial_id": tags.get("trial_id"),
           "stage": tags.get("stage", "sweep"), "budget_arm": tags.get("budget_arm"),
           "optimizer": tags.get("optimizer", config.get("optimizer")),
           "status": tags.get("status"), "confirm_rank": tags.get("confirm_rank"),
           "source_trial_id": tags.get("source_trial_id"), "retune_trial_id": tags.get("retune_trial_id"),
           "start_time": run.info.start_time / 1000}
    ids["start_time"] = pd.Timestamp(ids["start_time"], unit="s", tz="UTC")
    epochs = _mlflow_epochs(client, run)
    row = _trial_row(ids, config, epochs, _space_resources(space))
    row[LOSS_PROFILE] = _mlflow_profile(client, run) if "hessian_top_eig" in run.data.metrics else None
    correct = _mlflow_text(client, run, f"{TEST_CORRECT}.txt") if "test_acc" in run.data.metrics else None
    row[TEST_CORRECT] = _test_correct(correct, row["final_test_acc"])
    return row, _with_trial_keys(epochs, ids, config.get("seed"))


def _mlflow_text(client, run, name: str) -> str | None:
    """The text of one of the run's artifacts (untrusted: at most _MAX_ARTIFACT_BYTES), or
    None where it has none. Read in place where the artifacts are a local folder (35 ms a
    file less than MLflow's download, which copies through a temporary folder)."""
    from mlflow.exceptions import MlflowException

    folder = _local_folder(run.info.artifact_uri)
    if folder is not None:
        return _bounded_text(folder / name)
    # One small file per run: no progress bar each (MLflow draws one on stderr by default).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as folder:
        try:
            return _bounded_text(Path(client.download_artifacts(run.info.run_id, name, folder)))
        except (MlflowException, OSError):
            return None


def _local_folder(uri: str | None) -> Path | None:
    """The run's artifact folder where its artifact URI is local (a path or file://),
    else None (a server's: downloaded)."""
    if not uri or ("://" in uri and not uri.startswith("file://")):
        return None
    return Path(uri.removeprefix("file://"))


def _bounded_text(path: Path) -> str | None:
    """A file's UTF-8 text if it is at most _MAX_ARTIFACT_BYTES, else (or unreadable) None."""
    try:
        return _read_text(path) if path.stat().st_size <= _MAX_ARTIFACT_BYTES else None
    except (OSError, ValueError):
        return None


def _mlflow_profile(client, run) -> tuple[tuple[float, float], ...] | None:
    """The run's loss profile artifact ({"t": [...], "loss": [...]}), or None."""
    data = _json_object(_mlflow_text(client, run, f"{LOSS_PROFILE}.json"))
    if not isinstance(data.get("t"), list) or not isinstance(data.get("loss"), list):
        return None
    return _profile([[t, v] for t, v in zip(data["t"], data["loss"])])


# ---- Ray storage -------------------------------------------------------------------------
#
# A results folder is untrusted (design.md, trust model): it is read as plain JSON and
# nothing in it is ever unpickled. Ray's own readers (ExperimentAnalysis, ResultGrid,
# Trial.from_json_state) unpickle the hex fields of experiment_state-*.json and error.pkl,
# so a crafted folder would run its code there; they are not used here.

def load_sweep_from_storage(path: str | os.PathLike) -> Sweep:
    """Load a sweep from Ray's storage: `path` is the search's experiment folder
    (<storage>/<experiment>); the equal-compute arm's re-search's and the confirm stage's
    folders beside it (<path>-retune, <path>-confirm) are read too when present. Needs no MLflow, and reads plain JSON only:

    - each trial folder's params.json (its config) and result.json (one line per epoch:
      its metrics, the trial id, when it was reported);
    - whether the trial folder holds error.txt or error.pkl (never opened: a pickle);
    - Ray's status word per trial, for trials still live, from the newest
      experiment_state-*.json (its plain fields only; ignored where malformed);
    - space.json, which the sweep writes into the experiment folder: the space, and so
      the resources each trial held (its cpus_per_trial and gpus_per_trial).

    Raises a one-line ValueError naming the path if `path` is not a Ray experiment folder
    or a trial's params.json is malformed; a malformed result.json line ends that trial's
    epochs there (a line cut short by a crash), a malformed value in it is ignored.
    """
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise ValueError(f"no Ray experiment folder at {bounded(folder)}")
    space = _storage_space(folder)
    search = _ray_experiment(folder, "sweep", space)
    if not search:
        raise ValueError(f"{bounded(folder)} holds no Ray Tune trials (expected the experiment "
                         "folder <storage>/<experiment>)")
    retune, confirm = (_ray_experiment(folder.with_name(folder.name + suffix), stage, space)
                       for suffix, stage in ((RETUNE_SUFFIX, "retune"), (CONFIRM_SUFFIX, "confirm")))
    confirm_rows = [row for row, _ in confirm]
    _fill_budget_arms(confirm_rows)
    _link_confirm(confirm_rows, [row for row, _ in search], [row for row, _ in retune])
    stages = search + retune + confirm
    trials, epochs = _frames([row for row, _ in stages], [e for _, e in stages if not e.empty])
    started = trials["start_time"].min() if len(trials) else None
    started = None if started is None or pd.isna(started) else started
    meta = {"experiment": folder.name, "space": space.name if space else None,
            "git_commit": None, "command": None, "started": started,
            "source": f"Ray storage {folder}", "sweep_path": str(folder),
            "dataset": space.dataset if space else None, "model": space.model if space else None,
            "test_reads": _storage_test_reads(folder, space, started)}
    return Sweep(name=folder.name, trials=trials, epochs=epochs, space=space, meta=meta)


def _storage_test_reads(folder: Path, space: SearchSpace | None, started) -> int | None:
    """How many other sweeps beside this one in its storage folder confirmed on the test
    split of the same data set and model before this one started (their confirm folders'
    times; their space.json files, read as untrusted JSON)."""
    if space is None or started is None:
        return None
    reads = 0
    for other in folder.parent.iterdir():
        confirmed = other.with_name(other.name + CONFIRM_SUFFIX)
        if other == folder or not confirmed.is_dir() or not (other / "space.json").is_file():
            continue
        try:
            data = _read_json(other / "space.json")
            same = isinstance(data, dict) and (data.get("dataset"), data.get("model")) == (space.dataset, space.model)
            reads += same and confirmed.stat().st_mtime < started.timestamp()
        except (ValueError, OSError):
            continue
    return reads


def _parse_json(text: str):
    """json.loads for untrusted text: ValueError for anything that is not JSON, deep
    nesting included (on which json raises RecursionError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _read_text(path: Path) -> str:
    """A file's text as UTF-8 (ValueError naming the file if it is not)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{bounded(path)} is not UTF-8 text") from None


def _read_json(path: Path):
    """A JSON file's value (ValueError naming the file, in one line, if it is not JSON)."""
    text = _read_text(path)
    try:
        return _parse_json(text)
    except ValueError as error:
        raise ValueError(f"{bounded(path)} is not valid JSON: {error}") from None


def _json_object(text) -> dict:
    """The JSON object `text` holds; {} for anything else (not a string, not JSON, not an
    object): untrusted data of the wrong shape is ignored."""
    if not isinstance(text, str):
        return {}
    try:
        found = _parse_json(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _storage_space(folder: Path) -> SearchSpace | None:
    """The space.json the sweep wrote into its experiment folder (None if absent or
    invalid: the report then does without a space, as for an older sweep)."""
    path = folder / "space.json"
    if not path.is_file():
        return None
    from search_spaces.space import SearchSpace

    try:
        return SearchSpace.from_dict(_read_json(path), str(path))
    except (ValueError, OverflowError, OSError):  # OverflowError: its checks, on a huge integer
        return None


def _ray_statuses(folder: Path) -> dict[str, str]:
    """Ray's status word (PENDING, RUNNING, TERMINATED, ERROR, ...) of each trial, by trial
    folder name, from the newest experiment_state-*.json (the greatest name, as Ray picks
    it). Only its plain JSON fields are read, never the hex ones (pickles); an entry of an
    unexpected shape is ignored, and so is a state that is unreadable or that Ray never
    wrote (a crash before its first snapshot)."""
    states = sorted(folder.glob("experiment_state-*.json"))
    try:
        state = _json_object(_read_text(states[-1])) if states else {}
    except (ValueError, OSError):
        return {}
    entries = state.get("trial_data")
    statuses = {}
    for entry in entries if isinstance(entries, list) else []:
        # [the trial as a JSON string, its run metadata as a JSON string]
        trial = _json_object(entry[0] if isinstance(entry, list) and entry else None)
        name, status = trial.get("relative_logdir"), trial.get("status")
        if isinstance(name, str) and isinstance(status, str):
            statuses[name] = status
    return statuses


def _float(value) -> float | None:
    """A JSON number (or bool) as a float; None for anything else, and for an integer
    beyond any float."""
    if not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


_MAX_PROFILE = 1000  # points of a loss profile read from untrusted storage


def _profile(pairs) -> tuple[tuple[float, float], ...] | None:
    """A loss profile, [[t, loss], ...] of finite numbers (at most _MAX_PROFILE), as a
    tuple of pairs; None for anything else."""
    if not isinstance(pairs, list) or not 0 < len(pairs) <= _MAX_PROFILE:
        return None
    points = [tuple(map(_float, p)) if isinstance(p, list) and len(p) == 2 else (None,) for p in pairs]
    if not all(len(p) == 2 and None not in p and all(map(math.isfinite, p)) for p in points):
        return None
    return tuple(points)


def _text(value) -> str | None:
    """A JSON string; None for anything else."""
    return value if isinstance(value, str) else None


def _test_correct(text: str | None, accuracy: float):
    """Which test examples a run got right (trainables.schema.decode_correct: untrusted
    text), or None where there is no record, it is malformed, or it disagrees with the
    run's final test accuracy (then it is not this run's)."""
    correct = decode_correct(text)
    if correct is None or not math.isclose(correct.mean(), accuracy, abs_tol=1e-6):
        return None
    return correct


# The fields read from a result.json line, each through the reader of its type (anything
# else, Ray's date, pid, hostname, config..., is not needed).
_RESULT_FIELDS = {**{name: _float for name in METRICS}, LOSS_PROFILE: _profile, TEST_CORRECT: _text,
                  "trial_id": _text, "timestamp": _float, "time_this_iter_s": _float}


def _read_results(path: Path) -> list[dict]:
    """result.json: one JSON object per reported epoch, each reduced to the _RESULT_FIELDS
    that have their type. The first line that is not a JSON object ends it (a line cut
    short by a crash: what came before stands)."""
    if not path.is_file():
        return []
    rows = []
    for line in filter(str.strip, _read_text(path).splitlines()):
        row = _json_object(line)
        if not row:
            break
        read = {name: reader(row.get(name)) for name, reader in _RESULT_FIELDS.items()}
        rows.append({name: value for name, value in read.items() if value is not None})
    return rows


def _setting_fits(name: str, value) -> bool:
    """Whether a params.json value has its TrialConfig setting's type (any value for a
    name TrialConfig does not know): finite numbers, whole ones for counts, and at least
    one epoch (the budget arms divide by it)."""
    kind = _FIELD_TYPES.get(name)
    if kind in ("str", "bool"):
        return isinstance(value, str if kind == "str" else bool)
    if kind is None:
        return True
    number = None if isinstance(value, bool) else _float(value)
    if number is None:
        return False
    if kind == "float":
        return math.isfinite(number)
    return number.is_integer() and (name != "epochs" or number >= 1)


def _trial_params(path: Path) -> dict:
    """A trial's params.json: a JSON object whose TrialConfig settings have their types
    (a one-line ValueError naming the file otherwise)."""
    params = _read_json(path)
    if not isinstance(params, dict):
        raise ValueError(f"{bounded(path)}: expected a JSON object of trial settings")
    for name, value in params.items():
        if not _setting_fits(name, value):
            raise ValueError(f"{bounded(path)}: setting {bounded(name)} has a wrong value "
                             f"{bounded(repr(value))}")
    return params


def _start_time(results: list[dict]) -> pd.Timestamp:
    """When a trial started: its first result's timestamp less that epoch's duration
    (NaT without one, or where the numbers are no time)."""
    first = results[0] if results else {}
    try:
        return pd.Timestamp(first["timestamp"] - first.get("time_this_iter_s", 0), unit="s", tz="UTC")
    except (KeyError, ValueError):  # ValueError: out of pandas' range of times
        return pd.NaT


# Ray names a trial's folder <trainable>_<trial id>_<index>_<tag...>: the trial id
# (<hex>_<5 digits> in Ray 2) and the index, which orders the trials as Ray created them.
_TRIAL_DIR = re.compile(r"_([0-9a-f]{5,}(?:_\d{5})?)_(\d+)_")


def _trial_order(trial_dir: Path) -> tuple[float, str]:
    """Sort key of a trial folder: Ray's index of the trial, then the folder's name."""
    named = _TRIAL_DIR.search(trial_dir.name)
    return (int(named.group(2)) if named else math.inf, trial_dir.name)


def _ray_experiment(folder: Path, stage: str, space: SearchSpace | None) -> list[tuple[dict, pd.DataFrame]]:
    """(trial row, epochs) for each trial folder in one Ray experiment folder (none if it
    does not exist), in Ray's order of its trials (the order of its results, which breaks
    ties between finalists)."""
    if not folder.is_dir():
        return []
    statuses = _ray_statuses(folder)
    trial_dirs = sorted((p for p in folder.iterdir() if (p / "params.json").is_file()), key=_trial_order)
    return [_ray_trial(trial_dir, stage, statuses.get(trial_dir.name), _space_resources(space))
            for trial_dir in trial_dirs]


def _ray_trial(trial_dir: Path, stage: str, ray_status: str | None,
               resources: dict | None) -> tuple[dict, pd.DataFrame]:
    """(trial row, epochs) of one trial folder."""
    config = resolved_config(_trial_params(trial_dir / "params.json"))
    results = _read_results(trial_dir / "result.json")
    named = _TRIAL_DIR.search(trial_dir.name)
    trial_id = next((r["trial_id"] for r in results if "trial_id" in r),
                    named.group(1) if named else trial_dir.name)
    epochs = _epoch_frame([{k: r.get(k) for k in METRICS} for r in results])
    ids = {"run_id": None, "trial_id": trial_id, "stage": stage, "optimizer": config.get("optimizer"),
           "status": _storage_status(ray_status, results, config, trial_dir),
           "confirm_rank": None, "source_trial_id": None, "retune_trial_id": None,
           "start_time": _start_time(results)}
    row = _trial_row(ids, config, epochs, resources)
    row[LOSS_PROFILE] = results[-1].get(LOSS_PROFILE) if results else None
    row[TEST_CORRECT] = _test_correct(results[-1].get(TEST_CORRECT) if results else None,
                                      row["final_test_acc"])
    return row, _with_trial_keys(epochs, ids, config.get("seed"))


def _storage_status(ray_status: str | None, results: list[dict], config: dict, trial_dir: Path) -> str:
    """The MLflow status word (trainables.schema.trial_status) of a trial in storage. Ray
    writes error.txt and error.pkl when a trial fails: only their presence is checked
    (error.pkl is a pickle)."""
    errored = ray_status == "ERROR" or any((trial_dir / name).is_file() for name in _RAY_ERROR_FILES)
    if not errored and ray_status in _RAY_LIVE:
        return RUNNING
    last = results[-1] if results else {}
    return trial_status(last, int(config["epochs"]), errored)


def arms_from_epochs(confirm_epochs: list[int]) -> list[str]:
    """The budget arm of each confirm run from its configured epochs, where no tag says it
    (Ray storage; sweeps from before the tag): the fewest epochs among the confirm runs are
    the equal-epochs arm's (every finalist runs it, and the other arm only ever runs
    longer; a refit with matched steps runs fewer than the space's epochs), any other count
    equal_compute (the 1-pass optimizers' longer runs)."""
    equal = min(confirm_epochs, default=None)
    return [EQUAL_EPOCHS if int(epochs) == equal else EQUAL_COMPUTE for epochs in confirm_epochs]


def _fill_budget_arms(confirm_rows: list[dict]) -> None:
    """Set budget_arm on the confirm rows that have none, from their epochs."""
    derived = arms_from_epochs([int(r["epochs"]) for r in confirm_rows])
    for row, arm in zip(confirm_rows, derived):
        row["budget_arm"] = row.get("budget_arm") or arm


# What a confirm run sets itself, apart from its finalist's search config: the seed, the
# evaluation split and the training data (refit), and the epoch counts (epochs, warm-up,
# step-schedule period) that its arm and a matched refit stretch; without them a config
# still names its trial (its replicate and searched values differ from its group's others).
_CONFIRM_OWN = ("seed", "eval_split", "refit", "flatness_images", "epochs", "warmup_epochs", "step_epochs")


def _config_key(row: dict) -> tuple:
    """The configuration a trial row stands for: its optimizer and settings, without what
    the confirm stage sets itself."""
    return tuple((name, row[name]) for name in CONFIG_FIELDS if name not in _CONFIRM_OWN
                 and name != "optimizer") + (("optimizer", row["optimizer"]),)


def _group(row: dict) -> tuple:
    return row["optimizer"], row["replicate"]


def _link_confirm(confirm: list[dict], search: list[dict], retune: list[dict]) -> None:
    """Fill a confirm run's source_trial_id, confirm_rank and retune_trial_id as the MLflow
    tags have them: the search trial whose config it reruns, ranked among its group's
    (optimizer and replicate) search trials by trainables.schema.rank_finalists (the rule
    the confirm stage picks finalists by; ties go to the earlier trial in Ray's order, as
    there); an equal-compute run of a re-searched lr is the rank-1 finalist's, and names
    its re-search trial. Needs budget_arm filled in."""
    ranked, first = {}, {}
    for group in dict.fromkeys(map(_group, search)):
        finalists = rank_finalists([r for r in search if _group(r) == group])
        for rank, r in enumerate(finalists, start=1):
            ranked.setdefault(_config_key(r), (r["trial_id"], rank))  # same config twice: the first
        first[group] = finalists[0]["trial_id"] if finalists else None
    retuned = {_config_key(r): r["trial_id"] for r in retune}
    for row in confirm:
        key = _config_key(row)
        if row["budget_arm"] == EQUAL_COMPUTE and key in retuned:
            row["retune_trial_id"], row["source_trial_id"], row["confirm_rank"] = retuned[key], first.get(_group(row)), 1
        elif key in ranked:
            row["source_trial_id"], row["confirm_rank"] = ranked[key]

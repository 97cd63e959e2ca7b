"""The sweep record: what `tune/` writes for each trial and `analysis/` reads back.

A trial's `TrialRecord` (ids, stage, optimizer, replicate, status, budget arm, confirm
rank, the trials it came from) is stated here once. The driver writes it as MLflow tags
(`to_tags`) and into each Ray trial config under `RECORD_KEY`, so Ray's params.json
holds it too; the analysis reads it from tags (`from_tags`) or from a trial folder
(`from_results`). Beside it: the stage, tag and artifact names, the folder a stage's
Ray experiment lives in, the epoch settings a longer run stretches, the compute a trial holds,
the tracking URIs a sweep accepts and where it stores by default.

Plain Python (no torch, Ray, Optuna or MLflow): the notebooks and every module import it.
"""

from __future__ import annotations

import dataclasses
import http.client
import urllib.parse
import urllib.request
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path

from trainables.errors import one_line
from trainables.schema import BUDGET_ARMS, STATUSES, UNFINISHED, rank_finalists

# The stages of a sweep, in the order they run: the search, the equal-compute arm's
# learning-rate re-search, the confirm stage. A stage's Ray experiment folder is
# <storage>/<experiment><STAGE_SUFFIX[stage]>.
SEARCH, RETUNE, CONFIRM = "search", "retune", "confirm"
STAGES = (SEARCH, RETUNE, CONFIRM)
STAGE_SUFFIX = {SEARCH: "", RETUNE: "-retune", CONFIRM: "-confirm"}
STAGE_NAMES = {SEARCH: "search", RETUNE: "re-search", CONFIRM: "confirm"}  # as printed
# The `stage` tag of a sweep's parent run (the run, not a stage). Sweeps recorded before
# the search stage had its own word tagged their search trials with it too: read as SEARCH.
PARENT_STAGE = "sweep"
_OLD_STAGES = {PARENT_STAGE: SEARCH}

# The parent run's tags beside `stage`: the space's name, the command that ran, the code's
# commit, the sweep's storage path (how --resume finds its parent) and, while a signal has
# it stopped, the signal's name.
SPACE_TAG, COMMAND_TAG, COMMIT_TAG = "space", "command", "git_commit"
SWEEP_PATH_TAG, INTERRUPTED_TAG = "sweep_path", "interrupted"
# A trial run's tags beside its record's: MLflow's link to the parent run, and the Optuna
# study and trial number of a searched trial.
PARENT_RUN_TAG = "mlflow.parentRunId"
OPTUNA_STUDY_TAG, OPTUNA_TRIAL_TAG = "optuna_study", "optuna_trial"

# The Ray trial config's key for a trial's record (a dict of its tags): the driver sets
# it, the trainable and the searchers never read it.
RECORD_KEY = "record"

# Artifacts: a confirm run's loss profile and which test examples it got right, and the
# parent run's space (also written into the search's Ray folder).
LOSS_PROFILE_FILE = "loss_profile.json"
TEST_CORRECT_FILE = "test_correct.txt"
SPACE_FILE = "space.json"
# The parent run's resolved plan and, at its end, each stage's trial summaries.
PLAN_FILE = "plan.json"
TRIALS_FILE = "trials.json"

# Settings measured in epochs: a longer arm and a matched refit multiply them together,
# so the schedule keeps its shape.
EPOCH_SETTINGS = ("epochs", "warmup_epochs", "step_epochs")

# Where launch.py and the report keep a sweep when not told: this folder (relative to
# where they run) holds Ray's experiments, mlflow.db and optuna.db.
DEFAULT_STORE = "results"
TRACKING_FORMS = "sqlite:////absolute/path.db, sqlite:///relative/path.db or http(s)://host:port"
CONNECT_TIMEOUT_S = 3.0  # seconds a tracking server gets to answer before a sweep or a report
_SQLITE = "sqlite:///"


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value) -> int | None:
    """A whole number >= 0 from a tag (a string) or JSON (an int); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    return int(value) if isinstance(value, str) and value.isdigit() and len(value) < 10 else None


def _stage(value) -> str | None:
    text = _OLD_STAGES.get(value, value)
    return text if text in STAGES else None


def _word(words: Iterable[str]) -> Callable:
    allowed = frozenset(words)
    return lambda value: value if value in allowed else None


def _tag(read: Callable, default=None):
    """A record field: a tag of the field's name, read back from untrusted text by `read`
    (None for a value of the wrong form)."""
    return dataclasses.field(default=default, metadata={"read": read})


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """One trial as the sweep records it. A field is a tag of the same name (None: no tag)
    and a column of the analysis' trials frame: a new field is written by tune/ and read by
    analysis/ with no other edit."""

    trial_id: str | None = _tag(_text)
    stage: str = _tag(_stage, SEARCH)
    optimizer: str | None = _tag(_text)
    replicate: int = _tag(_count, 0)
    status: str | None = _tag(_word((*STATUSES, *UNFINISHED)))
    budget_arm: str | None = _tag(_word(BUDGET_ARMS))  # a confirm run's arm
    confirm_rank: int | None = _tag(_count)     # a confirm run's finalist's rank in its group (1 = best)
    source_trial_id: str | None = _tag(_text)   # the search trial a confirm run reruns
    retune_trial_id: str | None = _tag(_text)   # the re-search trial an equal-compute run reruns

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; valid: {', '.join(STAGES)}")

    def to_tags(self) -> dict[str, str]:
        """The record as MLflow tags: every field that is set, as a string."""
        return {name: str(value) for name, value in dataclasses.asdict(self).items() if value is not None}

    @classmethod
    def from_tags(cls, tags: Mapping, **defaults) -> TrialRecord:
        """The record a run's tags (or a config's RECORD_KEY) hold, `defaults` filling the
        fields they lack. Untrusted: a value of the wrong form is no value, an old stage
        word reads as its new one."""
        values = dict(defaults)
        for field in dataclasses.fields(cls):
            value = field.metadata["read"](tags.get(field.name))
            if value is not None:
                values[field.name] = value
        return cls(**values)

    @classmethod
    def from_results(cls, rows: list[Mapping], config: Mapping, stage: str = SEARCH) -> TrialRecord:
        """The record of a trial in Ray storage: its result rows (trial_id) and its config
        (optimizer, replicate and, where the driver set it, RECORD_KEY); `stage` where the
        config does not say (search trials: the searcher's configs carry no record)."""
        trial_id = next((r["trial_id"] for r in rows if _text(r.get("trial_id"))), None)
        own = config.get(RECORD_KEY)
        return cls.from_tags(own if isinstance(own, Mapping) else {}, stage=stage, trial_id=trial_id,
                             optimizer=_text(config.get("optimizer")),
                             replicate=_count(config.get("replicate")) or 0)

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        """The fields, in order: a trials frame's key columns."""
        return tuple(f.name for f in dataclasses.fields(cls))


# The record's tags the driver finds a run by or sets alone (fields of TrialRecord).
TRIAL_ID_TAG, STATUS_TAG = "trial_id", "status"


def runs_confirm_stage(plan: Mapping) -> bool:
    """Whether a sweep's plan (tune.plan.SweepPlan.record(), as its parent run's params
    hold it) runs a confirm stage, and so reads the test split: top k and seeds both > 0."""
    return (_count(plan.get("confirm_top_k")) or 0) > 0 and (_count(plan.get("confirm_seeds")) or 0) > 0


def split_config(config: Mapping) -> tuple[dict, dict]:
    """(the trial's settings, its record's tags) of a Ray trial config."""
    settings = {k: v for k, v in config.items() if k != RECORD_KEY}
    record = config.get(RECORD_KEY)
    return settings, dict(record) if isinstance(record, Mapping) else {}


def with_record(config: Mapping, record: TrialRecord) -> dict:
    """A Ray trial config carrying `record`'s tags (trial_id, stage and status are the
    driver's to set when it runs)."""
    tags = {k: v for k, v in record.to_tags().items() if k not in (TRIAL_ID_TAG, STATUS_TAG)}
    return {**config, RECORD_KEY: tags}


def search_result_key(optimizer: str) -> str:
    """The parent run's metric of `optimizer`'s best search trial's final val accuracy."""
    return f"search.{optimizer}.best_val_acc"


def confirm_result_key(arm: str, optimizer: str, part: str) -> str:
    """The parent run's metric of `optimizer`'s confirm runs in budget arm `arm`: their mean
    final test accuracy, or its 95% interval's end (`part`: mean, low or high)."""
    return f"confirm.{arm}.{optimizer}.test_acc_{part}"


def loss_profile_artifact(points: Iterable) -> dict:
    """A confirm run's loss profile ([[t, loss], ...]) as its LOSS_PROFILE_FILE holds it."""
    points = list(points)
    return {"t": [t for t, _ in points], "loss": [loss for _, loss in points]}


def loss_profile_points(data) -> list[list] | None:
    """The [[t, loss], ...] a LOSS_PROFILE_FILE's (untrusted) data holds; None if malformed."""
    if not isinstance(data, Mapping) or not isinstance(data.get("t"), list) or not isinstance(data.get("loss"), list):
        return None
    return [[t, loss] for t, loss in zip(data["t"], data["loss"])]


def group_of(row: Mapping) -> tuple[str, int]:
    """The group a trial belongs to, from its config or its row: (optimizer, replicate)."""
    return row["optimizer"], int(row.get("replicate", 0))


def ranked_by_group(rows: Iterable[Mapping], group: Callable[[Mapping], Hashable]) -> dict[Hashable, list]:
    """Each group's rows (group(row), in order of first appearance), best first by
    schema.rank_finalists; a group without a candidate maps to []."""
    members: dict[Hashable, list] = {}
    for row in rows:
        members.setdefault(group(row), []).append(row)
    return {key: rank_finalists(found) for key, found in members.items()}


# Compute is counted in GPU-hours or CPU-hours; UNKNOWN_UNIT where a sweep's space is lost.
GPU_UNIT, CPU_UNIT, UNKNOWN_UNIT = "GPU", "CPU", "unknown"


def compute_unit(cpus: float, gpus: float) -> tuple[str, float]:
    """What one trial holds, for compute counted as units x wall time: (GPU_UNIT, its GPUs)
    when it holds GPUs, else (CPU_UNIT, its CPUs)."""
    return (GPU_UNIT, float(gpus)) if gpus else (CPU_UNIT, float(cpus))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI; None for any other form."""
    return Path(uri[len(_SQLITE):]) if uri.startswith(_SQLITE) and len(uri) > len(_SQLITE) else None


def tracking_uri_problem(uri: str) -> str | None:
    """Why `uri` is no tracking URI a sweep accepts (None if it is one): a SQLite file or
    http(s)://host[:port] without spaces or control characters (urlsplit would drop some
    silently)."""
    if uri.isprintable() and (sqlite_path(uri) is not None or is_server_uri(uri)):
        return None
    return f"--mlflow-uri must be {TRACKING_FORMS}, got '{one_line(uri)}'"


def is_server_uri(uri: str) -> bool:
    """Whether `uri` names a tracking server (http(s)://host[:port]) rather than a file."""
    try:
        parts = urllib.parse.urlsplit(uri)
        port_ok = parts.port is None or parts.port > 0  # .port raises ValueError for a bad one
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port_ok and " " not in uri


def server_problem(uri: str) -> str | None:
    """Why the tracking server at `uri` cannot be used now (None for a SQLite URI, or a
    server whose /health page answers within CONNECT_TIMEOUT_S). Asked before MLflow is:
    MLflow retries an unreachable server for minutes."""
    if sqlite_path(uri) is not None:
        return None
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=CONNECT_TIMEOUT_S):
            return None
    except (OSError, http.client.HTTPException) as error:  # HTTPException: no HTTP server there
        return (f"MLflow tracking server '{one_line(uri)}' is unreachable: "
                f"{one_line(getattr(error, 'reason', error))}")


def default_tracking_uri(store: str | Path) -> str:
    """The tracking URI of the SQLite store a local results folder holds."""
    return f"{_SQLITE}{Path(store) / 'mlflow.db'}"


def default_studies_uri(store: str | Path) -> str:
    """The Optuna storage URL of the SQLite database beside it (only the driver opens it)."""
    return f"{_SQLITE}{Path(store) / 'optuna.db'}"


def children_query(parent_run_id: str, where: str = "") -> str:
    """The MLflow filter of a sweep's trial runs (`where` more of it, joined with "and")."""
    return f"tags.{PARENT_RUN_TAG} = '{parent_run_id}'" + (f" and {where}" if where else "")


def sweep_parents(client, experiment_ids: list[str], where: str = "") -> list:
    """The sweeps' parent runs in these MLflow experiments, newest first (`client` an
    MlflowClient; `where` more of the filter, joined with "and")."""
    if not experiment_ids:
        return []
    query = f"tags.stage = '{PARENT_STAGE}'" + (f" and {where}" if where else "")
    runs = client.search_runs(experiment_ids, filter_string=query, order_by=["attributes.start_time DESC"],
                              max_results=1000)
    return [r for r in runs if PARENT_RUN_TAG not in r.data.tags]

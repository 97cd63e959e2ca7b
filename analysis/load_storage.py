"""Load a sweep from Ray's storage alone (no MLflow): each stage's experiment folder,
read as plain JSON.

A results folder is untrusted (ARCHITECTURE.md, Trust): nothing in it is ever
unpickled. Ray's own readers (ExperimentAnalysis, ResultGrid, Trial.from_json_state)
unpickle the hex fields of experiment_state-*.json and error.pkl, so a crafted folder
would run its code there; they are not used here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from analysis.sweep import (FIELD_TYPES, Provenance, Sweep, epoch_frame, frames, resolved_config, trial_row,
                            with_trial_keys)
from analysis.untrusted import json_object, number, profile, read_json, read_text, test_correct, text
from trainables.errors import one_line
from trainables.record import CONFIRM, SEARCH, SPACE_FILE, STAGE_SUFFIX, STAGES, TrialRecord, split_config
from trainables.schema import LOSS_PROFILE, METRICS, RUNNING, TEST_CORRECT, trial_status

if TYPE_CHECKING:
    from search_spaces.space import SearchSpace

# Ray's words for a trial that has not ended yet.
_RAY_LIVE = {"PENDING", "RUNNING", "PAUSED"}
# What Ray writes into a trial's folder when the trial fails.
_RAY_ERROR_FILES = ("error.txt", "error.pkl")


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
        raise ValueError(f"no Ray experiment folder at {one_line(folder)}")
    space = _storage_space(folder)
    stages = [trial for stage in STAGES
              for trial in _ray_experiment(folder.with_name(folder.name + STAGE_SUFFIX[stage]), stage, space)]
    if not any(row["stage"] == SEARCH for row, _ in stages):
        raise ValueError(f"{one_line(folder)} holds no Ray Tune trials (expected the experiment "
                         "folder <storage>/<experiment>)")
    trials, epochs = frames([row for row, _ in stages], [e for _, e in stages if not e.empty])
    started = trials["start_time"].min() if len(trials) else None
    started = None if started is None or pd.isna(started) else started
    meta = Provenance(source=f"Ray storage {folder}", space=space.name if space else None, started=started,
                      sweep_path=str(folder), dataset=space.dataset if space else None,
                      model=space.model if space else None, test_reads=_storage_test_reads(folder, space, started))
    return Sweep(name=folder.name, trials=trials, epochs=epochs, space=space, meta=meta)


def _storage_test_reads(folder: Path, space: SearchSpace | None, started) -> int | None:
    """How many other sweeps beside this one in its storage folder confirmed on the test
    split of the same data set and model before this one started (their confirm folders'
    times; their space.json files, read as untrusted JSON)."""
    if space is None or started is None:
        return None
    reads = 0
    for other in folder.parent.iterdir():
        confirmed = other.with_name(other.name + STAGE_SUFFIX[CONFIRM])
        if other == folder or not confirmed.is_dir() or not (other / SPACE_FILE).is_file():
            continue
        try:
            data = read_json(other / SPACE_FILE)
            same = isinstance(data, dict) and (data.get("dataset"), data.get("model")) == (space.dataset, space.model)
            reads += same and confirmed.stat().st_mtime < started.timestamp()
        except (ValueError, OSError):
            continue
    return reads


def _storage_space(folder: Path) -> SearchSpace | None:
    """The space.json the sweep wrote into its experiment folder (None if absent or
    invalid: the report then does without a space, as for an older sweep)."""
    path = folder / SPACE_FILE
    if not path.is_file():
        return None
    from search_spaces.space import SearchSpace

    try:
        return SearchSpace.from_dict(read_json(path), str(path))
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
        state = json_object(read_text(states[-1])) if states else {}
    except (ValueError, OSError):
        return {}
    entries = state.get("trial_data")
    statuses = {}
    for entry in entries if isinstance(entries, list) else []:
        # [the trial as a JSON string, its run metadata as a JSON string]
        trial = json_object(entry[0] if isinstance(entry, list) and entry else None)
        name, status = trial.get("relative_logdir"), trial.get("status")
        if isinstance(name, str) and isinstance(status, str):
            statuses[name] = status
    return statuses


# The fields read from a result.json line, each through the reader of its type (anything
# else, Ray's date, pid, hostname, config..., is not needed).
_RESULT_FIELDS = {**{name: number for name in METRICS}, LOSS_PROFILE: profile, TEST_CORRECT: text,
                  "trial_id": text, "timestamp": number, "time_this_iter_s": number}


def _read_results(path: Path) -> list[dict]:
    """result.json: one JSON object per reported epoch, each reduced to the _RESULT_FIELDS
    that have their type. The first line that is not a JSON object ends it (a line cut
    short by a crash: what came before stands)."""
    if not path.is_file():
        return []
    rows = []
    for line in filter(str.strip, read_text(path).splitlines()):
        row = json_object(line)
        if not row:
            break
        read = {name: reader(row.get(name)) for name, reader in _RESULT_FIELDS.items()}
        rows.append({name: value for name, value in read.items() if value is not None})
    return rows


def _setting_fits(name: str, value) -> bool:
    """Whether a params.json value has its TrialConfig setting's type (any value for a
    name TrialConfig does not know): finite numbers, whole ones for counts, and at least
    one epoch (the budget arms divide by it)."""
    kind = FIELD_TYPES.get(name)
    if kind in ("str", "bool"):
        return isinstance(value, str if kind == "str" else bool)
    if kind is None:
        return True
    read = None if isinstance(value, bool) else number(value)
    if read is None:
        return False
    if kind == "float":
        return math.isfinite(read)
    return read.is_integer() and (name != "epochs" or read >= 1)


def _trial_params(path: Path) -> dict:
    """A trial's params.json: a JSON object whose TrialConfig settings have their types,
    with the driver's record beside them (a one-line ValueError naming the file otherwise)."""
    params = read_json(path)
    if not isinstance(params, dict):
        raise ValueError(f"{one_line(path)}: expected a JSON object of trial settings")
    for name, value in params.items():
        if not _setting_fits(name, value):
            raise ValueError(f"{one_line(path)}: setting {one_line(name)} has a wrong value "
                             f"{one_line(repr(value))}")
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
    return [_ray_trial(trial_dir, stage, statuses.get(trial_dir.name), space) for trial_dir in trial_dirs]


def _ray_trial(trial_dir: Path, stage: str, ray_status: str | None,
               space: SearchSpace | None) -> tuple[dict, pd.DataFrame]:
    """(trial row, epochs) of one trial folder: its record from its results and params
    (trainables.record.TrialRecord.from_results), the folder's name giving the trial id
    where no result does."""
    params = _trial_params(trial_dir / "params.json")
    settings, _ = split_config(params)
    config = resolved_config(settings)
    results = _read_results(trial_dir / "result.json")
    named = _TRIAL_DIR.search(trial_dir.name)
    record = TrialRecord.from_results(results, params, stage)
    record = dataclasses.replace(record, trial_id=record.trial_id or (named.group(1) if named else trial_dir.name),
                                 status=_storage_status(ray_status, results, config, trial_dir))
    epochs = epoch_frame([{k: r.get(k) for k in METRICS} for r in results])
    row = trial_row(record, config, epochs, space, start_time=_start_time(results))
    row[LOSS_PROFILE] = results[-1].get(LOSS_PROFILE) if results else None
    row[TEST_CORRECT] = test_correct(results[-1].get(TEST_CORRECT) if results else None,
                                     row["final_test_acc"])
    return row, with_trial_keys(epochs, row)


def _storage_status(ray_status: str | None, results: list[dict], config: dict, trial_dir: Path) -> str:
    """The MLflow status word (trainables.schema.trial_status) of a trial in storage. Ray
    writes error.txt and error.pkl when a trial fails: only their presence is checked
    (error.pkl is a pickle)."""
    errored = ray_status == "ERROR" or any((trial_dir / name).is_file() for name in _RAY_ERROR_FILES)
    if not errored and ray_status in _RAY_LIVE:
        return RUNNING
    last = results[-1] if results else {}
    return trial_status(last, int(config["epochs"]), errored)

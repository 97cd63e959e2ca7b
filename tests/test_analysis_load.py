"""analysis.load on results written by hand as a sweep leaves them (no Ray, no sweep run):
a Ray experiment folder (params.json and result.json per trial, as Ray writes them) and
an MLflow store (a parent run and nested runs with the tags tune/ sets). Checked: the
promised columns, final-epoch test accuracy, the mean perturbation norm, the budget arm
of each confirm run, and the search trial each one reruns.

Search: Adam trials a (best epoch 0.85, final 0.80), b (final 0.82: the finalist by
final-epoch val accuracy) and c (0.90 after 2 epochs, stopped early), and SAM trial s.
Re-search: b's lr again at 8 epochs (r: 2.5e-3). Confirm: b with seeds 0 and 1 at 4
epochs, r with seed 0 at 8 epochs (the equal-compute arm: epochs, warm-up and step period
doubled, lr re-searched), s with seed 0 at 4 epochs; each run's last epoch records which
of 100 test examples it got right (s's record disagrees with its accuracy: not its own).

A results folder is untrusted: a crafted one (pickles in Ray's experiment state and in
error.pkl) loads without running them, and malformed JSON in any file it holds is either
skipped or refused in one line naming the file.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import pandas as pd
import pytest

from analysis.load import list_sweeps, load_sweep, load_sweep_from_storage
from analysis.sweep import EPOCH_COLUMNS, TRIAL_COLUMNS
from search_spaces.space import SearchSpace
from trainables.record import CONFIRM as CONFIRM_STAGE
from trainables.record import PARENT_STAGE, SPACE_FILE, RETUNE as RETUNE_STAGE, SEARCH as SEARCH_STAGE, TrialRecord, with_record
from trainables.schema import EQUAL_COMPUTE, EQUAL_EPOCHS, TEST_CORRECT, encode_correct

BASE = {"dataset": "digits", "model": "res20s", "batch_size": 128, "epochs": 4, "warmup_epochs": 1,
        "step_epochs": 30, "seed": 42}
SEARCH = {  # trial id -> (config, val_acc by epoch, perturbation_norm by epoch)
    "a0001": ({"optimizer": "adam", "lr": 1e-3}, [0.6, 0.85, 0.7, 0.80], None),
    "b0002": ({"optimizer": "adam", "lr": 2e-3}, [0.6, 0.7, 0.8, 0.82], None),
    "c0003": ({"optimizer": "adam", "lr": 3e-3}, [0.7, 0.90], None),
    "d0004": ({"optimizer": "sam", "lr": 1e-3, "rho": 0.05}, [0.6, 0.7, 0.8, 0.81], [0.04, 0.05, 0.06, 0.07]),
}
LONGER = {"epochs": 8, "warmup_epochs": 2, "step_epochs": 60}
RETUNE = {"r0009": ({"optimizer": "adam", "lr": 2.5e-3, **LONGER}, [0.5, 0.6, 0.7, 0.75, 0.8, 0.82, 0.83, 0.85])}
CONFIRM = {  # trial id -> (search trial rerun, changes, test_acc by epoch)
    "e0005": ("b0002", {"seed": 0}, [0.5, 0.9, 0.8, 0.84]),
    "f0006": ("b0002", {"seed": 1}, [0.5, 0.9, 0.8, 0.86]),
    "a0007": ("b0002", {"seed": 0, **LONGER, "lr": 2.5e-3}, [0.5, 0.6, 0.7, 0.8, 0.9, 0.8, 0.8, 0.88]),
    "b0008": ("d0004", {"seed": 0}, [0.5, 0.9, 0.8, 0.83]),
}
# Which of 100 test examples each confirm run got right at its end: the first k (s's record
# says 84 of 100, its accuracy 0.83).
CORRECT = {"e0005": 84, "f0006": 86, "a0007": 88, "b0008": 84}
STAGE_FOLDERS = {SEARCH_STAGE: "exp", RETUNE_STAGE: "exp-retune", CONFIRM_STAGE: "exp-confirm"}
SPACE = {"name": "load_test", "description": "hand-written results", "dataset": "digits",
         "model": "res20s", "optimizers": ["adam", "sam"], "fixed": {"batch_size": 128},
         "search": {"lr": {"loguniform": [1e-4, 1e-2]}, "rho": {"uniform": [0.01, 0.2]}},
         "max_epochs": 4, "grace_period": 1, "reduction_factor": 2, "trials_per_optimizer": 3,
         "max_concurrent": 1, "cpus_per_trial": 1, "gpus_per_trial": 0}


def trials() -> list[tuple[str, str, dict, list[dict]]]:
    """(stage, trial id, config, metrics by epoch) of every trial above."""
    found = []
    for trial_id, (config, val, norms) in SEARCH.items():
        epochs = [{"val_acc": v, "val_loss": 1 - v, **({"perturbation_norm": norms[i]} if norms else {})}
                  for i, v in enumerate(val)]
        found.append((SEARCH_STAGE, trial_id, {**BASE, **config}, epochs))
    for trial_id, (config, val) in RETUNE.items():
        found.append((RETUNE_STAGE, trial_id, {**BASE, **config}, [{"val_acc": v, "val_loss": 1 - v} for v in val]))
    for trial_id, (source, changes, test) in CONFIRM.items():
        config = {**BASE, **SEARCH[source][0], "eval_split": "test", "refit": True, **changes}
        epochs = [{"test_acc": t, "test_loss": 1 - t} for t in test]
        epochs[-1][TEST_CORRECT] = encode_correct([i < CORRECT[trial_id] for i in range(100)])
        found.append((CONFIRM_STAGE, trial_id, config, epochs))
    for _, _, config, epochs in found:
        passes = 2 if config["optimizer"] == "sam" else 1
        for i, row in enumerate(epochs):
            row.update(epoch=i + 1, grad_evals=1000.0 * (i + 1) * passes, epoch_time_s=1.5, diverged=0)
    return found


def record_of(stage: str, trial_id: str, config: dict, epochs: list[dict]) -> TrialRecord:
    """What the driver records of a trial above (a confirm run's arm, rank and sources)."""
    record = TrialRecord(trial_id=trial_id, stage=stage, optimizer=config["optimizer"],
                         status="completed" if len(epochs) >= config["epochs"] else "stopped_early")
    if stage != CONFIRM_STAGE:
        return record
    longer = config["epochs"] == 8
    return TrialRecord(**{**record.__dict__, "confirm_rank": 1, "source_trial_id": CONFIRM[trial_id][0],
                          "budget_arm": EQUAL_COMPUTE if longer else EQUAL_EPOCHS,
                          "retune_trial_id": "r0009" if longer else None})


def write_storage(folder: Path, with_space: bool) -> Path:
    """A Ray storage folder: <folder>/exp (search), <folder>/exp-retune and <folder>/exp-confirm,
    each confirm run's config carrying its record as the driver hands it to Ray."""
    for n, (stage, trial_id, config, epochs) in enumerate(trials()):
        trial_dir = folder / STAGE_FOLDERS[stage] / f"trainable_{trial_id}_{n}_x"
        trial_dir.mkdir(parents=True)
        if stage == CONFIRM_STAGE:
            config = with_record(config, record_of(stage, trial_id, config, epochs))
        (trial_dir / "params.json").write_text(json.dumps(config))
        (trial_dir / "result.json").write_text("".join(
            json.dumps({**row, "trial_id": trial_id, "timestamp": 1.7e9 + 100 * n + i, "time_this_iter_s": 1.5})
            + "\n" for i, row in enumerate(epochs)))
    if with_space:
        (folder / "exp" / SPACE_FILE).write_text(json.dumps(SearchSpace.from_dict(SPACE, "test").to_dict()))
    return folder / "exp"


def write_mlflow(folder: Path) -> str:
    """The same trials as MLflow runs under one parent, tagged as tune/ tags them."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("exp", artifact_location=str(folder / "artifacts"))
    parent = client.create_run(experiment, tags={"stage": PARENT_STAGE}).info.run_id
    client.log_dict(parent, SearchSpace.from_dict(SPACE, "test").to_dict(), SPACE_FILE)
    for stage, trial_id, config, epochs in trials():
        tags = {"mlflow.parentRunId": parent, **record_of(stage, trial_id, config, epochs).to_tags()}
        run = client.create_run(experiment, tags=tags).info.run_id
        for name, value in config.items():
            client.log_param(run, name, value)
        for row in epochs:
            for name, value in row.items():
                if name == TEST_CORRECT:
                    client.log_text(run, value, f"{TEST_CORRECT}.txt")
                else:
                    client.log_metric(run, name, value, step=row["epoch"])
        client.set_terminated(run)
    return uri


@pytest.mark.parametrize("with_space", [True, False])
def test_storage_gives_arms_links_and_final_test_accuracy(tmp_path, with_space):
    sweep = load_sweep_from_storage(write_storage(tmp_path, with_space))
    assert (sweep.space is not None) == with_space
    assert list(sweep.trials.columns[:len(TRIAL_COLUMNS)]) == TRIAL_COLUMNS
    assert list(sweep.epochs.columns) == EPOCH_COLUMNS
    t = sweep.trials.set_index("trial_id")
    assert t["budget_arm"].to_dict() == {"a0001": None, "b0002": None, "c0003": None, "d0004": None,
                                         "r0009": None, "e0005": EQUAL_EPOCHS, "f0006": EQUAL_EPOCHS,
                                         "a0007": EQUAL_COMPUTE, "b0008": EQUAL_EPOCHS}
    confirm = t[t["stage"] == "confirm"]
    # b, not a (best epoch 0.85) nor c (0.90 after 2 of 4 epochs); the 8-epoch run at the
    # re-searched lr is b's too, through its re-search trial.
    assert confirm["source_trial_id"].to_dict() == {"e0005": "b0002", "f0006": "b0002", "a0007": "b0002",
                                                    "b0008": "d0004"}
    assert confirm["retune_trial_id"].to_dict() == {"e0005": None, "f0006": None, "a0007": "r0009",
                                                    "b0008": None}
    assert confirm["confirm_rank"].tolist() == [1, 1, 1, 1]
    check_results(sweep)


def check_results(sweep) -> None:
    """The summaries both loaders must give for the trials above."""
    t = sweep.trials.set_index("trial_id")
    assert t.loc[["e0005", "f0006", "a0007", "b0008"], "final_test_acc"].tolist() == [0.84, 0.86, 0.88, 0.83]
    assert t.at["a0007", "final_test_loss"] == pytest.approx(0.12)
    assert t.loc[["e0005", "a0007"], "epochs_run"].tolist() == [4, 8]
    assert t.loc[["e0005", "a0007"], "status"].tolist() == ["completed", "completed"]
    assert t.loc[["a0001", "b0002", "c0003"], "status"].tolist() == ["completed", "completed", "stopped_early"]
    assert t.loc[["a0001", "c0003"], "final_val_acc"].tolist() == [0.80, 0.90]
    assert t.loc[["a0001", "b0002", "c0003", "d0004"], "final_test_acc"].isna().all()  # search: no test
    assert math.isnan(t.at["e0005", "final_val_acc"])  # refit: trained on val, never evaluated on it
    assert t.at["d0004", "perturbation_norm"] == pytest.approx(0.055)  # (0.04 + ... + 0.07) / 4
    assert t.loc[["a0001", "e0005"], "perturbation_norm"].isna().all()  # Adam has no ascent
    assert t.at["a0007", "warmup_epochs"] == 2 and t.at["a0007", "step_epochs"] == 60
    assert t.at["e0005", "eval_split"] == "test" and t.at["a0001", "eval_split"] == "val"
    run = sweep.epochs[sweep.epochs["trial_id"] == "a0007"]
    assert run["test_acc"].tolist() == [0.5, 0.6, 0.7, 0.8, 0.9, 0.8, 0.8, 0.88]
    assert t.at["r0009", "stage"] == RETUNE_STAGE and t.at["r0009", "final_val_acc"] == 0.85
    assert t.at["r0009", "lr"] == 2.5e-3 and t.at["r0009", "epochs"] == 8
    for trial_id in ("e0005", "f0006", "a0007"):
        correct = t.at[trial_id, TEST_CORRECT]
        assert len(correct) == 100 and correct.sum() == CORRECT[trial_id] and correct[:CORRECT[trial_id]].all()
    assert t.at["b0008", TEST_CORRECT] is None  # 84 of 100 is not its 0.83: not its record
    assert t[TEST_CORRECT][t["stage"] != "confirm"].isna().all()
    assert (t["replicate"] == 0).all()


def test_mlflow_gives_the_same_columns_arms_and_results(tmp_path):
    sweep = load_sweep("exp", write_mlflow(tmp_path))
    stored = load_sweep_from_storage(write_storage(tmp_path / "ray", with_space=True))
    assert list(sweep.trials.columns) == list(stored.trials.columns)
    assert list(sweep.epochs.columns) == EPOCH_COLUMNS
    a, b = (s.trials.set_index("trial_id").sort_index() for s in (sweep, stored))
    for column in ("budget_arm", "source_trial_id", "retune_trial_id", "stage", "optimizer", "status", "epochs_run"):
        assert a[column].tolist() == b[column].tolist(), column
    for column in ("final_val_acc", "final_test_acc", "final_test_loss", "perturbation_norm"):
        pd.testing.assert_series_equal(a[column], b[column], check_names=False)
    check_results(sweep)


def test_without_a_name_the_most_recent_sweep_is_loaded_and_a_wrong_name_lists_the_sweeps(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = write_mlflow(tmp_path)
    client = MlflowClient(uri)
    older = client.create_experiment("older", artifact_location=str(tmp_path / "older"))
    client.create_run(older, start_time=1_000, tags={"stage": PARENT_STAGE})  # 1970: older than exp's
    client.create_run(client.create_experiment("no-sweep"), tags={"note": "an ad-hoc run"})
    assert list_sweeps(uri) == ["exp", "older"]
    assert load_sweep(None, uri).name == "exp"
    with pytest.raises(ValueError) as error:
        load_sweep("quickstart", uri)
    assert str(error.value) == f"no MLflow experiment 'quickstart' at {uri}; its sweeps, newest first: exp, older"


# ---- an untrusted results folder ------------------------------------------------------------

class _Touch:
    """A pickle payload: unpickling it creates `path`, as a crafted results folder could
    run anything there."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def pickled_payload(marker: Path) -> bytes:
    """A pickle that creates `marker` when loaded (checked live here, then undone)."""
    payload = pickle.dumps(_Touch(marker))
    pickle.loads(payload)
    assert marker.exists(), "the payload must work, or the test below proves nothing"
    marker.unlink()
    return payload


def write_state(experiment: Path, payload: str, statuses: dict[str, str] | None = None) -> None:
    """An experiment_state-*.json shaped as Ray 2.60 writes it, every pickled field (hex, or
    a CLOUDPICKLE_FALLBACK value) holding `payload`; each trial TERMINATED unless
    `statuses` (trial id -> Ray status) says otherwise."""
    fallback = {"_type": "CLOUDPICKLE_FALLBACK", "value": payload}
    trial_data = []
    for trial_dir in sorted(p for p in experiment.iterdir() if p.is_dir()):
        trial_id = trial_dir.name.split("_")[1]
        trial = {"trial_id": trial_id, "status": (statuses or {}).get(trial_id, "TERMINATED"),
                 "relative_logdir": trial_dir.name, "storage": fallback, "placement_group_factory": payload,
                 "_default_placement_group_factory": payload, "_resources": payload,
                 "results": payload, "extra_arg": payload}
        runtime = {"start_time": 1.7e9, "error_filename": None, "pickled_error_filename": "error.pkl",
                   "metric_n_steps": {"val_acc": {"5": fallback}}, "checkpoint_manager": fallback}
        trial_data.append([json.dumps(trial), json.dumps(runtime)])
    state = {"trial_data": trial_data, "runner_data": json.dumps(fallback),
             "stats": json.dumps({"start_time": 1.7e9})}
    (experiment / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(state))


def test_a_crafted_folder_is_read_without_running_its_pickles(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickled_payload(marker)
    plain = load_sweep_from_storage(write_storage(tmp_path / "plain", with_space=True))
    experiment = write_storage(tmp_path / "crafted", with_space=True)
    write_state(experiment, payload.hex())
    (experiment / "tuner.pkl").write_bytes(payload)  # Ray writes one; nothing reads it
    sweep = load_sweep_from_storage(experiment)
    assert not marker.exists()
    pd.testing.assert_frame_equal(sweep.trials, plain.trials)  # the same columns and values
    pd.testing.assert_frame_equal(sweep.epochs, plain.epochs)
    check_results(sweep)
    assert (sweep.trials["compute_unit"] == "CPU").all()  # resources from the space

    failed = experiment / "trainable_f0009_9_x"  # failed before its first epoch
    failed.mkdir()
    (failed / "params.json").write_text(json.dumps({**BASE, "optimizer": "adam", "lr": 1e-3}))
    (failed / "error.pkl").write_bytes(payload)
    t = load_sweep_from_storage(experiment).trials.set_index("trial_id")
    assert not marker.exists()
    assert t.at["f0009", "status"] == "error" and t.at["f0009", "epochs_run"] == 0


FORMULAS = ["=1+2", "+cmd|' /C calc'!A0", "@SUM(A1:A9)", "-2+3", "\t=HYPERLINK(\"http://x\")", "\r=1"]


def test_the_csv_export_of_a_crafted_folder_holds_no_cell_a_spreadsheet_would_run(tmp_path):
    import csv

    from analysis import export

    experiment = write_storage(tmp_path / "crafted", with_space=True)
    for params in experiment.parent.glob("*/*/params.json"):
        config = json.loads(params.read_text())
        params.write_text(json.dumps({**config, "dataset": FORMULAS[0], "model": FORMULAS[1],
                                      **{f"x{i}": f for i, f in enumerate(FORMULAS)}, "=key": 1}))
    out = tmp_path / "trials.csv"
    assert export.main(["--storage", str(experiment), "--out", str(out)]) == 0
    header, *rows = list(csv.reader(out.open(newline="")))
    cells = [c for row in [header, *rows] for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    by_column = dict(zip(header, zip(*rows)))
    for i, formula in enumerate(FORMULAS):  # kept, behind a quote a spreadsheet shows as text
        assert set(by_column[f"x{i}"]) == {"'" + formula}
    assert set(by_column["'=key"]) == {"1"} and set(by_column["model"]) == {"'" + FORMULAS[1]}
    assert {float(v) for v in by_column["lr"]} == {1e-3, 2e-3, 3e-3, 2.5e-3}  # numbers as numbers


def test_ray_state_marks_live_and_failed_trials(tmp_path):
    experiment = write_storage(tmp_path, with_space=True)
    write_state(experiment, "80054e2e", {"b0002": "RUNNING", "c0003": "ERROR"})
    t = load_sweep_from_storage(experiment).trials.set_index("trial_id")
    assert t.loc[["a0001", "b0002", "c0003"], "status"].tolist() == ["completed", "running", "error"]


def test_trial_ids_come_from_ray_folder_names(tmp_path):
    """Without trial ids in result.json, Ray's folder names give them."""
    config = {**BASE, "epochs": 1, "optimizer": "adam"}
    trials = {"exp/trainable_aaaaa_00009_9_lr=0.001_2026-01-01_00-00-00": {**config, "lr": 1e-3},
              "exp/trainable_aaaaa_00010_10_lr=0.002_2026-01-01_00-00-00": {**config, "lr": 2e-3},
              "exp-confirm/trainable_bbbbb_00000_0_2026-01-01_00-00-01": {**config, "lr": 2e-3, "seed": 0,
                                                                          "eval_split": "test"}}
    for name, params in trials.items():
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "params.json").write_text(json.dumps(params))
        (tmp_path / name / "result.json").write_text(json.dumps(
            {"epoch": 1, "val_acc": 0.8, "test_acc": 0.8, "timestamp": 1.7e9}) + "\n")
    t = load_sweep_from_storage(tmp_path / "exp").trials.set_index("trial_id")
    assert set(t.index) == {"aaaaa_00009", "aaaaa_00010", "bbbbb_00000"}
    assert t.at["bbbbb_00000", "stage"] == "confirm" and t.at["aaaaa_00009", "stage"] == "search"


TRIAL = "trainable_a0001_0_x"
STATE = "experiment_state-2099-01-01_00-00-00.json"
DEEP = b"[" * 100_000  # json raises RecursionError on it
MALFORMED = [  # (file in the experiment folder, its bytes, a ValueError naming it?)
    (f"{TRIAL}/params.json", b"{not json", True),
    (f"{TRIAL}/params.json", b"[1, 2]", True),
    (f"{TRIAL}/params.json", DEEP, True),
    (f"{TRIAL}/params.json", b"\xff\xfe{}", True),
    (f"{TRIAL}/params.json", b'{"epochs": "4"}', True),
    (f"{TRIAL}/params.json", b'{"epochs": 0}', True),
    (f"{TRIAL}/params.json", b'{"seed": 1.5}', True),
    (f"{TRIAL}/params.json", b'{"seed": 1e400}', True),
    (f"{TRIAL}/params.json", b'{"seed": 1' + b"0" * 400 + b"}", True),
    (f"{TRIAL}/params.json", b'{"lr": [1e-3]}', True),
    (f"{TRIAL}/params.json", b'{"lr": NaN}', True),
    (f"{TRIAL}/params.json", b'{"dataset": 5}', True),
    (f"{TRIAL}/params.json", b'{"refit": "yes"}', True),
    (f"{TRIAL}/result.json", b"\xff\n", True),
    (f"{TRIAL}/result.json", b"{cut short", False),
    (f"{TRIAL}/result.json", DEEP, False),
    (f"{TRIAL}/result.json", b'[1]\n{"epoch": 1}\n', False),
    (f"{TRIAL}/result.json", b'{"epoch": "1", "val_acc": [0.5], "trial_id": 5, "timestamp": "now"}\n', False),
    (f"{TRIAL}/result.json", b'{"epoch": Infinity, "val_acc": 0.5}\n{"epoch": NaN}\n', False),
    (f"{TRIAL}/result.json", b'{"epoch": 1, "timestamp": 1e400, "time_this_iter_s": -1e400}\n', False),
    (f"{TRIAL}/result.json", b'{"epoch": 1, "timestamp": 1' + b"0" * 400 + b"}\n", False),
    (f"{TRIAL}/result.json", b'{"epoch": 1, "val_acc": 1' + b"0" * 400 + b"}\n", False),
    (SPACE_FILE, b"{not json", False),
    (SPACE_FILE, DEEP, False),
    (SPACE_FILE, b'{"name": [1]}', False),
    (SPACE_FILE, json.dumps({**SPACE, "max_epochs": 10 ** 400}).encode(), False),
    (STATE, b"{not json", False),
    (STATE, b"\xff", False),
    (STATE, DEEP, False),
    (STATE, b'{"trial_data": 5}', False),
    (STATE, json.dumps({"trial_data": [5, [], [7], ["{bad"], ["[1]"], [DEEP.decode()],
                                       [json.dumps({"status": 3, "relative_logdir": []})]]}).encode(), False),
]


@pytest.mark.parametrize(("name", "content", "refused"), MALFORMED,
                         ids=[f"{n.split('/')[-1]}-{i}" for i, (n, _, _) in enumerate(MALFORMED)])
def test_malformed_json_is_skipped_or_one_line_naming_the_file(tmp_path, name, content, refused):
    experiment = write_storage(tmp_path, with_space=True)
    (experiment / name).write_bytes(content)
    if refused:
        with pytest.raises(ValueError) as error:
            load_sweep_from_storage(experiment)
        message = str(error.value)
        assert "\n" not in message and name.split("/")[-1] in message and len(message) < 700
    else:
        sweep = load_sweep_from_storage(experiment)
        assert "a0001" in set(sweep.trials["trial_id"])
        assert list(sweep.trials.columns[:len(TRIAL_COLUMNS)]) == TRIAL_COLUMNS


def test_the_report_counts_earlier_sweeps_that_read_the_same_test_split(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = write_mlflow(tmp_path)
    client = MlflowClient(uri)
    ours = client.get_run(load_sweep("exp", uri).meta.parent_run_id)
    for name, params in (("before", {"dataset": "digits", "model": "res20s", "confirm_top_k": 1, "confirm_seeds": 5}),
                         ("no-confirm", {"dataset": "digits", "model": "res20s", "confirm_top_k": 0,
                                         "confirm_seeds": 5}),
                         ("other-data", {"dataset": "c10", "model": "res20s", "confirm_top_k": 1, "confirm_seeds": 5})):
        run = client.create_run(client.create_experiment(name), tags={"stage": PARENT_STAGE},
                                start_time=ours.info.start_time - 1000).info.run_id
        for key, value in params.items():
            client.log_param(run, key, value)
    for key, value in {"dataset": "digits", "model": "res20s"}.items():
        client.log_param(ours.info.run_id, key, value)
    # A later sweep on the same split does not count: it read test after this one.
    later = client.create_run(client.create_experiment("later"), tags={"stage": PARENT_STAGE},
                              start_time=ours.info.start_time + 1000).info.run_id
    for key, value in {"dataset": "digits", "model": "res20s", "confirm_top_k": 1, "confirm_seeds": 5}.items():
        client.log_param(later, key, value)
    meta = load_sweep("exp", uri).meta
    assert (meta.test_reads, meta.dataset, meta.model) == (1, "digits", "res20s")
    # Ray storage: the sweeps beside it that have a confirm folder and the same space's data and model.
    folder = write_storage(tmp_path / "ray", with_space=True)
    assert load_sweep_from_storage(folder).meta.test_reads == 0
    import os
    import shutil

    shutil.copytree(folder, folder.with_name("earlier"))
    shutil.copytree(folder.with_name("exp-confirm"), folder.with_name("earlier-confirm"))
    os.utime(folder.with_name("earlier-confirm"), (1.0e9, 1.0e9))  # long before this sweep began
    assert load_sweep_from_storage(folder).meta.test_reads == 1

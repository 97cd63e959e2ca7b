"""The sweep record (trainables/record.py): what tune/ writes and analysis/ reads, round
trips through MLflow tags and Ray's result files, and a new field that flows through
both without any other edit."""

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT
from trainables.record import (CONFIRM, RECORD_KEY, SEARCH, STATUS_TAG, TRIAL_ID_TAG, TrialRecord, loss_profile_artifact,
                               loss_profile_points, ranked_by_group, runs_confirm_stage, split_config, sqlite_path,
                               tracking_uri_problem, with_record)
from trainables.schema import EQUAL_COMPUTE

FULL = TrialRecord(trial_id="ab12_00003", stage=CONFIRM, optimizer="zsharp", replicate=2, status="completed",
                   budget_arm=EQUAL_COMPUTE, confirm_rank=1, source_trial_id="cd34_00001",
                   retune_trial_id="ef56_00000")


def test_a_record_survives_tags_both_ways():
    tags = FULL.to_tags()
    assert all(isinstance(v, str) for v in tags.values()) and tags["replicate"] == "2"
    assert TrialRecord.from_tags(tags) == FULL
    bare = TrialRecord(trial_id="x", optimizer="adam")
    assert TrialRecord.from_tags(bare.to_tags()) == bare
    assert set(bare.to_tags()) == {"trial_id", "stage", "optimizer", "replicate"}  # None: no tag


def test_a_record_survives_ray_result_files(tmp_path):
    """The config the driver hands Ray (with_record) lands in params.json, the trial id in
    result.json; from_results gives the record back, less what the driver sets when the
    trial runs (its status)."""
    settings = {"optimizer": "zsharp", "replicate": 2, "lr": 0.1, "epochs": 4}
    (tmp_path / "params.json").write_text(json.dumps(with_record(settings, FULL)))
    (tmp_path / "result.json").write_text(json.dumps({"epoch": 1, "trial_id": FULL.trial_id}) + "\n")
    params = json.loads((tmp_path / "params.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "result.json").read_text().splitlines()]
    assert split_config(params)[0] == settings
    assert TrialRecord.from_results(rows, params, SEARCH) == dataclasses.replace(FULL, status=None)
    # A search trial: the searcher's config carries no record; the stage comes from its folder.
    found = TrialRecord.from_results(rows, settings, SEARCH)
    assert (found.stage, found.optimizer, found.replicate, found.budget_arm) == (SEARCH, "zsharp", 2, None)


def test_old_and_untrusted_tags():
    assert TrialRecord.from_tags({"stage": "sweep"}).stage == SEARCH  # the search's word before
    odd = TrialRecord.from_tags({"stage": "nonsense", "replicate": "-1", "confirm_rank": "1e9",
                                 "budget_arm": "twice", "status": "\x1b[2J", "trial_id": ""})
    assert odd == TrialRecord()
    assert TrialRecord.from_results([], {RECORD_KEY: "not a mapping", "replicate": True}).replicate == 0
    with pytest.raises(ValueError, match="unknown stage"):
        TrialRecord(stage="sweep")


def test_the_tags_the_driver_sets_alone_are_record_fields():
    assert {TRIAL_ID_TAG, STATUS_TAG} <= set(TrialRecord.columns())
    assert FULL.to_tags()[TRIAL_ID_TAG] == FULL.trial_id and FULL.to_tags()[STATUS_TAG] == FULL.status


def test_a_loss_profile_survives_its_artifact_and_a_malformed_one_is_none():
    points = [[-1.0, 0.7], [0.0, 0.1], [1.0, 0.9]]
    assert loss_profile_points(json.loads(json.dumps(loss_profile_artifact(points)))) == points
    for bad in (None, [], {"t": [0.0]}, {"t": "0", "loss": [1.0]}):
        assert loss_profile_points(bad) is None


@pytest.mark.parametrize("plan, reads", [({"confirm_top_k": 1, "confirm_seeds": 3}, True),
                                         ({"confirm_top_k": "2", "confirm_seeds": "5"}, True),  # MLflow params
                                         ({"confirm_top_k": 1, "confirm_seeds": 0}, False),
                                         ({"confirm_top_k": 0, "confirm_seeds": 3}, False),
                                         ({"confirm_top_k": "x", "confirm_seeds": "3"}, False), ({}, False)])
def test_a_plan_runs_a_confirm_stage_when_top_k_and_seeds_are_both_positive(plan, reads):
    assert runs_confirm_stage(plan) is reads


def test_ranked_by_group_keeps_first_appearance_and_ranks_each_group():
    rows = [{"g": "b", "status": "completed", "epochs_run": 4, "final_val_acc": 0.5, "i": 0},
            {"g": "a", "status": "error", "epochs_run": 4, "final_val_acc": 0.9, "i": 1},
            {"g": "b", "status": "completed", "epochs_run": 4, "final_val_acc": 0.7, "i": 2},
            {"g": "b", "status": "stopped_early", "epochs_run": 2, "final_val_acc": 0.9, "i": 3}]
    ranked = ranked_by_group(rows, lambda r: r["g"])
    assert list(ranked) == ["b", "a"]
    assert [r["i"] for r in ranked["b"]] == [2, 0, 3] and ranked["a"] == []


@pytest.mark.parametrize("uri, ok", [("sqlite:////tmp/x.db", True), ("sqlite:///rel.db", True),
                                     ("http://127.0.0.1:5000", True), ("sqlite:///", False),
                                     ("ftp://host", False), ("http://h:0", False), ("http://a b", False),
                                     ("http://h\x1b[2J", False)])
def test_tracking_uri_forms(uri, ok):
    problem = tracking_uri_problem(uri)
    assert (problem is None) == ok
    if problem:
        assert problem.isprintable() and "--mlflow-uri must be" in problem
    assert (sqlite_path(uri) is not None) == (uri.startswith("sqlite:///") and len(uri) > 10)


_THROUGH = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    from types import SimpleNamespace
    from mlflow.tracking import MlflowClient
    from analysis.load import load_sweep, load_sweep_from_storage
    from trainables.record import CONFIRM, PARENT_STAGE, TrialRecord, with_record
    from tune.tracking import MlflowTracking, open_parent_run

    folder = Path(sys.argv[1])
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    parent, experiment = open_parent_run(client, "exp", str(folder), False, {"stage": PARENT_STAGE})
    settings = {"optimizer": "sam", "lr": 0.1, "epochs": 1, "dataset": "digits", "model": "res8s"}
    config = with_record(settings, TrialRecord(stage=CONFIRM, optimizer="sam", budget_arm="equal_epochs",
                                               confirm_rank=1, source_trial_id="s1", note="added"))
    trial = SimpleNamespace(trial_id="t1", config=config, last_result={"epoch": 1, "test_acc": 0.5})
    tracking = MlflowTracking(uri, parent, experiment, stage=CONFIRM)
    tracking.on_trial_result(0, [], trial, {"epoch": 1, "test_acc": 0.5, "trial_id": "t1"})
    tracking.on_trial_complete(0, [], trial)
    print(json.dumps(load_sweep("exp", uri).trials[["trial_id", "note"]].to_dict("records")))
    for stage, params in (("exp", settings), ("exp-confirm", config)):
        trial_dir = folder / "ray" / stage / "trainable_t1_0_x"
        trial_dir.mkdir(parents=True)
        (trial_dir / "params.json").write_text(json.dumps(params))
        (trial_dir / "result.json").write_text(json.dumps({"epoch": 1, "trial_id": "t1"}) + "\\n")
    stored = load_sweep_from_storage(folder / "ray" / "exp").trials
    print(json.dumps(stored[["stage", "note"]].to_dict("records")))
''')


@pytest.mark.slow
def test_a_field_added_to_the_record_is_written_by_tune_and_read_by_analysis(tmp_path):
    """A copy of the project whose TrialRecord has one more field, and no other change: the
    driver's MLflow callback tags it, and both loaders give it as a column."""
    copy = tmp_path / "project"
    for package in ("trainables", "tune", "analysis", "search_spaces", "commandline"):
        shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__", "notebooks"))
    record = copy / "trainables" / "record.py"
    anchor = "    retune_trial_id: str | None = _tag(_text)"
    text = record.read_text()
    assert text.count(anchor) == 1
    record.write_text(text.replace(anchor, anchor + "\n    note: str | None = _tag(_text)"))
    done = subprocess.run([sys.executable, "-c", _THROUGH, str(tmp_path)], cwd=copy, capture_output=True,
                          text=True, timeout=240, env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin",
                                                       "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    from_mlflow, from_storage = (json.loads(line) for line in done.stdout.splitlines()[-2:])
    assert from_mlflow == [{"trial_id": "t1", "note": "added"}]
    assert from_storage == [{"stage": "search", "note": None}, {"stage": "confirm", "note": "added"}]

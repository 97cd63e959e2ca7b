"""The sweep end to end on digits, with real Ray, Optuna and MLflow (no mocks).

Each test runs `launch.py` as a user would, in a subprocess, and reads what the sweep
left in MLflow and in Ray's storage. Processes a test starts (drivers, Ray daemons, an
MLflow server) are stopped by pid, never with `ray stop`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import (ENV, ROOT, SHARED_SWEEP, kill_processes, launch, run_printed, session_processes, space_file,
                      stop_session)
from mlflow.tracking import MlflowClient
from search_spaces import get_space
from trainables.record import LOSS_PROFILE_FILE, TEST_CORRECT_FILE

TERMINAL = {"completed", "stopped_early", "diverged", "error"}
pytestmark = pytest.mark.slow


def launch_cmd(*args) -> list[str]:
    return [sys.executable, str(ROOT / "launch.py"), *args]


def tracking(storage: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")


def runs_of(client: MlflowClient, experiment: str):
    """(parent runs, child runs) of an MLflow experiment."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return [], []
    runs = client.search_runs([found.experiment_id], max_results=1000)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags], children


def kill_tree(root: psutil.Process) -> None:
    """SIGKILL a process and every descendant, until none is left (by pid)."""
    for _ in range(5):
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        kill_processes(procs)


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None,
             finished_ok: bool = False):
    """Poll `condition` until it is truthy; fail at once if `process` has exited (with
    `finished_ok`, an exit with status 0 returns None instead)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            if finished_ok and process.returncode == 0:
                return None
            raise AssertionError(f"process exited ({process.returncode}) before {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- a real sweep (the session's shared digits sweep, tests/conftest.py) ---------------

SEARCHED = tuple(SHARED_SWEEP["optimizers"])
REPLICATES = tuple(range(SHARED_SWEEP["replicates"]))


def stage(children, name):
    return [c for c in children if c.data.tags["stage"] == name]


def test_sweep_runs_to_the_end_and_prints_the_best_per_optimizer(digits_sweep, tmp_path):
    done = digits_sweep.done
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout.split("\noptimizer ")[1].split("confirm stage")[0]
    assert all(f"\n{o} " in table for o in SEARCHED)
    assert "confirm stage" in done.stdout and "final test accuracy at equal epochs" in done.stdout
    assert "final test accuracy at equal gradient evaluations" in done.stdout
    assert "re-search: the lr of adam at the equal-compute arm's epochs" in done.stdout
    assert "\nprimary contrast, ZSharp against SAM at equal epochs (alone at alpha 0.05): " in done.stdout
    assert "95% interval over 2 replicates, their seeds and the test examples" in done.stdout
    assert ("flatness of the equal-epochs runs, means over the replicates' means (each over its seeds) "
            "(diagnostics, not the verdict") in done.stdout
    # At the start and at the end, runnable as printed (the environment's own mlflow).
    browse = (f"{Path(sys.executable).parent / 'mlflow'} ui --workers 1 --backend-store-uri "
              f"{digits_sweep.tracking_uri}")
    assert done.stdout.count(browse) == 2 and Path(browse.split()[0]).is_file()
    report = next(Path(digits_sweep.storage / "digits_test").glob("*-report.html"))
    # The report is written after the search, marked partial, before the confirm stage starts.
    lines = done.stdout.splitlines()
    partial = next(i for i, line in enumerate(lines) if line == f"report       {report.resolve()}  (partial)")
    assert partial < next(i for i, line in enumerate(lines) if line.startswith("confirm stage: "))
    assert "id='partial'" not in report.read_text()  # rewritten whole at the end
    line = next(line for line in done.stdout.splitlines() if line.startswith("report     ") and "(to open it" in line)
    shown, opener = line.removeprefix("report     ").removesuffix(")").split("  (to open it: ")
    assert Path(shown) == report.resolve()
    # Run as printed, with a "browser" that writes down what it was asked to open.
    opened = run_printed(shlex.split(opener), BROWSER=f"sh -c 'echo %s > {tmp_path / 'opened'}'", timeout=60)
    assert opened.returncode == 0 and (tmp_path / "opened").read_text().strip() == report.resolve().as_uri()
    assert f"notebooks  make -C {ROOT} notebooks" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert "INFO mlflow" not in done.stdout + done.stderr  # MLflow's own chatter is off
    folders = [p for stage in ("", "-retune", "-confirm") for p in (digits_sweep.storage / f"digits_test{stage}").iterdir()
               if p.is_dir() and (p / "params.json").exists()]
    assert len(folders) == 42 and max(len(p.name) for p in folders) <= 30  # Ray's own names ran to 150


def test_mlflow_holds_the_parent_and_one_child_per_trial(digits_sweep):
    parents, children = runs_of(tracking(digits_sweep.storage), "digits_test")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    tags = parents[0].data.tags
    assert tags["space"] == "digits_test" and "launch.py" in tags["command"]
    assert len(tags["git_commit"]) == 40 and tags["version.torch"]
    search = stage(children, "search")
    assert len(search) == 24  # 3 trials x 4 optimizers x 2 replicates
    assert {c.data.tags["optimizer"] for c in search} == set(SEARCHED)
    assert len(stage(children, "retune")) == 2  # Adam's lr again: a third of 3 trials, per replicate
    assert len({c.data.tags["trial_id"] for c in children}) == len(children)
    from trainables.config import TrialConfig
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["status"] in TERMINAL - {"error"}
        params = child.data.params
        # The resolved config less what the optimizer does not read (SAM variants on Adam).
        unread = {"adam": {"momentum", "rho", "eta", "sigma", "lmbda", "alpha", "base"},
                  "sgd": {"beta1", "beta2", "rho", "eta", "sigma", "lmbda", "alpha", "base"},
                  "sam": {"momentum", "eta", "sigma", "lmbda", "alpha"},
                  "zsharp": {"momentum", "eta", "sigma", "lmbda"}}[child.data.tags["optimizer"]]
        assert set(params) == set(TrialConfig.field_names()) - unread
        longer = child.data.tags.get("budget_arm") == "equal_compute" or child.data.tags["stage"] == "retune"
        assert params["dataset"] == "digits" and params["epochs"] == ("6" if longer else "3")
        assert child.data.tags["replicate"] == params["replicate"] and params["replicate"] in ("0", "1")


def test_the_parent_run_holds_the_space_and_each_optimizers_result(digits_sweep):
    """So that sweeps compare side by side in the MLflow UI: the space as params, and per
    optimizer the best search trial's final val accuracy and, per budget arm, the confirm
    runs' mean test accuracy (the mean of the replicates' means) with its interval."""
    parents, children = runs_of(tracking(digits_sweep.storage), "digits_test")
    params, metrics = parents[0].data.params, parents[0].data.metrics
    assert params["trials_per_optimizer"] == "3" and params["max_epochs"] == "3"
    assert params["optimizers"] == ", ".join(SEARCHED) and params["confirm_seeds"] == "2"
    search, confirm = stage(children, "search"), stage(children, "confirm")
    for optimizer in ("adam", "sam", "zsharp"):
        finished = [c.data.metrics for c in search if c.data.tags["optimizer"] == optimizer]
        best = max(finished, key=lambda m: (m["epoch"], m["val_acc"]))  # full budget first
        assert metrics[f"search.{optimizer}.best_val_acc"] == pytest.approx(best["val_acc"])
        arms = {c.data.tags["budget_arm"] for c in confirm if c.data.tags["optimizer"] == optimizer}
        for arm in arms:
            runs = [c for c in confirm if (c.data.tags["optimizer"], c.data.tags["budget_arm"]) == (optimizer, arm)]
            means = [sum(accs) / len(accs) for accs in
                     ([c.data.metrics["test_acc"] for c in runs if c.data.tags["replicate"] == str(r)]
                      for r in REPLICATES)]
            name = f"confirm.{arm}.{optimizer}.test_acc"
            assert len(runs) == 4 and metrics[name + "_mean"] == pytest.approx(sum(means) / 2)
            assert 0 <= metrics[name + "_low"] <= metrics[name + "_mean"] <= metrics[name + "_high"] <= 1
    assert "search.sgd.best_val_acc" not in metrics  # every sgd trial diverged


def test_metrics_are_logged_every_epoch(digits_sweep):
    client = tracking(digits_sweep.storage)
    _, children = runs_of(client, "digits_test")
    for child in children:
        accuracy = "test_acc" if child.data.tags["stage"] == "confirm" else "val_acc"
        history = client.get_metric_history(child.info.run_id, accuracy)
        steps = sorted(m.step for m in history)
        assert steps == list(range(1, len(steps) + 1)) and steps
        last_epoch = int(child.data.metrics["epoch"])
        if child.data.tags["optimizer"] == "sgd":
            assert child.data.tags["status"] == "diverged"
            continue
        expected = "completed" if last_epoch == int(child.data.params["epochs"]) else "stopped_early"
        assert child.data.tags["status"] == expected
        if child.data.tags["optimizer"] == "zsharp":
            assert 0 < child.data.metrics["kept_fraction"] < 0.25
            assert 0 < child.data.metrics["ascent_cosine"] <= 1
        if child.data.tags["optimizer"] in ("sam", "zsharp"):
            assert child.data.metrics["perturbation_norm"] > 0


def test_search_trials_never_see_test_and_confirm_runs_are_scored_on_it(digits_sweep, tmp_path):
    from trainables.schema import decode_correct

    client = tracking(digits_sweep.storage)
    _, children = runs_of(client, "digits_test")
    for run in stage(children, "search") + stage(children, "retune"):
        assert run.data.params["eval_split"] == "val"
        assert "val_acc" in run.data.metrics
        assert not [m for m in run.data.metrics if m.startswith("test_")]
    for run in stage(children, "confirm"):
        assert (run.data.params["eval_split"], run.data.params["refit"]) == ("test", "True")
        assert "test_acc" in run.data.metrics and "val_acc" not in run.data.metrics  # val is trained on
        # Which of the 360 test images it got right, as its last epoch's accuracy counts them.
        text = Path(client.download_artifacts(run.info.run_id, TEST_CORRECT_FILE, str(tmp_path))).read_text()
        correct = decode_correct(text)
        assert len(correct) == 360 and correct.mean() == pytest.approx(run.data.metrics["test_acc"])


def test_confirm_runs_end_with_the_flatness_diagnostics_and_search_trials_never(digits_sweep, tmp_path):
    from trainables.schema import FLATNESS_METRICS

    client = tracking(digits_sweep.storage)
    _, children = runs_of(client, "digits_test")
    for run in stage(children, "search"):
        assert not set(FLATNESS_METRICS) & set(run.data.metrics)
    for run in stage(children, "confirm"):
        metrics = run.data.metrics
        assert set(FLATNESS_METRICS) <= set(metrics) and metrics["sharpness_worst"] >= 0
        # Logged with the last epoch, at its step.
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "hessian_top_eig")]
        assert steps == [int(metrics["epoch"])]
        profile = json.loads(Path(client.download_artifacts(run.info.run_id, LOSS_PROFILE_FILE,
                                                            str(tmp_path))).read_text())
        assert profile["t"] == pytest.approx([i / 10 - 1 for i in range(21)]) and len(profile["loss"]) == 21


def test_the_cost_benchmark_reads_the_diagnostics_share_of_each_confirm_run(digits_sweep):
    """benchmarks/flatness_cost.py --results: per optimizer, its confirm runs' diagnostics
    seconds (as MLflow holds them) against the runs' time in the sweep."""
    _, children = runs_of(tracking(digits_sweep.storage), "digits_test")
    seconds = {}
    for run in stage(children, "confirm"):
        if "flatness_seconds" in run.data.metrics:
            group = (run.data.params["optimizer"], run.data.params["epochs"])
            seconds.setdefault(group, []).append(run.data.metrics["flatness_seconds"])
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "flatness_cost.py"), "--results",
                           str(digits_sweep.storage / "digits_test")], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # sgd diverged: never confirmed; adam ran at 2x epochs too (equal compute)
    assert sorted(seconds) == [("adam", "3"), ("adam", "6"), ("sam", "3"), ("zsharp", "3")]
    for (optimizer, epochs), values in seconds.items():
        line = next(s for s in done.stdout.splitlines() if s.split()[:2] == [optimizer, epochs])
        assert f" epochs, {len(values)} runs: diagnostics {sum(values) / len(values):.2f} s of " in line
    share, highest = (float(s) for s in re.search(r"^all +ratio ([\d.]+), highest ([\d.]+)",
                                                    done.stdout, re.MULTILINE).groups())
    assert 0 < share <= highest < 1


def test_asha_stopped_some_trials_early(digits_sweep):
    _, children = runs_of(tracking(digits_sweep.storage), "digits_test")
    statuses = [c.data.tags["status"] for c in stage(children, "search")]
    assert "stopped_early" in statuses and "completed" in statuses


def test_each_optimizer_got_its_own_seeded_search(digits_sweep):
    _, children = runs_of(tracking(digits_sweep.storage), "digits_test")
    search = stage(children, "search")
    zsharp = [c.data.params for c in search if c.data.tags["optimizer"] == "zsharp"]
    assert len(zsharp) == 6
    assert all(0.8 <= float(p["alpha"]) <= 0.95 and 0.01 <= float(p["rho"]) <= 0.1 for p in zsharp)
    assert len({p["lr"] for p in zsharp}) == 6  # sampled, not fixed
    assert all("alpha" not in c.data.tags for c in search)
    # Each replicate searches on its own training seed and validation holdout.
    seeds = {p["replicate"]: {(p["seed"], p["holdout_seed"])} for p in zsharp}
    assert len(seeds) == 2 and all(len(v) == 1 for v in seeds.values()) and seeds["0"] != seeds["1"]


def test_diverging_trials_end_diverged_and_the_sweep_completes(digits_sweep):
    _, children = runs_of(tracking(digits_sweep.storage), "digits_test")
    sgd = [c for c in children if c.data.tags["optimizer"] == "sgd"]
    assert sgd and all(c.data.tags["status"] == "diverged" for c in sgd)
    assert all(int(c.data.metrics["epoch"]) == 1 for c in sgd)  # ended at once, not run on


def test_confirm_stage_reruns_each_finalist_with_seeds_in_both_budget_arms(digits_sweep):
    client = tracking(digits_sweep.storage)
    _, children = runs_of(client, "digits_test")
    search, confirm = stage(children, "search"), stage(children, "confirm")
    by_trial = {c.data.tags["trial_id"]: c for c in search}

    def final_val_acc(run):
        history = sorted(client.get_metric_history(run.info.run_id, "val_acc"), key=lambda m: m.step)
        return history[-1].value

    # Every sgd trial diverged: no finalist. Adam (1 pass) also runs at 2x the epochs, at
    # the lr its re-search found there.
    arms = {"adam": {"equal_epochs": 3, "equal_compute": 6}, "sam": {"equal_epochs": 3},
            "zsharp": {"equal_epochs": 3}}
    assert len(confirm) == 2 * 2 * sum(len(a) for a in arms.values())
    retuned = {c.data.tags["trial_id"]: c for c in stage(children, "retune")}
    ignored = {"seed", "eval_split", "refit", "flatness_images", "epochs", "warmup_epochs", "step_epochs"}
    for optimizer, epochs_by_arm in arms.items():
        for replicate in ("0", "1"):
            runs = [c for c in confirm if (c.data.tags["optimizer"], c.data.tags["replicate"]) == (optimizer, replicate)]
            seeds = {arm: sorted(c.data.params["seed"] for c in runs if c.data.tags["budget_arm"] == arm)
                     for arm in epochs_by_arm}
            assert all(len(s) == 2 and s == seeds["equal_epochs"] for s in seeds.values())  # paired
            assert all(int(c.data.metrics["epoch"]) == int(c.data.params["epochs"]) ==
                       epochs_by_arm[c.data.tags["budget_arm"]] for c in runs)
            source = by_trial[runs[0].data.tags["source_trial_id"]]
            rivals = [c for c in search if (c.data.tags["optimizer"], c.data.tags["replicate"]) == (optimizer, replicate)
                      and c.data.tags["status"] == "completed"]
            assert source.data.tags["status"] == "completed"  # the full budget beats any early stop
            assert final_val_acc(source) == max(map(final_val_acc, rivals))  # the best (ties: any)
            for run in runs:  # the same hyperparameters: the finalist's, or its re-search's at 2x
                origin = retuned[run.data.tags["retune_trial_id"]] if "retune_trial_id" in run.data.tags else source
                assert {k: v for k, v in run.data.params.items() if k not in ignored} == \
                    {k: v for k, v in origin.data.params.items() if k not in ignored}
    # The other replicate's seeds: replicates share no confirm seed.
    by_replicate = {r: {c.data.params["seed"] for c in confirm if c.data.tags["replicate"] == r} for r in ("0", "1")}
    assert not by_replicate["0"] & by_replicate["1"]


def _json(url: str):
    """The JSON a local server answers at `url`, or None while it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


def test_optuna_dashboard_serves_each_optimizers_study_linked_to_its_mlflow_runs(digits_sweep):
    """The command the sweep prints serves the studies over HTTP: one per optimizer, its
    trials' states as the sweep's (ASHA's stops PRUNED), every epoch's val_acc as an
    intermediate value, and each trial and its MLflow run naming each other."""
    client = tracking(digits_sweep.storage)
    search = stage(runs_of(client, "digits_test")[1], "search")
    url = f"sqlite:///{digits_sweep.storage / 'optuna.db'}"
    command = f"{Path(sys.executable).parent / 'optuna-dashboard'} {url}"
    assert digits_sweep.done.stdout.count(command) == 2
    port = free_port()
    server = subprocess.Popen([*command.split(), "--port", str(port), "--quiet"], cwd=ROOT, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        api = f"http://127.0.0.1:{port}/api/studies"
        listed = wait_for(lambda: _json(api), 60, "optuna-dashboard to answer", server)["study_summaries"]
        assert sorted(s["study_name"] for s in listed) == sorted(
            [f"digits_test/{o}/r{r}" for o in SEARCHED for r in REPLICATES]
            + [f"digits_test/adam/r{r}/retune" for r in REPLICATES])
        for study in listed:
            if study["study_name"].endswith("/retune"):
                continue
            _, optimizer, replicate = study["study_name"].split("/")
            runs = {c.data.tags["trial_id"]: c for c in search if c.data.tags["optimizer"] == optimizer
                    and c.data.tags["replicate"] == replicate.removeprefix("r")}
            detail = _json(f"{api}/{study['study_id']}")
            trials = detail["trials"]
            assert len(trials) == len(runs) == 3
            # Named as the sweep names it: the objective, the space, the MLflow experiment,
            # and ZSharp's alpha as the trials' parameter 1-alpha reads.
            about = {a["key"]: a["value"] for a in detail["user_attrs"]}
            assert detail["objective_names"] == ["val_acc"]
            assert about["space"] == "digits_test" and about["mlflow_experiment"] == "digits_test"
            searched = get_space(digits_sweep.space).distributions_for(optimizer).values()
            reflected = any(d.transform is not None and d.transform.reflect for d in searched)
            assert ("1-alpha" in about) == reflected and "launch.py" in about["command"]
            for trial in trials:
                attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
                run = runs[attrs["ray_trial_id"]]
                assert attrs["mlflow_run_id"] == run.info.run_id
                assert (run.data.tags["optuna_study"], run.data.tags["optuna_trial"]) == \
                    (study["study_name"], str(trial["number"]))
                assert (trial["state"] == "Pruned") == (run.data.tags["status"] == "stopped_early")
                assert trial["state"] in ("Pruned", "Complete")
                history = client.get_metric_history(run.info.run_id, "val_acc")
                assert sorted(v["step"] for v in trial["intermediate_values"]) == \
                    sorted(m.step for m in history if m.value == m.value)  # NaN never told
    finally:
        kill_tree(psutil.Process(server.pid))
        server.wait()


def test_the_mlflow_ui_command_the_sweep_prints_serves_the_sweep(digits_sweep):
    """The `mlflow ui` line, run as printed (on a free port instead of 5000), serves the
    store on loopback: the sweep's experiment and its parent run's children."""
    # The closing line (the one at the start adds "(while it runs, too)").
    printed = [line for line in digits_sweep.done.stdout.splitlines() if line.startswith("mlflow ui  ")][-1]
    port = free_port()
    server = subprocess.Popen([*shlex.split(printed.removeprefix("mlflow ui  ")), "--port", str(port)],
                              cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        api = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow"
        found = wait_for(lambda: _json(f"{api}/experiments/get-by-name?experiment_name=digits_test"), 120,
                         "mlflow ui to answer", server)["experiment"]
        request = urllib.request.Request(f"{api}/runs/search", method="POST", headers={"Content-Type": "application/json"},
                                         data=json.dumps({"experiment_ids": [found["experiment_id"]],
                                                          "max_results": 1000}).encode())
        with urllib.request.urlopen(request, timeout=30) as response:
            served = json.load(response)["runs"]
        _, children = runs_of(tracking(digits_sweep.storage), "digits_test")
        assert len(served) == len(children) + 1  # the parent run and one run per trial
    finally:
        stop_session(server.pid)  # the server and its workers, whether or not it still runs
        server.wait()


def test_list_sweeps_gives_each_sweeps_status_trials_and_results_from_the_store(digits_sweep, capsys):
    assert run_main(["--list-sweeps", "--storage", str(digits_sweep.storage)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    parents, children = runs_of(tracking(digits_sweep.storage), "digits_test")
    metrics = parents[0].data.metrics
    labels = {"adam": "Adam", "sam": "SAM", "zsharp": "ZSharp", "fsam": "Friendly-SAM", "asam": "ASAM"}
    found = sorted(((metrics[key], labels[key.split(".")[2]]) for key in metrics
                    if key.startswith("confirm.equal_epochs.") and key.endswith(".test_acc_mean")), reverse=True)
    expected = ", ".join(f"{label} {100 * value:.1f}% test" for value, label in found)  # best first
    assert line.startswith("digits_test ") and " finished " in line
    assert f" {len(children)} trials  " in line and line.endswith(expected)


def test_a_second_launch_without_resume_refuses(digits_sweep):
    done = launch("--space", digits_sweep.space, "--storage", str(digits_sweep.storage))
    assert done.returncode == 2
    assert "already exists" in done.stderr and "--resume" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# ---- crashes --------------------------------------------------------------------------

def start_driver(folder: Path, *args: str, env: dict = ENV, command: list[str] | None = None) -> subprocess.Popen:
    """launch.py ARGS (or `command`, as printed) in the background, in its own session (and
    so its own process group, as a shell runs it), logging to folder/driver.log."""
    log = open(folder / "driver.log", "w")
    return subprocess.Popen(command or launch_cmd(*args), cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def token_env(home: Path) -> dict:
    """The environment of a user who has not turned Ray's token authentication off (its
    token lands in `home`)."""
    env = {k: v for k, v in ENV.items() if k != "RAY_AUTH_MODE"}
    return {**env, "HOME": str(home)}


def children_so_far(client: MlflowClient, experiment: str):
    """The child runs logged so far, or None while the database is still being created."""
    try:
        return runs_of(client, experiment)[1]
    except Exception:  # noqa: BLE001  the SQLite file may not exist or be half-made yet
        return None


def epochs_logged(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "epoch"))


def running_at_epoch(client: MlflowClient, experiment: str, epoch: int) -> dict[str, float]:
    """Trial id -> last epoch of the RUNNING trials that have logged `epoch` or later."""
    return {c.data.tags["trial_id"]: c.data.metrics["epoch"] for c in children_so_far(client, experiment) or []
            if c.info.status == "RUNNING" and c.data.metrics.get("epoch", 0) >= epoch}


def rows_from_other_workers(folder: Path, trials, workers: set[int]) -> dict[str, list[int]]:
    """Trial id -> the epochs in its result.json (on storage) reported by processes outside
    `workers`; a line still being written is skipped."""
    epochs: dict[str, list[int]] = {}
    for file in folder.glob("*/result.json"):
        for line in file.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row["trial_id"] in trials and row["pid"] not in workers:
                epochs.setdefault(row["trial_id"], []).append(row["epoch"])
    return epochs


def kill_the_trial_workers(client: MlflowClient, storage: Path, driver: subprocess.Popen) -> None:
    """SIGKILL every trial worker while some trial is at epoch 2 or later (so its checkpoint
    of epoch 1 is registered): the driver restarts it from its checkpoint, so the epochs a
    new worker reports for it start after epoch 1."""
    wait_for(lambda: running_at_epoch(client, "crash", 2), 600, "a trial at epoch 2", driver)
    running = running_at_epoch(client, "crash", 2)
    workers = [p for p in psutil.Process(driver.pid).children(recursive=True)
               if "ImplicitFunc" in " ".join(p.cmdline())]
    assert workers, "no trial worker process found"
    for worker in workers:
        worker.kill()
    killed = {w.pid for w in workers}
    wait_for(lambda: rows_from_other_workers(storage / "crash", running, killed), 300,
             "a trial that was running to continue in a new worker", driver)
    for trial_id, epochs in rows_from_other_workers(storage / "crash", running, killed).items():
        assert min(epochs) > 1, f"{trial_id} restarted from scratch: {epochs}"


def ray_dashboard_serves_loopback_with_the_token(home: Path) -> None:
    """--dashboard: Ray's dashboard answers on 127.0.0.1:8265 with the user's Ray token, not
    without it, and not on the machine's network addresses."""
    url = "http://127.0.0.1:8265/api/version"
    token = (home / ".ray" / "auth_token").read_text().strip()
    with urllib.request.urlopen(urllib.request.Request(
            url, headers={"Authorization": f"Bearer {token}"}), timeout=30) as response:
        assert json.loads(response.read())["ray_version"]
    with pytest.raises(urllib.error.HTTPError, match="401"):
        urllib.request.urlopen(url, timeout=30)
    outside = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
               if a.family == socket.AF_INET and not a.address.startswith("127.")]
    for address in outside:
        with socket.socket() as probe, pytest.raises(OSError):
            probe.settimeout(5)
            probe.connect((address, 8265))


def test_driver_killed_again_and_again_then_resumed(tmp_path):
    """SIGKILL the driver three times while trials run (each time later in the sweep, and
    so at another point of Tune's snapshots): every trial running at a kill continues in
    its own run, each optimizer ends with exactly its budget, and nothing is logged twice.
    Under the first driver the trial workers are killed too: the driver itself restarts
    their trials from their checkpoints; that driver also serves Ray's dashboard."""
    storage = tmp_path / "results"
    # res20s: with res8s's second-long trials a worker kill often lands on a trial Ray is
    # still starting, which Ray fails rather than restarts (the driver goes on, and --resume
    # reruns it), and no killed trial is left to continue under this driver.
    space = space_file(tmp_path, name="crash", model="res20s", max_epochs=6, grace_period=6,
                       trials_per_optimizer=6)  # enough work left for three kills
    args = ("--space", space, "--storage", str(storage))
    home = tmp_path / "home"
    home.mkdir()
    client = tracking(storage)
    kills = 0
    finished_at_kill: dict[str, int] = {}  # run id -> its end time, when it had finished
    epoch_at_kill: dict[str, float] = {}     # run id -> its last epoch, when it was running
    for kill in range(3):
        driver = start_driver(tmp_path, *args, *(["--resume"] if kill else ["--dashboard"]),
                              env=token_env(home))

        def a_finished_trial_and_one_running_on():
            children = children_so_far(client, "crash") or []
            finished = [c for c in children if c.info.status == "FINISHED"]
            return finished and [c for c in children if c.info.status == "RUNNING" and
                                 c.data.metrics.get("epoch", 0) > epoch_at_kill.get(c.info.run_id, 0)]

        try:
            if not wait_for(a_finished_trial_and_one_running_on, 600,
                            "a finished trial and one that trained an epoch under this driver",
                            driver, finished_ok=kill > 0):
                break  # the previous driver's trials all ended before its kill: nothing left
            kills += 1
            if kill == 0:
                # While it runs: a second driver on the experiment is refused, and the local
                # Ray keeps its token authentication (its token is in the user's home).
                second = launch(*args, "--resume", timeout=120)
                assert second.returncode == 2 and "being run by another launch.py" in second.stderr
                assert (home / ".ray" / "auth_token").is_file()
                ray_dashboard_serves_loopback_with_the_token(home)
                kill_the_trial_workers(client, storage, driver)
            time.sleep(0.7 * kill)  # another moment relative to Tune's periodic snapshots
            _, children = runs_of(client, "crash")
            finished_at_kill.update({c.info.run_id: c.info.end_time for c in children
                                     if c.info.status == "FINISHED"})
            epoch_at_kill.update({c.info.run_id: c.data.metrics.get("epoch", 0) for c in children
                                  if c.info.status == "RUNNING"})
        finally:
            if driver.poll() is None:
                kill_tree(psutil.Process(driver.pid))
            driver.wait()
            stop_session(driver.pid)  # Ray daemons that outlived their driver

    resumed = launch(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert kills >= 2, "fewer than two drivers were killed with trials running"
    parents, children = runs_of(client, "crash")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    by_optimizer = [c.data.tags["optimizer"] for c in children]
    assert sorted(by_optimizer) == ["adam"] * 6 + ["zsharp"] * 6  # the budget, no replacement
    assert len({c.data.tags["trial_id"] for c in children}) == 12
    assert all(c.info.status == "FINISHED" and c.data.tags["status"] in TERMINAL - {"error"}
               for c in children)
    after = {c.info.run_id: c for c in children}
    assert set(epoch_at_kill) <= set(after), "a trial running at a kill did not continue its run"
    for run_id, end_time in finished_at_kill.items():
        assert after[run_id].info.end_time == end_time, "a finished trial was run again"
    for c in children:
        epochs = epochs_logged(client, c.info.run_id)
        assert epochs == list(range(1, int(c.data.metrics["epoch"]) + 1)), \
            f"{c.data.tags['trial_id']}: epochs logged {epochs}"
    # Optuna was told each trial once: its budget, every trial ended, one per Ray trial.
    import optuna

    for optimizer in ("adam", "zsharp"):
        trials = optuna.load_study(study_name=f"crash/{optimizer}/r0",
                                   storage=f"sqlite:///{storage / 'optuna.db'}").trials
        assert len(trials) == 6 and all(t.state.is_finished() for t in trials)
        assert sorted(t.user_attrs["ray_trial_id"] for t in trials) == \
            sorted(c.data.tags["trial_id"] for c in children if c.data.tags["optimizer"] == optimizer)


# ---- signals -----------------------------------------------------------------------------

SIGNAL_EPOCHS = 6  # the signals scenario's max_epochs (and grace period: no trial stops early)


def _stopped_by_signal(tmp_path, client, command, send, signum, epoch_at_stop: dict,
                       twice: bool = False) -> tuple[set[str], list[str]]:
    """Run the driver (`command`) until a trial trains an epoch under it with epochs still
    to go, `send` it `signum` (`twice`: again half a second later, as an impatient user
    does), and check what it leaves: its exit status, one honest line, the runs' record,
    and (twice) no process of its local Ray. Returns the ids of the runs it left unfinished
    and the command it printed to continue; records each running run's epoch in
    `epoch_at_stop`."""
    driver = start_driver(tmp_path, command=command)

    def a_trial_trained_an_epoch_here():
        # Not a trial's last epoch: a resumed trial one epoch from its end would finish as
        # the signal lands, and leave nothing running to stop.
        return [c for c in children_so_far(client, "signal") or [] if c.info.status == "RUNNING"
                and epoch_at_stop.get(c.info.run_id, 0) < c.data.metrics.get("epoch", 0) < SIGNAL_EPOCHS]

    try:
        wait_for(a_trial_trained_an_epoch_here, 600, "a trial that trained an epoch", driver)
        send(driver.pid, signum)
        if twice:
            time.sleep(0.5)
            send(driver.pid, signum)
        code = driver.wait(timeout=300)
        if twice:  # it stopped its Ray on the way out
            assert wait_for(lambda: not session_processes(driver.pid), 30, "the local Ray to end")
    finally:
        if driver.poll() is None:
            kill_tree(psutil.Process(driver.pid))
        stop_session(driver.pid)
    log = (tmp_path / "driver.log").read_text()
    name = signal.Signals(signum).name
    assert code == 128 + signum, log[-3000:]
    assert "Traceback" not in log and "Error" not in log, log[-3000:]
    assert f"sweep interrupted by {name}{' at once' if twice else ''}" in log
    resume = shlex.split(re.search(r"continue it with: (.*)", log).group(1))
    assert resume[-1] == "--resume" and "--space" in resume
    assert (ROOT / resume[0]).samefile(sys.executable)  # this environment's Python, not a bare `python`
    parents, children = runs_of(client, "signal")
    assert parents[0].info.status == "KILLED" and parents[0].data.tags["interrupted"] == name
    stopped = [c for c in children if c.info.status != "FINISHED"]
    assert stopped and all(c.info.status == "KILLED" and c.data.tags["status"] == "interrupted"
                           for c in stopped)
    assert all(c.data.tags["status"] in TERMINAL - {"error"} for c in children if c not in stopped)
    epoch_at_stop.update({c.info.run_id: c.data.metrics.get("epoch", 0) for c in stopped})
    return {c.info.run_id for c in stopped}, resume


def test_signals_stop_the_sweep_with_an_honest_record_and_resume_finishes_it(tmp_path):
    """Ctrl-C twice (SIGINT to the terminal's process group: the second stops at once) while
    one trial runs and the others wait, pending, for its CPUs; then, on the resumed sweep,
    SIGTERM (to the driver, as a
    scheduler sends it); then a resume that finishes it: every stopped trial continues in
    its own run, each optimizer ends with its budget, no epoch is logged twice."""
    storage = tmp_path / "results"
    space = space_file(tmp_path, name="signal", max_epochs=SIGNAL_EPOCHS, grace_period=SIGNAL_EPOCHS,
                       trials_per_optimizer=2, cpus_per_trial=os.cpu_count(), max_concurrent=4)
    args = ("--space", space, "--storage", str(storage))
    client = tracking(storage)
    epoch_at_stop: dict[str, float] = {}
    # Each resume runs the command the stopped driver printed, as printed.
    stopped, resume = _stopped_by_signal(tmp_path, client, launch_cmd(*args), os.killpg, signal.SIGINT,
                                         epoch_at_stop, twice=True)
    more, resume = _stopped_by_signal(tmp_path, client, resume, os.kill, signal.SIGTERM, epoch_at_stop)
    stopped |= more

    resumed = run_printed(resume)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    parents, children = runs_of(client, "signal")
    assert parents[0].info.status == "FINISHED" and "interrupted" not in parents[0].data.tags
    assert sorted(c.data.tags["optimizer"] for c in children) == ["adam"] * 2 + ["zsharp"] * 2
    assert all(c.info.status == "FINISHED" and c.data.tags["status"] in TERMINAL - {"error"}
               for c in children)
    assert stopped <= {c.info.run_id for c in children}
    for c in children:
        assert epochs_logged(client, c.info.run_id) == list(range(1, int(c.data.metrics["epoch"]) + 1))


# A disk that fills while the sweep runs, on a real file system of 400 MiB (tmpfs, in a
# mount namespace of its own: nothing outside sees it, and it goes with the script): the
# sweep starts, a file takes all but 50 MiB once a trial has checkpointed, the driver must
# stop; the file goes, the printed resume must finish the sweep.
_FULL_DISK = """
set -u
mount -t tmpfs -o size=400m tmpfs "$STORE" || exit 90
"$PY" launch.py --space "$SPACE" --storage "$STORE" > "$OUT/first.log" 2>&1 &
DRIVER=$!
for _ in $(seq 1500); do
  [ -n "$(find "$STORE" -name checkpoint.pt -print -quit 2>/dev/null)" ] && break
  sleep 0.2
done
"$PY" -c "import os, shutil, sys; free = shutil.disk_usage(sys.argv[1]).free
with open(os.path.join(sys.argv[1], 'filler'), 'wb') as f: os.posix_fallocate(f.fileno(), 0, free - 50 * 2**20)" "$STORE"
wait $DRIVER; echo $? > "$OUT/first.code"
rm "$STORE/filler"
RESUME=$(sed -n 's/^continue it with: //p' "$OUT/first.log")
sh -c "$RESUME" > "$OUT/resume.log" 2>&1; echo $? > "$OUT/resume.code"
cp "$STORE/mlflow.db" "$OUT/"
"""


def test_a_disk_that_fills_stops_the_sweep_in_one_line_and_resume_finishes_it(tmp_path):
    store, out = tmp_path / "store", tmp_path / "out"
    store.mkdir(), out.mkdir()
    space = space_file(tmp_path, name="disk", optimizers=["adam", "zsharp"], max_epochs=SIGNAL_EPOCHS,
                       grace_period=SIGNAL_EPOCHS, trials_per_optimizer=1, max_concurrent=2, replicates=1,
                       confirm_top_k=0)
    # As root a mount namespace is enough; otherwise a user namespace maps this user to root.
    unshare = ["unshare", "-m", "--propagation", "private"] if os.getuid() == 0 else ["unshare", "-rm"]
    done = subprocess.run([*unshare, "sh", "-c", _FULL_DISK], cwd=ROOT, timeout=900, capture_output=True, text=True,
                          env={**ENV, "PY": sys.executable, "SPACE": space, "STORE": str(store), "OUT": str(out)})
    assert done.returncode == 0, done.stderr[-2000:]
    first = (out / "first.log").read_text()
    assert (out / "first.code").read_text().strip() == "1", first[-3000:]
    assert re.search(rf"sweep interrupted by low disk space: storage {store} has [0-9]+ MiB free, under the "
                     r"[0-9]+ MiB the running trials' next checkpoints and the records need; ", first), first[-3000:]
    assert "Traceback" not in first and "continue it with: " in first
    assert (out / "resume.code").read_text().strip() == "0", (out / "resume.log").read_text()[-3000:]
    parents, children = runs_of(MlflowClient(f"sqlite:///{out / 'mlflow.db'}"), "disk")
    assert parents[0].info.status == "FINISHED" and len(children) == 2
    assert all(c.info.status == "FINISHED" and c.data.tags["status"] == "completed" for c in children)


# The local Ray exactly as launch.py starts it (tune.stages.start_ray), serving until stdin
# closes; prints its GCS address and the machine's own network address.
_LOCAL_RAY = """
import json, sys, types
import ray
from tune.stages import start_ray
start_ray(types.SimpleNamespace(address=None, dashboard=False))
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address,
                  "ip": ray.util.get_node_ip_address()}), flush=True)
sys.stdin.read()
ray.shutdown()
"""


def _listening_ports(session_id: int) -> set[int]:
    """The TCP ports the processes of a session listen on, beyond loopback."""
    pids = {p.pid for p in session_processes(session_id)}
    return {c.laddr.port for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.pid in pids and not c.laddr.ip.startswith(("127.", "::1"))}


def _http_answers(host: str, port: int) -> bool:
    """Whether an HTTP GET / at host:port is answered without asking for Ray's token (a
    gRPC port gives no HTTP answer; a guarded one, 401 or 403)."""
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            status = s.recv(16).split()
    except OSError:
        return False
    return len(status) >= 2 and status[0].startswith(b"HTTP/1.") and status[1] not in (b"401", b"403")


def test_the_local_ray_refuses_a_client_without_its_token(tmp_path):
    """Ray listens on every interface; its token is what keeps a stranger on the network
    out. Joined through the machine's network address (not loopback), a wrong token is
    refused by the server and the user's own token is let in."""
    home = tmp_path / "home"
    home.mkdir()
    server = subprocess.Popen([sys.executable, "-c", _LOCAL_RAY], cwd=ROOT, env=token_env(home),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        info = json.loads(server.stdout.readline())
        assert not info["ip"].startswith("127."), "no network address to try from"
        address = f"{info['ip']}:{info['gcs'].rsplit(':', 1)[1]}"
        client_env = {**token_env(tmp_path / "stranger"), "RAY_AUTH_MODE": "token"}
        join = f"import ray; ray.init(address={address!r}); print(ray.cluster_resources()['CPU'])"
        stranger = subprocess.Popen([sys.executable, "-c", join], cwd=ROOT, text=True,
                                    env={**client_env, "RAY_AUTH_TOKEN": "0" * 32},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    start_new_session=True)
        watchdog = threading.Timer(120, stranger.kill)  # Ray's client retries for a while
        watchdog.start()
        refusal = next((line for line in stranger.stderr if "InvalidAuthToken" in line), None)
        watchdog.cancel()
        stranger.kill()
        stranger.wait()
        stop_session(stranger.pid)
        assert refusal is not None and "Unauthenticated" in refusal
        token = (home / ".ray" / "auth_token").read_text().strip()
        friend = subprocess.run([sys.executable, "-c", join], cwd=ROOT, text=True, timeout=120,
                                env={**client_env, "RAY_AUTH_TOKEN": token}, capture_output=True)
        assert friend.returncode == 0 and float(friend.stdout.split()[-1]) >= 1, friend.stderr[-2000:]
        # No HTTP server of the local Ray answers a stranger on the network address, but for
        # the autoscaler's and the dashboard's read-only Prometheus exporters (Ray's ports).
        answering = {port for port in _listening_ports(server.pid) if _http_answers(info["ip"], port)}
        assert answering <= {44217, 44227}, answering
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=60)
        finally:
            stop_session(server.pid)


# ---- a two-node cluster and a tracking server --------------------------------------------

@pytest.fixture
def two_node_cluster(tmp_path):
    """A Ray head and a second node (its own resources) plus an MLflow server, on loopback."""
    port, mlflow_port = free_port(), free_port()
    temp = Path(f"/tmp/rt{port}")
    sessions = []

    def start(cmd, **kw):
        proc = subprocess.Popen(cmd, env=ENV, start_new_session=True, **kw)
        sessions.append(proc.pid)  # its session id: what it leaves running shares it
        return proc

    ray_bin = str(Path(sys.executable).parent / "ray")
    try:
        start([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=1",
               "--include-dashboard=false", f"--temp-dir={temp}"],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).wait(120)
        start([ray_bin, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1",
               '--resources={"node2": 1}'], stdout=subprocess.DEVNULL,
              stderr=subprocess.DEVNULL).wait(120)
        start([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
               "--port", str(mlflow_port), "--backend-store-uri",
               f"sqlite:///{tmp_path / 'server.db'}", "--workers", "1"],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        uri = f"http://127.0.0.1:{mlflow_port}"

        def healthy():
            try:
                return urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200
            except OSError:
                return False

        wait_for(healthy, 60, "the MLflow server")
        yield f"127.0.0.1:{port}", uri
    finally:
        for session in sessions:
            stop_session(session)


def test_sweep_on_a_two_node_cluster_with_a_tracking_server(tmp_path, two_node_cluster):
    address, uri = two_node_cluster
    space = space_file(tmp_path, name="cluster", optimizers=["adam"], max_epochs=1,
                       grace_period=1, trials_per_optimizer=2,
                       search={"lr": {"loguniform": [1e-3, 1e-2]}})
    # A local results folder is refused on several nodes: the other node cannot see it.
    refused = launch("--space", space, "--address", address, "--mlflow-uri", uri,
                     "--storage", str(tmp_path / "local"))
    assert refused.returncode == 2 and "local path" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    done = launch("--space", space, "--address", address, "--mlflow-uri", uri,
                  "--storage", f"file://{tmp_path / 'shared'}")
    assert done.returncode == 0, done.stderr[-3000:]
    request = urllib.request.Request(f"{uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name=cluster")
    experiment_id = json.load(urllib.request.urlopen(request))["experiment"]["experiment_id"]
    body = json.dumps({"experiment_ids": [experiment_id], "max_results": 100}).encode()
    search = urllib.request.Request(f"{uri}/api/2.0/mlflow/runs/search", data=body,
                                    headers={"Content-Type": "application/json"})
    runs = json.load(urllib.request.urlopen(search))["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    assert sum("trial_id" in t for t in tags) == 2
    assert all(r["info"]["status"] == "FINISHED" for r in runs)


# ---- bad input ------------------------------------------------------------------------------

BAD_INPUTS = [
    (["--space", "no_such_space"], "no_such_space"),
    (["--space", "{tmp}/missing.yaml"], "missing.yaml"),
    (["--space", "{tmp}/broken.yaml"], "broken.yaml"),
    (["--optimizers", "adam,lion"], "lion"),
    (["--model", "resnet1000"], "resnet1000"),
    (["--dataset", "imagenet"], "imagenet"),
    (["--num-samples", "0"], "--num-samples"),
    (["--num-samples", "many"], "--num-samples"),
    (["--max-epochs", "-3"], "--max-epochs"),
    (["--cpus-per-trial", "0"], "--cpus-per-trial"),
    (["--gpus-per-trial", "-1"], "--gpus-per-trial"),
    (["--max-concurrent", "0"], "--max-concurrent"),
    (["--bogus"], "--bogus"),
    (["--address", "127.0.0.1:{port}"], "unreachable"),
    (["--mlflow-uri", "http://127.0.0.1:{port}"], "unreachable"),
    (["--storage", "/proc/sharpsweep"], "not writable"),
    (["--dataset", "c10", "--data-dir", "{tmp}/nodata"], "cifar-10"),
    (["--resume"], "nothing to resume"),
    (["--experiment", "../escape"], "experiment"),
    (["--cpus-per-trial", "64"], "64 CPUs"),
    (["--gpus-per-trial", "0.3"], "0.3 GPUs"),
    (["--space", "{tmp}/cuda.yaml"], "no GPU"),
    (["--space", "{tmp}/bomb.yaml"], "search"),
    (["--cpus-per-trial", "nan"], "--cpus-per-trial"),
]
# A YAML alias bomb: under 1 KB of text, 9**9 strings once expanded.
BOMB = "\n".join(["description: &a [" + ", ".join(['"lol"'] * 9) + "]"]
                 + [f"{key}: &{b} [" + ", ".join([f"*{a}"] * 9) + "]"
                    for key, a, b in zip(["fixed", "search", "search_per_optimizer", "dataset", "model",
                                          "optimizers", "max_epochs"], "abcdefg", "bcdefgh")]
                 + ["name: [" + ", ".join(["*h"] * 9) + "]"]
                 + [f"{key}: 1" for key in ("grace_period", "reduction_factor", "trials_per_optimizer",
                                            "max_concurrent", "cpus_per_trial", "gpus_per_trial")]) + "\n"


def _bad_input_args(tmp_path, args):
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    (tmp_path / "bomb.yaml").write_text(BOMB)
    space_file(tmp_path, name="cuda", fixed={"batch_size": 128, "device": "cuda"})
    port = free_port()  # nothing listens there
    args = [a.format(tmp=tmp_path, port=port) for a in args]
    return args if "--storage" in args else args + ["--storage", str(tmp_path / "results")]


def run_main(argv: list[str]) -> int:
    """launch.main in this process (argparse errors exit through SystemExit)."""
    import launch
    try:
        return launch.main(argv)
    except SystemExit as stop:
        return stop.code


@pytest.mark.parametrize("args, word", BAD_INPUTS)
def test_bad_input_gives_one_line_and_exit_2(tmp_path, capsys, args, word):
    assert run_main(_bad_input_args(tmp_path, args)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and word in lines[0], lines
    assert not list((tmp_path / "results").glob("*/experiment_state*"))  # nothing started


def test_an_alias_bomb_gives_a_short_message_in_bounded_memory(tmp_path, capsys):
    import resource

    assert len(BOMB) < 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    assert run_main(_bad_input_args(tmp_path, ["--space", "{tmp}/bomb.yaml"])) == 2
    err = capsys.readouterr().err
    assert len(err.encode()) < 1024 and len(err.strip().splitlines()) == 1
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024


@pytest.mark.parametrize("flags, changed", [
    (["--max-epochs", "5"], "max_epochs: 3 -> 5"),
    (["--num-samples", "4"], "trials_per_optimizer: 3 -> 4"),
    (["--optimizers", "adam,sam,zsharp"], "optimizers"),
    (["--seed", "1"], "seed: 0 -> 1"),
    (["--confirm", "2"], "confirm_top_k: 1 -> 2"),
    (["--seeds", "3"], "confirm_seeds: 2 -> 3"),
])
def test_resume_with_other_settings_is_refused_naming_them(digits_sweep, capsys, flags, changed):
    argv = ["--space", digits_sweep.space, "--storage", str(digits_sweep.storage), "--resume", *flags]
    assert run_main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and changed in lines[0] and "--experiment" in lines[0], lines


def test_resume_needs_the_mlflow_store_the_sweep_ran_with(digits_sweep, tmp_path, capsys):
    base = ["--space", digits_sweep.space, "--storage", str(digits_sweep.storage), "--resume"]
    assert run_main([*base, "--mlflow-uri", f"sqlite:///{tmp_path / 'moved.db'}"]) == 2
    assert "no MLflow database" in capsys.readouterr().err
    assert not (tmp_path / "moved.db").exists()  # not silently created
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{tmp_path / 'other.db'}").search_experiments()  # a store without it
    capsys.readouterr()  # MLflow's own lines while creating it
    assert run_main([*base, "--mlflow-uri", f"sqlite:///{tmp_path / 'other.db'}"]) == 2
    line = capsys.readouterr().err.strip()
    assert "has no run of the sweep" in line and "\n" not in line


@pytest.mark.parametrize("args, word", [BAD_INPUTS[0], BAD_INPUTS[13]])
def test_bad_input_from_a_real_process_has_no_traceback(tmp_path, args, word):
    done = launch(*_bad_input_args(tmp_path, args), timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and word in lines[0] and "Traceback" not in done.stderr


def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path):
    done = launch("--space", "quickstart", "--dry-run", "--storage", str(tmp_path / "r"))
    assert done.returncode == 0, done.stderr
    for word in ("quickstart", "digits", "res8s", "zsharp", "trials", "ASHA", "sqlite:///"):
        assert word in done.stdout
    # 3 replicates of: 5 optimizers x 15 trials x 8 epochs; Adam's re-search, 5 trials x 16
    # epochs; confirm: 3 seeds x 8 epochs for each optimizer, Adam's at 16 too.
    assert (f"cost         search at most {3 * 5 * 15 * 8} trial-epochs (ASHA stops some), re-search at most "
            f"{3 * 5 * 16}, confirm {3 * 3 * (5 * 8 + 16)};") in done.stdout
    assert not (tmp_path / "r").exists()


def test_list_spaces_names_every_space():
    from search_spaces import get_space, list_spaces

    done = launch("--list-spaces")
    assert done.returncode == 0
    assert [line.split()[0] for line in done.stdout.splitlines()] == list_spaces()
    for name in ("quickstart", "zsharp_c10", "zsharp_c100", "compare_c10", "compare_c100",
                 "zsharp_tinyimagenet"):
        assert get_space(name).description in done.stdout


def test_help_gives_every_flag_its_help_default_and_names_and_ends_with_examples(capsys):
    import launch as launch_module
    from search_spaces import list_spaces
    from trainables.catalog import list_datasets, list_models, list_optimizers

    parser = launch_module.build_parser()
    assert all(action.help for action in parser._actions), "a flag without help"
    assert run_main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for names in (list_spaces(), list_optimizers(), list_models(), list_datasets()):
        assert ", ".join(names) in text
    for default in ("(default: quickstart)", "(default: data)", "(default: results)"):
        assert default in text
    assert text.endswith("--resume continue after a crash or Ctrl-C") and "examples:" in text

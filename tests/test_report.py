"""The report end to end: the session's real sweep (tests/conftest.py: Ray, Optuna, ASHA,
MLflow; a confirm stage in both budget arms), loaded from MLflow and from Ray's storage,
written as HTML and opened in headless Chromium (no mocks).

Chromium is a system package (`apt-get install -y chromium`, which `make test` installs);
without it these tests fail rather than skip, since a skipped real component hides a
defect.
"""

from __future__ import annotations

import html
import math
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from browser import PlotSvgs, render_in_chromium
from conftest import SHARED_SWEEP, run_module

from analysis import importance, verdict
from analysis.load import load_sweep, load_sweep_from_storage
from analysis.sweep import CONFIG_FIELDS, EPOCH_COLUMNS, TRIAL_COLUMNS, Sweep
from analysis.report import (FIGURES, comparison, figure_comparison, figure_importance,
                             figures, render_html, write_report)
from analysis.verdict import confirm_arms
from trainables.schema import EQUAL_COMPUTE, EQUAL_EPOCHS

# The shared sweep (conftest.SHARED_SWEEP): sgd diverges in every trial, so it has no
# finalist and is searched but not confirmed.
SEARCHED = tuple(SHARED_SWEEP["optimizers"])
CONFIRMED = tuple(o for o in SEARCHED if o not in SHARED_SWEEP["search_per_optimizer"])  # sgd diverges
ONE_PASS = ("adam",)  # rerun at 2x epochs in the equal-compute arm
SEEDS = SHARED_SWEEP["confirm_seeds"]
REPLICATES = SHARED_SWEEP["replicates"]
MAX_EPOCHS = 3  # conftest.space_file's
SAMPLES = SHARED_SWEEP["trials_per_optimizer"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def storage(digits_sweep) -> Path:
    assert digits_sweep.done.returncode == 0, f"launch.py failed:\n{digits_sweep.done.stderr[-4000:]}"
    return digits_sweep.storage


@pytest.fixture(scope="module")
def experiment(digits_sweep) -> str:
    return digits_sweep.experiment


@pytest.fixture(scope="module")
def from_mlflow(storage, experiment) -> Sweep:
    return load_sweep(experiment, f"sqlite:///{storage / 'mlflow.db'}")


@pytest.fixture(scope="module")
def from_storage(storage, experiment) -> Sweep:
    return load_sweep_from_storage(storage / experiment)


@pytest.fixture(scope="module")
def all_finished(from_storage) -> Sweep:
    """The sweep with the search trials ASHA stopped counted as completed, so that fANOVA
    (which reads finished trials only) has all 3 trials of SAM and of ZSharp, whatever ASHA
    decided in this run: the importance figure is then always drawn (min_trials=2)."""
    trials = from_storage.trials.copy()
    trials.loc[trials["status"] == "stopped_early", "status"] = "completed"
    return Sweep(from_storage.name, trials, from_storage.epochs, from_storage.space, from_storage.meta)


# ---- loading -------------------------------------------------------------------------------

def test_both_loaders_find_every_trial_of_both_stages(from_mlflow, from_storage):
    for sweep in (from_mlflow, from_storage):
        counts = sweep.trials["stage"].value_counts().to_dict()
        assert counts == {"search": SAMPLES * len(SEARCHED) * REPLICATES, "retune": len(ONE_PASS) * REPLICATES,
                          "confirm": SEEDS * (len(CONFIRMED) + len(ONE_PASS)) * REPLICATES}
        assert set(sweep.trials["optimizer"]) == set(SEARCHED)
        assert sweep.trials["trial_id"].is_unique
    assert set(from_mlflow.trials["trial_id"]) == set(from_storage.trials["trial_id"])


def test_both_loaders_agree_on_accuracies_statuses_and_sources(from_mlflow, from_storage):
    a = from_mlflow.trials.set_index("trial_id").sort_index()
    b = from_storage.trials.set_index("trial_id").loc[a.index]
    for column in ("final_val_acc", "best_val_acc", "final_test_acc", "final_test_loss", "perturbation_norm",
                   "train_seconds", "grad_evals"):
        assert a[column].isna().tolist() == b[column].isna().tolist(), column
        assert not (a[column] - b[column]).abs().gt(1e-9).any(), column
    for column in ("stage", "budget_arm", "optimizer", "status", "epochs_run", "best_epoch", "seed", "lr", "rho",
                   "alpha", "epochs", "warmup_epochs", "step_epochs", "eval_split", "refit", "replicate",
                   "holdout_seed"):
        assert a[column].tolist() == b[column].tolist(), column
    confirm = a["stage"] == "confirm"
    assert (a.loc[confirm, "confirm_rank"].tolist() == b.loc[confirm, "confirm_rank"].tolist()
            == [1] * (SEEDS * (len(CONFIRMED) + len(ONE_PASS)) * REPLICATES))
    for column in ("source_trial_id", "retune_trial_id"):
        assert a.loc[confirm, column].tolist() == b.loc[confirm, column].tolist(), column
    assert a.loc[confirm & (a["budget_arm"] == EQUAL_COMPUTE), "retune_trial_id"].notna().all()
    for trial_id in a.index[confirm]:  # the same test examples right, read from either record
        assert (a.at[trial_id, "test_correct"] == b.at[trial_id, "test_correct"]).all()
    assert set(a.loc[confirm, "source_trial_id"]) <= set(a.index[~confirm])
    ea = from_mlflow.epochs.sort_values(["trial_id", "epoch"]).reset_index(drop=True)
    eb = from_storage.epochs.sort_values(["trial_id", "epoch"]).reset_index(drop=True)
    assert len(ea) == len(eb) == int(a["epochs_run"].sum())
    for metric in ("val_acc", "test_acc", "perturbation_norm"):
        assert ea[metric].isna().tolist() == eb[metric].isna().tolist(), metric
        assert not (ea[metric] - eb[metric]).abs().gt(1e-9).any(), metric


def test_frames_have_the_promised_columns(from_mlflow, from_storage):
    for sweep in (from_mlflow, from_storage):
        assert list(sweep.trials.columns[:len(TRIAL_COLUMNS)]) == TRIAL_COLUMNS
        assert set(CONFIG_FIELDS) <= set(sweep.trials.columns)
        assert list(sweep.epochs.columns) == EPOCH_COLUMNS
        trials = sweep.trials
        assert trials["status"].isin(["completed", "stopped_early", "diverged"]).all()
        assert (trials["dataset"] == "digits").all()
        ended = trials["status"].map({"completed": "eq", "stopped_early": "lt", "diverged": "lt"})
        assert (ended.eq("eq") == (trials["epochs_run"] == trials["epochs"])).all()
        zsharp = sweep.epochs[sweep.epochs["optimizer"] == "zsharp"]
        assert zsharp["kept_fraction"].between(0, 1, inclusive="neither").all()
        assert sweep.epochs.loc[sweep.epochs["optimizer"] != "zsharp", "kept_fraction"].isna().all()
        assert zsharp["ascent_cosine"].between(0, 1, inclusive="right").all()
        assert sweep.epochs.loc[sweep.epochs["optimizer"] != "zsharp", "ascent_cosine"].isna().all()
        # The search sees val only; confirm runs are scored on test, in their budget arm.
        search, confirm = sweep.stage("search"), sweep.stage("confirm")
        assert (search["eval_split"] == "val").all() and search["final_test_acc"].isna().all()
        assert search["final_val_acc"].notna().any() and search["budget_arm"].isna().all()
        assert (confirm["eval_split"] == "test").all() and confirm["final_test_acc"].between(0, 1).all()
        longer = confirm[confirm["budget_arm"] == EQUAL_COMPUTE]
        assert set(confirm["budget_arm"]) == {EQUAL_EPOCHS, EQUAL_COMPUTE}
        assert set(longer["optimizer"]) == set(ONE_PASS) and (longer["epochs"] == 2 * MAX_EPOCHS).all()
        assert (confirm.loc[confirm["budget_arm"] == EQUAL_EPOCHS, "epochs"] == MAX_EPOCHS).all()
        sam_family = trials["optimizer"].isin(["sam", "zsharp"])
        assert (trials.loc[sam_family, "perturbation_norm"] > 0).all()
        assert trials.loc[~sam_family, "perturbation_norm"].isna().all()
    assert from_mlflow.space is not None and from_mlflow.space.name == "digits_test"
    assert len(from_mlflow.meta.git_commit) == 40 and "launch.py" in from_mlflow.meta.command


def test_compute_hours_are_positive_cpu_hours(from_mlflow, from_storage):
    for sweep in (from_mlflow, from_storage):
        trials = sweep.trials
        assert (trials["compute_hours"] > 0).all()
        assert (trials["compute_unit"] == "CPU").all()  # 1 CPU, no GPU per trial
        assert ((trials["compute_hours"] - trials["train_seconds"] / 3600).abs() < 1e-12).all()


def test_a_sam_family_step_counts_two_gradient_evaluations(from_mlflow):
    confirm = from_mlflow.stage("confirm")
    arms = {arm: confirm[confirm["budget_arm"] == arm].groupby("optimizer")["grad_evals"].max()
            for arm in (EQUAL_EPOCHS, EQUAL_COMPUTE)}
    same_epochs, same_compute = arms[EQUAL_EPOCHS], arms[EQUAL_COMPUTE]
    assert same_epochs["sam"] == same_epochs["zsharp"] == 2 * same_epochs["adam"] > 0
    assert same_compute["adam"] == same_epochs["sam"]  # 2x epochs at 1 pass: SAM's budget


def test_unknown_experiment_or_path_is_a_clear_value_error(storage, experiment):
    with pytest.raises(ValueError, match=f"no MLflow experiment 'nope' .*; its sweeps, newest first: .*{experiment}"):
        load_sweep("nope", f"sqlite:///{storage / 'mlflow.db'}")
    with pytest.raises(ValueError, match="no MLflow database"):
        load_sweep(experiment, f"sqlite:///{storage / 'missing.db'}")
    assert not (storage / "missing.db").exists()
    with pytest.raises(ValueError, match="no Ray experiment folder at .*nothere"):
        load_sweep_from_storage(storage / "nothere")
    with pytest.raises(ValueError, match="holds no Ray Tune trials"):
        load_sweep_from_storage(storage)


def test_the_csv_export_has_a_row_per_trial_and_only_the_settings_each_optimizer_reads(
        storage, experiment, from_mlflow, tmp_path, capsys):
    import csv

    from analysis import export

    out = tmp_path / "trials.csv"
    assert export.main(["--experiment", experiment, "--mlflow-uri",
                        f"sqlite:///{storage / 'mlflow.db'}", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"{out}: {len(from_mlflow.trials)} trials"
    rows = list(csv.DictReader(out.open()))
    assert {r["trial_id"] for r in rows} == set(from_mlflow.trials["trial_id"])
    expected = from_mlflow.trials.set_index("trial_id")
    for row in rows:
        trial = expected.loc[row["trial_id"]]
        assert (row["stage"], row["optimizer"], row["status"]) == (trial["stage"], trial["optimizer"], trial["status"])
        assert float(row["final_test_acc"] or "nan") == pytest.approx(trial["final_test_acc"], nan_ok=True)
        assert float(row["lr"]) == pytest.approx(trial["lr"])
        assert (row["rho"] == "") == (row["optimizer"] in ("adam", "sgd"))  # Adam and SGD read no rho
        assert (row["alpha"] == "") == (row["optimizer"] != "zsharp")
    assert export.main(["--experiment", "nope", "--mlflow-uri", f"sqlite:///{storage / 'mlflow.db'}"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("python -m analysis.export: error: no MLflow experiment")


# ---- the comparison ----------------------------------------------------------------------

def test_comparison_uses_every_replicates_confirm_runs_and_their_test_examples(from_mlflow, from_storage):
    result = comparison(from_mlflow)
    assert not result.single_runs and result.replicates == REPLICATES and result.test_level
    assert list(result.arms) == [EQUAL_EPOCHS, EQUAL_COMPUTE]
    confirm = from_mlflow.stage("confirm")
    for arm, arm_result in result.arms.items():
        summary = arm_result.summary
        assert set(summary["optimizer"]) == set(CONFIRMED)
        assert (summary["runs"] == SEEDS * REPLICATES).all() and (summary["replicates"] == REPLICATES).all()
        assert set(arm_result.paired) == {"sam", "adam"}  # against SAM and the base optimizer
        for reference, table in arm_result.paired.items():
            assert set(table["optimizer"]) == set(CONFIRMED) - {reference}
            assert (table["pairs"] == SEEDS * REPLICATES).all()
        # The final-epoch test accuracy of the arm's runs (the 1-pass optimizers' longer
        # runs at equal compute, everyone's equal-epochs runs otherwise), the mean of the
        # replicates' means.
        own = confirm["budget_arm"].eq(arm) | (~confirm["optimizer"].isin(ONE_PASS)
                                              & confirm["budget_arm"].eq(EQUAL_EPOCHS))
        means = confirm[own].groupby(["optimizer", "replicate"])["final_test_acc"].mean().groupby("optimizer").mean()
        assert all(math.isclose(m, means[o]) for o, m in zip(summary["optimizer"], summary["mean"]))
    primary = result.primary_row()
    assert (primary["optimizer"], primary["reference"], primary["primary"]) == ("zsharp", "sam", True)
    # Ray's storage gives the same verdict, test examples and all (the same draws).
    stored = comparison(from_storage)
    for arm in result.arms:
        a, b = result.arms[arm].summary, stored.arms[arm].summary
        assert a[["optimizer", "mean", "low", "high"]].equals(b[["optimizer", "mean", "low", "high"]])


def _search_only(sweep: Sweep) -> Sweep:
    """`sweep` without its confirm stage."""
    return Sweep(sweep.name, sweep.stage("search"), sweep.epochs[sweep.epochs["stage"] == "search"],
                 sweep.space, sweep.meta)


def test_without_a_confirm_stage_the_report_says_it_needs_one(from_mlflow):
    search_only = _search_only(from_mlflow)
    result = comparison(search_only)
    assert result.single_runs and set(result.search_best["optimizer"]) == set(CONFIRMED)  # sgd: no finalist
    assert any("--confirm" in note and "--seeds" in note for note in result.notes)
    assert "single runs" in figure_comparison(search_only).layout.title.text
    page = render_html(search_only)
    assert "needs a confirm stage" in page and "single run" in page


def test_importance_is_fanova_per_optimizer_or_a_note(all_finished):
    fig = figure_importance(all_finished, min_trials=2)
    assert fig is not None
    bars = {trace.name: dict(zip(trace.y, trace.x)) for trace in fig.data}
    assert set(bars) == {"SAM", "ZSharp"}  # Adam searches lr only: a note instead
    assert set(bars["ZSharp"]) == {"lr", "rho", "alpha"}
    assert all(math.isclose(sum(b.values()), 1.0) for b in bars.values())
    assert figure_importance(all_finished, min_trials=SAMPLES * REPLICATES + 1) is None  # too few: notes


def test_every_figure_has_a_title_and_axis_labels(all_finished):
    made = figures(all_finished, importance_min_trials=2)
    assert set(made) == set(FIGURES)
    for name, fig in made.items():
        assert fig.layout.title.text, name
        if name != "parallel_coordinates":  # its axes are the dimensions' labels
            axes = [a for a in fig.layout if a.startswith(("xaxis", "yaxis"))
                    and fig.layout[a].visible is not False]  # a grid's spare cells are hidden
            assert axes and all(fig.layout[a].title.text for a in axes), name


def test_the_search_figures_show_each_trial_its_curve_its_slices_and_the_rho_lr_map(from_mlflow):
    """What Optuna Dashboard users look for, per optimizer, checked against the trials."""
    from analysis.figures import figure_contour, figure_history, figure_intermediate, figure_slices

    search = from_mlflow.stage("search")
    history = figure_history(from_mlflow)
    for optimizer in SEARCHED:
        mine = search[search["optimizer"] == optimizer].sort_values("start_time")
        points, line = [t for t in history.data if t.legendgroup == optimizer]
        assert list(points.x) == list(range(1, SAMPLES * REPLICATES + 1))
        assert list(points.y) == pytest.approx(list(mine["final_val_acc"]), nan_ok=True)
        full = mine["final_val_acc"].where(mine["epochs_run"] >= mine["epochs"])
        assert list(line.y) == pytest.approx(list(full.cummax().ffill()), nan_ok=True)
    curves = figure_intermediate(from_mlflow).data
    assert sum(t.mode == "lines" for t in curves) == len(search)
    assert sum(t.mode == "markers" for t in curves) == (search["status"] == "stopped_early").sum()
    slices = figure_slices(from_mlflow)
    space = from_mlflow.space
    panels = [(o, p) for o in SEARCHED for p in from_mlflow.searched_params(o)]
    trials = [t for t in slices.data if t.name != "search range"]
    ranges = {t.xaxis: t for t in slices.data if t.name == "search range"}
    assert len(trials) == len(panels)
    for (optimizer, param), points in zip(panels, trials):
        d = space.distributions_for(optimizer)[param]
        if d.kind == "choice":  # sgd's one learning rate: no range to draw
            assert points.xaxis not in ranges
            continue
        assert {x for x in ranges[points.xaxis].x if x is not None} == {d.low, d.high}
    contour = figure_contour(from_mlflow)
    t = from_mlflow.trials
    full = {o: int(((t["stage"] == "search") & (t["optimizer"] == o) & (t["epochs_run"] == t["epochs"])
                    & t["final_val_acc"].notna()).sum()) for o in ("sam", "zsharp")}  # both search rho and lr
    # Each panel says what its map rests on; below 6 full-budget trials it draws the trials alone.
    assert [a.text for a in contour.layout.annotations] == [
        f"{name}: map from {full[o]} full-budget trials" if full[o] >= 6 else
        f"{name}: {full[o]} full-budget trial{'s' * (full[o] != 1)}, too few for a map"
        for o, name in (("sam", "SAM"), ("zsharp", "ZSharp"))]
    assert sum(t.type == "scatter" for t in contour.data) == 2
    assert sum(t.type == "contour" for t in contour.data) == sum(n >= 6 for n in full.values())


def test_zsharps_ascent_is_drawn_per_trial_against_alpha(from_mlflow):
    from analysis.figures import figure_zsharp_ascent

    fig = figure_zsharp_ascent(from_mlflow)
    zsharp = from_mlflow.trials[from_mlflow.trials["optimizer"] == "zsharp"].set_index("trial_id")
    last = (from_mlflow.epochs[from_mlflow.epochs["optimizer"] == "zsharp"].sort_values("epoch")
            .groupby("trial_id").last())
    cosines = [t for t in fig.data if t.xaxis == "x"]
    assert sum(len(t.x) for t in cosines) == len(zsharp)  # every search trial and confirm run
    for trace in cosines:
        for trial_id, alpha, cosine in zip(trace.customdata[:, 0], trace.x, trace.y):
            assert alpha == zsharp.at[trial_id, "alpha"] and cosine == last.at[trial_id, "ascent_cosine"]


def test_both_loaders_read_each_confirm_runs_loss_profile(from_mlflow, from_storage):
    from trainables.schema import LOSS_PROFILE

    mlflow, storage = (s.trials.set_index("trial_id")[["stage", LOSS_PROFILE]] for s in (from_mlflow, from_storage))
    confirm = mlflow[mlflow["stage"] == "confirm"]
    assert len(confirm) and all(len(p) == 21 and p[10][0] == 0.0 for p in confirm[LOSS_PROFILE])
    assert mlflow.loc[mlflow["stage"] == "search", LOSS_PROFILE].isna().all()
    for trial_id, profile in mlflow[LOSS_PROFILE].items():
        assert storage.at[trial_id, LOSS_PROFILE] == profile or (profile is None and storage.at[trial_id, LOSS_PROFILE] is None)


def test_compute_reads_in_seconds_minutes_or_hours():
    from analysis.text import compute_text

    assert compute_text(30 / 3600, "CPU") == "30 CPU-seconds"
    assert compute_text(0.5, "GPU") == "30 GPU-minutes"
    assert compute_text(12.0, "GPU") == "12 GPU-hours"
    assert compute_text(float("nan"), "CPU") == "–"


# ---- the page: a registry of figures, its shared inputs computed once -----------------------

def _section(page: str, key: str) -> str:
    start = page.index(f"<section id='{key}'>")
    return page[start:page.index("</section>", start)]


def test_every_registered_figure_is_on_the_page_with_its_title_and_text(all_finished, tmp_path):
    page = write_report(all_finished, tmp_path / "report.html", importance_min_trials=2).read_text()
    starts = [page.index(f"<section id='{key}'>") for key in FIGURES]
    assert starts == sorted(starts)  # in the order registered
    for key, entry in FIGURES.items():
        section = _section(page, key)
        assert f"<h2>{html.escape(entry.title)}</h2>" in section, key
        if entry.text:
            assert f"<p>{html.escape(entry.text)}</p>" in section, key
        assert f'id="figure-{key}"' in section, key


def _count_calls(monkeypatch, module, name: str, calls: Counter) -> None:
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls[name] += 1
        return original(*args, **kwargs)
    monkeypatch.setattr(module, name, counted)


@pytest.mark.parametrize("confirmed", [True, False], ids=["confirm_stage", "search_only"])
def test_a_report_computes_each_shared_input_once(all_finished, tmp_path, monkeypatch, confirmed):
    sweep = all_finished if confirmed else _search_only(all_finished)
    calls = Counter()
    # Patched in the modules that define them: confirm_results, search_best and _fanova are
    # called only from there, so each time the work is done is counted, whoever asked for it.
    for module, name in ((verdict, "comparison"), (verdict, "confirm_results"), (verdict, "search_best"),
                         (importance, "param_importances"), (importance, "_fanova")):
        _count_calls(monkeypatch, module, name, calls)
    write_report(sweep, tmp_path / "report.html", importance_min_trials=2)
    # confirm_results once per budget arm; fANOVA once for SAM and once for ZSharp (Adam
    # and sgd search lr only).
    assert calls == Counter(comparison=1, confirm_results=len(confirm_arms(sweep)), search_best=1,
                            param_importances=1, _fanova=2)


# ---- the page in a browser ---------------------------------------------------------------


def test_report_is_one_self_contained_file(from_mlflow, tmp_path):
    path = write_report(from_mlflow, tmp_path / "report.html")
    page = path.read_text()
    assert page.count("<script type='text/javascript'>/**\n* plotly.js v") == 1  # inline, once
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.IGNORECASE)  # nothing to fetch
    for text in (from_mlflow.name, "digits_test", from_mlflow.meta.git_commit, "id='warnings'",
                 "Paired by replicate and seed, against SAM, at equal epochs",
                 "Paired by replicate and seed, against Adam, at equal epochs",
                 "Paired by replicate and seed, against Adam (2x epochs), at equal gradient evaluations",
                 "final test acc (mean of replicates)", "Primary contrast, ZSharp against SAM",
                 "earlier reads of this test split", "Cost of the search"):
        assert text in page, text
    assert page.index("id='warnings'") < page.index("id='comparison'")
    assert "id='partial'" not in page
    # Written while a sweep runs on, it says so first.
    page = write_report(from_mlflow, tmp_path / "partial.html", partial="24 of 48 trials: <the search> is done").read_text()
    banner = "<p id='partial' class='partial'>partial: 24 of 48 trials: &lt;the search&gt; is done</p>"
    assert banner in page and page.index(banner) < page.index("id='warnings'")


def test_report_renders_every_figure_in_headless_chromium(all_finished, tmp_path):
    path = write_report(all_finished, tmp_path / "report.html", importance_min_trials=2)
    expected = path.read_text().count('class="plotly-graph-div"')
    assert expected == len(FIGURES)  # every kind of figure is on this page
    dom, log = render_in_chromium(path, tmp_path)
    parsed = PlotSvgs()
    parsed.feed(dom)
    assert len(parsed.plots) == expected
    assert all(count > 0 for count in parsed.plots), f"plots without an SVG: {parsed.plots}"
    assert dom.count('class="main-svg"') >= expected
    errors = [line for line in log.splitlines()
              if "Uncaught" in line or "ERROR:CONSOLE" in line or "CONSOLE-ERROR" in line]
    assert not errors, "\n".join(errors)


def run_cli(*args) -> subprocess.CompletedProcess:
    return run_module("analysis.report", *args, timeout=180)


def test_command_line_writes_the_report_and_its_figures_as_png(storage, experiment, from_storage, tmp_path):
    from analysis.page import figures

    out, png = tmp_path / "cli.html", tmp_path / "png"
    done = run_cli("--storage", str(storage), "--experiment", experiment, "--out", str(out),
                   "--png", str(png))
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.stat().st_size > 1_000_000 and experiment in out.read_text()
    # It says which sweep it picked, and from where.
    assert done.stdout == (f"{out}: sweep {experiment} ({len(from_storage.trials)} trials), from Ray storage "
                           f"{storage / experiment}\n")
    made = sorted(p.name for p in png.iterdir())
    drawn = figures(from_storage)  # every registered figure the sweep has data for, as the page draws them
    assert made == sorted(f"{name}.png" for name in drawn) and set(drawn) <= set(FIGURES)
    assert len(drawn) >= len(FIGURES) - 1  # at most fANOVA's missing (it needs enough finished trials)
    for path in png.iterdir():  # kaleido, through Chromium
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_command_line_refuses_bad_input_in_one_line(storage, tmp_path):
    bad = run_cli("--experiment", "nope", "--mlflow-uri", f"sqlite:///{storage / 'mlflow.db'}",
                  "--out", str(tmp_path / "nope.html"))
    assert bad.returncode == 2 and not (tmp_path / "nope.html").exists()
    assert len(bad.stderr.strip().splitlines()) == 1 and "no MLflow experiment 'nope'" in bad.stderr
    missing = run_cli("--storage", str(storage / "nothere"), "--out", str(tmp_path / "nope.html"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "nothere" in missing.stderr

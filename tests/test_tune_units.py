"""The sweep's decisions without a Ray cluster: the searcher driven by hand with the
events Ray sends it, the confirm stage's arms, priors (`launch.py --sample`), the plan.

Real Optuna studies and real trials (digits); only Ray's event loop is left out.
"""

from __future__ import annotations

import math
import pickle
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from conftest import DIGITS_TRIAL, ROOT
from search_spaces import Distribution, SpaceError, get_space
from trainables.train import run_trial
from trainables.schema import duration_text
from tune.budget import budget_arms, random_start, stretched
from trainables.record import PARENT_STAGE, RECORD_KEY
from tune.confirm import confirm_trials, select_finalists
from tune.search import GroupedSearch, search_groups
from tune.seeds import replicate_seeds


def small_space(**changes):
    """The quickstart, one replicate unless `changes` say otherwise."""
    return get_space("quickstart").with_overrides(**{"replicates": 1, **changes})


def grouped(space, studies: str, fixed: dict | None = None) -> GroupedSearch:
    """The search stage's searcher of `space` (experiment "exp")."""
    return GroupedSearch(search_groups(space, "exp", fixed or {}), studies)


@pytest.fixture
def studies(tmp_path) -> str:
    """An Optuna database for the searcher's studies."""
    return f"sqlite:///{tmp_path / 'optuna.db'}"


# ---- the searcher --------------------------------------------------------------------

def test_every_suggestion_is_a_search_trial_on_the_validation_split(studies):
    space = small_space(trials_per_optimizer=4)
    searcher = grouped(space, studies, {"data_dir": "data"})
    configs = [searcher.suggest(f"t{i}") for i in range(4 * len(space.optimizers))]
    assert all(c["eval_split"] == "val" and c["data_dir"] == "data" for c in configs)
    # Round robin: every optimizer gets its budget, none more.
    assert [c["optimizer"] for c in configs[:5]] == list(space.optimizers)
    assert {o: sum(c["optimizer"] == o for c in configs) for o in space.optimizers} == \
        {o: 4 for o in space.optimizers}
    assert searcher.suggest("one-more") == "FINISHED"


def test_each_replicate_is_its_own_search_on_its_own_seeds_and_holdout(studies):
    space = small_space(optimizers=["adam", "sam"], trials_per_optimizer=3, replicates=2, seed=7)
    searcher = grouped(space, studies)
    configs = [searcher.suggest(f"t{i}") for i in range(3 * 2 * 2)]
    assert searcher.suggest("one-more") == "FINISHED"
    for replicate in (0, 1):
        seeds = replicate_seeds(7, replicate, 0)
        mine = [c for c in configs if c["replicate"] == replicate]
        assert sorted(c["optimizer"] for c in mine) == ["adam"] * 3 + ["sam"] * 3
        assert {(c["seed"], c["holdout_seed"]) for c in mine} == {(seeds.train, seeds.holdout)}
        for optimizer in ("adam", "sam"):
            study = optuna.load_study(study_name=f"exp/{optimizer}/r{replicate}", storage=studies)
            assert len(study.trials) == 3
    assert replicate_seeds(7, 0, 0) != replicate_seeds(7, 1, 0)
    # Another master seed shares no seed with this one: an independent rerun.
    other = replicate_seeds(8, 0, 5)
    assert not {other.train, other.holdout, *other.confirm} & {
        s for r in (0, 1) for s in (replicate_seeds(7, r, 5).train, replicate_seeds(7, r, 5).holdout,
                                    *replicate_seeds(7, r, 5).confirm)}


def test_asha_stopped_trials_reach_optuna_as_pruned_with_their_curve(studies):
    space = small_space(optimizers=["zsharp"], trials_per_optimizer=3, max_epochs=6)
    searcher = grouped(space, studies)
    for trial_id in ("stopped", "finished", "diverged"):
        searcher.suggest(trial_id)
    for epoch, acc in ((1, 0.3), (2, 0.4)):
        searcher.on_trial_result("stopped", {"epoch": epoch, "val_acc": acc})
    searcher.on_trial_result("stopped", {"epoch": 2, "val_acc": 0.9})  # re-reported after a restart
    searcher.on_trial_complete("stopped", {"epoch": 2, "val_acc": 0.4, "diverged": 0.0})
    searcher.on_trial_result("finished", {"epoch": 5, "val_acc": 0.7})
    searcher.on_trial_complete("finished", {"epoch": 6, "val_acc": 0.8, "diverged": 0.0})
    searcher.on_trial_complete("diverged", {"epoch": 1, "val_acc": 0.1, "diverged": 1.0})
    trials = searcher.study("zsharp").get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[0].intermediate_values == {1: 0.3, 2: 0.4}
    assert trials[1].intermediate_values == {5: 0.7, 6: 0.8}  # the last one comes with the end
    assert trials[1].value == 0.8 and trials[2].value == 0.1
    # alpha is sampled through the fraction kept, on a log scale.
    keep = trials[0].distributions["1-alpha"]
    assert isinstance(keep, FloatDistribution) and keep.log
    assert (keep.low, keep.high) == (pytest.approx(0.01), pytest.approx(0.5))


def test_an_errored_trial_fails_in_optuna(studies):
    searcher = grouped(small_space(optimizers=["adam"], trials_per_optimizer=2), studies)
    searcher.suggest("t")
    searcher.on_trial_complete("t", None, error=True)
    assert searcher.study("adam").trials[0].state == TrialState.FAIL


def _searched_lrs(studies: str, budget: int, count: int, score) -> list[float]:
    """The learning rates a fresh one-optimizer searcher of `budget` trials (seed fixed by
    the space) suggests for its first `count`, run one after another, each scored
    score(lr) at its end."""
    searcher = grouped(small_space(optimizers=["sam"], trials_per_optimizer=budget), studies)
    lrs = []
    for i in range(count):
        config = searcher.suggest(f"t{i}")
        lrs.append(config["lr"])
        searcher.on_trial_complete(f"t{i}", {"epoch": config["epochs"], "val_acc": score(config["lr"]),
                                             "diverged": 0.0})
    return lrs


@pytest.mark.parametrize("budget", [1, 2, 3, 10, 16, 25, 64])
def test_tpe_guides_at_least_half_of_every_budget(budget):
    start = random_start(budget)
    assert budget - start >= budget / 2 and start <= 10


@pytest.mark.parametrize("budget", [6, 16])
def test_the_first_trials_are_random_and_tpe_models_the_rest_jointly(budget, tmp_path):
    """Observed, not read from Optuna's attributes: the first random_start(budget)
    suggestions do not depend on the scores (random), the next ones do (TPE), and TPE
    models the searched names jointly (a relative search space: multivariate)."""
    start = random_start(budget)
    up = _searched_lrs(f"sqlite:///{tmp_path / 'up.db'}", budget, start + 3, lambda lr: lr)
    down = _searched_lrs(f"sqlite:///{tmp_path / 'down.db'}", budget, start + 3, lambda lr: -lr)
    assert up[:start] == down[:start] and up[start:] != down[start:]
    study = grouped(small_space(optimizers=["sam"], trials_per_optimizer=budget),
                    f"sqlite:///{tmp_path / 'up.db'}").study("sam")
    joint = study.sampler.infer_relative_search_space(study, study.trials[-1])
    assert {"lr", "rho"} <= set(joint)


def test_the_searcher_samples_the_spaces_values_of_alpha(studies):
    space = small_space(optimizers=["zsharp"], trials_per_optimizer=10)
    searcher = grouped(space, studies)
    for i in range(10):
        config = searcher.suggest(f"t{i}")
        trial = searcher.study("zsharp").trials[-1]
        assert config["alpha"] == pytest.approx(1 - trial.params["1-alpha"], abs=1e-15)
        assert 0.5 <= config["alpha"] <= 0.99
        searcher.on_trial_complete(f"t{i}", {"epoch": 10, "val_acc": 0.5 + 0.01 * i})


def test_a_resumed_search_tells_optuna_each_trial_once_and_asks_no_extra_one(studies, tmp_path):
    """The database can be ahead of the searcher's last snapshot after a crash: a trial
    told, epochs reported, a trial asked. Restored as Tune restores it (the searcher made at
    the start, then the snapshot), it tells nothing twice and hands the trial asked after the
    snapshot (which Ray never knew) to Ray's next trial instead of asking a new one."""
    space = small_space(optimizers=["adam"], trials_per_optimizer=4, max_epochs=2)
    searcher = grouped(space, studies)
    started = pickle.dumps(searcher)  # Tune's tuner.pkl
    first = [searcher.suggest(t) for t in ("t0", "t1")]
    searcher.on_trial_result("t0", {"epoch": 1, "val_acc": 0.5})
    searcher.save(str(tmp_path / "snapshot.pkl"))
    searcher.on_trial_result("t0", {"epoch": 2, "val_acc": 0.8})
    searcher.on_trial_complete("t0", {"epoch": 2, "val_acc": 0.8, "diverged": 0.0})
    searcher.on_trial_result("t1", {"epoch": 1, "val_acc": 0.6})
    orphan = searcher.suggest("t2")

    restored = pickle.loads(started)
    restored.restore(str(tmp_path / "snapshot.pkl"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns about a step reported twice
        restored.on_trial_result("t0", {"epoch": 2, "val_acc": 0.9})  # Ray replays t0's end
        restored.on_trial_complete("t0", {"epoch": 2, "val_acc": 0.9, "diverged": 0.0})
        restored.on_trial_result("t1", {"epoch": 1, "val_acc": 0.7})  # from its checkpoint
        restored.on_trial_result("t1", {"epoch": 2, "val_acc": 0.75})
        assert restored.suggest("t3") == orphan  # the trial asked after the snapshot
        last = restored.suggest("t4")
    assert restored.suggest("t5") == "FINISHED"
    trials = optuna.load_study(study_name="exp/adam/r0", storage=studies).get_trials(deepcopy=False)
    assert len(trials) == 4 and last not in (*first, orphan)
    assert trials[0].state == TrialState.COMPLETE and trials[0].value == 0.8
    assert trials[0].intermediate_values == {1: 0.5, 2: 0.8}
    assert trials[1].intermediate_values == {1: 0.6, 2: 0.75}
    assert [t.user_attrs["ray_trial_id"] for t in trials] == ["t0", "t1", "t3", "t4"]


def test_each_study_names_its_objective_its_sweep_and_a_complement_searched_value(studies):
    about = {"space": "quickstart", "command": "launch.py --space quickstart", "mlflow_experiment": "exp"}
    GroupedSearch(search_groups(small_space(optimizers=["adam", "zsharp"]), "exp", {}), studies, about)
    for optimizer in ("adam", "zsharp"):
        study = optuna.load_study(study_name=f"exp/{optimizer}/r0", storage=studies)
        assert study.metric_names == ["val_acc"]
        notes = {k: v for k, v in study.user_attrs.items() if k not in about}
        assert {k: study.user_attrs[k] for k in about} == about
        assert notes == ({"1-alpha": "1 - alpha, searched on a log scale: alpha = 1 - this value"}
                         if optimizer == "zsharp" else {})


def test_an_optuna_trial_and_its_mlflow_run_name_each_other(studies):
    from tune.search import OptunaLinks

    searcher = grouped(small_space(optimizers=["adam", "sam"], trials_per_optimizer=2), studies)
    configs = {trial_id: searcher.suggest(trial_id) for trial_id in ("a0", "s0", "a1")}
    links = pickle.loads(pickle.dumps(OptunaLinks(studies, "exp")))  # as Tune pickles callbacks
    assert links.link(configs["a1"], "a1", "run-a1") == {"optuna_study": "exp/adam/r0", "optuna_trial": "1"}
    assert links.link(configs["s0"], "nope", "run-x") == {}
    trial = optuna.load_study(study_name="exp/adam/r0", storage=studies).trials[1]
    assert trial.user_attrs == {"ray_trial_id": "a1", "mlflow_run_id": "run-a1"}


def test_a_trial_ray_failed_while_starting_is_linked_without_touching_its_finished_optuna_trial(studies):
    # Ray fails a PENDING trial by telling the searcher first (Optuna: FAIL), then the MLflow
    # callback creates the run and links it; Optuna refuses attributes on a finished trial.
    from tune.search import OptunaLinks

    searcher = grouped(small_space(optimizers=["adam"], trials_per_optimizer=2), studies)
    config = searcher.suggest("a0")
    searcher.on_trial_complete("a0", None, error=True)
    assert OptunaLinks(studies, "exp").link(config, "a0", "run-a0") == {
        "optuna_study": "exp/adam/r0", "optuna_trial": "0"}
    trial = optuna.load_study(study_name="exp/adam/r0", storage=studies).trials[0]
    assert trial.state == TrialState.FAIL and trial.user_attrs == {"ray_trial_id": "a0"}


def test_a_new_search_refuses_studies_with_trials_and_a_resumed_one_needs_its_own(studies, tmp_path):
    from tune.plan import SweepError, SweepPlan
    from tune.preflight import check_studies

    def plan(uri=studies, resume=False):
        return SweepPlan(space=small_space(optimizers=["adam", "sam"]), experiment="exp",
                         storage=str(tmp_path), tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                         optuna_uri=uri, data_dir="data", resume=resume)

    with pytest.raises(SweepError, match="--resume: no Optuna study 'exp/adam/r0' in .*pass the --optuna-storage"):
        check_studies(plan(resume=True), run_search=True)
    optuna.create_study(study_name="exp/adam/r0", storage=studies)  # left empty by a stopped driver
    check_studies(plan(), run_search=True)
    optuna.load_study(study_name="exp/adam/r0", storage=studies).ask()
    with pytest.raises(SweepError, match="'exp/adam/r0' .* already holds trials .* optuna delete-study "
                                         "--study-name exp/adam/r0 --storage sqlite:///"):
        check_studies(plan(), run_search=True)
    check_studies(plan(), run_search=False)  # a confirm stage alone asks Optuna nothing
    with pytest.raises(SweepError, match="^the Optuna database sqlite:////no/such/folder/o.db cannot be opened"):
        check_studies(plan("sqlite:////no/such/folder/o.db"), run_search=True)


def dry_plan(tmp_path, **changes):
    from tune.plan import SweepPlan

    return SweepPlan(space=small_space(**changes), experiment="x", storage=str(tmp_path),
                     tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", optuna_uri=f"sqlite:///{tmp_path}/o.db",
                     data_dir=str(tmp_path / "data"), confirm_top_k=1, confirm_seeds=5)


def test_the_dry_run_budget_counts_every_trial_epoch_of_every_stage(tmp_path):
    from tune import estimate

    plan = dry_plan(tmp_path, optimizers=["adam", "sam"], trials_per_optimizer=15, max_epochs=10,
                    replicates=2)
    b = estimate.budget(plan)
    assert b.search == {"adam": 2 * 150, "sam": 2 * 150}
    # Adam's lr searched again at 20 epochs, a third of 15 trials, in each replicate.
    assert b.retune == {"adam": 2 * 5 * 20}
    # Adam at 10 and again at 20 epochs (equal compute), SAM at 10, 5 seeds each, 2 replicates.
    assert b.confirm == {"adam": 2 * 5 * (10 + 20), "sam": 2 * 5 * 10}
    times = {"adam": 2.0, "sam": 4.0}
    text = estimate.describe(plan, times)
    at_once = estimate.at_once(plan)
    search_s = (300 * 2.0 + 300 * 4.0) / at_once
    assert f"search: at most {duration_text(search_s)} wall, {(300 * 2 + 300 * 4) / 3600:.2g} CPU-hours" in text
    assert f"re-search: at most {duration_text(200 * 2.0 / at_once)} wall" in text
    assert f"confirm: about {duration_text((300 * 2.0 + 100 * 4.0) / at_once)} wall" in text
    assert text.startswith("cost         search at most 600 trial-epochs (ASHA stops some), re-search at most "
                           "200, confirm 400; ")


def test_the_dry_run_warns_of_a_missing_gpu_and_of_a_download(tmp_path, monkeypatch):
    from tune import estimate

    monkeypatch.setattr(estimate, "gpus_seen", lambda: 0)
    plan = dry_plan(tmp_path, dataset="c100", gpus_per_trial=0.5)
    warned = estimate.dry_run_warnings(plan)[-2:]  # after the plan's own
    assert warned == [
        "the sweep would refuse to start here: a trial asks for 0.5 GPUs; this machine has none "
        "(--gpus-per-trial 0 trains on the CPU)",
        f"c100 is not in {tmp_path / 'data'} (cifar-100-python/): the sweep downloads it first, "
        f"{169_001_437 / 2 ** 20:.0f} MiB"]
    (tmp_path / "data" / "cifar-100-python").mkdir(parents=True)
    monkeypatch.setattr(estimate, "gpus_seen", lambda: 2)
    assert estimate.dry_run_warnings(dry_plan(tmp_path, dataset="c100", gpus_per_trial=0))[-1] == (
        "this machine has 2 GPUs and the trials use none (--gpus-per-trial 1, or a fraction to share one)")


def test_the_timed_estimate_times_each_optimizer_or_says_why_not(tmp_path, monkeypatch):
    from tune import estimate

    from dataclasses import replace

    plan = replace(dry_plan(tmp_path, optimizers=["adam", "zsharp"]), data_dir="data")  # digits
    times = estimate.epoch_times(plan)
    assert set(times) == {"adam", "zsharp"} and all(0 < t < 60 for t in times.values())
    said = []
    monkeypatch.setattr(estimate, "TIMING_BUDGET_S", 0.0)
    assert estimate.epoch_times(plan, out=said.append) is None
    assert said[0].startswith("no time estimate: timing every optimizer here would take about ")
    assert estimate.epoch_times(dry_plan(tmp_path, dataset="c10"), out=said.append) is None
    assert said[1] == f"no time estimate: c10 is not in {tmp_path / 'data'} yet"


def test_the_ray_dashboard_is_refused_on_a_cluster_and_on_a_busy_port(tmp_path, monkeypatch):
    import socket
    from dataclasses import replace

    from tune import preflight
    from tune.plan import SweepError
    from tune.preflight import check_dashboard

    plan = replace(dry_plan(tmp_path), dashboard=True)
    with pytest.raises(SweepError, match="a cluster's head serves its own"):
        check_dashboard(replace(plan, address="10.0.0.1:6379"))
    with socket.socket() as busy:  # another port than Ray's: a sweep test may be using that
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        monkeypatch.setattr(preflight, "RAY_DASHBOARD_PORT", port)
        with pytest.raises(SweepError, match=f"port {port} on 127.0.0.1 is in use"):
            check_dashboard(plan)
    check_dashboard(plan)  # the packages are there (the test extra) and the port is free


# ---- priors: Distribution.sample and launch.py --sample ------------------------------

def test_loguniform_complement_prior_puts_most_alphas_near_one():
    d = Distribution("loguniform_complement", 0.5, 0.99)
    rng = np.random.default_rng(0)
    draws = np.array([d.sample(rng) for _ in range(4000)])
    assert draws.min() >= 0.5 and draws.max() <= 0.99
    # 1 - alpha log-uniform on [0.01, 0.5]: P(alpha >= 0.9) = ln(0.1/0.01) / ln(0.5/0.01).
    share = math.log(10) / math.log(50)
    assert abs((draws >= 0.9).mean() - share) < 4 * math.sqrt(share * (1 - share) / 4000)
    assert d.position(0.95) == pytest.approx(math.log(0.5 / 0.05) / math.log(50))
    assert d.position(0.5) == pytest.approx(0.0) and d.position(0.99) == pytest.approx(1.0)


@pytest.mark.parametrize("spec", [{"uniform": [0.1, 3.0]}, {"loguniform": [1e-4, 1e-1]},
                                  {"loguniform_complement": [0.5, 0.99]}, {"int": [1, 6]}])
def test_the_preview_and_the_searcher_sample_one_prior(spec):
    """Distribution.sample (launch.py --sample) and Distribution.suggest (the Optuna
    searcher's, here with its random sampler) go through one transform per kind: their
    draws are one distribution (two-sample Kolmogorov-Smirnov) inside the range."""
    import optuna
    from scipy.stats import ks_2samp

    d = Distribution.from_spec(spec, "test")
    rng = np.random.default_rng(1)
    preview = np.array([d.sample(rng) for _ in range(1500)], dtype=float)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    searched = np.array([d.suggest(study.ask(), "x") for _ in range(1500)], dtype=float)
    for draws in (preview, searched):
        assert draws.min() >= d.low and draws.max() <= d.high
    assert ks_2samp(preview, searched).pvalue > 0.001
    if d.kind == "int":
        assert set(preview) == set(searched) == set(range(1, 7))


def test_position_is_on_the_ranges_own_scale():
    assert Distribution("loguniform", 1e-4, 1e-2).position(1e-3) == pytest.approx(0.5)
    assert Distribution("uniform", 0.0, 4.0).position(1.0) == pytest.approx(0.25)
    assert Distribution("choice", values=(1, 2)).position(1) is None
    with pytest.raises(SpaceError, match="high < 1"):
        Distribution("loguniform_complement", 0.5, 1.0)


def test_a_space_cannot_fix_the_split_a_trial_evaluates():
    with pytest.raises(SpaceError, match="eval_split"):
        small_space(fixed={"eval_split": "test"})


# ---- the confirm stage's arms --------------------------------------------------------

def test_one_pass_optimizers_get_an_equal_compute_arm_beside_the_sam_family():
    assert budget_arms(["adam", "sgd", "sam", "zsharp"]) == {
        "adam": [("equal_epochs", 1), ("equal_compute", 2)],
        "sgd": [("equal_epochs", 1), ("equal_compute", 2)],
        "sam": [("equal_epochs", 1)], "zsharp": [("equal_epochs", 1)]}
    assert budget_arms(["adam", "adamw"]) == {"adam": [("equal_epochs", 1)],
                                              "adamw": [("equal_epochs", 1)]}


def test_the_longer_arm_stretches_epochs_warmup_and_step_period():
    assert stretched({"epochs": 6, "warmup_epochs": 1, "lr": 0.1}, 2) == \
        {"epochs": 12, "warmup_epochs": 2, "step_epochs": 60, "lr": 0.1}
    # A refit with matched steps on digits: x 1149 / 1437, rounded; warm-up may round to none.
    factor = small_space(refit_steps="matched").refit_factor
    assert factor == pytest.approx(1149 / 1437)
    assert stretched({"epochs": 10, "warmup_epochs": 1}, factor) == {"epochs": 8, "warmup_epochs": 1, "step_epochs": 24}
    assert stretched({"epochs": 1, "warmup_epochs": 0, "step_epochs": 1}, 0.1) == \
        {"epochs": 1, "warmup_epochs": 0, "step_epochs": 1}


def test_a_refit_states_its_extra_steps_and_matched_steps_scale_the_epochs():
    # digits at batch 128: 8 full batches of the 1,149 training images, 11 of train + val.
    assert small_space().refit_extra_steps == pytest.approx(11 / 8 - 1)
    epochs = small_space().max_epochs
    matched = round(epochs * 1149 / 1437)
    assert small_space(refit_steps="matched").refit_extra_steps == pytest.approx(11 * matched / (8 * epochs) - 1)
    assert small_space(refit=False).refit_extra_steps is None
    with pytest.raises(SpaceError, match="refit_steps: must be one of epochs, matched"):
        small_space(refit_steps="fewer")


def _row(optimizer, trial_id, status, epochs_run, final_val_acc, replicate=0, **config):
    return {"optimizer": optimizer, "trial_id": trial_id, "status": status, "epochs_run": epochs_run,
            "final_val_acc": final_val_acc, "config": {"optimizer": optimizer, "epochs": 6,
                                                       "replicate": replicate, **config}}


def test_finalists_ran_the_full_budget_and_are_ranked_by_final_val_acc_in_each_replicate():
    rows = [_row("adam", "early", "stopped_early", 2, 0.99, lr=1.0),
            _row("adam", "full", "completed", 6, 0.90, lr=2.0),
            _row("adam", "better", "completed", 6, 0.95, lr=3.0),
            _row("adam", "nan", "diverged", 1, 0.99, lr=4.0),
            _row("sam", "err", "error", 0, float("nan"), lr=5.0),
            _row("sam", "only", "stopped_early", 3, 0.5, lr=6.0),
            _row("adam", "other", "completed", 6, 0.5, replicate=1, lr=7.0)]
    finalists = select_finalists(rows, top_k=2)
    assert [(f["trial_id"], f["rank"]) for f in finalists] == \
        [("better", 1), ("full", 2), ("only", 1), ("other", 1)]


def test_confirm_trials_cover_arms_and_each_replicates_seeds_on_the_test_split():
    finalists = [dict(_row("adam", "a", "completed", 6, 0.9, lr=0.1), rank=1),
                 dict(_row("sam", "s", "completed", 6, 0.9, lr=0.2), rank=1),
                 dict(_row("sam", "s1", "completed", 6, 0.9, replicate=1, lr=0.3), rank=1)]
    configs = confirm_trials(finalists, seeds={0: (10, 11), 1: (20, 21)},
                             arms=budget_arms(["adam", "sam"]), refit=True)
    assert [(c["optimizer"], c["epochs"], c["seed"]) for c in configs] == [
        ("adam", 6, 10), ("adam", 6, 11), ("adam", 12, 10), ("adam", 12, 11), ("sam", 6, 10), ("sam", 6, 11),
        ("sam", 6, 20), ("sam", 6, 21)]
    assert all(c["eval_split"] == "test" and c["refit"] for c in configs)
    assert [c[RECORD_KEY]["budget_arm"] for c in configs] == ["equal_epochs"] * 2 + ["equal_compute"] * 2 + \
        ["equal_epochs"] * 4
    assert [c[RECORD_KEY]["replicate"] for c in configs] == ["0"] * 6 + ["1"] * 2


def test_a_retuned_equal_compute_arm_reruns_the_re_searched_config_of_rank_1_only():
    finalists = [dict(_row("adam", "a", "completed", 6, 0.9, lr=0.1), rank=1),
                 dict(_row("adam", "b", "completed", 6, 0.8, lr=0.2), rank=2)]
    best = {"trial_id": "r7", "config": {**stretched(finalists[0]["config"], 2), "lr": 0.05}}
    configs = confirm_trials(finalists, seeds={0: (1,)}, arms=budget_arms(["adam", "sam"]), refit=True,
                             retuned={("adam", 0): best})
    assert [(c["lr"], c["epochs"], c[RECORD_KEY]["confirm_rank"]) for c in configs] == [
        (0.1, 6, "1"), (0.05, 12, "1"), (0.2, 6, "2")]
    assert configs[1][RECORD_KEY] == {"stage": "confirm", "optimizer": "adam", "replicate": "0",
                                      "confirm_rank": "1", "source_trial_id": "a", "budget_arm": "equal_compute",
                                      "retune_trial_id": "r7"}


def test_the_re_search_starts_at_the_1x_optimum_at_the_longer_arms_epochs(studies):
    from tune.retune import RETUNE_SPAN, retune_groups

    space = small_space(optimizers=["adam", "sam"], trials_per_optimizer=9, replicates=2)
    finalists = [dict(_row("adam", "a0", "completed", 10, 0.9, lr=0.01, replicate=0, seed=5), rank=1),
                 dict(_row("adam", "a0b", "completed", 10, 0.8, lr=0.02, replicate=0), rank=2),
                 dict(_row("sam", "s0", "completed", 10, 0.9, lr=0.03, replicate=0), rank=1),
                 dict(_row("adam", "a1", "completed", 10, 0.9, lr=0.04, replicate=1), rank=1)]
    groups = retune_groups(space, "exp", finalists)
    assert [g.key for g in groups] == [("adam", 0), ("adam", 1)]  # rank 1 of the 1-pass optimizer
    first = groups[0]
    assert first.budget == 3 and first.name == "exp/adam/r0/retune" and first.first == ({"lr": 0.01},)
    assert first.base["epochs"] == 12 and first.base["seed"] == 5 and "lr" not in first.base
    lr = first.distributions["lr"]
    assert (lr.kind, lr.low, lr.high) == ("loguniform", 0.01 / RETUNE_SPAN, 0.01 * RETUNE_SPAN)
    searcher = GroupedSearch(groups, studies)
    suggested = [searcher.suggest(f"t{i}") for i in range(6)]
    assert suggested[0]["lr"] == 0.01 and suggested[1]["lr"] == 0.04  # each group's 1x optimum first
    assert all(0.01 / 4 <= c["lr"] <= 0.01 * 4 for c in suggested if c["replicate"] == 0)
    assert all(c["eval_split"] == "val" for c in suggested)  # the re-search sees val only
    assert searcher.suggest("t6") == "FINISHED"
    assert small_space(retune_trials=0).retune_trials == 0


def test_adams_longer_arm_spends_the_gradient_evaluations_of_a_sam_run():
    common = dict(DIGITS_TRIAL, eval_split="test", refit=True)
    sam = run_trial({**common, "optimizer": "sam", "epochs": 1})
    adam = run_trial(stretched({**common, "optimizer": "adam", "epochs": 1}, 2))
    assert adam.metrics["epoch"] == 2
    assert abs(adam.metrics["grad_evals"] / sam.metrics["grad_evals"] - 1) <= 0.01


# ---- the plan ---------------------------------------------------------------------------

def test_dry_run_names_the_arms_and_their_epochs(capsys):
    import launch

    assert launch.main(["--space", "quickstart", "--dry-run", "--storage", "/tmp/unused-dry"]) == 0
    out = capsys.readouterr().out
    assert "equal epochs: adam, sam, asam, fsam, zsharp at 8 epochs" in out
    assert "equal compute: adam at 16 epochs" in out
    assert "lr of adam searched again at the equal-compute arm's epochs (adam 16), 5 trials per replicate" in out
    assert "+37.5% optimizer steps against the search" in out
    assert "replicates   3 of each optimizer's search" in out and "primary contrast zsharp against sam" in out
    assert "scored on test" in out and "ASHA per optimizer and replicate on val_acc" in out



@pytest.mark.parametrize("seeds, says", [(None, "top 1 per optimizer and replicate x 3 seeds"),
                                         (0, "none (confirm_seeds: 0)"), (4, "x 4 seeds")])
def test_a_files_confirm_seeds_are_taken_as_written_and_zero_means_no_confirm_stage(
        seeds, says, tmp_path, capsys):
    import launch

    space = get_space("quickstart").with_overrides(replicates=1).to_dict()
    del space["confirm_seeds"]
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**space, **({} if seeds is None else {"confirm_seeds": seeds})}))
    assert launch.main(["--space", str(path), "--dry-run", "--storage", str(tmp_path / "r")]) == 0
    assert says in capsys.readouterr().out


def test_a_space_files_control_characters_reach_the_terminal_escaped(tmp_path, capsys):
    import launch

    space = {**get_space("quickstart").to_dict(), "description": "a \x1b[31mred\x1b]0;title\x07 \rgone\nline"}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    assert launch.main(["--space", str(path), "--dry-run", "--storage", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert not {"\x1b", "\x07", "\r"} & set(out)
    assert out.splitlines()[0] == "space        quickstart: a \\x1b[31mred\\x1b]0;title\\x07 \\rgone\\nline"


def test_one_of_a_thing_is_said_in_the_singular(capsys):
    import launch

    assert launch.main(["--space", "quickstart", "--dry-run", "--storage", "/tmp/unused-dry", "--num-samples", "1",
                        "--max-concurrent", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 trial each per replicate" in out and "1 trial at a time" in out
    assert not re.search(r"\b1 (trials|runs|seeds|GPUs)\b", out)


@pytest.mark.parametrize("flags, says", [
    (["--mlflow-uri", "ftp://x"], "--mlflow-uri must be sqlite:////absolute/path.db"),
    (["--optuna-storage", "sqlite//x"], "--optuna-storage must be a database URL"),
    (["--optuna-storage", "foo://host/db"], "Can't load plugin: sqlalchemy.dialects:foo")])
def test_the_dry_run_refuses_the_uris_the_run_refuses(flags, says, tmp_path, capsys):
    import launch

    for mode in (["--dry-run"], []):
        argv = ["--space", "quickstart", "--storage", str(tmp_path / "r"), *flags, *mode]
        assert launch.main(argv) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and says in err[0]
    assert not (tmp_path / "r").exists()  # refused before anything was made


def test_list_sweeps_says_when_a_store_holds_none_is_missing_or_is_damaged(tmp_path, capsys):
    import launch
    from tune.store import prepare_store

    prepare_store(f"sqlite:///{tmp_path / 'empty' / 'mlflow.db'}")
    assert launch.main(["--list-sweeps", "--storage", str(tmp_path / "empty")]) == 0
    assert capsys.readouterr().out == f"no sweeps in sqlite:///{tmp_path / 'empty' / 'mlflow.db'}\n"
    assert launch.main(["--list-sweeps", "--storage", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err == (f"launch.py: error: no MLflow store at {tmp_path / 'none' / 'mlflow.db'} "
                                       "(--storage, or --mlflow-uri)\n")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "mlflow.db").write_bytes(b"x" * 4096)
    assert launch.main(["--list-sweeps", "--storage", str(tmp_path / "damaged")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "cannot be read (DatabaseError: " in err


def test_a_trials_folder_name_is_short_and_names_it_as_the_analysis_reads_it():
    from analysis.load_storage import _TRIAL_DIR
    from tune.stages import trial_folder

    trial = SimpleNamespace(trainable_name="tune_trial", trial_id="ab12c_00003",
                            experiment_tag="3_alpha=0.9433,lr=0.0054,rho=0.0539")
    name = trial_folder(trial)
    assert name == "tune_trial_ab12c_00003_3_"
    assert _TRIAL_DIR.search(name).groups() == ("ab12c_00003", "3")


def test_a_damaged_mlflow_store_is_one_line_naming_it(tmp_path):
    from tune.plan import SweepError
    from tune.store import prepare_store

    database = tmp_path / "mlflow.db"
    database.write_bytes(bytes(range(256)) * 20)  # not SQLite
    with pytest.raises(SweepError) as refused:
        prepare_store(f"sqlite:///{database}")
    message = str(refused.value)
    assert "\n" not in message and len(message) < 400
    assert message.startswith(f"the MLflow database {database} cannot be opened (DatabaseError: ")
    assert "file is not a database" in message and database.read_bytes() == bytes(range(256)) * 20


@pytest.mark.parametrize("visible, seen", [(None, 2), ("1", 1), ("0,1,2", 2), ("-1", 0), ("", 0), ("0,-1,1", 1)])
def test_the_gpus_seen_without_torch_are_the_drivers_as_cuda_visible_devices_limits_them(
        visible, seen, tmp_path, monkeypatch):
    from tune import early

    gpus = tmp_path / "gpus"
    for bus in ("0000:01:00.0", "0000:02:00.0"):
        (gpus / bus).mkdir(parents=True)
    monkeypatch.setattr(early, "_NVIDIA_GPUS", gpus)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert early.gpus_seen() == seen


def test_without_the_drivers_list_the_gpus_are_none_or_unknown_until_torch_says(tmp_path, monkeypatch):
    from tune import early

    monkeypatch.setattr(early, "_NVIDIA_GPUS", tmp_path / "absent")
    monkeypatch.setattr(early.sys, "platform", "linux")
    monkeypatch.setattr(early.shutil, "which", lambda name: None)
    monkeypatch.setattr(early, "Path", lambda p: tmp_path / "absent" if p == "/dev/kfd" else Path(p))
    assert early.gpus_seen() == 0
    monkeypatch.setattr(early.shutil, "which", lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    assert early.gpus_seen() is None  # a driver /proc does not list: torch counts later


def test_the_dry_run_warns_of_what_the_closing_summary_would(tmp_path, capsys):
    import launch

    def warnings_of(*flags, space="quickstart"):
        assert launch.main(["--space", space, "--dry-run", "--storage", str(tmp_path / "r"), *flags]) == 0
        return [line.removeprefix("warning: ") for line in capsys.readouterr().out.splitlines()
                if line.startswith("warning: ")]

    assert warnings_of() == []  # the demo as it ships
    thin = warnings_of("--num-samples", "4", "--max-epochs", "2", "--replicates", "1", "--seeds", "1")
    assert thin[0].startswith("one replicate of the search: every interval is conditional on one search")
    assert thin[1].startswith("fewer than 3 confirm runs (Adam 1, SAM 1, ASAM 1, Friendly-SAM 1, ZSharp 1)")
    assert ("ZSharp: 4 search trials per replicate for 3 searched hyperparameters (lr, rho, alpha): fewer than 5 "
            "per dimension, so most of the space was never sampled; run at least 15 (--num-samples)") in thin
    assert thin[-1] == ("ASHA stops no trial: its grace period (2 epochs) reaches max_epochs (2), so every "
                        "trial runs its full budget")
    assert warnings_of("--confirm", "0")[0].startswith("no confirm stage: the search's figures are single runs")
    unequal = {**get_space("quickstart").to_dict(), "search_per_optimizer": {
        **get_space("quickstart").to_dict()["search_per_optimizer"], "adam": {"weight_decay": {"loguniform": [1e-5, 1e-2]}}}}
    path = tmp_path / "unequal.yaml"
    path.write_text(yaml.safe_dump(unequal))
    assert warnings_of(space=str(path)) == [
        "weight_decay is searched for Adam but fixed for SAM, ASAM, Friendly-SAM, ZSharp: not tuned against "
        "tuned; search it for every optimizer that takes it (search:) or for none"]

# ---- MLflow records -----------------------------------------------------------------------


def test_a_sweep_is_found_again_whatever_quotes_its_path_holds(tmp_path):
    from mlflow.tracking import MlflowClient

    from tune.tracking import find_parent_run, open_parent_run

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    path = str(tmp_path / "it's a \"sweep\"")
    run_id, _ = open_parent_run(client, "exp", path, False, {"stage": PARENT_STAGE},
                                artifact_location=str(tmp_path / "artifacts"))
    client.create_run(client.get_experiment_by_name("exp").experiment_id,
                      tags={"stage": PARENT_STAGE, "mlflow.parentRunId": run_id, "trial_id": "t1"})
    assert find_parent_run(client, "exp", path).info.run_id == run_id
    assert find_parent_run(client, "exp", path + "x") is None
    assert open_parent_run(client, "exp", path, True, {"stage": PARENT_STAGE})[0] == run_id


def _epoch(n: int) -> dict:
    """A trial's report of epoch n, with Ray's own bookkeeping keys beside it."""
    return {"epoch": n, "val_acc": 0.5 + n / 100, "train_loss": 1.0 / n, "diverged": 0.0,
            "training_iteration": n, "trial_id": "t1", "done": False, "time_this_iter_s": 1.0}


def test_a_resumed_trial_continues_its_run_and_logs_no_epoch_twice(tmp_path):
    # The driver's MLflow callback with a trial as Ray hands it over, through two drivers:
    # the second restored from a snapshot taken before the first driver's last epoch, as
    # after a SIGKILL, sees the trial restart from an earlier checkpoint.

    from mlflow.tracking import MlflowClient

    from tune.tracking import MlflowTracking, open_parent_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    parent, experiment = open_parent_run(client, "exp", str(tmp_path), False, {"stage": PARENT_STAGE},
                                         artifact_location=str(tmp_path / "artifacts"))
    trial = SimpleNamespace(trial_id="t1", config={"optimizer": "sam", "epochs": 4, "rho": 0.1},
                            last_result={})
    first = MlflowTracking(uri, parent, experiment)
    first.on_trial_start(0, [], trial)
    first.on_trial_result(0, [], trial, _epoch(1))
    snapshot = first.get_state()  # Tune's last snapshot before the crash
    first.on_trial_result(0, [], trial, _epoch(2))
    (run,) = client.search_runs([experiment], "tags.trial_id = 't1'")
    client.set_terminated(run.info.run_id, "KILLED")  # as record_interruption leaves it

    second = MlflowTracking(uri, parent, experiment)
    second.set_state(snapshot)
    for epoch in (2, 3, 4):  # restarted from the epoch-1 checkpoint: epoch 2 comes again
        second.on_trial_result(0, [], trial, _epoch(epoch))
        if epoch == 2:  # reopened: running again in its own run
            assert client.get_run(run.info.run_id).info.status == "RUNNING"
    trial.last_result = _epoch(4)
    second.on_trial_complete(0, [], trial)

    (done,) = client.search_runs([experiment], "tags.trial_id = 't1'")
    assert done.info.run_id == run.info.run_id and done.info.status == "FINISHED"
    assert done.data.tags["status"] == "completed" and done.data.tags["optimizer"] == "sam"
    assert done.data.params["rho"] == "0.1" and "alpha" not in done.data.params  # resolved, read
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]  # each epoch once
    assert {"training_iteration", "time_this_iter_s", "done"}.isdisjoint(done.data.metrics)

    # A third driver replays the end of a trial that had finished: the run stays as it was.
    end_time = done.info.end_time
    third = MlflowTracking(uri, parent, experiment)
    third.on_trial_result(0, [], trial, _epoch(4))
    third.on_trial_complete(0, [], trial)
    again = client.get_run(run.info.run_id)
    assert again.info.status == "FINISHED" and again.info.end_time == end_time
    assert len(client.get_metric_history(run.info.run_id, "val_acc")) == 4


# ---- signals, snapshots and progress ---------------------------------------------------

def test_a_first_signal_is_recorded_and_handed_to_tunes_graceful_stop(monkeypatch, capfd):
    import os
    import signal

    from tune.interrupt import Interrupted, StopSignals

    tune_stops = []
    previous_usr1 = signal.signal(signal.SIGUSR1, lambda signum, frame: tune_stops.append(signum))
    before = signal.getsignal(signal.SIGINT)  # Python's, or SIG_IGN in a background job
    try:
        with StopSignals() as signals:
            assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"
            os.kill(os.getpid(), signal.SIGTERM)  # would end this process without the handler
            assert signals.received.signum == signal.SIGTERM and tune_stops == [signal.SIGUSR1]
            with pytest.raises(Interrupted) as stop:
                signals.check()
            assert (stop.value.exit_code, stop.value.name, stop.value.at_once) == (143, "SIGTERM", False)
            # A second signal ends the process at once, raising nothing into whatever code
            # runs: last words (the record, the resume line), then this process's children
            # (its local Ray) killed, then exit with the first one's code; last words that
            # fail are said and do not stop the rest.
            from tune import interrupt

            said, exits = [], []
            monkeypatch.setattr(os, "_exit", exits.append)  # instead of ending pytest
            monkeypatch.setattr(interrupt, "kill_children", lambda: said.append("children killed"))

            def last_words(stop):
                said.append(("last words", stop.name, stop.at_once))
                raise OSError("the store is gone")
            signals.last_words = last_words
            os.kill(os.getpid(), signal.SIGINT)
            assert said == [("last words", "SIGTERM", True), "children killed"] and exits == [143]
            assert capfd.readouterr().err == "while stopping: OSError: the store is gone\n"
        assert signal.getsignal(signal.SIGINT) is before  # restored
        assert "TUNE_DISABLE_SIGINT_HANDLER" not in os.environ
    finally:
        signal.signal(signal.SIGUSR1, previous_usr1)


def test_last_words_that_hang_do_not_hold_the_exit(monkeypatch, capfd):
    import os
    import signal
    import threading

    from tune import interrupt

    exits, stuck = [], threading.Event()
    monkeypatch.setattr(os, "_exit", exits.append)
    monkeypatch.setattr(interrupt, "kill_children", lambda: None)
    monkeypatch.setattr(interrupt, "LAST_WORDS_S", 0.2)
    with interrupt.StopSignals() as signals:
        signals.last_words = lambda stop: stuck.wait()  # a lock the interrupted code holds
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
    stuck.set()
    assert exits == [130] and "did not finish within 0.2 s" in capfd.readouterr().err


_KILLS_ITS_CHILDREN = """
import subprocess, sys, time
from tune import interrupt
sleep = [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(60)",
         sys.executable, "-c", "import time; time.sleep(60)"]
child = subprocess.Popen(sleep)
time.sleep(2.0)  # the grandchild started too
import psutil
print(" ".join(str(p.pid) for p in psutil.Process().children(recursive=True)), flush=True)
interrupt.kill_children()
"""


def test_a_second_signal_kills_the_children_this_process_started():
    import psutil

    done = subprocess.run([sys.executable, "-c", _KILLS_ITS_CHILDREN], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    pids = [int(p) for p in done.stdout.split()]
    assert done.returncode == 0 and len(pids) == 2, done.stderr
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
        assert time.monotonic() < deadline, "a child outlived the kill"
        time.sleep(0.1)


def test_a_local_ray_that_does_not_start_is_one_line_and_leaves_no_process(monkeypatch, tmp_path):
    # What Ray does when its node times out on a busy machine: it has started processes,
    # then raises a bare Exception.
    import psutil
    import ray

    from tune import stages
    from tune.plan import SweepFailed, SweepPlan

    started = []

    def slow_start(**options):
        started.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
        raise Exception("The current node timed out during startup. This could happen because some of "
                        "the raylet failed to startup or the GCS has become overloaded.")
    monkeypatch.setattr(ray, "init", slow_start)
    plan = SweepPlan(space=small_space(), experiment="x", storage=str(tmp_path), data_dir="data",
                     tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", optuna_uri=f"sqlite:///{tmp_path / 'o.db'}")
    with pytest.raises(SweepFailed) as refused:
        stages.start_ray(plan)
    message = str(refused.value)
    assert message.startswith("the local Ray did not start (The current node timed out during startup.")
    assert message.endswith("it can time out: rerun the same command") and "\n" not in message
    assert started[0].wait(timeout=10) == -9  # killed, not left running
    assert psutil.Process().children() == []


def test_a_sweep_that_fails_for_no_fault_of_its_input_exits_1_with_one_line(monkeypatch, tmp_path, capsys):
    import launch
    from tune import sweep
    from tune.plan import SweepFailed

    def ray_would_not_start(plan):
        raise SweepFailed("the local Ray did not start (timed out); rerun the same command")
    monkeypatch.setattr(sweep, "run_sweep", ray_would_not_start)
    assert launch.main(["--space", "quickstart", "--storage", str(tmp_path)]) == 1
    assert capsys.readouterr().err == ("launch.py: error: the local Ray did not start (timed out); rerun the "
                                       "same command\n")


def test_storage_too_small_for_the_sweeps_checkpoints_is_refused_before_it_starts(tmp_path):
    import shutil

    from tune.diskspace import SPARE_BYTES, space_needed, space_problem

    plan = dry_plan(tmp_path, optimizers=["adam", "sam"], trials_per_optimizer=3, replicates=2)
    # 12 search, 2 re-search and 2 x 2 x 5 + 2 x 5 confirm trials, two checkpoints each, and
    # each trial running at once writing a third.
    trials = 12 + 2 + 30
    assert space_needed(plan, 10 ** 6) == (trials * 2 * 10 ** 6 + 2 * 10 ** 6 + SPARE_BYTES, 2 * 10 ** 6 + SPARE_BYTES)
    assert space_problem(plan, 1000) is None  # this disk holds 88 checkpoints of 1 kB
    free = shutil.disk_usage(tmp_path).free
    problem = space_problem(plan, free // 50)  # 88 of a 50th of it do not fit
    assert problem.startswith(f"storage {tmp_path} has ") and "44 trials x 2 checkpoints" in problem
    assert problem.endswith("free space, or pass --storage on a larger disk")


def test_the_disk_watch_stops_the_sweep_as_a_signal_would_when_storage_runs_low(tmp_path):
    import shutil

    from tune.diskspace import DiskWatch
    from tune.interrupt import Interrupted, StopSignals

    plan = dry_plan(tmp_path)
    free = shutil.disk_usage(tmp_path).free
    with StopSignals() as signals:
        DiskWatch(plan, reserve=free // 2).on_trial_result(0, [], None, {})
        signals.check()  # plenty left: nothing happens
        DiskWatch(plan, reserve=free + 2 ** 40).on_trial_result(0, [], None, {})
        with pytest.raises(Interrupted) as stop:
            signals.check()
    assert stop.value.exit_code == 1 and stop.value.signum is None
    assert stop.value.name.startswith(f"low disk space: storage {tmp_path} has ")


def test_sigint_exits_130_and_no_tune_handler_outside_a_fit_is_fine():
    import os
    import signal

    from tune.interrupt import Interrupted, StopSignals

    with StopSignals() as signals:  # SIGUSR1 at its default: no Tune fit is running
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(Interrupted) as stop:
            signals.check()
    assert stop.value.exit_code == 130


class _Controller:
    """What Tune hands a scheduler: the trials, and the experiment snapshot it can force."""

    def __init__(self):
        self.trials, self.snapshots = [], []

    def get_trials(self):
        return self.trials

    def checkpoint(self, force=False, wait=False):
        self.snapshots.append([t.trial_id for t in self.trials])


def test_every_added_trial_is_in_a_snapshot_before_it_can_start():

    from tune.schedule import PerGroupASHA

    scheduler = PerGroupASHA([("adam", 0), ("sam", 0)], max_t=4, grace_period=1, reduction_factor=2)
    controller = _Controller()
    assert scheduler.choose_trial_to_run(controller) is None and controller.snapshots == []
    for trial_id, optimizer in (("a", "adam"), ("b", "sam")):
        trial = SimpleNamespace(trial_id=trial_id, status="PENDING", config={"optimizer": optimizer},
                                checkpoint=None)
        controller.trials.append(trial)
        scheduler.on_trial_add(controller, trial)
    chosen = scheduler.choose_trial_to_run(controller)
    assert chosen.trial_id == "a" and controller.snapshots == [["a", "b"]]
    scheduler.choose_trial_to_run(controller)  # nothing new: no second snapshot
    assert controller.snapshots == [["a", "b"]]


def test_old_checkpoints_are_deleted_only_once_a_snapshot_names_a_newer_one(tmp_path):

    import pyarrow.fs
    from ray.tune import Checkpoint
    from ray.tune.result import SHOULD_CHECKPOINT

    from tune.schedule import PerGroupASHA

    def checkpoint(n):  # what the worker writes before it reports checkpoint n
        (tmp_path / f"checkpoint_{n:06d}").mkdir()
        return Checkpoint(str(tmp_path / f"checkpoint_{n:06d}"), pyarrow.fs.LocalFileSystem())

    def on_disk():
        return sorted(p.name for p in tmp_path.glob("checkpoint_*"))

    class Controller(_Controller):
        def checkpoint(self, force=False, wait=False):  # a snapshot: what it names, what exists
            self.snapshots.append((self.trials[0].checkpoint.path.rsplit("/", 1)[1], on_disk()))

    scheduler = PerGroupASHA([("adam", 0)], max_t=8, grace_period=8, reduction_factor=2)
    controller = Controller()
    trial = SimpleNamespace(trial_id="a", status="RUNNING", config={"optimizer": "adam"}, checkpoint=None)
    controller.trials.append(trial)
    scheduler.on_trial_add(controller, trial)
    result = {"val_acc": 0.5, SHOULD_CHECKPOINT: True}
    checkpoint(0)
    scheduler.on_trial_result(controller, trial, {**result, "epoch": 1, "training_iteration": 1})
    assert controller.snapshots == []  # nothing registered: nothing to name or delete
    for n in (1, 2, 3):  # checkpoint n-1 is registered; result n+1 brings checkpoint n
        trial.checkpoint = Checkpoint(str(tmp_path / f"checkpoint_{n - 1:06d}"), pyarrow.fs.LocalFileSystem())
        checkpoint(n)
        scheduler.on_trial_result(controller, trial, {**result, "epoch": n + 1, "training_iteration": n + 1})
        assert controller.snapshots[-1][0] == f"checkpoint_{n - 1:06d}"  # named before any deletion
        assert on_disk() == [f"checkpoint_{n - 1:06d}", f"checkpoint_{n:06d}"]
    # The snapshot before checkpoint 3 still saw checkpoint 1 on disk: deleted after it.
    assert controller.snapshots[-1][1] == ["checkpoint_000001", "checkpoint_000002", "checkpoint_000003"]
    scheduler.on_trial_result(controller, trial, {**result, SHOULD_CHECKPOINT: False, "epoch": 5,
                                                  "training_iteration": 5})
    assert len(controller.snapshots) == 3  # no checkpoint follows: no snapshot


def test_a_trials_report_carries_its_checkpoint_at_its_first_and_last_epoch_and_every_period():
    """tune.trainable.CheckpointDue: every checkpoint handed to Ray is copied to storage and
    forces an experiment snapshot; between a trial's first and last epoch (and a divergence)
    one goes at most every period, timed from the last one or from this run's start."""
    from tune.trainable import CheckpointDue

    now = [0.0]
    due = CheckpointDue(epochs=8, period_s=10.0, clock=lambda: now[0])
    carried = []
    for epoch in range(1, 9):
        now[0] += 3.0  # a 3 s epoch
        carried += [epoch] if due({"epoch": epoch, "diverged": 0.0}) else []
    assert carried == [1, 5, 8]  # 3 s, then 15 s (12 after epoch 1), then the last
    resumed = CheckpointDue(epochs=8, period_s=10.0, clock=lambda: now[0])  # from a checkpoint of epoch 5
    now[0] += 3.0
    assert not resumed({"epoch": 6, "diverged": 0.0})
    assert resumed({"epoch": 7, "diverged": 1.0})  # diverged: its last report
    now[0] += 20.0
    assert resumed({"epoch": 7, "diverged": 0.0}) and not resumed({"epoch": 7, "diverged": 0.0})


def test_status_lines_say_how_long_trials_have_waited_for_a_missing_node():
    from tune.progress import ConciseProgress, StageBudget

    now = [0.0]
    lines = []
    progress = ConciseProgress(StageBudget(2, 6, "CPU", 64), ("lr",), "val_acc", out=lines.append,
                               waiting_for="a node with 64 CPUs (the largest has 2)",
                               clock=lambda: now[0])
    pending = [SimpleNamespace(status="PENDING"), SimpleNamespace(status="PENDING")]
    for moment in (1.0, 31.0, 61.0):
        now[0] = moment
        progress.on_step_end(0, pending)
    assert lines[0].endswith("; waiting 30s for a node with 64 CPUs (the largest has 2)")
    assert lines[1].endswith("; waiting 60s for a node with 64 CPUs (the largest has 2)")
    now[0] = 95.0  # a node came: the trial runs, the note goes
    progress.on_step_end(0, [SimpleNamespace(status="RUNNING"), pending[1]])
    assert "waiting" not in lines[2]


def fake_trial(trial_id: str, optimizer: str, epochs: int = 3, status: str = "RUNNING", **config):
    return SimpleNamespace(trial_id=trial_id, status=status, last_result=None,
                           config={"optimizer": optimizer, "epochs": epochs, "lr": 0.01, **config})


def report(progress, trials, trial, epoch: int, seconds: float, **metrics) -> None:
    trial.last_result = {"epoch": epoch, "time_this_iter_s": seconds, **metrics}
    progress.on_trial_result(0, trials, trial, trial.last_result)


def test_the_status_line_counts_trial_epochs_compute_eta_and_the_best_finished_trials():
    from tune.progress import ConciseProgress, StageBudget

    now = [100.0]
    lines = []
    progress = ConciseProgress(StageBudget(4, 12, "CPU", 2), ("lr",), "val_acc", out=lines.append,
                               clock=lambda: now[0])
    progress.setup()
    a, b = fake_trial("a", "adam"), fake_trial("b", "zsharp")
    trials = [a, b]
    report(progress, trials, a, 1, 10.0, val_acc=0.5)
    report(progress, trials, b, 1, 20.0, val_acc=0.95)
    now[0] = 131.0
    progress.on_step_end(0, trials)
    # 2 of 12 epochs at 15 s each; left: 2 unseen trials x 3 + 2 + 2 = 10 epochs, 2 at once
    # -> 75 s; compute: 30 s x 2 CPUs = 1/60 CPU-hour.
    assert lines[-1] == ("[   31s] trials 0/4 done (running 2; completed 0, stopped early 0, "
                         "diverged 0, errors 0); trial-epochs 2/12; ETA <= 1m15s; compute 0.0167 CPU-h")
    b.status = "TERMINATED"  # ASHA stopped it after epoch 1
    progress.on_trial_complete(0, trials, b)
    assert lines[-2].startswith("b zsharp  stopped_early val_acc 0.9500  lr=0.01")
    report(progress, trials, a, 2, 10.0, val_acc=0.7)
    report(progress, trials, a, 3, 10.0, val_acc=0.9)
    a.status = "TERMINATED"
    now[0] = 100.0 + 3600
    progress.on_trial_complete(0, trials, a)
    # 4 epochs done in 50 s; left: the 2 unseen trials' 6 epochs, 1 at a time (none runs).
    assert lines[-1] == ("[ 1h00m] trials 2/4 done (running 0; completed 1, stopped early 1, "
                         "diverged 0, errors 0); trial-epochs 4/12; ETA <= 1m15s; compute 0.0278 "
                         "CPU-h; best finished val_acc: zsharp 0.9500, adam 0.9000")

    # The counts are the sweep's: a resumed driver's callback continues them.
    resumed = ConciseProgress(StageBudget(4, 12, "CPU", 2), ("lr",), "val_acc", out=lines.append,
                              clock=lambda: now[0])
    resumed.set_state(pickle.loads(pickle.dumps(progress.get_state())))
    resumed.setup()
    finished_line = lines[-1]
    now[0] += 40
    resumed.on_step_end(0, [])
    assert lines[-1] == finished_line.replace("[ 1h00m]", "[   40s]")


def test_the_eta_covers_the_stages_still_to_come():
    from tune.progress import ConciseProgress, StageBudget

    now, lines = [100.0], []
    progress = ConciseProgress(StageBudget(2, 6, "CPU", 1, later_epochs=9), ("lr",), "val_acc",
                               out=lines.append, clock=lambda: now[0])
    progress.setup()
    a, b = fake_trial("a", "adam"), fake_trial("b", "adam", status="PENDING")
    report(progress, [a, b], a, 1, 10.0, val_acc=0.5)
    now[0] = 131.0
    progress.on_step_end(0, [a, b])
    # 1 epoch in 10 s, one trial running: 5 epochs left here (2 of a, 3 of b), 9 after.
    assert "; ETA <= 50s this stage, 2m20s the sweep;" in lines[-1]


def test_each_stages_eta_counts_the_stages_after_it(tmp_path):
    from tune import stages

    plan = dry_plan(tmp_path, optimizers=["adam", "sam"], trials_per_optimizer=15, max_epochs=10, replicates=2)
    # As the dry run counts them: search 600, re-search 200, confirm 400 trial-epochs.
    assert stages.stage_budget(plan, [10] * 60, "search").later_epochs == 200 + 400
    assert stages.stage_budget(plan, [20] * 10, "retune").later_epochs == 400
    assert stages.stage_budget(plan, [10] * 40, "confirm", {}).later_epochs == 0


def test_the_confirm_status_line_gives_each_groups_mean_so_far_and_runs_done():
    from tune.confirm import config_key
    from tune.progress import ConciseProgress, StageBudget

    lines = []
    trials = [fake_trial(f"t{seed}", "adam", seed=seed) for seed in range(2)] + \
             [fake_trial("s0", "sam", seed=0)]
    groups = {config_key(t.config): f"{t.config['optimizer']} equal_epochs" for t in trials}
    progress = ConciseProgress(StageBudget(3, 9, "GPU", 0.5, groups), ("seed",), "test_acc",
                               out=lines.append)
    for trial, accuracy in zip(trials[:2], (0.8, 0.9)):
        for epoch in (1, 2, 3):
            report(progress, trials, trial, epoch, 3600.0, test_acc=accuracy)
        trial.status = "TERMINATED"
        progress.on_trial_complete(0, trials, trial)
    assert "compute 3 GPU-h" in lines[-1] and "ETA ~ " in lines[-1]
    assert lines[-1].endswith("; mean test_acc so far: adam equal_epochs 0.8500 (2/2)")


def test_waiting_for_names_the_node_a_trial_needs(monkeypatch):
    import ray

    from tune import stages
    from tune.plan import SweepPlan

    nodes = [{"Alive": True, "Resources": {"CPU": 2.0}},
             {"Alive": True, "Resources": {"CPU": 16.0, "GPU": 1.0}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    monkeypatch.setattr(ray, "nodes", lambda: nodes)

    def plan(**resources):
        return SweepPlan(space=small_space(**resources), experiment="x", storage="/tmp/x",
                         tracking_uri="sqlite:////tmp/x/mlflow.db", optuna_uri="sqlite:////tmp/x/optuna.db", data_dir="data",
                         address="10.0.0.1:6379")

    assert stages.waiting_for(plan(cpus_per_trial=16, gpus_per_trial=1)) is None
    assert stages.waiting_for(plan(cpus_per_trial=32)) == "a node with 32 CPUs (the largest has 16)"
    assert stages.waiting_for(plan(gpus_per_trial=2)) == "a node with 2 GPUs (the largest has 1)"


def test_the_browse_command_is_this_environments_mlflow_or_the_server_itself():
    from pathlib import Path

    from tune.store import browse_command

    command = browse_command("sqlite:////data/results/mlflow.db").split()
    assert command == [str(Path(sys.executable).parent / "mlflow"), "ui", "--workers", "1", "--backend-store-uri",
                       "sqlite:////data/results/mlflow.db"] and Path(command[0]).is_file()
    assert browse_command("http://127.0.0.1:5000") == "open http://127.0.0.1:5000 in a browser"


def test_asha_compares_a_trial_only_with_its_own_optimizer_and_replicate():
    # A poor trial reaching the rung after a good one: stopped where both are in one ASHA,
    # not where they are different replicates' (independent searches).
    from ray.tune.schedulers import TrialScheduler

    from tune.schedule import PerGroupASHA

    def decisions(groups, second_replicate):
        scheduler = PerGroupASHA(groups, max_t=4, grace_period=1, reduction_factor=2)
        controller, said = _Controller(), []
        for trial_id, replicate, acc in (("good", 0, 0.9), ("poor", second_replicate, 0.1)):
            trial = SimpleNamespace(trial_id=trial_id, status="RUNNING", checkpoint=None,
                                    config={"optimizer": "adam", "replicate": replicate})
            controller.trials.append(trial)
            scheduler.on_trial_add(controller, trial)
            said.append(scheduler.on_trial_result(controller, trial, {"epoch": 1, "val_acc": acc,
                                                                      "training_iteration": 1}))
        return said

    assert decisions([("adam", 0)], 0) == [TrialScheduler.CONTINUE, TrialScheduler.STOP]
    assert decisions([("adam", 0), ("adam", 1)], 1) == [TrialScheduler.CONTINUE, TrialScheduler.CONTINUE]

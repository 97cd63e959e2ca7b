"""The verdict, the warnings, the console summary and the report, on sweeps built in
memory (no Ray, no MLflow): numbers worked out by hand from the accuracies set below.

The sweep: Adam, SAM and ZSharp searched on a small space (max_epochs 4), then each
finalist rerun with seeds 0-4 at 4 epochs (equal epochs) and Adam's again at 8 epochs
(equal gradient evaluations). Every confirm run's test accuracy peaks at epoch 2, 5
points above its final value, and SAM's runs (refit off) also report a val accuracy 7
points above their final test accuracy: a verdict that read the best epoch or val would
show it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis import report
from analysis.load import EPOCH_COLUMNS, TRIAL_COLUMNS, TRIAL_DEFAULTS, Sweep
from analysis.summary import sweep_summary
from analysis.verdict import best_configs, comparison, confirm_arms, confirm_results, search_best
from analysis.warnings import sweep_warnings
from search_spaces.space import SearchSpace
from trainables.schema import EQUAL_COMPUTE, EQUAL_EPOCHS

MAX_EPOCHS = 4
SPACE = SearchSpace.from_dict({
    "name": "verdict_test", "description": "in-memory sweep for the analysis tests",
    "dataset": "digits", "model": "res20s", "optimizers": ["adam", "sam", "zsharp"],
    "fixed": {"batch_size": 128, "warmup_epochs": 1, "schedule": "step", "base": "adam"},
    "search": {"lr": {"loguniform": [1e-4, 1e-2]}, "rho": {"uniform": [0.01, 0.2]},
               "alpha": {"uniform": [0.5, 0.99]}},
    "max_epochs": MAX_EPOCHS, "grace_period": 2, "reduction_factor": 2, "trials_per_optimizer": 10,
    "max_concurrent": 1, "cpus_per_trial": 1, "gpus_per_trial": 0}, "test space")
PASSES = {"adam": 1, "sam": 2, "zsharp": 2}
# Adam's best lr sits 97% of the way up the log range [1e-4, 1e-2]: 10 ** (-4 + 0.97 * 2).
LR_AT_TOP = 10 ** -2.06
BEST = {"adam": {"lr": LR_AT_TOP}, "sam": {"lr": 1e-3, "rho": 0.1},
        "zsharp": {"lr": 2e-3, "rho": 0.05, "alpha": 0.9}}
SEEDS = range(5)
# Final-epoch test accuracy per seed 0-4.
FINAL_TEST = {"sam": [0.80, 0.82, 0.84, 0.86, 0.88],
              "zsharp": [0.81, 0.82, 0.83, 0.87, 0.90],   # vs SAM: 3 wins, 1 tie, 1 loss
              "adam": [0.78, 0.79, 0.83, 0.84, 0.85]}
FINAL_TEST_2X = [0.83, 0.84, 0.85, 0.86, 0.89]          # Adam at 8 epochs


class Builder:
    """Trials and epochs frames with the loaders' columns, one trial at a time."""

    def __init__(self):
        self.rows, self.epochs = [], []

    def add(self, trial_id: str, optimizer: str, accs: list[float], *, stage: str = "sweep",
            arm: str | None = None, val: list[float] | None = None, flat: dict | None = None,
            **config) -> None:
        """One trial whose accuracy by epoch is `accs` (val in the search, test in the
        confirm stage; `val` adds a confirm run's val accuracy; `flat`, its flatness
        diagnostics)."""
        split = "test" if stage == "confirm" else "val"
        settings = {**TRIAL_DEFAULTS, **SPACE.fixed, "dataset": "digits", "model": "res20s",
                    "epochs": MAX_EPOCHS, "eval_split": split, "refit": val is None, **config}
        settings.pop("optimizer")
        rho = settings["rho"] if PASSES[optimizer] == 2 else math.nan
        epochs = [{"epoch": e + 1, f"{split}_acc": a, f"{split}_loss": 1 - a,
                   "val_acc": val[e] if val else (a if split == "val" else math.nan),
                   "grad_evals": 1000.0 * (e + 1) * PASSES[optimizer], "epoch_time_s": 2.0,
                   # The radius used drifts around rho: 0.9 rho, then 1.1 rho (mean rho).
                   "perturbation_norm": rho * (0.9 if e % 2 == 0 else 1.1),
                   "kept_fraction": 0.1 if optimizer == "zsharp" else math.nan,
                   "ascent_cosine": 0.6 if optimizer == "zsharp" else math.nan}
                  for e, a in enumerate(accs)]
        val_accs = [row["val_acc"] for row in epochs]
        ids = {"run_id": f"run-{trial_id}", "trial_id": trial_id, "stage": stage, "budget_arm": arm,
               "optimizer": optimizer, "seed": settings["seed"]}
        self.epochs += [{**ids, **row} for row in epochs]
        self.rows.append({**settings, **ids, "confirm_rank": 1 if stage == "confirm" else None,
                          "source_trial_id": None,
                          "status": "completed" if len(accs) >= settings["epochs"] else "stopped_early",
                          "start_time": pd.Timestamp("2025-01-01", tz="UTC") + pd.Timedelta(len(self.rows), "s"),
                          "epochs_run": len(accs), "final_val_acc": val_accs[-1],
                          "best_val_acc": np.nanmax(val_accs) if any(v == v for v in val_accs) else math.nan,
                          "best_epoch": 0, "final_test_acc": accs[-1] if split == "test" else math.nan,
                          "final_test_loss": 1 - accs[-1] if split == "test" else math.nan,
                          "perturbation_norm": rho, "train_seconds": 2.0 * len(accs),
                          "grad_evals": epochs[-1]["grad_evals"], "compute_hours": 2.0 * len(accs) / 3600,
                          "compute_unit": "CPU", **(flat or {})})

    def sweep(self) -> Sweep:
        trials = pd.DataFrame(self.rows)
        trials["confirm_rank"] = trials["confirm_rank"].astype("Int64")
        epochs = pd.DataFrame(self.epochs).reindex(columns=EPOCH_COLUMNS)
        # Columns a trial does not have (the flatness diagnostics of a search trial) are NaN.
        return Sweep("verdict_test", trials.reindex(columns=TRIAL_COLUMNS), epochs, SPACE, {"source": "memory"})


def search_stage(builder: Builder, zsharp_trials: int = 6) -> None:
    """Search trials: Adam 5 (1 dimension), SAM 10 (2), ZSharp `zsharp_trials` (3). Each
    optimizer's finalist has the BEST config and a final val accuracy of 0.80."""
    others = {"adam": [{"lr": v} for v in (2e-4, 5e-4, 1e-3, 3e-3)],
              "sam": [{"lr": v, "rho": r} for v in (3e-4, 3e-3, 5e-3) for r in (0.03, 0.06, 0.12)],
              "zsharp": [{"lr": 1e-3, "rho": 0.1, "alpha": a} for a in np.linspace(0.6, 0.85, zsharp_trials - 1)]}
    for optimizer, configs in others.items():
        builder.add(f"{optimizer}-best", optimizer, [0.5, 0.6, 0.7, 0.80], **BEST[optimizer])
        for i, config in enumerate(configs):
            accs = [0.4, 0.5] if i % 2 else [0.45, 0.55, 0.65, 0.70]  # every other one stopped early
            builder.add(f"{optimizer}-{i}", optimizer, accs, **config)


def peaked_curve(final: float, epochs: int) -> list[float]:
    """Test accuracy by epoch: peaks at epoch 2, 5 points above the final value."""
    return [final - 0.3, final + 0.05] + [final - 0.02] * (epochs - 3) + [final]


# A confirm run's flatness diagnostics: per optimizer a base, plus the seed (so each
# optimizer's mean over seeds 0..4 is base + 2 and its sample std is sqrt(2.5)).
FLAT_BASE = {"adam": 40.0, "sam": 20.0, "zsharp": 10.0}


def flat_values(optimizer: str, seed: int) -> dict:
    base = FLAT_BASE[optimizer] + seed
    return {"hessian_top_eig": base, "hessian_trace": 10 * base, "sharpness_worst": base / 100,
            "sharpness_adaptive_worst": base / 200, "sharpness_average": base / 1000,
            "sharpness_radius": 0.05,  # a loss profile 1 + base t^2 at t = -1, -0.5, ..., 1
            "loss_profile": tuple((t, 1 + base * t * t) for t in (-1.0, -0.5, 0.0, 0.5, 1.0))}


def confirm_stage(builder: Builder, seeds=SEEDS) -> None:
    for optimizer, finals in FINAL_TEST.items():
        for seed in seeds:
            final = finals[seed]
            val = [a + 0.07 for a in peaked_curve(final, MAX_EPOCHS)] if optimizer == "sam" else None
            builder.add(f"{optimizer}-ee-{seed}", optimizer, peaked_curve(final, MAX_EPOCHS), stage="confirm",
                        arm=EQUAL_EPOCHS, val=val, seed=seed, flat=flat_values(optimizer, seed),
                        **BEST[optimizer])
    for seed in seeds:
        builder.add(f"adam-ec-{seed}", "adam", peaked_curve(FINAL_TEST_2X[seed], 2 * MAX_EPOCHS), stage="confirm",
                    arm=EQUAL_COMPUTE, seed=seed, epochs=2 * MAX_EPOCHS, warmup_epochs=2, step_epochs=60,
                    **BEST["adam"])


def build(seeds=SEEDS, confirm: bool = True) -> Sweep:
    builder = Builder()
    search_stage(builder)
    if confirm:
        confirm_stage(builder, seeds)
    return builder.sweep()


@pytest.fixture(scope="module")
def sweep() -> Sweep:
    return build()


# ---- the runs compared -------------------------------------------------------------------

def test_each_arm_compares_the_final_epochs_test_accuracy(sweep):
    assert confirm_arms(sweep) == [EQUAL_EPOCHS, EQUAL_COMPUTE]
    equal_epochs, _ = confirm_results(sweep, EQUAL_EPOCHS)
    by_optimizer = equal_epochs.groupby("optimizer")["test_acc"].apply(list).to_dict()
    assert by_optimizer == FINAL_TEST  # not the peak (+5 points), not val (+7)
    assert (equal_epochs["budget_arm"] == EQUAL_EPOCHS).all()
    equal_compute, _ = confirm_results(sweep, EQUAL_COMPUTE)
    adam = equal_compute[equal_compute["optimizer"] == "adam"]
    assert adam["trial_id"].tolist() == [f"adam-ec-{s}" for s in SEEDS]
    assert adam["test_acc"].tolist() == pytest.approx(FINAL_TEST_2X)
    sam_family = equal_compute[equal_compute["optimizer"] != "adam"]  # their equal-epochs runs
    assert sorted(sam_family["trial_id"]) == sorted(f"{o}-ee-{s}" for o in ("sam", "zsharp") for s in SEEDS)
    with pytest.raises(ValueError, match="unknown budget arm"):
        confirm_results(sweep, "double")


def test_summaries_by_hand_in_both_arms(sweep):
    result = comparison(sweep)
    assert list(result.arms) == [EQUAL_EPOCHS, EQUAL_COMPUTE]
    means = {arm: r.summary.set_index("optimizer")["mean"].to_dict() for arm, r in result.arms.items()}
    # (0.80 + 0.82 + 0.84 + 0.86 + 0.88) / 5, (0.81 + 0.82 + 0.83 + 0.87 + 0.90) / 5, ...
    assert means[EQUAL_EPOCHS] == pytest.approx({"sam": 0.84, "zsharp": 0.846, "adam": 0.818})
    assert means[EQUAL_COMPUTE] == pytest.approx({"sam": 0.84, "zsharp": 0.846, "adam": 0.854})
    assert not result.single_runs and not any("Fewer than 5 seeds" in n for n in result.notes)


def test_wins_count_seeds_and_ties_apart(sweep):
    table = comparison(sweep).arms[EQUAL_EPOCHS].paired["sam"].set_index("optimizer")
    # ZSharp - SAM by seed: +0.01, 0, -0.01, +0.01, +0.02.
    assert (table.at["zsharp", "wins"], table.at["zsharp", "ties"], table.at["zsharp", "n"]) == (3, 1, 5)
    assert (table.at["adam", "wins"], table.at["adam", "ties"]) == (0, 0)


def _holm_by_hand(raw: dict) -> dict:
    """Holm step-down: the i-th smallest of m p-values times (m - i + 1), running maximum, capped at 1."""
    ordered = sorted(raw, key=raw.get)
    adjusted, running = {}, 0.0
    for i, test in enumerate(ordered):
        running = max(running, (len(ordered) - i) * raw[test])
        adjusted[test] = min(1.0, running)
    return adjusted


def test_holm_runs_across_every_table_of_both_arms(sweep):
    ee = {o: np.array(v) for o, v in FINAL_TEST.items()}
    ec_adam = np.array(FINAL_TEST_2X)
    # Five distinct tests: a SAM-family pair in the equal-compute tables reuses the
    # equal-epochs runs, so it is the equal-epochs test again.
    raw = {("adam", "sam", EQUAL_EPOCHS): scipy_stats.ttest_rel(ee["adam"], ee["sam"]).pvalue,
           ("sam", "zsharp", EQUAL_EPOCHS): scipy_stats.ttest_rel(ee["zsharp"], ee["sam"]).pvalue,
           ("adam", "zsharp", EQUAL_EPOCHS): scipy_stats.ttest_rel(ee["zsharp"], ee["adam"]).pvalue,
           ("adam", "sam", EQUAL_COMPUTE): scipy_stats.ttest_rel(ec_adam, ee["sam"]).pvalue,
           ("adam", "zsharp", EQUAL_COMPUTE): scipy_stats.ttest_rel(ee["zsharp"], ec_adam).pvalue}
    expected = _holm_by_hand(raw)
    shown = 0
    for arm_result in comparison(sweep).arms.values():
        for table in arm_result.paired.values():
            for row in table.itertuples():
                key = (*sorted((row.optimizer, row.reference)), row.arm)
                assert row.p_holm == pytest.approx(expected[key], rel=1e-9), key
                shown += 1
    assert shown == 8  # 2 arms x 2 references x 2 rows: Adam vs SAM shown twice per arm


def test_search_best_is_the_full_budget_trial_by_final_val_accuracy():
    builder = Builder()
    builder.add("peaked", "sam", [0.5, 0.95, 0.6, 0.70], lr=1e-3, rho=0.1)  # best epoch 0.95
    builder.add("steady", "sam", [0.5, 0.6, 0.7, 0.80], lr=2e-3, rho=0.1)
    builder.add("short", "sam", [0.6, 0.90], lr=3e-3, rho=0.1)               # stopped early
    builder.add("failed", "sam", [0.99, 0.99, 0.99, 0.99], lr=4e-3, rho=0.1)
    builder.rows[-1]["status"] = "diverged"
    assert search_best(builder.sweep())["trial_id"].tolist() == ["steady"]


# ---- warnings ------------------------------------------------------------------------------

def test_warnings_name_the_edge_and_the_thin_search_and_nothing_else(sweep):
    found = sweep_warnings(sweep)
    assert len(found) == 2
    edge, thin = found
    assert edge.startswith("Adam: its best lr, 0.00871, lies at the top of the searched range "
                           "[0.0001, 0.01] (97% of the way on its log scale)")
    assert "widen the range upwards" in edge
    # ZSharp: 6 trials for lr, rho and alpha; Adam (5 for 1) and SAM (10 for 2) have enough.
    assert thin.startswith("ZSharp: 6 search trials for 3 searched hyperparameters (lr, rho, alpha)")
    assert "at least 15" in thin


def test_a_best_value_inside_its_range_is_no_warning(sweep):
    best = best_configs(sweep)
    assert best["adam"]["trial_id"] == "adam-ee-0"  # the confirmed configuration
    inside = Builder()
    search_stage(inside, zsharp_trials=15)
    for optimizer, finals in FINAL_TEST.items():
        for seed in SEEDS:
            config = {**BEST[optimizer], "lr": 3e-3} if optimizer == "adam" else BEST[optimizer]
            inside.add(f"{optimizer}-confirm-{seed}", optimizer, peaked_curve(finals[seed], MAX_EPOCHS),
                       stage="confirm", arm=EQUAL_EPOCHS, seed=seed, **config)
    assert sweep_warnings(inside.sweep()) == []


def test_without_a_confirm_stage_the_search_finalist_decides_the_edge():
    builder = Builder()
    search_stage(builder, zsharp_trials=15)
    base = {"lr": 2e-3, "rho": 0.05}
    builder.add("zsharp-top", "zsharp", [0.5, 0.6, 0.7, 0.90], alpha=0.98, **base)       # the finalist
    builder.add("zsharp-peak", "zsharp", [0.5, 0.99, 0.7, 0.85], alpha=0.51, **base)     # best epoch only
    builder.add("zsharp-short", "zsharp", [0.6, 0.95], alpha=0.505, **base)              # stopped early
    found = sweep_warnings(builder.sweep())
    assert found[0].startswith("no confirm stage: the search's figures are single runs")
    # (0.98 - 0.5) / (0.99 - 0.5) = 98% of the way up; the trials at alpha 0.51 and 0.505
    # (a higher best epoch, a higher accuracy after 2 epochs) are not the finalist.
    alpha_edges = [w for w in found if "best alpha" in w]
    assert len(alpha_edges) == 1
    assert alpha_edges[0].startswith("ZSharp: its best alpha, 0.98, lies at the top of the searched "
                                     "range [0.5, 0.99] (98% of the way on its linear scale)")


def test_fewer_than_five_seeds_is_a_warning():
    found = sweep_warnings(build(seeds=range(3)))
    few = [w for w in found if w.startswith("fewer than 5 confirm seeds")]
    assert len(few) == 1
    assert "Adam 3" in few[0] and "SAM 3" in few[0] and "Adam (2x epochs) 3" in few[0]


# ---- the console summary ---------------------------------------------------------------------

def test_summary_prints_warnings_first_then_both_arms(sweep):
    lines = sweep_summary(sweep).splitlines()
    assert [line.startswith("warning: ") for line in lines[:3]] == [True, True, False]
    text = "\n".join(lines)
    assert text.index("at equal epochs") < text.index("at equal gradient evaluations")
    assert "lr tuned at 1x" in text and "Adam (2x epochs)" in text
    zsharp_vs_sam = [line for line in lines if line.strip().startswith("ZSharp") and "wins" in line]
    assert any("wins 3 of 5 (1 tie)" in line and "+0.60 pts" in line for line in zsharp_vs_sam)
    assert "84.6%" in text and "85.4%" in text  # ZSharp's and Adam 2x's mean test accuracy
    assert "P(improvement)" not in text and len(lines) < 40


def test_summary_prints_each_test_once(sweep):
    text = sweep_summary(sweep)
    # 5 distinct tests; the equal-compute arm repeats none of the equal-epochs ones.
    assert text.count("Holm p") == 5


def test_summary_without_a_confirm_stage_says_single_runs():
    text = sweep_summary(build(confirm=False))
    assert text.splitlines()[0].startswith("warning: no confirm stage")
    assert "single runs, not a verdict" in text and "test accuracy" not in text


# ---- the report ------------------------------------------------------------------------------

def test_report_page_has_the_warnings_box_first_and_both_arms(sweep):
    page = report.render_html(sweep, importance_min_trials=3)
    box, comparison_section = page.index("id='warnings'"), page.index("id='comparison'")
    assert box < comparison_section
    assert "Adam: its best lr, 0.00871, lies at the top" in page[box:comparison_section]
    for text in ("At equal epochs", "At equal gradient evaluations", "Paired by seed, against SAM, at equal epochs",
                 "Paired by seed, against Adam (2x epochs), at equal gradient evaluations",
                 "wins 3 of 5 (1 tie)", "final test acc (mean)", "learning rate tuned at 1x epochs",
                 "conservative estimate"):
        assert text in page, text
    assert "P(improvement)" not in page


def test_figures_show_test_accuracy_and_the_longer_runs(sweep):
    fig = report.figure_comparison(sweep)
    assert "test accuracy" in fig.layout.title.text
    means = {t.x[0]: t.y[0] for t in fig.data if t.marker.symbol in ("diamond", "diamond-open")}
    assert means == pytest.approx({"Adam": 0.818, "Adam (2x epochs)": 0.854, "SAM": 0.84, "ZSharp": 0.846})
    curves = report.figure_learning_curves(sweep)
    longer = [t for t in curves.data if t.name == "Adam (2x epochs)"]
    assert len(longer) == 1 and longer[0].line.dash == "dash" and longer[0].xaxis == "x2"
    assert longer[0].x[-1] == 8 * 1000  # by gradient evaluations: 8 epochs x 1 pass
    assert curves.layout.yaxis.title.text == "test accuracy"


def test_sensitivity_plots_the_radius_used_and_alpha(sweep):
    fig = report.figure_sensitivity(sweep)
    assert [a.text for a in fig.layout.annotations] == ["against perturbation_norm", "against alpha"]
    assert fig.layout.xaxis.type == "log"
    sam = next(t for t in fig.data if t.name == "SAM" and t.xaxis == "x")
    assert 0.1 in list(sam.x)  # the finalist's mean radius: (0.9 + 1.1) / 2 x rho 0.1
    region = report.good_region(sweep, "perturbation_norm").set_index("optimizer")
    assert set(region.index) == {"sam", "zsharp"}  # Adam has no ascent
    assert region.at["sam", "good"] == 1 and region.at["sam", "low"] == pytest.approx(0.1)


def test_every_figure_has_a_title_and_axis_labels(sweep):
    made = report.figures(sweep, importance_min_trials=3)
    assert set(made) == set(report.FIGURES)
    for name, fig in made.items():
        assert fig.layout.title.text, name
        if name != "parallel_coordinates":
            axes = [a for a in fig.layout if a.startswith(("xaxis", "yaxis"))
                    and fig.layout[a].visible is not False]  # a grid's spare cells are hidden
            assert axes and all(fig.layout[a].title.text for a in axes), name


def test_the_flatness_section_gives_each_measures_mean_and_interval_over_seeds(sweep):
    """flat_values: each optimizer's measures are base + seed over seeds 0-4: mean base + 2,
    sample std sqrt(2.5), so the 95% t interval is mean +- t(0.975, 4) sqrt(2.5) / sqrt(5)."""
    from scipy.stats import t

    from analysis.figures import figure_flatness, figure_loss_profiles
    from analysis.flatness import flatness_summary
    from analysis.text import label
    from analysis.inputs import ReportInputs
    from analysis.tables import flatness_tables

    summary = flatness_summary(sweep).set_index("optimizer")
    half = t.ppf(0.975, 4) * math.sqrt(2.5) / math.sqrt(5)
    for optimizer, base in FLAT_BASE.items():
        row = summary.loc[optimizer]
        assert row["n"] == 5  # the equal-epochs runs only (not Adam's 2x runs)
        assert row["hessian_top_eig_mean"] == pytest.approx(base + 2)
        assert (row["hessian_top_eig_low"], row["hessian_top_eig_high"]) == pytest.approx((base + 2 - half, base + 2 + half))
        assert row["hessian_trace_mean"] == pytest.approx(10 * (base + 2))
    fig = figure_flatness(sweep)
    for optimizer in FLAT_BASE:
        points = [t for t in fig.data if t.legendgroup == optimizer]
        assert len(points) == 2 and all(len(p.x) == 5 for p in points)
        assert sorted(points[0].x) == [FLAT_BASE[optimizer] + s for s in SEEDS]
        assert sorted(points[0].y) == pytest.approx(sorted(FINAL_TEST[optimizer]))
    profiles = figure_loss_profiles(sweep)
    for optimizer, base in FLAT_BASE.items():
        mean = next(t for t in profiles.data if t.name == label(optimizer))
        assert list(mean.x) == [-1.0, -0.5, 0.0, 0.5, 1.0]  # rise over t = 0, mean over seeds
        assert list(mean.y) == pytest.approx([(base + 2) * t * t for t in mean.x])
    html = flatness_tables(ReportInputs(sweep))
    assert "radius 0.05" in html and "top Hessian eigenvalue" in html
    assert "not invariant to reparametrisation" in report.FIGURES["flatness"].text

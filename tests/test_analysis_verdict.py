"""The verdict, the warnings, the console summary and the report, on sweeps built in
memory (no Ray, no MLflow): numbers worked out by hand from the accuracies set below.

The sweep: Adam, SAM and ZSharp searched on a small space (max_epochs 4), then each
finalist rerun with seeds 0-4 at 4 epochs (equal epochs) and Adam's again at 8 epochs
(equal gradient evaluations), in one replicate (`build`) or three (`replicated`). Every
confirm run's test accuracy peaks at epoch 2, 5 points above its final value, and SAM's
runs (refit off) also report a val accuracy 7 points above their final test accuracy: a
verdict that read the best epoch or val would show it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis import report
from analysis.sweep import EPOCH_COLUMNS, TRIAL_COLUMNS, TRIAL_DEFAULTS, Provenance, Sweep
from analysis.summary import sweep_summary
from analysis.verdict import best_configs, comparison, confirm_arms, confirm_results, search_best
from analysis.warnings import sweep_warnings
from search_spaces.space import SearchSpace
from analysis.text import run_label
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

    def add(self, trial_id: str, optimizer: str, accs: list[float], *, stage: str = "search",
            arm: str | None = None, val: list[float] | None = None, flat: dict | None = None,
            status: str | None = None, **config) -> None:
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
        ended = "completed" if len(accs) >= settings["epochs"] else "stopped_early"
        self.rows.append({**settings, **ids, "confirm_rank": 1 if stage == "confirm" else None,
                          "source_trial_id": None, "status": status or ended,
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
        return Sweep("verdict_test", trials.reindex(columns=TRIAL_COLUMNS), epochs, SPACE, Provenance(source="memory"))


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
# optimizer's mean over seeds 0..4 is base + 2 and its sample std is sqrt(2.5)). Each
# run's own errors are small: Lanczos' residual 1% of the eigenvalue, the trace's SE 10%.
FLAT_BASE = {"adam": 40.0, "sam": 20.0, "zsharp": 10.0}


def flat_values(optimizer: str, seed: int) -> dict:
    base = FLAT_BASE[optimizer] + seed
    return {"sharpness_adaptive_worst": base / 200, "sharpness_adaptive_average": base / 1000,
            "sharpness_adaptive_average_se": base / 10_000, "hessian_top_eig": base,
            "hessian_top_eig_residual": base / 100, "hessian_trace": 10 * base, "hessian_trace_se": base,
            "sharpness_worst": base / 100, "weight_norm": 50.0,
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


# Three replicates of the confirm stage: replicate r's runs are FINAL_TEST's plus SHIFT[r]
# (the search's own variance: each replicate picked another configuration).
SHIFT = [0.0, 0.03, -0.03]


def replicated() -> Sweep:
    """`build`'s sweep with the confirm stage in three replicates (seeds 0-4 each)."""
    builder = Builder()
    search_stage(builder)
    for replicate, shift in enumerate(SHIFT):
        for optimizer, finals in FINAL_TEST.items():
            for seed in SEEDS:
                builder.add(f"{optimizer}-r{replicate}-{seed}", optimizer,
                            peaked_curve(finals[seed] + shift, MAX_EPOCHS), stage="confirm", arm=EQUAL_EPOCHS,
                            seed=seed, replicate=replicate, **BEST[optimizer])
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
    assert not result.single_runs and result.conditional and result.replicates == 1
    assert result.primary == ("zsharp", "sam") and result.margin == pytest.approx(0.005)


def test_wins_count_seeds_and_ties_apart(sweep):
    table = comparison(sweep).arms[EQUAL_EPOCHS].paired["sam"].set_index("optimizer")
    # ZSharp - SAM by seed: +0.01, 0, -0.01, +0.01, +0.02.
    assert (table.at["zsharp", "wins"], table.at["zsharp", "ties"], table.at["zsharp", "pairs"]) == (3, 1, 5)
    # P(ZSharp > SAM): 3 wins and a tie (a half) of 5 matched runs.
    assert table.at["zsharp", "p_better"] == pytest.approx(3.5 / 5)
    assert (table.at["adam", "wins"], table.at["adam", "ties"]) == (0, 0)


def _holm_by_hand(raw: dict) -> dict:
    """Holm step-down: the i-th smallest of m p-values times (m - i + 1), running maximum, capped at 1."""
    ordered = sorted(raw, key=raw.get)
    adjusted, running = {}, 0.0
    for i, test in enumerate(ordered):
        running = max(running, (len(ordered) - i) * raw[test])
        adjusted[test] = min(1.0, running)
    return adjusted


def test_the_primary_contrast_stands_alone_and_holm_runs_across_every_other_table(sweep):
    # Five distinct tests: a SAM-family pair in the equal-compute tables reuses the
    # equal-epochs runs, so it is the equal-epochs test again. ZSharp against SAM is the
    # primary contrast, tested alone; the other four are one Holm family.
    rows = [row for r in comparison(sweep).arms.values() for t in r.paired.values() for row in t.itertuples()]
    assert len(rows) == 8  # 2 arms x 2 references x 2 rows: Adam vs SAM shown twice per arm
    key = {row: (*sorted((row.optimizer, row.reference)), row.arm) for row in rows}
    primary = [row for row in rows if row.primary]
    assert {key[row] for row in primary} == {("sam", "zsharp", EQUAL_EPOCHS)}
    assert all(row.p_holm == row.p for row in primary)
    raw = {key[row]: row.p for row in rows if not row.primary}
    assert len(raw) == 4
    expected = _holm_by_hand(raw)
    for row in rows:
        if not row.primary:
            assert row.p_holm == pytest.approx(expected[key[row]], rel=1e-9), key[row]


def test_search_best_is_the_full_budget_trial_by_final_val_accuracy():
    builder = Builder()
    builder.add("peaked", "sam", [0.5, 0.95, 0.6, 0.70], lr=1e-3, rho=0.1)  # best epoch 0.95
    builder.add("steady", "sam", [0.5, 0.6, 0.7, 0.80], lr=2e-3, rho=0.1)
    builder.add("short", "sam", [0.6, 0.90], lr=3e-3, rho=0.1)               # stopped early
    builder.add("failed", "sam", [0.99, 0.99, 0.99, 0.99], lr=4e-3, rho=0.1)
    builder.rows[-1]["status"] = "diverged"
    assert search_best(builder.sweep())["trial_id"].tolist() == ["steady"]


# ---- warnings ------------------------------------------------------------------------------

def test_warnings_name_one_replicate_the_refit_the_edge_and_the_thin_search_and_nothing_else(sweep):
    found = [w for w in sweep_warnings(sweep) if "ranking flips" not in w]  # (the test below)
    assert len(found) == 4
    one, refit, edge, thin = found
    assert one.startswith("one replicate of the search: every interval is conditional on one search")
    # digits at batch 128: 8 full batches of 1,149 images in the search, 11 of 1,437 in a refit.
    assert refit.startswith("confirm runs refit on train + val and so take +37.5% optimizer steps")
    assert edge.startswith("Adam: its best lr lies at the top of the searched range [0.0001, 0.01] on its "
                           "log scale: 0.00871 (replicate 0, 97%)")
    assert "widen the range upwards" in edge
    # ZSharp: 6 trials for lr, rho and alpha; Adam (5 for 1) and SAM (10 for 2) have enough.
    assert thin.startswith("ZSharp: 6 search trials per replicate for 3 searched hyperparameters (lr, rho, alpha)")
    assert "at least 15" in thin


def test_a_best_value_inside_its_range_is_no_warning(sweep):
    best = best_configs(sweep)
    assert best[("adam", 0)]["trial_id"] == "adam-best"  # the finalist the confirm stage reran
    inside = Builder()
    search_stage(inside, zsharp_trials=15)
    inside.rows[0]["lr"] = 3e-3  # Adam's finalist inside its range
    for replicate, shift in enumerate(SHIFT):
        for optimizer, finals in FINAL_TEST.items():
            for seed in SEEDS:
                inside.add(f"{optimizer}-confirm-{replicate}-{seed}", optimizer,
                           peaked_curve(finals[seed] + shift, MAX_EPOCHS), stage="confirm", arm=EQUAL_EPOCHS,
                           seed=seed, replicate=replicate, refit=False, **BEST[optimizer])
    no_refit = Sweep("inside", inside.sweep().trials, inside.sweep().epochs,
                     SPACE.with_overrides(refit=False))
    assert sweep_warnings(no_refit) == []


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
    assert alpha_edges[0].startswith("ZSharp: its best alpha lies at the top of the searched range [0.5, 0.99] "
                                     "on its linear scale: 0.98 (replicate 0, 98%)")


def test_fewer_than_three_runs_is_a_warning():
    found = sweep_warnings(build(seeds=range(2)))
    few = [w for w in found if w.startswith("fewer than 3 confirm runs")]
    assert len(few) == 1
    assert "Adam 2" in few[0] and "SAM 2" in few[0] and "Adam (2x epochs) 2" in few[0]


def test_diverged_confirm_runs_count_and_are_named():
    builder = Builder()
    search_stage(builder)
    confirm_stage(builder)
    run = next(r for r in builder.rows if r["trial_id"] == "zsharp-ee-3")
    run.update(status="diverged", final_test_acc=0.1)
    sweep = builder.sweep()
    frame, _ = confirm_results(sweep, EQUAL_EPOCHS)
    assert frame.set_index("trial_id").at["zsharp-ee-3", "test_acc"] == 0.1  # counted, at chance
    found = [w for w in sweep_warnings(sweep) if "diverged" in w]
    assert found == ["diverged confirm runs count at the accuracy they ended with (1 run): ZSharp "
                     "replicate 0 seed 3"]


def test_a_called_difference_that_flips_between_the_arms_is_a_warning(sweep):
    # Adam is below SAM (0.84) and ZSharp (0.846) at equal epochs (0.818), called worse than
    # both there, and above both at equal compute (0.854).
    found = [w for w in sweep_warnings(sweep) if "ranking flips" in w]
    assert found == [f"the ranking flips between the arms: Adam is below {other} at equal epochs but above "
                     "it at equal gradient evaluations, and one of the two is called a difference; read "
                     "the verdict per arm" for other in ("SAM", "ZSharp")]
    # The same flips with no difference called in either arm: noise, no warning.
    from analysis.warnings import _flip_warnings

    result = comparison(sweep)
    for arm in result.arms.values():
        arm.paired = {ref: t.assign(verdict="no detectable difference") for ref, t in arm.paired.items()}
    assert _flip_warnings(result) == []


def test_asha_rungs_that_do_not_predict_the_final_ranking_are_a_warning():
    # Six SAM trials ran the whole budget; at the rung (epoch 2 of 4) their order is the
    # reverse of their final order: Spearman -1.
    builder = Builder()
    for i in range(6):
        builder.add(f"sam-{i}", "sam", [0.5, 0.9 - 0.05 * i, 0.7, 0.6 + 0.05 * i], lr=1e-3 * (i + 1), rho=0.1)
    from analysis.rungs import rung_correlations

    table = rung_correlations(builder.sweep()).set_index("optimizer")
    assert table.at["sam", "rung"] == 2 and table.at["sam", "trials"] == 6
    assert table.at["sam", "spearman"] == pytest.approx(-1.0)
    found = [w for w in sweep_warnings(builder.sweep()) if "ASHA's rung" in w]
    assert found == ["ASHA's rung at epoch 2 ranks the completed search trials unlike their final val accuracy "
                     "(Spearman below 0.5: SAM -1.00 over 6): early stopping there may drop the configurations "
                     "that end best; raise grace_period past the schedule's annealing"]


# ---- the console summary ---------------------------------------------------------------------

def test_summary_prints_warnings_first_then_the_primary_contrast_then_both_arms(sweep):
    lines = sweep_summary(sweep).splitlines()
    warnings = len(sweep_warnings(sweep))
    assert all(line.startswith("warning: ") for line in lines[:warnings])
    # ZSharp - SAM by seed: +0.01, 0, -0.01, +0.01, +0.02: mean +0.60 points, P 3.5 of 5.
    assert lines[warnings].startswith("primary contrast, ZSharp against SAM at equal epochs (alone at "
                                      "alpha 0.05): +0.60 pts")
    assert "P(ZSharp > SAM) 0.70" in lines[warnings]
    assert lines[warnings + 1].startswith("  with 1 replicate x 5 seeds, differences below")
    assert "one replicate cannot measure" in lines[warnings + 1]
    text = "\n".join(lines[warnings:])
    assert text.index("at equal epochs (every") < text.index("at equal gradient evaluations")
    assert "re-searched for their epochs on val" in text and "Adam (2x epochs)" in text
    assert "conditional on one search" in text
    assert "84.6%" in text and "85.4%" in text  # ZSharp's and Adam 2x's mean test accuracy
    assert len(lines) < 45


def test_summary_prints_each_secondary_test_once(sweep):
    text = sweep_summary(sweep)
    # 5 distinct tests, the primary apart: the equal-compute arm repeats none of the others.
    assert text.count("Holm p") == 4


def test_a_replicated_sweep_has_intervals_over_replicates_and_a_power_line():
    sweep = replicated()
    result = comparison(sweep)
    assert result.replicates == 3 and not result.conditional
    summary = result.arms[EQUAL_EPOCHS].summary.set_index("optimizer")
    assert summary.at["sam", "replicates"] == 3 and summary.at["sam", "runs"] == 15
    assert summary.at["sam", "mean"] == pytest.approx(0.84)  # the shifts cancel
    # Without per-example results, replicates then seeds; the replicates' means 0.84, 0.87
    # and 0.81 spread the mean far more than five seeds of one replicate would.
    assert summary.at["sam", "high"] - summary.at["sam", "low"] > 0.05
    assert summary.at["sam", "df"] == pytest.approx(2.0)
    text = sweep_summary(sweep)
    assert "95% interval over 3 replicates, their seeds (test examples not recorded: not resampled)" in text
    power = next(line for line in text.splitlines() if "differences below" in line)
    assert power.startswith("  with 3 replicates x 5 seeds, differences below")
    assert "to resolve 0.5 points, about" in power and "CPU-" in power
    assert not any(w.startswith("one replicate") for w in sweep_warnings(sweep))


def test_summary_without_a_confirm_stage_says_single_runs():
    text = sweep_summary(build(confirm=False))
    assert text.splitlines()[0].startswith("warning: no confirm stage")
    assert "single runs, not a verdict" in text and "test accuracy" not in text


# ---- the report ------------------------------------------------------------------------------

def test_report_page_has_the_warnings_box_first_and_both_arms(sweep):
    page = report.render_html(sweep, importance_min_trials=3)
    box, comparison_section = page.index("id='warnings'"), page.index("id='comparison'")
    assert box < comparison_section
    assert "Adam: its best lr lies at the top" in page[box:comparison_section]
    for text in ("At equal epochs", "At equal gradient evaluations",
                 "Paired by replicate and seed, against SAM, at equal epochs",
                 "Paired by replicate and seed, against Adam (2x epochs), at equal gradient evaluations",
                 "wins 3 of 5 (1 tie)", "final test acc (mean of replicates)", "ZSharp (primary)",
                 "Primary contrast, ZSharp against SAM at equal epochs: +0.60 pts",
                 "searched again at their epochs", "one Holm family (4 tests)",
                 "earlier reads of this test split"):
        assert text in page, text


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
    from analysis.flatness import flatness_summary, flatness_warnings
    from analysis.text import label
    from analysis.inputs import ReportInputs
    from analysis.tables import flatness_tables

    summary = flatness_summary(sweep).set_index("optimizer")
    half = t.ppf(0.975, 4) * math.sqrt(2.5) / math.sqrt(5)
    for optimizer, base in FLAT_BASE.items():
        row = summary.loc[optimizer]
        assert row["n"] == 5 and row["replicates"] == 1  # the equal-epochs runs only (not Adam's 2x runs)
        assert row["hessian_top_eig_mean"] == pytest.approx(base + 2)
        assert (row["hessian_top_eig_low"], row["hessian_top_eig_high"]) == pytest.approx((base + 2 - half, base + 2 + half))
        assert row["hessian_trace_mean"] == pytest.approx(10 * (base + 2))
        assert row["hessian_trace_error"] == base + 4  # the largest SE of a run: seed 4's
        assert row["hessian_top_eig_rough"] == row["hessian_trace_rough"] == 0
    assert flatness_warnings(sweep) == []
    fig = figure_flatness(sweep)  # the measures invariant to rescaling, one point per seed
    assert [a.text for a in fig.layout.annotations] == ["against adaptive worst-case sharpness",
                                                        "against adaptive average-case sharpness"]
    for optimizer in FLAT_BASE:
        points = [t for t in fig.data if t.legendgroup == optimizer]
        seeds = [FLAT_BASE[optimizer] + s for s in SEEDS]
        assert len(points) == 2 and all(len(p.x) == 5 for p in points)
        assert sorted(points[0].x) == pytest.approx([v / 200 for v in seeds])
        assert sorted(points[1].x) == pytest.approx([v / 1000 for v in seeds])
        assert sorted(points[1].error_x.array) == pytest.approx([v / 10_000 for v in seeds])  # each run's SE
        assert sorted(points[0].y) == pytest.approx(sorted(FINAL_TEST[optimizer]))
    profiles = figure_loss_profiles(sweep)
    for optimizer, base in FLAT_BASE.items():
        mean = next(t for t in profiles.data if t.name == label(optimizer))
        assert list(mean.x) == [-1.0, -0.5, 0.0, 0.5, 1.0]  # rise over t = 0, mean over seeds
        assert list(mean.y) == pytest.approx([(base + 2) * t * t for t in mean.x])
    # The axis spans the wells' inner half (|t| <= 0.5), where they differ, not the rises at |t| = 1.
    top = max((base + 2) * 0.25 for base in FLAT_BASE.values())
    assert list(profiles.layout.yaxis.range) == pytest.approx([-0.05 * top, 1.15 * top])
    html = flatness_tables(ReportInputs(sweep))
    headers = ["adaptive worst-case sharpness", "adaptive average-case sharpness",
               "top Hessian eigenvalue (not invariant to rescaling)", "Hessian trace (not invariant to rescaling)",
               "worst-case sharpness (not invariant to rescaling)"]
    assert [html.index(f"<th>{h}</th>") for h in headers] == sorted(html.index(f"<th>{h}</th>") for h in headers)
    assert "Sharpness at radius 0.05" in html and "rough" not in html.split("</table>")[0]
    assert "42 [40, 44]; Lanczos residual &lt;= 0.44" in html  # Adam: mean, interval, seed 4's residual
    text = report.FIGURES["flatness"].text
    assert "BatchNorm in eval mode (its running statistics, as PyHessian measures)" in text
    assert "invariant" in text and "labelled so" in text


def with_flatness(sweep: Sweep, changed: dict[str, dict[int, dict]]) -> Sweep:
    """A copy of `sweep` whose equal-epochs confirm runs of optimizer o and seed s take
    changed[o][s] (column -> value)."""
    trials = sweep.trials.copy()
    for optimizer, seeds in changed.items():
        for seed, values in seeds.items():
            run = ((trials["stage"] == "confirm") & (trials["budget_arm"] == EQUAL_EPOCHS)
                   & (trials["optimizer"] == optimizer) & (trials["seed"] == seed))
            for column, value in values.items():
                trials.loc[run, column] = value
    return Sweep(sweep.name, trials, sweep.epochs, sweep.space, sweep.meta)


def test_flatness_warnings_count_each_optimizers_runs_whose_errors_are_too_large(sweep):
    from analysis.flatness import flatness_summary, flatness_warnings
    from analysis.inputs import ReportInputs
    from analysis.tables import flatness_tables

    # ZSharp seeds 0 and 1: residual 20% and 11% of the eigenvalue (10 and 11); one at 10%
    # exactly is not rough. Adam seed 3: the trace's SE 31% of the trace (430).
    changed = with_flatness(sweep, {"zsharp": {0: {"hessian_top_eig_residual": 2.0},
                                               1: {"hessian_top_eig_residual": 1.21},
                                               2: {"hessian_top_eig_residual": 1.2}},
                                    "adam": {3: {"hessian_trace_se": 133.3}}})
    assert flatness_warnings(changed) == [
        "flatness: the Lanczos residual of the top Hessian eigenvalue exceeds 10% of it in 2 of 5 ZSharp "
        "runs (up to 20%): those values are rough; raise flatness_lanczos_steps (now 20)",
        "flatness: the SE of the Hessian trace exceeds 30% of it in 1 of 5 Adam runs (up to 31%): those "
        "values are rough; raise flatness_probes (now 20)"]
    summary = flatness_summary(changed).set_index("optimizer")
    assert summary.loc["zsharp", "hessian_top_eig_rough"] == 2 and summary.loc["adam", "hessian_trace_rough"] == 1
    html = flatness_tables(ReportInputs(changed))
    assert "Lanczos residual &lt;= 2, rough in 2 of 5 runs" in html and "SE &lt;= 1.3e+02, rough in 1 of 5 runs" in html
    text = sweep_summary(changed)
    assert "(Lanczos residual <= 2, rough in 2 of 5 runs)" in text
    assert "  rough: a run's Lanczos residual above 10% of its top Hessian eigenvalue (raise " \
           "flatness_lanczos_steps); a run's SE above 30% of its Hessian trace (raise flatness_probes)" in text


def test_flatness_summarises_each_optimizers_best_configuration_only():
    """A sweep that confirms 2 configurations: the rank-2 runs (5 more seeds, values 100x)
    are not counted as seeds of the rank-1 configuration."""
    from analysis.flatness import flatness_summary

    builder = Builder()
    search_stage(builder)
    confirm_stage(builder)
    for seed in SEEDS:
        flat = {k: 100 * v if isinstance(v, float) else v for k, v in flat_values("sam", seed).items()}
        builder.add(f"sam-rank2-{seed}", "sam", peaked_curve(0.7, MAX_EPOCHS), stage="confirm", arm=EQUAL_EPOCHS,
                    seed=seed, flat=flat, lr=2e-3, rho=0.05)
        builder.rows[-1]["confirm_rank"] = 2
    row = flatness_summary(builder.sweep()).set_index("optimizer").loc["sam"]
    assert row["n"] == 5 and row["hessian_top_eig_mean"] == pytest.approx(FLAT_BASE["sam"] + 2)


def test_flatness_intervals_are_over_the_replicates_means_when_the_search_was_replicated(sweep):
    """Replicate 0 holds seeds 0 and 1, replicate 1 seeds 2-4: the means of base + seed are
    base + 0.5 and base + 3, so the mean is base + 1.75 and the t interval, on 1 degree of
    freedom, is +- t(0.975, 1) * s / sqrt(2), s the two means' sample std (2.5 / sqrt(2))."""
    from analysis.flatness import flatness_summary
    from analysis.inputs import ReportInputs
    from analysis.tables import flatness_tables

    replicated = with_flatness(sweep, {o: {s: {"replicate": int(s >= 2)} for s in SEEDS} for o in FLAT_BASE})
    half = scipy_stats.t.ppf(0.975, 1) * (2.5 / math.sqrt(2)) / math.sqrt(2)
    summary = flatness_summary(replicated).set_index("optimizer")
    for optimizer, base in FLAT_BASE.items():
        row = summary.loc[optimizer]
        assert row["n"] == 5 and row["replicates"] == 2
        assert row["hessian_top_eig_mean"] == pytest.approx(base + 1.75)
        assert (row["hessian_top_eig_low"], row["hessian_top_eig_high"]) == pytest.approx(
            (base + 1.75 - half, base + 1.75 + half))
    assert "interval over the replicates&#x27; means (each over its seeds)" in flatness_tables(ReportInputs(replicated))
    # One replicate only: over the runs, as without the column.
    single = with_flatness(sweep, {o: {s: {"replicate": 0} for s in SEEDS} for o in FLAT_BASE})
    pd.testing.assert_frame_equal(flatness_summary(single), flatness_summary(sweep))


def test_the_summary_prints_the_invariant_flatness_measures_first(sweep):
    lines = sweep_summary(sweep).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("flatness of the equal-epochs runs"))
    assert lines[start] == ("flatness of the equal-epochs runs, means over seeds (diagnostics, not the verdict; "
                            "each optimizer's best configuration; intervals in the report):")
    invariant, moved = lines[start + 1], lines[start + 5]
    assert [cell for cell in invariant.split("  ") if cell] == [
        "invariant to rescaling:", "seeds", "adaptive worst-case sharpness", "adaptive average-case sharpness"]
    assert [cell.strip() for cell in moved.split("  ") if cell] == [
        "not invariant to rescaling:", "seeds", "top Hessian eigenvalue", "Hessian trace", "worst-case sharpness"]
    adam = lines[start + 6].split()
    assert adam[:3] == ["Adam", "5", "42"] and "(Lanczos residual <= 0.44)" in lines[start + 6]
    assert not any(line.strip().startswith("rough:") for line in lines)

def test_the_longer_runs_label_is_the_arms_factor_in_that_sweep(monkeypatch):
    """"2x epochs" is computed, not written, from the sweep's own optimizers: beside a
    3-pass optimizer, Adam's equal-compute runs are 3x (the plan's arm and the report's
    label agree); in a sweep without it they stay 2x, whatever else is registered."""
    from trainables import catalog
    from tune.budget import budget_arms

    monkeypatch.setattr(catalog, "_OPTIMIZERS", dict(catalog._OPTIMIZERS))  # the registration is undone
    assert run_label("adam", EQUAL_COMPUTE, ["adam", "sam"]) == "Adam (2x epochs)"
    catalog.register_optimizer(catalog.OptimizerInfo("thrice", "three passes a step", 3, "trainables.optim:SAM",
                                                     (catalog.RHO,), label="Thrice"))
    assert budget_arms(["adam", "thrice"])["adam"] == [(EQUAL_EPOCHS, 1), (EQUAL_COMPUTE, 3)]
    assert run_label("adam", EQUAL_COMPUTE, ["adam", "thrice"]) == "Adam (3x epochs)"
    assert budget_arms(["adam", "sam"])["adam"] == [(EQUAL_EPOCHS, 1), (EQUAL_COMPUTE, 2)]
    assert run_label("adam", EQUAL_COMPUTE, ["adam", "sam"]) == "Adam (2x epochs)"
    assert run_label("adam", EQUAL_EPOCHS, ["adam", "thrice"]) == "Adam"

"""analysis.stats against values worked out by hand, against scipy's bootstrap, and against
simulations of whole tuned pipelines whose truth is known (coverage, false positives)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.stats import (
    Hierarchy,
    Spread,
    compare,
    holm,
    holm_across,
    secondary_tests,
    summarize,
    t_interval,
    verdict_for,
)

T_975_2 = 4.302652729911275  # Student t quantile 0.975 with 2 degrees of freedom (tables)


def runs(values: dict, replicates: int = 1, correct: dict | None = None) -> pd.DataFrame:
    """A confirm-stage frame: per optimizer, its accuracies in replicate-major order
    (`replicates` replicates of equal size, seeds 0.. within each), with per-example
    results where `correct` gives them."""
    rows = []
    for optimizer, accuracies in values.items():
        per = len(accuracies) // replicates
        for i, accuracy in enumerate(accuracies):
            row = {"optimizer": optimizer, "replicate": i // per, "seed": i % per, "test_acc": accuracy}
            if correct is not None:
                row["test_correct"] = np.asarray(correct[optimizer][i])
            rows.append(row)
    return pd.DataFrame(rows)


# ---- the bootstrap's draws, by hand and against scipy --------------------------------------


def test_weights_of_every_draw_sum_to_one_and_follow_the_replicates():
    hierarchy = Hierarchy([0, 0, 0, 1, 1, 2], examples=None, n_boot=500, seed=1)
    np.testing.assert_allclose(hierarchy.weights.sum(1), 1.0)
    np.testing.assert_allclose(hierarchy.base, [1 / 9] * 3 + [1 / 6] * 2 + [1 / 3])  # mean of means
    # A replicate's weight in a draw is a multiple of 1/R: how many copies of it were drawn.
    per_replicate = np.stack([hierarchy.weights[:, g].sum(1) for g in hierarchy.groups], 1)
    np.testing.assert_allclose(per_replicate * 3, np.round(per_replicate * 3), atol=1e-12)


def test_two_levels_have_the_variance_worked_out_by_hand():
    # Drawing R replicates, then N runs within each copy: the draws' variance is
    # var(replicate means) / R + mean(within variance) / (R N), population variances.
    rng = np.random.default_rng(3)
    values = (rng.normal(0.9, 0.02, (4, 1)) + rng.normal(0, 0.01, (4, 5))).ravel()
    means, within = values.reshape(4, 5).mean(1), values.reshape(4, 5).var(1)
    expected = means.var() / 4 + within.mean() / 20
    hierarchy = Hierarchy(np.repeat(range(4), 5), None, n_boot=40_000, seed=0)
    draws = hierarchy.weights @ values
    assert draws.var() == pytest.approx(expected, rel=0.03)
    assert draws.mean() == pytest.approx(values.mean(), abs=3e-4)


def test_one_replicate_is_scipys_bootstrap_of_the_seeds():
    values = np.array([0.91, 0.93, 0.90, 0.95, 0.92, 0.94, 0.89])
    draws = Hierarchy([0] * 7, None, n_boot=20_000, seed=2).weights @ values
    ours = np.quantile(draws, [0.025, 0.975])
    theirs = stats.bootstrap((values,), np.mean, n_resamples=20_000, method="percentile",
                             rng=np.random.default_rng(0)).confidence_interval
    assert ours == pytest.approx([theirs.low, theirs.high], abs=1.5e-3)


def test_the_test_examples_alone_give_the_binomial_spread():
    correct = np.zeros(400)
    correct[:300] = 1  # one run, 75% of 400 examples
    hierarchy = Hierarchy([0], examples=400, n_boot=8000, seed=4)
    (_, (accuracy,)), *rest = list(hierarchy.reweighted([correct[None]]))
    draws = np.concatenate([accuracy[0]] + [a[0] for _, (a,) in rest])
    assert draws.std() == pytest.approx(math.sqrt(0.75 * 0.25 / 400), rel=0.05)


def test_the_interval_is_t_at_satterthwaites_df():
    draws, test = np.array([0.0, 1.0, 2.0, 3.0]), np.zeros(4)
    spread = Spread(1.5, draws, test, top_units=3)
    se = np.std(draws, ddof=1)
    assert spread.df == pytest.approx(2.0)  # no test-example part: the replicates' R - 1
    assert spread.interval(bounds=(-10, 10)) == pytest.approx((1.5 - T_975_2 * se, 1.5 + T_975_2 * se))
    # Half of the variance from the test examples: (v)^2 / ((v/2)^2 / 2) = 8 degrees of freedom.
    half = np.sqrt(np.var(draws, ddof=1) / 2) * np.array([-1.0, 1.0, -1.0, 1.0])
    assert Spread(1.5, draws, half * np.sqrt(3 / 4), 3).df == pytest.approx(8.0)
    assert all(math.isnan(x) for x in Spread(1.5, draws, test, top_units=1).interval())


def test_accuracy_intervals_stay_inside_zero_and_one():
    # Two seeds 10 points apart at 99%: +- t_{1} x se would pass 100%.
    table = summarize(runs({"sam": [0.99, 0.89]}))
    assert 0.0 <= table["low"][0] and table["high"][0] <= 1.0
    assert table["high"][0] == 1.0


# ---- pairs and verdicts ----------------------------------------------------------------------


def test_pairs_match_by_replicate_and_seed():
    a = runs({"zsharp": [0.90, 0.91, 0.92, 0.93, 0.94, 0.95]}, replicates=2)
    b = runs({"sam": [0.89, 0.90, 0.90, 0.92, 0.93, 0.10]}, replicates=2)
    b = b[~((b["replicate"] == 1) & (b["seed"] == 2))]  # SAM lacks that run: its pair goes
    row = compare(pd.concat([a, b]).sample(frac=1, random_state=0), "zsharp", "sam")
    assert row["pairs"] == 5 and row["replicates"] == 2
    # Differences 0.01, 0.01, 0.02 | 0.01, 0.01: the mean of the replicates' means.
    assert row["mean_diff"] == pytest.approx((0.04 / 3 + 0.01) / 2)
    assert (row["wins"], row["ties"]) == (5, 0)


def test_p_a_beats_b_counts_matched_runs_with_ties_as_half():
    frame = runs({"a": [0.9, 0.8, 0.7, 0.6], "b": [0.8, 0.8, 0.9, 0.5]}, replicates=2)
    row = compare(frame, "a", "b", n_boot=200)
    # Replicate 0: a wins, tie -> 0.75; replicate 1: loses, wins -> 0.5; mean 0.625.
    assert row["p_better"] == pytest.approx(0.625)
    assert 0 <= row["p_better_low"] <= row["p_better"] <= row["p_better_high"] <= 1


def test_one_image_per_seed_wins_are_not_better():
    # A gets exactly one more test image right than B on each of 5 seeds x 3 replicates
    # (a different image each time): every run wins and P(A > B) is 1, yet the runs agree
    # to the image, which is no evidence of a better pipeline.
    rng = np.random.default_rng(5)
    n, pairs = 360, 15
    b = rng.random((pairs, n)) < 0.95
    a = b.copy()
    for i in range(pairs):
        a[i, np.flatnonzero(~b[i])[i % 3]] = True
    row = compare(runs({"a": a.mean(1), "b": b.mean(1)}, 3, {"a": list(a), "b": list(b)}), "a", "b",
                  primary=True)
    assert row["wins"] == 15 and row["p_better"] == pytest.approx(1.0)
    assert not row["varies"] and math.isnan(row["p"])
    assert row["verdict"] == "no variation between paired runs"


def test_wins_on_one_image_vanish_when_test_examples_are_resampled():
    # A's edge is the same single image in every run (plus a second one in one run, so the
    # runs vary): over seeds alone that is a sure win, but a test set drawn again leaves
    # that image out about e^-1 of the time, and the interval holds 0.
    rng = np.random.default_rng(6)
    b = np.tile(rng.random(360) < 0.95, (15, 1))
    a = b.copy()
    a[:, np.flatnonzero(~b[0])[0]] = True
    a[0, np.flatnonzero(~b[0])[1]] = True
    frame = runs({"a": a.mean(1), "b": b.mean(1)}, 3, {"a": list(a), "b": list(b)})
    row = compare(frame, "a", "b", primary=True)
    assert row["varies"] and row["low"] <= 0 and row["verdict"] != "better"
    without_examples = compare(frame.drop(columns="test_correct"), "a", "b", primary=True)
    assert without_examples["low"] > 0  # what an interval over runs alone would claim


def test_two_pairs_have_no_p_and_no_verdict():
    # Both seeds exactly 10 points apart: once "Holm p 3.9e-15".
    row = compare(runs({"a": [0.9, 0.8], "b": [0.8, 0.7]}), "a", "b")
    assert math.isnan(row["p"]) and row["verdict"] == "too few pairs (n=2)"


@pytest.mark.parametrize("p, p_better, low, high, expected", [
    (0.01, 0.9, 0.002, 0.02, "better"),
    (0.01, 0.1, -0.02, -0.002, "worse"),
    (0.01, 0.7, 0.001, 0.004, "equivalent within +-0.5 points"),  # consistent but tiny
    (0.30, 0.6, -0.003, 0.004, "equivalent within +-0.5 points"),
    (0.30, 0.6, -0.003, 0.009, "no detectable difference"),
])
def test_verdict_words(p, p_better, low, high, expected):
    row = {"pairs": 15, "varies": True, "p_holm": p, "p_better": p_better, "low": low, "high": high}
    assert verdict_for(row, margin=0.005) == expected


def paired_table(rows: list[tuple]) -> pd.DataFrame:
    """Rows (optimizer, reference, arm, p, primary) with what the verdict reads."""
    return pd.DataFrame([{"optimizer": o, "reference": r, "arm": a, "p": p, "p_holm": p, "primary": pr,
                          "pairs": 15, "varies": True, "p_better": 0.9, "low": 0.01, "high": 0.02,
                          "se": 0.002, "df": 2.0, "mde": 0.5} for o, r, a, p, pr in rows])


def test_holm_by_hand():
    # Sorted: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; max(0.04 * 1, 0.06) = 0.06; input order back.
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, np.nan, 0.4]), [0.8, np.nan, 0.8])
    assert holm([]).size == 0


def test_the_primary_contrast_is_outside_the_holm_family():
    tables = [
        paired_table([("zsharp", "sam", "ee", 0.04, True), ("adam", "sam", "ee", 0.01, False),
                      ("asam", "sam", "ee", np.nan, False)]),
        paired_table([("sam", "adam", "ee", 0.01, False), ("zsharp", "adam", "ee", 0.03, False),
                      ("adam", "sam", "ec", 0.02, False)]),
    ]
    adjusted = holm_across(tables)
    assert secondary_tests(tables) == 3  # adam-sam counted once per arm; NaN is no test
    # Family: 0.01 x 3 = 0.03; 0.02 x 2 = 0.04; max(0.03, 0.04) = 0.04. The primary keeps 0.04.
    assert adjusted[0]["p_holm"].tolist()[:2] == pytest.approx([0.04, 0.03])
    assert adjusted[1]["p_holm"].tolist() == pytest.approx([0.03, 0.04, 0.04])
    assert adjusted[0]["verdict"].tolist()[0] == "better"
    assert "p_holm" in tables[0] and tables[0]["p_holm"].tolist()[1] == 0.01  # inputs unchanged
    # Detectable differences: the primary's as given; the family's at Holm's strictest
    # step, 0.05 / 3, with 2 df: (t_{1 - 0.05/6} + t_{0.8}) x se.
    strict = (stats.t.ppf(1 - 0.05 / 6, 2) + stats.t.ppf(0.8, 2)) * 0.002
    assert adjusted[0]["mde"].tolist()[:2] == pytest.approx([0.5, strict])


def test_holm_across_refuses_one_test_with_two_p_values():
    tables = [paired_table([("adam", "sam", "ee", 0.01, False)]),
              paired_table([("sam", "adam", "ee", 0.2, False)])]
    with pytest.raises(ValueError, match="not the same test"):
        holm_across(tables)


def test_replicates_for_a_difference_by_hand():
    # Runs' variance 4e-6 at R = 3 (1.2e-5 per replicate), no test part: with R' replicates
    # the se is sqrt(1.2e-5 / R'), the bar (t_{R'-1, .975} + t_{R'-1, .8}) se.
    rng = np.random.default_rng(0)
    draws = rng.normal(0, 1, 5000)
    draws = draws / draws.std(ddof=1) * 2e-3
    spread = Spread(0.0, draws, np.zeros(5000), top_units=3)
    needed = spread.replicates_for(0.005, replicates=3)

    def bar(r):
        return (stats.t.ppf(0.975, r - 1) + stats.t.ppf(0.8, r - 1)) * math.sqrt(1.2e-5 / r)
    assert bar(needed) <= 0.005 < bar(needed - 1)
    # A test-example part alone above the bar: no number of replicates resolves it.
    assert Spread(0.0, draws, draws, top_units=3).replicates_for(0.005, 3) is None


def test_frames_that_would_be_misread_are_refused():
    twice = pd.concat([runs({"sam": [0.9, 0.91]}), runs({"sam": [0.8, 0.81]})])
    with pytest.raises(ValueError, match="several rows for replicate 0, seed 0"):
        summarize(twice)
    with pytest.raises(ValueError, match="NaN"):
        compare(runs({"sam": [0.9, np.nan], "zsharp": [0.9, 0.9]}), "zsharp", "sam")
    with pytest.raises(ValueError, match="replicate"):
        summarize(runs({"sam": [0.9]}).drop(columns="replicate"))


def test_t_interval_of_three_values_by_hand():
    low, high = t_interval([0.90, 0.92, 0.94], 0.95)
    half = T_975_2 * 0.02 / math.sqrt(3)  # mean 0.92, sample sd 0.02
    assert (low, high) == pytest.approx((0.92 - half, 0.92 + half), abs=1e-9)


# ---- simulations of whole pipelines ---------------------------------------------------------
#
# A tuned pipeline's test accuracy has three sources of variance: which configuration the
# search picked (a replicate effect), the seed (a run effect) and which examples the test
# set holds. A probit model makes them: run (r, s) has ability a = alpha + b_r + e_rs, and
# gets example i right when a - 0.8 z_i + 0.6 eta > 0 (z_i the example's difficulty, shared
# by every run; eta the run's luck on it). Its accuracy on the population is Phi(a), so the
# truth is E Phi(alpha + b + e) = Phi(alpha / sqrt(1 + sb^2 + sw^2)).


def pipelines(rng, replicates: int, seeds: int, examples: int, sb: float, sw: float,
              alpha: float = 2.05, shift: float = 0.0):
    """Per-example results (runs x examples) of two pipelines on one test set, run-major in
    replicate order, the second's ability shifted by `shift`; and the true accuracy of the
    first."""
    z = rng.normal(0, 1, examples)
    results = []
    for delta in (0.0, shift):
        ability = alpha + delta + rng.normal(0, sb, (replicates, 1)) + rng.normal(0, sw, (replicates, seeds))
        luck = rng.normal(0, 1, (replicates, seeds, examples))
        results.append((ability[..., None] - 0.8 * z + 0.6 * luck > 0).reshape(replicates * seeds, examples))
    return results, stats.norm.cdf(alpha / math.sqrt(1 + sb ** 2 + sw ** 2))


def test_the_hierarchical_interval_covers_the_truth_and_the_seed_interval_does_not():
    # 3 replicates x 5 seeds on 360 test examples (the quickstart's), the search's effect
    # (sd 0.14 on the probit scale, about 0.7 points) above the seeds' (0.3 points): the
    # interval over seeds alone misses the search's variance.
    rng = np.random.default_rng(11)
    hits, seed_hits = [], []
    for _ in range(400):
        (correct, _), truth = pipelines(rng, 3, 5, 360, sb=0.14, sw=0.06)
        frame = runs({"sam": correct.mean(1)}, 3, {"sam": list(correct)})
        row = summarize(frame, n_boot=500, seed=int(rng.integers(1000))).iloc[0]
        hits.append(row["low"] <= truth <= row["high"])
        low, high = t_interval(correct.mean(1))
        seed_hits.append(low <= truth <= high)
    # 400 simulations: a binomial standard error of 0.011 at 0.95.
    assert 0.92 <= np.mean(hits) <= 0.985
    assert np.mean(seed_hits) < 0.8


def test_equal_pipelines_are_rarely_called_different():
    # No true difference: "better" or "worse" in at most about 5% of comparisons.
    rng = np.random.default_rng(12)
    called = []
    for _ in range(200):
        (a, b), _ = pipelines(rng, 3, 5, 360, sb=0.14, sw=0.06)
        frame = runs({"a": a.mean(1), "b": b.mean(1)}, 3, {"a": list(a), "b": list(b)})
        called.append(compare(frame, "a", "b", primary=True, n_boot=500)["verdict"] in ("better", "worse"))
    assert np.mean(called) <= 0.08


def test_a_large_difference_is_found():
    rng = np.random.default_rng(13)
    verdicts = []
    for _ in range(40):
        (a, b), _ = pipelines(rng, 3, 5, 360, sb=0.05, sw=0.03, shift=-0.6)  # b about 4 points worse
        frame = runs({"a": a.mean(1), "b": b.mean(1)}, 3, {"a": list(a), "b": list(b)})
        verdicts.append(compare(frame, "a", "b", primary=True, n_boot=500)["verdict"])
    assert verdicts.count("better") >= 36 and "worse" not in verdicts

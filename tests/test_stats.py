"""analysis.stats against values worked out by hand, against scipy, and against simulations
whose truth is known (interval coverage, false positives under the null, power)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.stats import (
    bootstrap_interval,
    holm,
    holm_across,
    paired_differences,
    summarize_by_optimizer,
    t_interval,
    wins_and_ties,
)

T_975_2 = 4.302652729911275  # Student t quantile 0.975 with 2 degrees of freedom (tables)


def tidy(values_by_optimizer: dict, seeds_by_optimizer: dict | None = None) -> pd.DataFrame:
    """A confirm-stage frame: one row per (optimizer, seed), seeds 0.. unless given."""
    rows = []
    for config_id, (optimizer, values) in enumerate(values_by_optimizer.items()):
        seeds = (seeds_by_optimizer or {}).get(optimizer, range(len(values)))
        rows += [
            {"optimizer": optimizer, "config_id": config_id, "seed": seed, "test_acc": value}
            for seed, value in zip(seeds, values, strict=True)
        ]
    return pd.DataFrame(rows)


def simulated(rng, n_seeds: int, shifts: dict) -> pd.DataFrame:
    """SAM and the optimizers in `shifts` on the same seeds. A seed effect (sd 0.02, the
    spread across inits and data orders) is shared by every optimizer; each run adds its
    own noise (sd 0.01), so a paired difference has sd 0.01 * sqrt(2)."""
    seed_effect = 0.90 + rng.normal(0, 0.02, n_seeds)
    values = {
        optimizer: seed_effect + shift + rng.normal(0, 0.01, n_seeds)
        for optimizer, shift in {"sam": 0.0, **shifts}.items()
    }
    return tidy(values)


# Intervals and summaries, by hand.


def test_t_interval_of_three_values_by_hand():
    low, high = t_interval([0.90, 0.92, 0.94], 0.95)
    half = T_975_2 * 0.02 / math.sqrt(3)  # mean 0.92, sample sd 0.02
    assert low == pytest.approx(0.92 - half, abs=1e-9)
    assert high == pytest.approx(0.92 + half, abs=1e-9)


def test_summary_by_hand_and_sorted_best_first():
    table = summarize_by_optimizer(tidy({"sam": [0.90, 0.92, 0.94], "zsharp": [0.95] * 5}))
    assert table["optimizer"].tolist() == ["zsharp", "sam"]
    sam = table.set_index("optimizer").loc["sam"]
    assert sam["n"] == 3
    assert sam["mean"] == pytest.approx(0.92)
    assert sam["std"] == pytest.approx(0.02)
    assert sam["high"] - sam["mean"] == pytest.approx(T_975_2 * 0.02 / math.sqrt(3))
    assert bool(sam["small_sample"])
    zsharp = table.set_index("optimizer").loc["zsharp"]
    assert not zsharp["small_sample"]
    # Identical seeds: no spread, a zero-width interval.
    assert zsharp["low"] == pytest.approx(0.95) and zsharp["high"] == pytest.approx(0.95)


def test_one_seed_has_no_std_and_no_interval():
    assert all(math.isnan(bound) for bound in t_interval([0.9]))
    assert all(math.isnan(bound) for bound in bootstrap_interval([0.9]))
    for method in ("t", "bootstrap"):
        row = summarize_by_optimizer(tidy({"sam": [0.9]}), method=method).iloc[0]
        assert row["n"] == 1 and row["mean"] == pytest.approx(0.9)
        assert math.isnan(row["std"]) and math.isnan(row["low"]) and math.isnan(row["high"])
        assert bool(row["small_sample"])


def test_bootstrap_of_two_values_by_hand():
    # Resampled means of [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% quantiles are 0 and 1.
    assert bootstrap_interval([0.0, 1.0], 0.95, n_boot=4000, seed=3) == (0.0, 1.0)


def test_bootstrap_is_reproducible_from_its_seed():
    values = np.random.default_rng(0).normal(0.9, 0.01, 8)
    assert bootstrap_interval(values, seed=1) == bootstrap_interval(values, seed=1)
    assert bootstrap_interval(values, seed=1) != bootstrap_interval(values, seed=2)
    low, high = bootstrap_interval(values, seed=1)
    assert values.min() <= low < values.mean() < high <= values.max()
    frame = tidy({"sam": values})
    once = summarize_by_optimizer(frame, method="bootstrap", n_boot=2000, seed=5)
    again = summarize_by_optimizer(frame, method="bootstrap", n_boot=2000, seed=5)
    pd.testing.assert_frame_equal(once, again)


def test_summary_rejects_an_unknown_method():
    with pytest.raises(ValueError, match="method"):
        summarize_by_optimizer(tidy({"sam": [0.9, 0.91]}), method="bayes")


# Holm and seeds won, by hand.


def test_holm_by_hand():
    # Sorted: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; max(0.04 * 1, 0.06) = 0.06; input order back.
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])


def test_holm_caps_at_one_and_passes_nan_through():
    # NaN is no test, so m = 2: 0.4 * 2 = 0.8, max(0.5 * 1, 0.8) = 0.8.
    np.testing.assert_allclose(holm([0.5, np.nan, 0.4]), [0.8, np.nan, 0.8])
    np.testing.assert_allclose(holm([0.6, 0.7]), [1.0, 1.0])  # 1.2 and 1.2, capped
    assert holm([]).size == 0


def test_holm_is_monotone_and_never_below_the_raw_p():
    raw = np.random.default_rng(0).uniform(0, 0.2, 12)
    adjusted = holm(raw)
    order = np.argsort(raw)
    assert np.all(np.diff(adjusted[order]) >= 0)
    assert np.all(adjusted >= raw) and np.all(adjusted <= 1)


def test_wins_and_ties_count_pairs():
    # Wins at indices 0 and 3, a tie at 1, a loss at 2.
    assert wins_and_ties([1, 2, 3, 4], [0, 2, 5, 1]) == (2, 1)
    assert wins_and_ties([0.9, 0.9], [0.9, 0.9]) == (0, 2)
    assert wins_and_ties([], []) == (0, 0)
    with pytest.raises(ValueError, match="paired"):
        wins_and_ties([1, 2], [1])


def paired_table(rows: list[tuple], n: int = 5) -> pd.DataFrame:
    """A paired table with the columns holm_across reads: (optimizer, reference, arm,
    mean_diff, p_t) per row, n pairs each."""
    return pd.DataFrame([{"optimizer": o, "reference": r, "arm": a, "mean_diff": d, "p_t": p, "n": n}
                         for o, r, a, d, p in rows])


def test_holm_across_tables_counts_a_pair_shown_twice_once():
    # Against SAM and against Adam, in two arms. Adam-SAM appears in both tables of an arm
    # (with the difference's sign flipped), ZSharp-SAM in both arms' tables against SAM
    # on the same runs (arm equal_epochs in both): 5 distinct tests, not 8.
    tables = [
        paired_table([("adam", "sam", "ee", -0.02, 0.01), ("zsharp", "sam", "ee", 0.01, 0.04)]),
        paired_table([("sam", "adam", "ee", 0.02, 0.01), ("zsharp", "adam", "ee", 0.03, 0.03)]),
        paired_table([("adam", "sam", "ec", 0.01, 0.002), ("zsharp", "sam", "ee", 0.01, 0.04)]),
        paired_table([("sam", "adam", "ec", -0.01, 0.002), ("zsharp", "adam", "ec", -0.01, 0.02)]),
    ]
    # Sorted: 0.002 x 5 = 0.01; 0.01 x 4 = 0.04; 0.02 x 3 = 0.06; max(0.03 x 2, 0.06) = 0.06;
    # max(0.04 x 1, 0.06) = 0.06.
    adjusted = holm_across(tables)
    assert [p for t in adjusted for p in t["p_holm"]] == pytest.approx(
        [0.04, 0.06, 0.04, 0.06, 0.01, 0.06, 0.01, 0.06])
    assert [t["significant"].tolist() for t in adjusted] == [[True, False], [True, False],
                                                             [True, False], [True, False]]
    assert [t["verdict"].tolist() for t in adjusted] == [
        ["worse", "no detectable difference"], ["better", "no detectable difference"],
        ["better", "no detectable difference"], ["worse", "no detectable difference"]]
    assert "p_holm" not in tables[0]  # the inputs are left as they were


def test_holm_across_without_arms_is_one_arm_and_skips_untested_rows():
    tables = [paired_table([("zsharp", "sam", None, 0.01, 0.02), ("asam", "sam", None, 0.0, np.nan)]),
              paired_table([("sam", "zsharp", None, -0.01, 0.02), ("fsam", "zsharp", None, 0.02, 0.03)],
                           n=3)]
    adjusted = holm_across([t.drop(columns="arm") for t in tables])
    # Two tests (NaN is none): 0.02 x 2 = 0.04, max(0.03 x 1, 0.04) = 0.04.
    assert adjusted[0]["p_holm"].tolist()[0] == pytest.approx(0.04)
    assert math.isnan(adjusted[0]["p_holm"].tolist()[1])
    assert adjusted[1]["p_holm"].tolist() == pytest.approx([0.04, 0.04])
    assert adjusted[1]["verdict"].tolist() == ["too few seeds (n=3)"] * 2


def test_holm_across_refuses_one_test_with_two_p_values():
    tables = [paired_table([("adam", "sam", "ee", -0.02, 0.01)]),
              paired_table([("sam", "adam", "ee", 0.02, 0.2)])]
    with pytest.raises(ValueError, match="not the same test"):
        holm_across(tables)


# Paired comparisons, by hand and against scipy.


def test_paired_t_and_wilcoxon_by_hand():
    sam = np.array([0.90, 0.91, 0.89, 0.92, 0.90, 0.88])
    zsharp = sam + np.array([0.01, 0.02, 0.03, 0.00, 0.04, 0.02])
    row = paired_differences(tidy({"sam": sam, "zsharp": zsharp})).iloc[0]
    # The differences have mean 0.02 and sd sqrt(10e-4 / 5) = sqrt(2e-4): t = sqrt(12).
    t = 0.02 / (math.sqrt(2e-4) / math.sqrt(6))
    assert t == pytest.approx(math.sqrt(12))
    assert row["n"] == 6
    assert row["mean_diff"] == pytest.approx(0.02)
    assert row["p_t"] == pytest.approx(2 * stats.t.sf(t, df=5), rel=1e-9)
    assert row["p_t"] == pytest.approx(stats.ttest_rel(zsharp, sam).pvalue, rel=1e-9)
    half = stats.t.ppf(0.975, 5) * math.sqrt(2e-4) / math.sqrt(6)
    assert (row["low"], row["high"]) == pytest.approx((0.02 - half, 0.02 + half))
    assert row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(zsharp - sam).pvalue)
    assert (row["wins"], row["ties"]) == (5, 1)  # one tie at seed 3


def test_wilcoxon_exact_p_by_hand_and_absent_below_six_pairs():
    # Six positive differences of distinct sizes: only the all-positive and the
    # all-negative sign patterns are this extreme, so p = 2 / 2**6.
    sam = np.full(6, 0.80)
    row = paired_differences(tidy({"sam": sam, "asam": sam + np.arange(1, 7) / 100})).iloc[0]
    assert row["p_wilcoxon"] == pytest.approx(2 / 64)
    row = paired_differences(tidy({"sam": sam[:5], "asam": sam[:5] + 0.01})).iloc[0]
    assert math.isnan(row["p_wilcoxon"])


def test_verdicts_and_holm_across_the_table():
    rng = np.random.default_rng(1)
    sam = 0.90 + rng.normal(0, 0.01, 8)
    frame = tidy({
        "sam": sam,
        "zsharp": sam + 0.03 + rng.normal(0, 0.003, 8),
        "sgd": sam - 0.05 + rng.normal(0, 0.003, 8),
        "adam": sam + rng.normal(0, 0.003, 8),
    })
    table = paired_differences(frame, reference="sam")
    assert table["optimizer"].tolist() == ["zsharp", "adam", "sgd"]  # best first
    assert (table["reference"] == "sam").all()
    assert table.set_index("optimizer")["verdict"].to_dict() == {
        "zsharp": "better", "adam": "no detectable difference", "sgd": "worse",
    }
    np.testing.assert_allclose(table["p_holm"], holm(table["p_t"]))
    assert table["significant"].tolist() == [True, False, True]


# Small samples and seed matching.


def test_three_seeds_are_never_significant():
    frame = tidy({"sam": [0.50, 0.52, 0.51], "zsharp": [0.90, 0.93, 0.90]})
    row = paired_differences(frame).iloc[0]
    assert row["p_holm"] < 0.001  # the test alone would call it
    assert not row["significant"]
    assert row["verdict"] == "too few seeds (n=3)"
    assert summarize_by_optimizer(frame)["small_sample"].all()


def test_one_matched_seed_has_no_interval_or_p():
    row = paired_differences(tidy({"sam": [0.9], "zsharp": [0.95]})).iloc[0]
    assert row["n"] == 1 and row["mean_diff"] == pytest.approx(0.05)
    assert math.isnan(row["low"]) and math.isnan(row["p_t"]) and math.isnan(row["p_holm"])
    assert not row["significant"] and row["verdict"] == "too few seeds (n=1)"


def test_pairs_are_matched_by_seed():
    # SAM ran seeds 0-5, ZSharp seeds 2-9. Seeds 0-1 lack ZSharp; seeds 6-9 (ZSharp at
    # 0.10, which would drag an unpaired mean down) lack SAM: all are dropped.
    sam = [0.80, 0.81, 0.82, 0.83, 0.84, 0.85]
    zsharp = [0.84, 0.84, 0.86, 0.86] + [0.10] * 4
    frame = tidy({"sam": sam, "zsharp": zsharp}, {"sam": range(6), "zsharp": range(2, 10)})
    shuffled = frame.sample(frac=1, random_state=0)  # the order of rows must not matter
    row = paired_differences(shuffled).iloc[0]
    assert row["seeds"] == (2, 3, 4, 5)
    assert row["differences"] == pytest.approx((0.02, 0.01, 0.02, 0.01))
    assert row["n"] == 4 and row["mean_diff"] == pytest.approx(0.015)
    assert row["verdict"] == "too few seeds (n=4)"


def test_no_common_seed_gives_an_empty_comparison():
    frame = tidy({"sam": [0.8, 0.8], "fsam": [0.9, 0.9]}, {"sam": [0, 1], "fsam": [2, 3]})
    row = paired_differences(frame).iloc[0]
    assert row["n"] == 0 and math.isnan(row["mean_diff"]) and row["wins"] == row["ties"] == 0
    assert row["verdict"] == "too few seeds (n=0)"


def test_a_missing_reference_is_named():
    with pytest.raises(ValueError, match="'sam'"):
        paired_differences(tidy({"adam": [0.9, 0.91], "zsharp": [0.92, 0.93]}), reference="sam")


def test_frames_that_would_be_misread_are_refused():
    two_configs = pd.concat([tidy({"sam": [0.9, 0.91]}), tidy({"sam": [0.8, 0.81]})])
    for call in (summarize_by_optimizer, paired_differences):
        with pytest.raises(ValueError, match="several rows for seed=0"):
            call(two_configs)
    with pytest.raises(ValueError, match="NaN"):
        paired_differences(tidy({"sam": [0.9, np.nan], "zsharp": [0.9, 0.9]}))
    with pytest.raises(ValueError, match="test_acc"):
        summarize_by_optimizer(tidy({"sam": [0.9]}).drop(columns="test_acc"))


# Simulations with a known truth; each uses a fixed seed, so each result is reproducible.


def coverage(interval, n: int, repetitions: int = 2000) -> float:
    """Fraction of `repetitions` samples of n normal values whose interval holds the mean."""
    rng = np.random.default_rng(42)
    samples = rng.normal(0.90, 0.01, size=(repetitions, n))
    hits = [low <= 0.90 <= high for low, high in map(interval, samples)]
    return float(np.mean(hits))


def test_t_interval_covers_95_percent():
    # Binomial standard error of 2000 repetitions at 0.95: 0.005, so 0.93-0.97 is 4 of them.
    assert 0.93 <= coverage(lambda x: t_interval(x, 0.95), n=8) <= 0.97


def test_bootstrap_under_covers_at_small_n():
    # The percentile bootstrap treats the sample as the population: at n=8 its nominal 95%
    # is about 88% (roughly mean ± 1.96 · s·sqrt(7/8)/sqrt(8) where the t interval uses the
    # quantile 2.36); at n=30 about 92-93%. Hence the t interval is the default.
    def boot(x):
        return bootstrap_interval(x, 0.95, n_boot=1000, seed=0)

    small, large = coverage(boot, n=8), coverage(boot, n=30)
    assert 0.85 <= small <= 0.91
    assert 0.91 <= large <= 0.97
    assert small < large


def test_null_false_positive_rate_is_at_most_alpha():
    # Same distribution for both optimizers, paired seeds, n=10: the true rate is 0.05.
    # 500 repetitions have a standard error of 0.01; 0.066 is 1.6 of them above 0.05.
    rng = np.random.default_rng(7)
    flagged = [
        paired_differences(simulated(rng, 10, {"zsharp": 0.0}))["significant"].iloc[0]
        for _ in range(500)
    ]
    assert np.mean(flagged) <= 0.066


def test_a_one_sd_difference_is_found_with_ten_seeds():
    # A shift of one sd of the paired differences (0.01 * sqrt(2)) at n=10: the paired
    # t-test's power is about 0.80 (noncentrality sqrt(10), 9 df).
    rng = np.random.default_rng(8)
    tables = [simulated(rng, 10, {"zsharp": 0.01 * math.sqrt(2)}) for _ in range(200)]
    verdicts = [paired_differences(frame)["verdict"].iloc[0] for frame in tables]
    assert verdicts.count("better") / len(verdicts) > 0.6
    assert "worse" not in verdicts

"""Seed-level statistics for comparing optimizers: intervals, paired tests, Holm.

The input is a tidy frame of confirm-stage results, one row per (optimizer, config_id,
seed) with the final-epoch test accuracy (`test_acc`, trainables.schema.VERDICT_METRIC, a
fraction in [0, 1]). The confirm stage reruns one chosen config per optimizer over several
seeds, so an optimizer may have at most one row per seed; a frame with more (several
configs of one optimizer) is refused rather than pooled, since pooling would count configs
as seeds.

Seeds are the unit of replication. A seed fixes initialisation, data order and
augmentation, so two optimizers run with the same seed share that noise, and differences
matched by seed are less noisy than a difference of means. With fewer than `MIN_SEEDS`
seeds, intervals are reported but flagged and no difference is called significant.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from trainables.schema import VERDICT_METRIC

ALPHA = 0.05  # family-wise error rate of the comparisons in one family (Holm)
# Below 5 seeds the standard deviation, and so any interval or test, hinges on one seed.
MIN_SEEDS = 5
# The exact two-sided Wilcoxon p-value for n pairs is at least 2 / 2**n (0.0625 at n=5),
# so with fewer than 6 pairs the test cannot reject at 0.05 and is not reported.
MIN_PAIRS_WILCOXON = 6

SUMMARY_COLUMNS = ["optimizer", "n", "mean", "std", "low", "high", "small_sample"]
PAIRED_COLUMNS = [
    "optimizer", "reference", "n", "mean_diff", "low", "high", "p_t", "p_wilcoxon",
    "wins", "ties", "p_holm", "significant", "verdict", "seeds", "differences",
]


def t_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """Student t interval for the mean: mean ± t_{(1+c)/2, n-1} · s / sqrt(n).

    Assumes independent values from a roughly normal distribution; s is the sample
    standard deviation (ddof=1). Fewer than 2 values: (nan, nan), as there is no estimate
    of the spread. Identical values give a zero-width interval.
    """
    x = _as_values(values)
    if x.size < 2:
        return (np.nan, np.nan)
    half = stats.t.ppf((1 + confidence) / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return (float(x.mean() - half), float(x.mean() + half))


def bootstrap_interval(
    values, confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean, reproducible from `seed`.

    Resamples the values with replacement `n_boot` times and returns the (1-c)/2 and
    (1+c)/2 quantiles of the resampled means. It assumes no distribution shape, but it
    treats the sample as the population and so is too narrow at small n: for 8 normal
    values a nominal 95% interval covers the true mean only about 88% of the time.
    Fewer than 2 values: (nan, nan).
    """
    x = _as_values(values)
    if x.size < 2:
        return (np.nan, np.nan)
    # Vectorised: one (n_boot, n) resample matrix, 0.8 MB for 10 000 x 10 seeds. scipy's
    # BCa is no better here (measured: 88% coverage at n=8, 93% at n=30) and is NaN when
    # every seed gives the same accuracy.
    found = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_boot,
                            method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    return (float(found.confidence_interval.low), float(found.confidence_interval.high))


def wins_and_ties(a, b) -> tuple[int, int]:
    """(pairs where a is higher, pairs where a and b are equal) of paired values a[i],
    b[i] (the same seed at the same position): counts a reader can check against the
    seeds, where a fraction of wins would hide how few seeds there are."""
    a, b = _as_values(a), _as_values(b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must be paired: lengths {a.size} and {b.size}")
    return int((a > b).sum()), int((a == b).sum())


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    With the m non-NaN p-values sorted ascending, p_(i) becomes max_{j<=i} (m - j + 1) p_(j),
    capped at 1; rejecting where the adjusted value is below alpha keeps the family-wise
    error rate at alpha under any dependence between the tests. NaN (no test) passes
    through and does not count towards m.
    """
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    m = int(tested.sum())
    order = np.argsort(p[tested], kind="stable")
    stepped = (m - np.arange(m)) * p[tested][order]
    # The running maximum keeps the adjusted values in the order of the raw ones.
    ranked = np.minimum(1.0, np.maximum.accumulate(stepped))
    adjusted_tested = np.empty(m)
    adjusted_tested[order] = ranked
    adjusted[tested] = adjusted_tested
    return adjusted


def summarize_by_optimizer(
    frame: pd.DataFrame,
    value: str = VERDICT_METRIC,
    confidence: float = 0.95,
    method: str = "t",
    n_boot: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per optimizer: n seeds, mean, sample std and an interval for the mean.

    `method` "t" gives the Student t interval (`t_interval`); "bootstrap" the seeded
    percentile bootstrap (`bootstrap_interval`, narrower than nominal at small n). Every
    optimizer is resampled with the same `seed`. `small_sample` flags n < MIN_SEEDS, whose
    intervals are shown but should not carry a claim; n < 2 has no std and no interval (NaN).
    Rows are sorted by mean, best first.
    """
    _check_frame(frame, value, "seed")
    if method not in ("t", "bootstrap"):
        raise ValueError(f"method must be 't' or 'bootstrap', not {method!r}")
    rows = []
    for optimizer, group in frame.groupby("optimizer", sort=True, observed=True):
        x = group[value].to_numpy(dtype=float)
        if method == "t":
            low, high = t_interval(x, confidence)
        else:
            low, high = bootstrap_interval(x, confidence, n_boot, seed)
        rows.append({
            "optimizer": optimizer,
            "n": x.size,
            "mean": float(x.mean()),
            "std": float(x.std(ddof=1)) if x.size > 1 else np.nan,
            "low": low,
            "high": high,
            "small_sample": x.size < MIN_SEEDS,
        })
    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return table.sort_values("mean", ascending=False, kind="stable").reset_index(drop=True)


def paired_differences(
    frame: pd.DataFrame, reference: str = "sam", value: str = VERDICT_METRIC, by: str = "seed"
) -> pd.DataFrame:
    """Each other optimizer against `reference`, on differences (optimizer - reference)
    matched by `by` (seed): only seeds present for both count.

    Per optimizer: n pairs, the mean difference and its 95% t interval, the two-sided
    paired t-test p-value (`p_t`, assumes roughly normal differences), the Wilcoxon
    signed-rank p-value (`p_wilcoxon`, no normality assumed; zero differences dropped;
    NaN below MIN_PAIRS_WILCOXON pairs), `wins` and `ties`, the matched seeds where the
    optimizer is higher and where it is equal. `p_holm` Holm-adjusts `p_t` across the
    rows of this table (a report that prints several tables adjusts across all of them
    with `holm_across`); `significant` needs p_holm < ALPHA and n >= MIN_SEEDS. `verdict`
    is "better", "worse", "no detectable difference" or "too few seeds (n=K)". `seeds` and
    `differences` hold the matched seeds and differences, seed-ascending. Rows are sorted
    by mean difference, best first; a row with no matched seed comes last.
    """
    _check_frame(frame, value, by)
    # Rows: seeds; columns: optimizers; NaN where an optimizer lacks that seed.
    wide = frame.pivot(index=by, columns="optimizer", values=value).sort_index()
    if reference not in wide.columns:
        names = ", ".join(map(str, wide.columns))
        raise ValueError(f"reference optimizer {reference!r} is not in the frame ({names})")
    rows = [
        _compare(wide[optimizer], wide[reference])
        for optimizer in wide.columns
        if optimizer != reference
    ]
    table = pd.DataFrame(rows, columns=PAIRED_COLUMNS)
    table = _with_holm(table, holm(table["p_t"]))
    table = table.sort_values("mean_diff", ascending=False, na_position="last", kind="stable")
    return table.reset_index(drop=True)


def holm_across(tables: Sequence[pd.DataFrame]) -> list[pd.DataFrame]:
    """Copies of paired tables (`paired_differences`) with p_holm, significant and
    verdict recomputed over all of them as one family, so that every difference a report
    calls significant, in whichever table, keeps the family-wise error rate at ALPHA.

    A test is one unordered pair of optimizers within one arm: the value of a table's
    `arm` column (the budget arm of the runs a row compares), or one arm for a table
    without it. "A against B" in the table against B and "B against A" in the table
    against A are one test, counted once, and both rows get the same adjusted p. A row
    without a p-value (NaN p_t, fewer than 2 pairs) is no test. Row order is kept.
    """
    keys = [[paired_test_id(row) for _, row in table.iterrows()] for table in tables]
    raw: dict = {}
    for table, table_keys in zip(tables, keys):
        for key, p in zip(table_keys, table["p_t"]):
            if np.isnan(p):
                continue
            if not np.isclose(raw.setdefault(key, p), p, rtol=1e-9, atol=0):
                raise ValueError(f"{sorted(key[0])} ({key[1]}) has p-values {raw[key]} and {p} "
                                 "in two tables: they are not the same test")
    adjusted = dict(zip(raw, holm(list(raw.values()))))
    return [_with_holm(table, [adjusted.get(key, np.nan) for key in table_keys])
            for table, table_keys in zip(tables, keys)]


def paired_test_id(row) -> tuple:
    """Which test a paired-table row is (see `holm_across`): its unordered pair of
    optimizers and its `arm` (None where the row has none)."""
    return frozenset((row["optimizer"], row["reference"])), row.get("arm")


def _with_holm(table: pd.DataFrame, p_holm) -> pd.DataFrame:
    """`table` with the given Holm-adjusted p-values and the significance and verdict
    they imply (significant needs n >= MIN_SEEDS too)."""
    table = table.copy()
    table["p_holm"] = np.asarray(p_holm, dtype=float)
    table["significant"] = [bool(p < ALPHA and n >= MIN_SEEDS) for p, n in zip(table["p_holm"], table["n"])]
    table["verdict"] = [_verdict(n, significant, diff) for n, significant, diff
                        in zip(table["n"], table["significant"], table["mean_diff"])]
    return table


def _compare(candidate: pd.Series, reference: pd.Series) -> dict:
    """One row of `paired_differences`, up to the Holm step, from two seed-indexed columns."""
    a, b = candidate.to_numpy(dtype=float), reference.to_numpy(dtype=float)
    both = ~(np.isnan(a) | np.isnan(b))
    a, b = a[both], b[both]
    d = a - b
    low, high = t_interval(d, 1 - ALPHA)
    return {
        "optimizer": candidate.name,
        "reference": reference.name,
        "n": d.size,
        "mean_diff": float(d.mean()) if d.size else np.nan,
        "low": low,
        "high": high,
        "p_t": _paired_t_pvalue(d),
        "p_wilcoxon": _wilcoxon_pvalue(d),
        **dict(zip(("wins", "ties"), wins_and_ties(a, b))),
        "seeds": tuple(candidate.index[both].tolist()),
        "differences": tuple(d.tolist()),
    }


def _paired_t_pvalue(d: np.ndarray) -> float:
    """Two-sided paired t-test on differences: t = mean(d) / (sd(d) / sqrt(n)), n-1 df."""
    if d.size < 2:
        return np.nan
    sd = d.std(ddof=1)
    if sd == 0:
        # Every seed moved by the same amount: no noise, so a nonzero shift is certain.
        return 1.0 if d.mean() == 0 else 0.0
    t = d.mean() / (sd / np.sqrt(d.size))
    return float(2 * stats.t.sf(abs(t), d.size - 1))


def _wilcoxon_pvalue(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value (scipy), NaN below MIN_PAIRS_WILCOXON pairs."""
    if d.size < MIN_PAIRS_WILCOXON:
        return np.nan
    if not d.any():
        # All ties: scipy drops zero differences and has nothing left to rank.
        return 1.0
    return float(stats.wilcoxon(d).pvalue)


def _verdict(n: int, significant: bool, mean_diff: float) -> str:
    if n < MIN_SEEDS:
        return f"too few seeds (n={n})"
    if not significant:
        return "no detectable difference"
    return "better" if mean_diff > 0 else "worse"


def _check_frame(frame: pd.DataFrame, value: str, by: str) -> None:
    """Refuse frames the statistics would silently misread: missing columns, NaN values
    (a failed run needs an explicit accuracy or removal first), or several rows of one
    optimizer for one seed (several configs, which would be counted as seeds)."""
    missing = [column for column in ("optimizer", by, value) if column not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}")
    _as_values(frame[value])
    repeated = frame.duplicated(["optimizer", by], keep=False)
    if repeated.any():
        first = frame[repeated].iloc[0]
        raise ValueError(
            f"optimizer {first['optimizer']!r} has several rows for {by}={first[by]}: "
            "give one config per optimizer (confirm-stage results)"
        )


def _as_values(values) -> np.ndarray:
    """`values` as a 1-D float array; NaN is refused rather than dropped, since dropping
    failed runs would flatter the optimizer that fails."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D sequence of values, got shape {x.shape}")
    if np.isnan(x).any():
        raise ValueError("NaN among the values: record failed runs explicitly or remove them")
    return x

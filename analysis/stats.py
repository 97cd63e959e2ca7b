"""Statistics of a verdict that holds on a rerun: a hierarchical bootstrap over the tuned
pipeline's replicates, the seeds within each, and the test examples.

The unit of evidence is a tuned pipeline: one replicate of an optimizer's search (its own
searcher seed, training seed and validation holdout) and its finalist's confirm runs,
several seeds each. A rerun of the sweep changes all three levels: which configuration
the search picks, the confirm seeds, and (as a sample of the data the test set stands
for) the test examples. An interval over seeds alone ignores the first, which moved the
quickstart's verdict by 3.5x the seed interval's half-width.

The input is a tidy frame of confirm runs: one row per (optimizer, replicate, seed) with
the final-epoch test accuracy (`test_acc`, a fraction) and, where the run recorded it,
`test_correct`, which test examples it got right (a boolean array, the same examples in
the same order for every run). Runs of two optimizers pair up by (replicate, seed): a
replicate shares its validation holdout and seeds between optimizers.

`Hierarchy` draws the bootstrap: the replicates with replacement, then within each drawn
replicate its runs with replacement, then the test examples with replacement (one draw
of the test set shared by every run and optimizer in a comparison). Without per-example
results the last level is skipped (and said). The estimate is the mean of the replicates'
means. The interval is the estimate +- t x the draws' standard deviation, with Student's
t at the degrees of freedom of the spread's estimate (Satterthwaite: the replicates' part
has R - 1, the test examples' part is known): a percentile interval from 3 replicates
covers far less than 95% (tests/test_stats.py simulates both). With one replicate the
top level is the seeds, and the interval is conditional on that one search.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.minimums import MIN_PAIRS
from trainables.schema import VERDICT_METRIC

ALPHA = 0.05          # the primary contrast's level, and the secondary family's (Holm)
POWER = 0.80          # the power at which a difference counts as detectable
P_BETTER = 0.75       # P(A > B) above this, and a difference that excludes 0: "better"
EQUIVALENCE_MARGIN = 0.005  # accuracy (0.5 points): the default of a space's equivalence_margin
N_BOOT = 2000         # bootstrap draws: Monte-Carlo error of a 95% bound about 2% of its width
_CHUNK = 250          # draws reweighted at once: bounds the test weights to 250 x examples floats
# Paired differences closer than this are the same (accuracies are ratios of counts, in floats).
_SAME = 1e-9
# Resolving a difference: how many replicates to consider at most.
MAX_REPLICATES = 1000

SUMMARY_COLUMNS = ["optimizer", "replicates", "runs", "mean", "low", "high", "se", "df",
                   "test_level"]
PAIRED_COLUMNS = ["optimizer", "reference", "pairs", "replicates", "mean_diff", "low", "high",
                  "se", "df", "p", "p_holm", "p_better", "p_better_low", "p_better_high", "wins",
                  "ties", "varies", "mde", "replicates_needed", "primary", "verdict"]


# ---- the bootstrap ---------------------------------------------------------------------------

class Hierarchy:
    """The draws of a hierarchical bootstrap over runs grouped by replicate: per draw, a
    weight per run (replicates drawn with replacement, then runs within each drawn copy
    with replacement; a replicate weighs 1 / R, its runs share that equally) and, where the
    runs' per-example results are given, a draw of the test examples.

    replicates: each run's replicate label. examples: how many test examples each run's
    results cover (None: accuracies only, no test level). Reproducible from `seed`."""

    def __init__(self, replicates: Sequence, examples: int | None, n_boot: int = N_BOOT, seed: int = 0):
        labels = np.asarray(replicates)
        self.groups = [np.flatnonzero(labels == r) for r in dict.fromkeys(labels.tolist())]
        self.runs, self.n_boot, self.examples = len(labels), n_boot, examples
        rng = np.random.default_rng(seed)
        count = len(self.groups)
        copies = rng.multinomial(count, np.full(count, 1 / count), size=n_boot)  # (draws, R)
        self.weights = np.zeros((n_boot, self.runs))
        self.base = np.zeros(self.runs)  # the estimate's weights: mean of replicate means
        for j, members in enumerate(self.groups):
            size = len(members)
            # k copies of a replicate each draw `size` runs: k * size draws in all.
            drawn = rng.multinomial(copies[:, j] * size, np.full(size, 1 / size))
            self.weights[:, members] = drawn / (size * count)
            self.base[members] = 1 / (size * count)
        self._test_seed = int(rng.integers(2 ** 63))

    @property
    def top_units(self) -> int:
        """The units of the top level: the replicates, or the runs of a single one."""
        return len(self.groups) if len(self.groups) > 1 else self.runs

    def reweighted(self, results: Sequence[np.ndarray]) -> Iterator[tuple[slice, list[np.ndarray]]]:
        """Per chunk of draws: each of `results` (runs x examples of 0/1, or runs
        accuracies) as runs x draws accuracies under that chunk's draw of the test examples
        (the same draw for every matrix: paired comparisons share it). Without a test
        level, the accuracies repeated."""
        rng = np.random.default_rng(self._test_seed)
        for start in range(0, self.n_boot, _CHUNK):
            size = min(_CHUNK, self.n_boot - start)
            if self.examples is None:
                yield slice(start, start + size), [np.repeat(r.reshape(-1, 1), size, 1) for r in results]
                continue
            n = self.examples
            picks = rng.integers(0, n, size=(size, n))
            counts = np.bincount((picks + n * np.arange(size)[:, None]).ravel(), minlength=size * n)
            weights = counts.reshape(size, n).T.astype(np.float32) / n  # examples x draws
            yield slice(start, start + size), [r.astype(np.float32) @ weights for r in results]


@dataclass(frozen=True)
class Spread:
    """An estimate and its bootstrap draws: every draw (`draws`) and the test examples'
    draws alone, the runs held fixed (`test_draws`), from which the interval's t degrees
    of freedom follow."""

    estimate: float
    draws: np.ndarray
    test_draws: np.ndarray
    top_units: int

    @property
    def se(self) -> float:
        return float(np.std(self.draws, ddof=1))

    @property
    def df(self) -> float:
        """Satterthwaite's degrees of freedom of the variance: the runs' part (total less
        the test examples') with top_units - 1, the test examples' part as known."""
        total = np.var(self.draws, ddof=1)
        runs = max(total - np.var(self.test_draws, ddof=1), 0.0)
        if self.top_units < 2:
            return math.nan
        return math.inf if runs == 0 else float(total ** 2 / (runs ** 2 / (self.top_units - 1)))

    def quantile(self, level: float) -> float:
        """Student's t quantile at `level` with `df` (the normal's where df is infinite)."""
        return float(stats.t.ppf(level, self.df))

    def interval(self, alpha: float = ALPHA, bounds: tuple[float, float] = (-1.0, 1.0)) -> tuple[float, float]:
        """estimate +- t_{1 - alpha/2, df} x se, inside `bounds`; NaN without two top units."""
        if self.top_units < 2:
            return (math.nan, math.nan)
        half = self.quantile(1 - alpha / 2) * self.se
        return (max(bounds[0], self.estimate - half), min(bounds[1], self.estimate + half))

    def p_value(self) -> float:
        """Two-sided p of estimate = 0 on the same t: the smallest alpha whose interval
        excludes 0 (NaN without spread)."""
        if self.top_units < 2 or self.se == 0:
            return math.nan
        return float(2 * stats.t.sf(abs(self.estimate) / self.se, self.df))

    def detectable(self, alpha: float = ALPHA, power: float = POWER) -> float:
        """The smallest difference a test at `alpha` finds with `power` (`detectable`)."""
        return detectable(self.se, self.df, alpha, power) if self.top_units >= 2 else math.nan

    def replicates_for(self, difference: float, replicates: int, alpha: float = ALPHA,
                       power: float = POWER) -> int | None:
        """About how many replicates (same seeds each) make `difference` detectable: the
        runs' variance shrinks as 1 / replicates, the test examples' does not (None when
        they alone hide it, or beyond MAX_REPLICATES). Needs two replicates or more."""
        total = np.var(self.draws, ddof=1)
        test = min(np.var(self.test_draws, ddof=1), total)
        counts = np.arange(2, MAX_REPLICATES + 1)
        runs = (total - test) * replicates / counts
        variance = runs + test
        with np.errstate(divide="ignore"):
            df = np.where(runs > 0, variance ** 2 / (runs ** 2 / (counts - 1)), np.inf)
        bar = (stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * np.sqrt(variance)
        enough = np.flatnonzero(bar <= difference)
        return int(counts[enough[0]]) if len(enough) else None


def detectable(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest difference a two-sided t test at `alpha` with `df` degrees of freedom
    finds with `power`, given its standard error: (t_{1-alpha/2} + t_{power}) x se."""
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se)


def _mean_of(hierarchy: Hierarchy, results: list[np.ndarray]) -> Spread:
    """The Spread of the runs' mean accuracy (mean of replicate means)."""
    draws, test = np.empty(hierarchy.n_boot), np.empty(hierarchy.n_boot)
    for part, (accuracy,) in hierarchy.reweighted(results):
        draws[part] = np.einsum("br,rb->b", hierarchy.weights[part], accuracy)
        test[part] = hierarchy.base @ accuracy
    return Spread(float(hierarchy.base @ _observed(results[0])), draws, test, hierarchy.top_units)


def _observed(result: np.ndarray) -> np.ndarray:
    """Each run's accuracy from its per-example results (or the accuracies themselves)."""
    return result.mean(1, dtype=np.float64) if result.ndim == 2 else result


# ---- the frame -----------------------------------------------------------------------------

def _results(runs: pd.DataFrame, value: str) -> tuple[np.ndarray, int | None]:
    """The runs' per-example results (runs x examples) where every run has them, covering
    the same number of examples, else their accuracies; and that number (None: none)."""
    correct = runs["test_correct"].tolist() if "test_correct" in runs else []
    sizes = {len(c) for c in correct if isinstance(c, np.ndarray)}
    if correct and all(isinstance(c, np.ndarray) for c in correct) and len(sizes) == 1:
        return np.stack([np.asarray(c, dtype=np.float32) for c in correct]), sizes.pop()
    return runs[value].to_numpy(dtype=float), None


def summarize(frame: pd.DataFrame, value: str = VERDICT_METRIC, alpha: float = ALPHA,
              n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Per optimizer: replicates, runs, the mean of its replicates' mean `value` and its
    hierarchical interval (clipped to [0, 1]), the draws' se and the t's df, and whether
    test examples were resampled (`test_level`). Rows best first; NaN interval with one run."""
    _check_frame(frame, value)
    rows = []
    for optimizer, runs in frame.groupby("optimizer", sort=True, observed=True):
        results, examples = _results(runs, value)
        spread = _mean_of(Hierarchy(runs["replicate"].tolist(), examples, n_boot, seed), [results])
        low, high = spread.interval(alpha, (0.0, 1.0))
        rows.append({"optimizer": optimizer, "replicates": runs["replicate"].nunique(), "runs": len(runs),
                     "mean": spread.estimate, "low": low, "high": high, "se": spread.se,
                     "df": spread.df, "test_level": examples is not None})
    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return table.sort_values("mean", ascending=False, kind="stable").reset_index(drop=True)


def compare(frame: pd.DataFrame, candidate: str, reference: str, value: str = VERDICT_METRIC,
            alpha: float = ALPHA, margin: float = EQUIVALENCE_MARGIN, primary: bool = False,
            n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """`candidate` against `reference` on their runs paired by (replicate, seed): one row
    of PAIRED_COLUMNS. The difference (candidate - reference) with its hierarchical
    interval and p; P(candidate > reference), the chance that a run of one tuned pipeline
    beats the matched run of the other (ties count half; Bouthillier et al. 2021), with its
    percentile interval; wins and ties; whether the paired differences vary at all; the
    difference detectable at `alpha` with 80% power and the replicates that would make
    `margin` detectable; and the verdict at `alpha` (`p_holm` is `p` until a family's Holm
    step adjusts it, `verdict_for`)."""
    _check_frame(frame, value)
    keys = ["replicate", "seed"]
    a = frame[frame["optimizer"] == candidate].set_index(keys)
    b = frame[frame["optimizer"] == reference].set_index(keys)
    both = a.index.intersection(b.index).sort_values()
    row = {"optimizer": candidate, "reference": reference, "pairs": len(both), "primary": primary,
           "replicates": len({r for r, _ in both})}
    if len(both) == 0:
        return {**dict.fromkeys(PAIRED_COLUMNS, math.nan), **row, "varies": False, "wins": 0, "ties": 0,
                "verdict": verdict_for({**row, "varies": False, "p": math.nan, "p_better": math.nan,
                                        "low": math.nan, "high": math.nan}, alpha, margin)}
    a, b = a.loc[both].reset_index(), b.loc[both].reset_index()
    (ra, ea), (rb, eb) = _results(a, value), _results(b, value)
    examples = ea if ea == eb and ea is not None else None
    if examples is None:
        ra, rb = _observed(ra), _observed(rb)
    hierarchy = Hierarchy(a["replicate"].tolist(), examples, n_boot, seed)
    spread, better = _paired(hierarchy, ra, rb)
    differences = _observed(ra) - _observed(rb)
    row.update(_difference_row(spread, better, differences, alpha, margin, len(set(a["replicate"]))))
    row["verdict"] = verdict_for(row, alpha, margin)
    return row


def _paired(hierarchy: Hierarchy, a: np.ndarray, b: np.ndarray) -> tuple[Spread, Spread]:
    """The Spreads of the mean difference a - b and of P(a > b) under the same draws."""
    n = hierarchy.n_boot
    diff, diff_test, win, win_test = (np.empty(n) for _ in range(4))
    for part, (acc_a, acc_b) in hierarchy.reweighted([a, b]):
        weights = hierarchy.weights[part]
        diff[part] = np.einsum("br,rb->b", weights, acc_a - acc_b)
        diff_test[part] = hierarchy.base @ (acc_a - acc_b)
        step = _win(acc_a, acc_b)
        win[part] = np.einsum("br,rb->b", weights, step)
        win_test[part] = hierarchy.base @ step
    observed_a, observed_b = _observed(a), _observed(b)
    return (Spread(float(hierarchy.base @ (observed_a - observed_b)), diff, diff_test, hierarchy.top_units),
            Spread(float(hierarchy.base @ _win(observed_a, observed_b)), win, win_test, hierarchy.top_units))


def _win(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 where a is higher, 0.5 for a tie (within _SAME), 0 where b is."""
    tie = np.abs(a - b) <= _SAME
    return (a > b) * ~tie + 0.5 * tie


def _difference_row(spread: Spread, better: Spread, differences: np.ndarray, alpha: float,
                    margin: float, replicates: int) -> dict:
    """The numbers of a paired row: difference and interval, p, P(A > B) and its interval,
    wins, ties, whether the differences vary, and the power figures."""
    varies = bool(np.ptp(differences) > _SAME)
    low, high = spread.interval(alpha)
    p_low, p_high = np.quantile(better.draws, [alpha / 2, 1 - alpha / 2])
    p = spread.p_value() if varies and len(differences) >= MIN_PAIRS else math.nan
    needed = spread.replicates_for(margin, replicates, alpha) if replicates > 1 else None
    return {"mean_diff": spread.estimate, "low": low, "high": high, "se": spread.se, "df": spread.df,
            "p": p, "p_holm": p, "p_better": better.estimate, "p_better_low": float(p_low),
            "p_better_high": float(p_high), "wins": int((differences > _SAME).sum()),
            "ties": int((np.abs(differences) <= _SAME).sum()), "varies": varies,
            "mde": spread.detectable(alpha), "replicates_needed": needed}


# ---- verdicts and the Holm family --------------------------------------------------------

def verdict_for(row, alpha: float = ALPHA, margin: float = EQUIVALENCE_MARGIN) -> str:
    """A paired row's verdict: "too few pairs (n=K)" or "no variation between paired runs"
    where no test is made; "better" ("worse") when its (Holm-adjusted) p is below `alpha`
    and P(A > B) is above 0.75 (below 0.25); "equivalent within +-m points" when its
    interval lies inside +-margin; else "no detectable difference"."""
    if row["pairs"] < MIN_PAIRS:
        return f"too few pairs (n={row['pairs']})"
    if not row["varies"]:
        return "no variation between paired runs"
    if row["p_holm"] < alpha and row["p_better"] > P_BETTER:
        return "better"
    if row["p_holm"] < alpha and row["p_better"] < 1 - P_BETTER:
        return "worse"
    if -margin <= row["low"] and row["high"] <= margin:
        return f"equivalent within +-{100 * margin:.2g} points"
    return "no detectable difference"


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


def paired_test_id(row) -> tuple:
    """Which test a paired row is: its unordered pair of optimizers and its `arm` (None
    where the row has none). "A against B" and "B against A" in one arm are one test."""
    return frozenset((row["optimizer"], row["reference"])), row.get("arm")


def holm_across(tables: Sequence[pd.DataFrame], alpha: float = ALPHA,
                margin: float = EQUIVALENCE_MARGIN) -> list[pd.DataFrame]:
    """Copies of paired tables with p_holm, verdict and mde recomputed: the primary
    contrast (rows with `primary` true) is tested alone at `alpha`; every other test, in
    whichever table and arm, is one Holm family (a test shown in two tables counts once and
    gets one adjusted p), whose detectable difference is at Holm's strictest step, alpha /
    m. Rows without a p (no test) are no member. Row order is kept."""
    keys = [[paired_test_id(row) for _, row in table.iterrows()] for table in tables]
    raw: dict = {}
    for table, table_keys in zip(tables, keys):
        for key, p, primary in zip(table_keys, table["p"], table["primary"]):
            if not primary and not np.isnan(p):
                if not np.isclose(raw.setdefault(key, p), p, rtol=1e-6, atol=1e-12):
                    raise ValueError(f"{sorted(key[0])} ({key[1]}) has p-values {raw[key]} and {p} "
                                     "in two tables: they are not the same test")
    adjusted = dict(zip(raw, holm(list(raw.values()))))
    strictest = alpha / max(1, len(raw))
    out = []
    for table, table_keys in zip(tables, keys):
        table = table.copy()
        table["p_holm"] = [p if primary else adjusted.get(key, np.nan)
                           for key, p, primary in zip(table_keys, table["p"], table["primary"])]
        table["mde"] = [mde if primary else detectable(se, df, strictest) for mde, se, df, primary
                        in zip(table["mde"], table["se"], table["df"], table["primary"])]
        table["verdict"] = [verdict_for(row, alpha, margin) for _, row in table.iterrows()]
        out.append(table)
    return out


def secondary_tests(tables: Sequence[pd.DataFrame]) -> int:
    """How many distinct tests the Holm family holds (rows with a p, not primary)."""
    return len({paired_test_id(row) for table in tables for _, row in table.iterrows()
                if not row["primary"] and not np.isnan(row["p"])})


# ---- small helpers ---------------------------------------------------------------------------

def t_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """Student t interval for the mean: mean +- t_{(1+c)/2, n-1} s / sqrt(n) (fewer than
    2 values: NaN). For quantities measured once per run (flatness), over runs or over
    replicates' means."""
    x = _as_values(values)
    if x.size < 2:
        return (np.nan, np.nan)
    half = stats.t.ppf((1 + confidence) / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return (float(x.mean() - half), float(x.mean() + half))


def _check_frame(frame: pd.DataFrame, value: str) -> None:
    """Refuse frames the statistics would misread: missing columns, NaN values (a failed
    run needs an explicit accuracy or removal first), or two rows of one optimizer for one
    (replicate, seed) (several configurations, which would count as seeds)."""
    missing = [c for c in ("optimizer", "replicate", "seed", value) if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}")
    _as_values(frame[value])
    repeated = frame.duplicated(["optimizer", "replicate", "seed"], keep=False)
    if repeated.any():
        first = frame[repeated].iloc[0]
        raise ValueError(f"optimizer {first['optimizer']!r} has several rows for replicate "
                         f"{first['replicate']}, seed {first['seed']}: give one configuration per "
                         "optimizer and replicate (confirm-stage results)")


def _as_values(values) -> np.ndarray:
    """`values` as a 1-D float array; NaN is refused rather than dropped, since dropping
    failed runs would flatter the optimizer that fails."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D sequence of values, got shape {x.shape}")
    if np.isnan(x).any():
        raise ValueError("NaN among the values: record failed runs explicitly or remove them")
    return x

"""Agreement of automatic with expert features, and associations of features with the clinical
and genomic variables of ``data.csv``.

Agreement (one row per feature; patients where either value is missing are counted in
``n_missing``, not silently dropped):

- Spearman's rank correlation (``scipy.stats.spearmanr``);
- ICC(2,1) (Shrout & Fleiss 1979: two-way random effects, absolute agreement, single
  measurement), the headline: the automatic value should *equal* the expert's, not just rise
  with it. ICC(3,1) (consistency) is given beside it. Both come from the two-way ANOVA mean
  squares: ``ICC(2,1) = (MSR - MSE) / (MSR + (k-1) MSE + k (MSC - MSE) / n)``,
  ``ICC(3,1) = (MSR - MSE) / (MSR + (k-1) MSE)``;
- Bland-Altman: bias = mean(pred - truth), limits of agreement = bias +/- 1.96 sample SD.

Associations (one row per source x feature x variable x test):

- ``fisher``: the feature dichotomised at the median of the patients entering the test
  (``> median`` vs ``<= median``) against the variable's categories: an r x 2 table tested with
  Fisher's exact test, the Freeman-Halton extension for r > 2 (the p-value is the total
  probability, under fixed margins, of every table no more probable than the observed one,
  enumerated exactly; the same two-sided rule as ``scipy.stats.fisher_exact`` on 2 x 2; only
  for tables with more than ``EXACT_TABLE_LIMIT`` partial tables, far beyond this dataset, a
  seeded Monte Carlo estimate from 100,000 tables). The
  paper names Fisher's exact test without saying how a continuous feature enters the table;
  the median split is the choice made here.
- ``kruskal``: Kruskal-Wallis H test of the feature across the variable's categories.
- ``spearman``: for a numeric variable (more than ``MAX_CATEGORIES`` distinct values, e.g.
  age) the two tests above do not apply; Spearman's rank correlation is used instead.

``n`` counts the patients with both values present; ``n_missing`` those left out, split into
``missing_variable`` (no data.csv row, or an empty cell) and ``missing_feature`` (e.g. BEVR of a
one-slice tumour). ``p_value`` is NaN only where the test cannot be run, and ``note`` says why:
fewer than 2 categories among the complete cases, a constant feature, fewer than 3 patients.

Multiple testing: within each family of (source, test), over the non-NaN p-values,
``p_bonferroni`` (``statsmodels`` ``multipletests(method="bonferroni")``), ``p_bh``
(Benjamini-Hochberg) and ``p_adjusted`` = ``p_bonferroni`` (the paper's correction).
``family_size`` is the number of tests in the family.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import gammaln
from statsmodels.stats.multitest import multipletests

MAX_CATEGORIES = 10
"""A variable with more distinct values than this is numeric (Spearman), else categorical."""
EXACT_TABLE_LIMIT = 5_000_000
"""Most partial r x 2 tables the exact Freeman-Halton sum enumerates (110 patients in 5
categories need about 10^5); beyond it the p-value is a seeded Monte Carlo estimate."""
MONTE_CARLO_TABLES = 100_000
RELATIVE_TOLERANCE = 1 + 1e-7
"""Tables this close to the observed probability count as 'as extreme' (as in scipy)."""

ASSOCIATION_COLUMNS = [
    "feature", "source", "variable", "test", "n", "n_missing", "missing_variable",
    "missing_feature", "categories", "statistic", "p_value", "p_adjusted", "p_bonferroni",
    "p_bh", "family_size", "note",
]
AGREEMENT_COLUMNS = [
    "feature", "n", "n_missing", "spearman_rho", "spearman_p", "icc_2_1", "icc_3_1",
    "ba_bias", "ba_sd", "ba_lower", "ba_upper",
]


# ---------------------------------------------------------------------------- agreement


def icc(ratings: np.ndarray) -> dict[str, float]:
    """ICC(2,1) and ICC(3,1) of an ``n targets x k raters`` matrix (no missing values)."""
    y = np.asarray(ratings, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] < 2 or y.shape[1] < 2:
        raise ValueError(f"ICC needs at least 2 targets x 2 raters; got shape {y.shape}")
    n, k = y.shape
    grand = y.mean()
    ss_rows = k * ((y.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((y.mean(axis=0) - grand) ** 2).sum()
    ss_error = ((y - grand) ** 2).sum() - ss_rows - ss_cols
    msr, msc = ss_rows / (n - 1), ss_cols / (k - 1)
    mse = ss_error / ((n - 1) * (k - 1))
    den2 = msr + (k - 1) * mse + k * (msc - mse) / n
    den3 = msr + (k - 1) * mse
    return {
        "icc_2_1": float((msr - mse) / den2) if den2 > 0 else math.nan,
        "icc_3_1": float((msr - mse) / den3) if den3 > 0 else math.nan,
    }


def agreement(pred: Sequence[float], truth: Sequence[float]) -> dict[str, float | int]:
    """Spearman, ICC and Bland-Altman of one feature's automatic vs expert values."""
    a, b = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    a, b = a[both], b[both]
    row: dict[str, float | int] = {"n": int(both.sum()), "n_missing": int((~both).sum())}
    nan = dict.fromkeys(AGREEMENT_COLUMNS[3:], math.nan)
    if len(a) < 3:
        return {**row, **nan}
    if np.ptp(a) > 0 and np.ptp(b) > 0:
        rho, p = stats.spearmanr(a, b)
        row.update(spearman_rho=float(rho), spearman_p=float(p))
    else:
        row.update(spearman_rho=math.nan, spearman_p=math.nan)
    row.update(icc(np.column_stack([a, b])))
    diff = a - b
    bias, sd = float(diff.mean()), float(diff.std(ddof=1))
    row.update(ba_bias=bias, ba_sd=sd, ba_lower=bias - 1.96 * sd, ba_upper=bias + 1.96 * sd)
    return row


# ---------------------------------------------------------------------------- exact test


def _log_choose(n: np.ndarray | int, k: np.ndarray | int) -> np.ndarray:
    return np.asarray(gammaln(np.add(n, 1)) - gammaln(np.add(k, 1)) - gammaln(np.subtract(n, k)
                                                                            + 1))


def fisher_exact_rx2(table: np.ndarray) -> float:
    """Two-sided Fisher (Freeman-Halton) exact p-value of an ``r x 2`` table of counts.

    Under fixed margins the first column ``x`` has probability
    ``prod_i C(n_i, x_i) / C(N, c)``; the p-value sums it over every table whose probability
    is at most the observed one (times 1 + 1e-7). Rows or columns of zeros are dropped first.
    """
    t = np.asarray(table)
    if t.ndim != 2 or t.shape[1] != 2 or (t < 0).any() or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"expected an r x 2 table of non-negative counts; got {t!r}")
    t = t[t.sum(axis=1) > 0]
    if len(t) < 2 or (t.sum(axis=0) == 0).any():
        return 1.0
    rows = np.sort(t.sum(axis=1))
    column = int(t[:, 0].sum())
    tables = int(np.prod(rows[:-1] + 1, dtype=np.float64))
    if tables > EXACT_TABLE_LIMIT:
        return _fisher_monte_carlo(t)
    observed = float(_log_choose(t.sum(axis=1), t[:, 0]).sum())
    # Partial tables row by row (smallest rows first): first-column total so far and
    # log-probability numerator so far; the last (largest) row's count is then fixed.
    sums = np.zeros(1, dtype=np.int64)
    logs = np.zeros(1)
    remaining = int(rows.sum())
    for size in rows[:-1]:
        remaining -= int(size)
        x = np.arange(size + 1)
        sums = (sums[:, None] + x[None, :]).ravel()
        logs = (logs[:, None] + _log_choose(int(size), x)[None, :]).ravel()
        keep = (sums <= column) & (sums + remaining >= column)
        sums, logs = sums[keep], logs[keep]
    logs = logs + _log_choose(int(rows[-1]), column - sums)
    total = float(_log_choose(int(rows.sum()), column))
    extreme = logs <= observed + math.log(RELATIVE_TOLERANCE)
    p = float(np.exp(logs[extreme] - total).sum())
    return min(1.0, p)


def _fisher_monte_carlo(table: np.ndarray) -> float:
    """Fisher/Freeman-Halton p estimated from random tables with the same margins (seeded)."""
    method = stats.MonteCarloMethod(n_resamples=MONTE_CARLO_TABLES, rng=np.random.default_rng(0))
    return float(stats.fisher_exact(table, method=method).pvalue)


# ---------------------------------------------------------------------------- associations


def is_categorical(values: pd.Series) -> bool:
    return values.dropna().nunique() <= MAX_CATEGORIES


def _test(feature: np.ndarray, groups: np.ndarray, test: str) -> tuple[float, float, str]:
    """(statistic, p-value, note) of one test on complete cases."""
    if len(feature) < 3:
        return math.nan, math.nan, "fewer than 3 patients with both values"
    if np.ptp(feature) == 0:
        return math.nan, math.nan, "the feature is constant"
    if test == "spearman":
        if np.ptp(groups) == 0:
            return math.nan, math.nan, "the variable is constant"
        rho, p = stats.spearmanr(feature, groups)
        return float(rho), float(p), ""
    levels = np.unique(groups)
    if len(levels) < 2:
        return math.nan, math.nan, "fewer than 2 categories among the patients"
    if test == "kruskal":
        h, p = stats.kruskal(*(feature[groups == level] for level in levels))
        return float(h), float(p), ""
    high = feature > np.median(feature)
    table = np.array([[np.sum(high & (groups == level)), np.sum(~high & (groups == level))]
                      for level in levels], dtype=np.int64)
    if high.all() or not high.any():
        return math.nan, math.nan, "the median split leaves one side empty"
    return math.nan, fisher_exact_rx2(table), ""


def associations(
    features: pd.DataFrame,
    clinical: pd.DataFrame,
    feature_names: Iterable[str],
    sources: Sequence[str] = ("pred", "truth"),
) -> pd.DataFrame:
    """Every source x feature x variable x test; ``features`` and ``clinical`` share an index
    (one row per patient; a patient without a clinical row has NaN variables)."""
    clinical = clinical.reindex(features.index)
    rows = []
    for source in sources:
        for name in feature_names:
            values = features[f"{source}_{name}"].to_numpy(dtype=np.float64)
            for variable in clinical.columns:
                column = pd.to_numeric(clinical[variable], errors="coerce")
                var = column.to_numpy(dtype=np.float64)
                has_feature, has_variable = np.isfinite(values), np.isfinite(var)
                both = has_feature & has_variable
                tests = ("fisher", "kruskal") if is_categorical(column) else ("spearman",)
                for test in tests:
                    statistic, p, note = _test(values[both], var[both], test)
                    rows.append({
                        "feature": name, "source": source, "variable": variable, "test": test,
                        "n": int(both.sum()), "n_missing": int((~both).sum()),
                        "missing_variable": int((~has_variable).sum()),
                        "missing_feature": int((~has_feature).sum()),
                        "categories": int(len(np.unique(var[both]))) if test != "spearman"
                        else math.nan,
                        "statistic": statistic, "p_value": p, "note": note,
                    })
    table = pd.DataFrame(rows, columns=[c for c in ASSOCIATION_COLUMNS if c not in (
        "p_adjusted", "p_bonferroni", "p_bh", "family_size")])
    return adjust(table)[ASSOCIATION_COLUMNS]


def adjust(table: pd.DataFrame) -> pd.DataFrame:
    """Bonferroni and Benjamini-Hochberg within each (source, test) family of non-NaN p."""
    table = table.copy()
    for column in ("p_bonferroni", "p_bh", "p_adjusted"):
        table[column] = math.nan
    table["family_size"] = 0
    for _, family in table.groupby(["source", "test"], sort=False):
        valid = family.index[family["p_value"].notna()]
        table.loc[family.index, "family_size"] = len(valid)
        if len(valid) == 0:
            continue
        p = table.loc[valid, "p_value"].to_numpy()
        table.loc[valid, "p_bonferroni"] = multipletests(p, method="bonferroni")[1]
        table.loc[valid, "p_bh"] = multipletests(p, method="fdr_bh")[1]
    table["p_adjusted"] = table["p_bonferroni"]
    return table

"""Agreement and association statistics against published values and independent sums."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis import stats

# Shrout & Fleiss (1979), Table 2: 6 targets x 4 judges; ICC(2,1) = 0.29, ICC(3,1) = 0.71.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9],
                          [6, 2, 4, 7]])


def test_icc_matches_shrout_and_fleiss() -> None:
    found = stats.icc(SHROUT_FLEISS)
    assert found["icc_2_1"] == pytest.approx(0.29, abs=0.005)
    assert found["icc_3_1"] == pytest.approx(0.71, abs=0.005)


def test_icc_separates_absolute_agreement_from_consistency() -> None:
    truth = np.arange(10.0)
    assert stats.icc(np.column_stack([truth, truth]))["icc_2_1"] == pytest.approx(1.0)
    shifted = stats.icc(np.column_stack([truth + 5, truth]))
    assert shifted["icc_3_1"] == pytest.approx(1.0)
    assert shifted["icc_2_1"] < 0.5


def test_agreement_counts_missing_pairs_and_gives_bland_altman() -> None:
    truth = np.array([1.0, 2.0, 3.0, 4.0, 5.0, math.nan])
    pred = np.array([2.0, 3.0, 4.0, 5.0, math.nan, 7.0])
    row = stats.agreement(pred, truth)
    assert row["n"] == 4 and row["n_missing"] == 2
    assert row["ba_bias"] == pytest.approx(1.0) and row["ba_sd"] == pytest.approx(0.0)
    assert row["spearman_rho"] == pytest.approx(1.0)


def test_fisher_2x2_equals_scipy() -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        table = rng.integers(0, 15, (2, 2))
        assert stats.fisher_exact_rx2(table) == pytest.approx(
            scipy_stats.fisher_exact(table).pvalue, rel=1e-9, abs=1e-12)


def _brute_force(table: np.ndarray) -> float:
    """Every table with the same margins, enumerated with math.comb."""
    rows, column = table.sum(axis=1), int(table[:, 0].sum())
    total = math.comb(int(rows.sum()), column)

    def probability(x: tuple[int, ...]) -> float:
        return math.prod(math.comb(int(r), v) for r, v in zip(rows, x, strict=True)) / total

    observed = probability(tuple(int(v) for v in table[:, 0]))
    return sum(probability(x) for x in itertools.product(*(range(int(r) + 1) for r in rows))
               if sum(x) == column and probability(x) <= observed * (1 + 1e-7))


@pytest.mark.parametrize("table", [
    [[10, 8], [5, 12], [9, 9], [3, 8]],
    [[2, 0], [5, 5], [12, 9], [6, 10], [1, 4]],
    [[0, 6], [7, 1], [3, 3]],
])
def test_freeman_halton_equals_brute_force(table: list[list[int]]) -> None:
    t = np.array(table)
    assert stats.fisher_exact_rx2(t) == pytest.approx(_brute_force(t), rel=1e-9)


def test_fisher_rejects_bad_tables_and_degenerate_ones_give_one() -> None:
    with pytest.raises(ValueError):
        stats.fisher_exact_rx2(np.array([[1, 2, 3]]))
    with pytest.raises(ValueError):
        stats.fisher_exact_rx2(np.array([[1, -2], [3, 4]]))
    assert stats.fisher_exact_rx2(np.array([[3, 4], [0, 0]])) == 1.0


def _cohort(n: int = 40, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    index = pd.Index([f"P{i:03d}" for i in range(n)], name="patient")
    group = np.tile([1.0, 2.0, 3.0], n)[:n]
    strong = group * 10 + rng.normal(0, 1, n)
    noise = rng.normal(0, 1, n)
    noise[3] = math.nan  # a feature missing for one patient
    features = pd.DataFrame({"pred_strong": strong, "truth_strong": strong,
                             "pred_noise": noise, "truth_noise": noise}, index=index)
    clinical = pd.DataFrame({
        "Cluster": group,
        "Constant": np.ones(n),
        "Age": np.linspace(20, 75, n),
    }, index=index)
    clinical.loc["P000", "Cluster"] = math.nan  # a missing cell
    return features, clinical.drop(index="P001")  # P001 has no clinical row


def test_associations_count_missing_and_give_valid_p_values() -> None:
    features, clinical = _cohort()
    table = stats.associations(features, clinical, ["strong", "noise"])
    assert list(table.columns) == stats.ASSOCIATION_COLUMNS
    assert ((table["n"] + table["n_missing"]) == len(features)).all()
    cluster = table[(table["variable"] == "Cluster") & (table["feature"] == "noise")]
    assert (cluster["missing_variable"] == 2).all() and (cluster["missing_feature"] == 1).all()
    assert (cluster["n"] == len(features) - 3).all()
    p = table["p_value"]
    assert ((p >= 0) & (p <= 1) | p.isna()).all()
    assert (table.loc[p.isna(), "note"] != "").all()  # NaN only with a reason
    assert set(table.loc[p.isna(), "variable"]) == {"Constant"}
    for column in ("p_bonferroni", "p_bh", "p_adjusted"):
        assert ((table[column] >= table["p_value"]) | p.isna()).all()
        assert ((table[column] <= 1) | table[column].isna()).all()
    pd.testing.assert_series_equal(table["p_adjusted"], table["p_bonferroni"],
                                   check_names=False)


def test_bonferroni_is_within_each_source_and_test_family() -> None:
    features, clinical = _cohort()
    table = stats.associations(features, clinical, ["strong", "noise"])
    for (_, _), family in table.groupby(["source", "test"]):
        valid = family[family["p_value"].notna()]
        assert (family["family_size"] == len(valid)).all()
        np.testing.assert_allclose(valid["p_bonferroni"],
                                   np.minimum(1, valid["p_value"] * len(valid)))


def test_a_real_difference_is_found_and_numeric_variables_use_spearman() -> None:
    features, clinical = _cohort()
    table = stats.associations(features, clinical, ["strong", "noise"]).set_index(
        ["source", "feature", "variable", "test"])
    assert table.loc[("pred", "strong", "Cluster", "kruskal"), "p_value"] < 1e-5
    assert table.loc[("pred", "strong", "Cluster", "fisher"), "p_value"] < 1e-3
    assert table.loc[("pred", "noise", "Cluster", "kruskal"), "p_value"] > 0.01
    age = table.xs("Age", level="variable")
    assert set(age.index.get_level_values("test")) == {"spearman"}

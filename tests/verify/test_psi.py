"""PSI against hand computations, and the quantile bins it is computed over."""

from __future__ import annotations

import math

import numpy as np
import pytest

from augury.verify.psi import bin_counts, categorical_psi, psi, quantile_edges


def test_psi_by_hand() -> None:
    # (0.7 - 0.5) ln(0.7 / 0.5) + (0.3 - 0.5) ln(0.3 / 0.5)
    expected = 0.2 * math.log(1.4) + (-0.2) * math.log(0.6)
    assert psi([0.5, 0.5], [0.7, 0.3]) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.1695, abs=1e-4)


def test_identical_shares_have_zero_psi() -> None:
    assert psi([0.1] * 10, [0.1] * 10) == 0.0


def test_an_empty_bin_gets_epsilon() -> None:
    eps = 1e-4
    by_hand = (0.5 - 0.5) * 0 + (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.1 - eps) * math.log(0.1 / eps)
    assert psi([0.5, 0.5, 0.0], [0.5, 0.4, 0.1], eps) == pytest.approx(by_hand, rel=1e-12)


def test_psi_needs_the_same_bins() -> None:
    with pytest.raises(ValueError, match="same bins"):
        psi([0.5, 0.5], [1.0])


def test_categorical_psi_treats_a_missing_category_as_empty() -> None:
    eps = 1e-4
    by_hand = ((0.5 - 0.6) * math.log(0.5 / 0.6) + (0.3 - 0.4) * math.log(0.3 / 0.4)
               + (0.2 - eps) * math.log(0.2 / eps))
    got = categorical_psi({"a": 0.6, "b": 0.4}, {"a": 0.5, "b": 0.3, "c": 0.2}, eps)
    assert got == pytest.approx(by_hand, rel=1e-12)


def test_decile_edges_of_a_uniform_sample() -> None:
    edges = quantile_edges(np.arange(100, dtype=np.float64))
    assert edges == (9.0, 19.0, 29.0, 39.0, 49.0, 59.0, 69.0, 79.0, 89.0)
    counts = bin_counts(np.arange(100, dtype=np.float64), edges)
    assert counts.tolist() == [9, 10, 10, 10, 10, 10, 10, 10, 10, 11]  # bins are [e_i, e_i+1)


def test_a_point_mass_gets_its_own_bin() -> None:
    values = np.concatenate([np.zeros(95), np.linspace(0.1, 1.0, 5)])
    edges = quantile_edges(values)
    assert edges == (0.0, float(np.nextafter(0.0, 1.0)))
    assert bin_counts(values, edges).tolist() == [0, 95, 5]


def test_a_constant_column_has_one_populated_bin() -> None:
    edges = quantile_edges(np.full(10, 3.5))
    assert bin_counts(np.full(10, 3.5), edges).tolist() == [0, 10, 0]
    assert bin_counts(np.array([3.0, 4.0]), edges).tolist() == [1, 0, 1]


def test_no_values_no_edges() -> None:
    assert quantile_edges(np.empty(0)) == ()
    assert bin_counts(np.array([1.0, 2.0]), ()).tolist() == [2]

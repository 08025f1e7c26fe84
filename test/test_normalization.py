"""Normalization types, masks and round trips."""

from __future__ import annotations

import numpy as np
import pytest

from policy_server_ros.normalization import NormalizationError, Normalizer

STATS = {"mean": [1.0, -2.0, 0.5], "std": [2.0, 0.0, 0.5], "min": [-1.0, -4.0, 0.0],
         "max": [3.0, 0.0, 1.0], "q01": [-0.5, -3.5, 0.1], "q99": [2.5, -0.5, 0.9]}


@pytest.mark.parametrize("kind", ["zscore", "minmax", "percentile", "identity"])
@pytest.mark.parametrize("mask", [None, [True, False, True]])
def test_round_trip(kind: str, mask: list[bool] | None) -> None:
    norm = Normalizer.from_stats(kind, STATS, 3, mask)
    x = np.array([[0.3, -1.0, 0.6], [1.2, -2.5, 0.2]], dtype=np.float32)
    y = norm.normalize(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(norm.denormalize(y), x, rtol=1e-5, atol=1e-6)
    if mask is not None:
        np.testing.assert_array_equal(y[:, 1], x[:, 1])  # unmasked dimension untouched


def test_zscore_values_and_min_std() -> None:
    norm = Normalizer.from_stats("zscore", STATS, 3, min_std=0.01)
    y = norm.normalize(np.array([3.0, -1.9, 0.5]))
    np.testing.assert_allclose(y, [1.0, 10.0, 0.0])  # std 0 -> min_std 0.01
    assert Normalizer.from_stats("zscore", STATS, 3).normalize(np.array([0, -1.9, 0]))[1] == \
        pytest.approx(0.1 / 1e-6)


def test_minmax_maps_range_to_unit_interval() -> None:
    norm = Normalizer.from_stats("minmax", STATS, 3)
    np.testing.assert_allclose(norm.normalize(np.array([[-1.0, -4.0, 0.0], [3.0, 0.0, 1.0]])),
                               [[-1, -1, -1], [1, 1, 1]])


def test_percentile_uses_q01_q99_and_clips() -> None:
    norm = Normalizer.from_stats("percentile", STATS, 3)
    np.testing.assert_allclose(norm.normalize(np.array([-0.5, -0.5, 5.0])), [-1, 1, 1])
    assert norm.normalize(np.array([-100.0, -2.0, 0.5]))[0] == -1.0


@pytest.mark.parametrize(("kind", "stats", "dim", "mask", "message"), [
    ("zscore", {"mean": [0, 0, 0]}, 3, None, "needs 'std'"),
    ("zscore", STATS, 4, None, "'mean' have 3 values, expected 4"),
    ("minmax", STATS, 3, [True], "mask has 1 entries, expected 3"),
    ("bogus", STATS, 3, None, "unknown normalization type 'bogus'"),
])
def test_errors_name_the_problem(kind, stats, dim, mask, message) -> None:
    with pytest.raises(NormalizationError, match=message):
        Normalizer.from_stats(kind, stats, dim, mask)


def test_wrong_data_width_is_an_error() -> None:
    with pytest.raises(NormalizationError, match=r"last dimension of 3, got shape \(2, 4\)"):
        Normalizer.from_stats("identity", STATS, 3).normalize(np.zeros((2, 4)))

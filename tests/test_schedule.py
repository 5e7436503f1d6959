"""anydrop.drop_path_rates: the per-block linear schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from anydrop import drop_path_rates


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("depth", [2, 3, 12, 24, 101])
def test_linear_from_zero_to_rate_inclusive(rate, depth):
    rates = drop_path_rates(rate, depth)
    assert len(rates) == depth
    assert all(type(r) is float for r in rates)
    assert rates[0] == 0.0
    assert rates[-1] == rate
    assert rates == np.linspace(0.0, rate, depth).tolist()
    diffs = np.diff(rates)
    np.testing.assert_allclose(diffs, rate / (depth - 1), rtol=1e-12, atol=1e-15)


def test_depth_one_is_zero():
    assert drop_path_rates(0.3, 1) == [0.0]


def test_example_values():
    assert drop_path_rates(0.2, 5) == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2], abs=1e-15)


@pytest.mark.backends("torch")
def test_matches_timm_linspace_to_float32_precision():
    torch = pytest.importorskip("torch")
    timm_rates = [t.item() for t in torch.linspace(0, 0.1, 12)]
    np.testing.assert_allclose(drop_path_rates(0.1, 12), timm_rates, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("depth", [0, -1])
def test_depth_below_one_is_a_value_error(depth):
    with pytest.raises(ValueError, match=f"depth must be at least 1, got {depth}"):
        drop_path_rates(0.1, depth)


@pytest.mark.parametrize("depth", [2.0, "12", None, True])
def test_depth_that_is_not_an_int_is_a_type_error(depth):
    with pytest.raises(TypeError, match="depth must be an int"):
        drop_path_rates(0.1, depth)


@pytest.mark.parametrize("rate", [-0.1, 1.5, math.nan, math.inf])
def test_rate_outside_unit_interval_is_a_value_error(rate):
    with pytest.raises(ValueError, match="drop_path_rate must be in"):
        drop_path_rates(rate, 12)


@pytest.mark.parametrize("rate", ["0.1", None, True])
def test_rate_of_wrong_type_is_a_type_error(rate):
    with pytest.raises(TypeError, match="drop_path_rate"):
        drop_path_rates(rate, 12)


@pytest.mark.backends("torch")
def test_timm_linspace_values_are_within_2e_7_relative():
    # What drop_path_rates' docstring says of timm's float32 schedule, over a grid of rates and depths.
    torch = pytest.importorskip("torch")
    worst = 0.0
    for rate in np.linspace(0.0, 1.0, 41).tolist():
        for depth in range(1, 80):
            ours = np.array(drop_path_rates(rate, depth))
            timm = np.array([r.item() for r in torch.linspace(0, rate, depth)])
            assert np.array_equal(timm == 0, ours == 0)
            nonzero = ours != 0
            if nonzero.any():
                worst = max(worst, float(np.max(np.abs(timm[nonzero] / ours[nonzero] - 1))))
    assert 0 < worst <= 2e-7

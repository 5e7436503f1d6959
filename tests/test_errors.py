"""Bad input: a clear error naming the argument and value, and the input untouched."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from anydrop import drop_path
from tests.helpers import random_batch


@pytest.fixture
def x(backend):
    return random_batch(backend, (6, 3))


@pytest.fixture(autouse=True)
def input_untouched(request, backend):
    """Every test here that takes ``x`` also checks ``x`` is unchanged afterwards."""
    if "x" not in request.fixturenames:
        yield
        return
    x = request.getfixturevalue("x")
    before = backend.to_numpy(x).copy()
    yield
    np.testing.assert_array_equal(backend.to_numpy(x), before)


@pytest.mark.parametrize("bad", [[1.0, 2.0], (1.0, 2.0), "abc", 1.0, None])
@pytest.mark.parametrize("training", [True, False])
def test_non_array_input_is_a_type_error(bad, training):
    with pytest.raises(TypeError, match=r"x must be an array .* type " + type(bad).__name__):
        drop_path(bad, 0.5, training)


@pytest.mark.parametrize("dtype", ["int32", "int64", "bool"])
def test_integer_and_bool_arrays_are_a_type_error(backend, dtype):
    values = np.ones((4, 2), dtype=bool if dtype == "bool" else np.int64)
    x = backend.asarray(values, dtype)
    with pytest.raises(TypeError, match="floating-point dtype"):
        drop_path(x, 0.5, True)
    np.testing.assert_array_equal(backend.to_numpy(x), values)


@pytest.mark.parametrize("bad", [-0.1, 1.0000001, 2, math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("training", [True, False])
def test_drop_prob_outside_unit_interval_is_a_value_error(x, bad, training):
    with pytest.raises(ValueError, match=rf"drop_prob .*{bad!r}"):
        drop_path(x, bad, training)


@pytest.mark.parametrize("bad", ["0.5", None, 0.5j, True, [0.5]])
def test_drop_prob_that_is_not_a_real_number_is_a_type_error(x, bad):
    with pytest.raises(TypeError, match="drop_prob"):
        drop_path(x, bad, True)


def test_numpy_scalar_drop_prob_is_accepted(x):
    assert drop_path(x, np.float32(0.0), True) is x
    assert drop_path(x, np.float64(0.5), True, rng=0).shape == x.shape


def test_zero_dimensional_array_drop_prob_is_accepted(backend, x):
    # e.g. torch.linspace(0, rate, depth)[i], which timm accepts too
    p = backend.asarray(np.float64(0.5), "float32")
    expected = backend.to_numpy(drop_path(x, 0.5, True, rng=0))
    np.testing.assert_array_equal(backend.to_numpy(drop_path(x, p, True, rng=0)), expected)
    assert drop_path(x, backend.asarray(np.float64(0.0), "float32"), True) is x


@pytest.mark.parametrize(("values", "dtype"), [([0.5], "float32"), (True, "bool"), (2.0, "float32")])
def test_array_drop_prob_that_is_not_a_probability_is_rejected(backend, x, values, dtype):
    p = backend.asarray(np.asarray(values), dtype)
    error = ValueError if values == 2.0 else TypeError
    with pytest.raises(error, match="drop_prob"):
        drop_path(x, p, True)


@pytest.mark.parametrize("bad", [2, -3, (0, 2), (5,)])
@pytest.mark.parametrize("training", [True, False])
def test_axis_out_of_range_is_a_value_error(x, bad, training):
    with pytest.raises(ValueError, match=r"axis .*out of range .*2 dimension"):
        drop_path(x, 0.5, training, axis=bad)


@pytest.mark.parametrize("bad", [(0, 0), (1, -1)])
def test_repeated_axis_is_a_value_error(x, bad):
    with pytest.raises(ValueError, match="repeat"):
        drop_path(x, 0.5, True, axis=bad)


@pytest.mark.parametrize("bad", [0.0, "0", [0], True, (0, 1.0), None])
def test_axis_of_wrong_type_is_a_type_error(x, bad):
    with pytest.raises(TypeError, match="axis must be an int or a tuple of ints"):
        drop_path(x, 0.5, True, axis=bad)


def test_zero_dimensional_input_with_an_axis_is_a_value_error(backend):
    x = backend.asarray(np.float32(1.0))
    with pytest.raises(ValueError, match=r"axis 0 is out of range .*0 dimension"):
        drop_path(x, 0.5, True)


def _type_name(obj: object) -> str:
    return re.escape(f"got an object of type {type(obj).__module__}.{type(obj).__qualname__}")


@pytest.mark.parametrize("bad", ["seed", 1.5, object(), True, [0], np.random.RandomState(0)])
@pytest.mark.parametrize("training", [True, False])
def test_rng_of_wrong_type_is_a_type_error(x, bad, training):
    with pytest.raises(TypeError, match=_type_name(bad)):
        drop_path(x, 0.5, training, rng=bad)


@pytest.mark.parametrize("bad", [-1, 2**64])
def test_out_of_range_seed_is_a_value_error(x, bad):
    with pytest.raises(ValueError, match=rf"rng must be a seed .*{bad}"):
        drop_path(x, 0.5, True, rng=bad)


def test_generator_of_another_library_is_a_type_error(backend, x):
    if backend.name == "torch":
        other = np.random.default_rng(0)
    else:
        torch = pytest.importorskip("torch", reason="needs torch for a foreign generator")
        other = torch.Generator()
    with pytest.raises(TypeError, match=rf"for {backend.name} arrays, {_type_name(other)}"):
        drop_path(x, 0.5, True, rng=other)

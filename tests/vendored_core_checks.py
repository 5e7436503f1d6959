"""Core behaviour checks, run against a vendored copy of anydrop's core.

``tests/test_vendoring.py`` copies the folder ``anydrop/_core/`` into a temporary
package under another name, then runs this file with pytest in a
fresh interpreter in which ``anydrop`` cannot be imported. So this file imports
nothing from anydrop or from the rest of the test suite: the module under test is
named by the environment variable ``VENDORED_CORE``, the array library by
``VENDORED_LIBRARY`` (``numpy`` or ``torch``), and ``VENDORED_ABSENT`` lists the
top-level modules that must never have been imported.

Its name does not start with ``test_``, so the main test run does not collect it.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

LIBRARY = os.environ.get("VENDORED_LIBRARY", "numpy")


@pytest.fixture(scope="module")
def core() -> ModuleType:
    return importlib.import_module(os.environ["VENDORED_CORE"])


def asarray(host: np.ndarray) -> Any:
    """``host`` as an array of the library under test."""
    if LIBRARY == "torch":
        import torch

        return torch.asarray(host)
    return host


def to_numpy(a: Any) -> np.ndarray:
    if LIBRARY == "torch":
        return a.detach().cpu().numpy()
    return np.asarray(a)


def generator(seed: int) -> Any:
    if LIBRARY == "torch":
        import torch

        return torch.Generator().manual_seed(seed)
    return np.random.default_rng(seed)


def batch(shape: tuple[int, ...], dtype: str = "float32") -> Any:
    """Values in [1, 2), so a dropped sample (zeros) cannot be mistaken for a kept one."""
    return asarray(np.random.default_rng(0).uniform(1.0, 2.0, size=shape).astype(dtype))


def kept_rows(out: Any, x: Any, keep: float, axis: int = 0) -> np.ndarray:
    """Assert each sample along ``axis`` is all zero or ``x / keep``; return which were kept."""
    got = np.moveaxis(to_numpy(out), axis, 0).reshape(out.shape[axis], -1)
    ref = np.moveaxis(to_numpy(x), axis, 0).reshape(x.shape[axis], -1)
    scale = np.asarray(1.0, dtype=ref.dtype) / np.asarray(keep, dtype=ref.dtype)
    zero = np.all(got == 0, axis=1)
    same = np.all(np.isclose(got, ref * scale, rtol=1e-6, atol=0), axis=1)
    assert np.all(zero | same), "a sample is neither all zero nor x / keep"
    return same


def test_the_module_is_the_vendored_copy_with_the_public_functions_only(core):
    assert core.__name__ == os.environ["VENDORED_CORE"]
    assert "anydrop" not in Path(core.__file__).parts
    assert sorted(core.__all__) == ["PortableRNG", "drop_path", "drop_path_add", "drop_path_residual"]
    missing = [name for name in core.__all__ if not hasattr(core, name)]
    assert missing == []


def test_the_fused_entry_points_and_the_portable_stream(core):
    x, branch = batch((64, 3)), batch((64, 3)) * 2
    added = core.drop_path_add(x, branch, 0.5, True, rng=core.PortableRNG(1))
    expected = to_numpy(x) + to_numpy(core.drop_path(branch, 0.5, True, rng=core.PortableRNG(1)))
    np.testing.assert_allclose(to_numpy(added), expected, rtol=1e-6)
    out = core.drop_path_residual(x, lambda t: t * 3, 0.5, True, rng=core.PortableRNG(2))
    reference = to_numpy(x) + to_numpy(core.drop_path(x * 3, 0.5, True, rng=core.PortableRNG(2)))
    np.testing.assert_allclose(to_numpy(out), reference, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_shape_dtype_and_each_sample_zero_or_scaled(core, dtype):
    x = batch((256, 3, 2), dtype)
    out = core.drop_path(x, 0.25, True, rng=0)
    assert type(out) is type(x)
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    kept = kept_rows(out, x, 0.75)
    assert 0 < kept.sum() < kept.size


def test_scale_by_keep_false_keeps_samples_exact(core):
    x = batch((128, 4))
    out = core.drop_path(x, 0.5, True, scale_by_keep=False, rng=1)
    got, ref = to_numpy(out), to_numpy(x)
    assert all(np.all(g == 0) or np.array_equal(g, r) for g, r in zip(got, ref, strict=True))


def test_identity_when_not_training_or_nothing_to_drop(core):
    x = batch((4, 3))
    assert core.drop_path(x) is x
    assert core.drop_path(x, 0.5) is x
    assert core.drop_path(x, 0.5, False, rng=0) is x
    assert core.drop_path(x, 0.0, True) is x


def test_a_seed_reproduces_and_a_generator_advances(core):
    x = batch((256, 2))
    first = to_numpy(core.drop_path(x, 0.5, True, rng=3))
    np.testing.assert_array_equal(to_numpy(core.drop_path(x, 0.5, True, rng=3)), first)

    gen = generator(5)
    a = to_numpy(core.drop_path(x, 0.5, True, rng=gen))
    b = to_numpy(core.drop_path(x, 0.5, True, rng=gen))
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(to_numpy(core.drop_path(x, 0.5, True, rng=generator(5))), a)


def test_drop_prob_one_gives_zeros_even_for_inf_and_nan(core):
    x = asarray(np.array([[np.inf, 1.0], [np.nan, -np.inf]], dtype="float32"))
    out = core.drop_path(x, 1.0, True, rng=0)
    np.testing.assert_array_equal(to_numpy(out), np.zeros((2, 2), dtype="float32"))


def test_other_sample_axes(core):
    x = batch((3, 200, 2))
    kept = kept_rows(core.drop_path(x, 0.5, True, axis=1, rng=4), x, 0.5, axis=1)
    assert 0 < kept.sum() < kept.size
    whole = to_numpy(core.drop_path(x, 0.5, True, axis=(), rng=4))
    assert np.all(whole == 0) or np.allclose(whole, to_numpy(x) * 2, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda dp, x: dp([1.0, 2.0], 0.5, True), TypeError, "x must be an array"),
        (lambda dp, x: dp(asarray(np.ones((2, 2), dtype="int64")), 0.5, True), TypeError, "floating-point"),
        (lambda dp, x: dp(x, 1.5, True), ValueError, r"drop_prob must be in \[0, 1\], got 1.5"),
        (lambda dp, x: dp(x, float("nan")), ValueError, "drop_prob"),
        (lambda dp, x: dp(x, "0.5", True), TypeError, "drop_prob"),
        (lambda dp, x: dp(x, 0.5, True, axis=2), ValueError, "axis 2 is out of range"),
        (lambda dp, x: dp(x, 0.5, True, axis="0"), TypeError, "axis"),
        (lambda dp, x: dp(x, 0.5, True, rng=-1), ValueError, "rng"),
        (lambda dp, x: dp(x, 0.5, True, rng="seed"), TypeError, "rng"),
    ],
)
def test_bad_input_raises_and_leaves_x_alone(core, call, error, match):
    x = batch((4, 3))
    before = to_numpy(x).copy()
    with pytest.raises(error, match=match):
        call(core.drop_path, x)
    np.testing.assert_array_equal(to_numpy(x), before)


@pytest.mark.skipif(LIBRARY != "torch", reason="autograd is a torch feature")
def test_torch_gradient_is_mask_over_keep(core):
    x = batch((64, 3)).requires_grad_()
    out = core.drop_path(x, 0.25, True, rng=6)
    out.sum().backward()
    grad = x.grad.numpy()
    kept = kept_rows(out, x, 0.75)
    np.testing.assert_array_equal(grad[~kept], 0)
    np.testing.assert_allclose(grad[kept], 1 / 0.75, rtol=1e-6)


def test_no_absent_module_was_imported():
    # Runs last (pytest keeps file order): nothing above pulled in anydrop or,
    # when the dependencies are vendored too, their top-level packages.
    absent = [name for name in os.environ.get("VENDORED_ABSENT", "anydrop").split(",") if name]
    assert [name for name in absent if name in sys.modules] == []

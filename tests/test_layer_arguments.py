"""Every entry point and every layer checks its arguments the same way, and layers describe themselves alike.

The checks are written once (``anydrop._core._checks``, ``anydrop._layers``);
these tests hold every caller to them: a NumPy integer is an int everywhere,
a bool never is, and the reprs of the neutral, torch and flax layers agree.
"""

from __future__ import annotations

import numpy as np
import pytest

from anydrop import DropPath, DropPathResidual, drop_path, drop_path_add, drop_path_residual
from anydrop._layers import describe, layer_arguments
from tests.helpers import random_batch

NUMPY_INTS = [np.int64(1), np.int32(1), np.uint8(1)]


def _triple(a):
    return a * 3.0


@pytest.mark.parametrize("axis", NUMPY_INTS, ids=lambda a: type(a).__name__)
def test_numpy_integer_axis_is_the_int_in_every_entry_point(backend, axis):
    x = random_batch(backend, (5, 40, 3), "float64")
    same = backend.to_numpy
    np.testing.assert_array_equal(
        same(drop_path(x, 0.5, True, axis=axis, rng=3)), same(drop_path(x, 0.5, True, axis=1, rng=3))
    )
    np.testing.assert_array_equal(
        same(drop_path(x, 0.5, True, axis=(axis, 0), rng=3)),
        same(drop_path(x, 0.5, True, axis=(1, 0), rng=3)),
    )
    np.testing.assert_array_equal(
        same(drop_path_add(x, x, 0.5, True, axis=axis, rng=3)),
        same(drop_path_add(x, x, 0.5, True, axis=1, rng=3)),
    )
    if backend.name != "dask":  # drop_path_residual refuses Dask arrays in training
        np.testing.assert_array_equal(
            same(drop_path_residual(x, _triple, 0.5, True, axis=axis, rng=3)),
            same(drop_path_residual(x, _triple, 0.5, True, axis=1, rng=3)),
        )
    np.testing.assert_array_equal(same(drop_path_residual(x, _triple, 0.5, axis=axis)), same(x + _triple(x)))


def test_numpy_integer_seed_is_the_int(backend):
    x = random_batch(backend, (64, 2))
    expected = backend.to_numpy(drop_path(x, 0.5, True, rng=7))
    np.testing.assert_array_equal(backend.to_numpy(drop_path(x, 0.5, True, rng=np.int64(7))), expected)
    np.testing.assert_array_equal(backend.to_numpy(DropPath(0.5, rng=np.uint16(7))(x)), expected)


@pytest.mark.parametrize("axis", NUMPY_INTS, ids=lambda a: type(a).__name__)
def test_neutral_layers_take_numpy_integer_axes_and_store_ints(axis):
    layer = DropPath(0.5, axis=axis)
    assert layer.axis == 1
    assert type(layer.axis) is int
    assert DropPath(0.5, axis=(axis, np.int64(0))).axis == (1, 0)
    block = DropPathResidual(_triple, 0.5, axis=axis)
    assert block.axis == 1
    assert type(block.axis) is int
    assert repr(block) == f"DropPathResidual(branch={_triple!r}, drop_prob=0.500, axis=1)"


@pytest.mark.parametrize("axis", [True, 1.0, "1", None])
def test_non_integer_axes_are_refused_by_every_residual_caller(axis):
    x = np.ones((4, 3))
    with pytest.raises(TypeError, match="axis must be an int"):
        drop_path_residual(x, _triple, 0.5, True, axis=axis)
    with pytest.raises(TypeError, match="axis must be an int"):
        DropPathResidual(_triple, 0.5, axis=axis)


def test_tuple_axis_is_refused_by_residual_callers():
    with pytest.raises(TypeError, match=r"axis must be an int for a residual drop path .* got \(0,\)"):
        DropPathResidual(_triple, 0.5, axis=(0,))
    with pytest.raises(TypeError, match=r"axis must be an int for a residual drop path .* got \(0,\)"):
        drop_path_residual(np.ones((4, 3)), _triple, 0.5, True, axis=(0,))


def test_neutral_reprs_show_what_differs_from_the_defaults():
    assert repr(DropPath()) == "DropPath(drop_prob=0.100)"
    assert repr(DropPath(0.25, False, axis=(), rng=np.int64(3))) == (
        "DropPath(drop_prob=0.250, scale_by_keep=False, axis=(), rng=3)"
    )
    assert repr(DropPathResidual(_triple, 0.5, fixed_size=True, rng=np.random.default_rng(0))) == (
        f"DropPathResidual(branch={_triple!r}, drop_prob=0.500, rng=<Generator>, fixed_size=True)"
    )


@pytest.mark.backends("torch")
class TestTorchLayers:
    @pytest.fixture
    def tdrop(self):
        return pytest.importorskip("anydrop.torch")

    @pytest.mark.parametrize("axis", NUMPY_INTS, ids=lambda a: type(a).__name__)
    def test_numpy_integer_axes(self, tdrop, axis):
        import torch

        layer = tdrop.DropPath(0.5, axis=axis, rng=2)
        assert type(layer.axis) is int
        x = torch.ones(3, 64, 2)
        assert torch.equal(layer(x), tdrop.DropPath(0.5, axis=1, rng=2)(x))
        block = tdrop.DropPathResidual(torch.nn.Identity(), 0.5, axis=axis, rng=2)
        assert block.axis == 1
        assert torch.equal(block(x), tdrop.DropPathResidual(torch.nn.Identity(), 0.5, axis=1, rng=2)(x))

    def test_extra_reprs_match_the_neutral_layers(self, tdrop):
        import torch

        assert tdrop.DropPath(0.25, False, axis=(), rng=3).extra_repr() == (
            "drop_prob=0.250, scale_by_keep=False, axis=(), rng=3"
        )
        block = tdrop.DropPathResidual(torch.nn.Identity(), 0.5, axis=np.int64(1), fixed_size=True)
        assert block.extra_repr() == "drop_prob=0.500, axis=1, fixed_size=True"


@pytest.mark.backends("jax")
class TestFlaxLayers:
    @pytest.fixture
    def nnx(self):
        return pytest.importorskip("flax.nnx", reason="needs flax (the nox jax session installs it)")

    @pytest.fixture
    def fdrop(self, nnx):
        import anydrop.flax

        return anydrop.flax

    @pytest.mark.parametrize("axis", NUMPY_INTS, ids=lambda a: type(a).__name__)
    def test_numpy_integer_axes(self, nnx, fdrop, axis):
        import jax.numpy as jnp

        layer = fdrop.DropPath(0.5, axis=axis, rngs=nnx.Rngs(dropout=0))
        assert type(layer.axis) is int
        x = jnp.ones((3, 64, 2))
        reference = fdrop.DropPath(0.5, axis=1, rngs=nnx.Rngs(dropout=0))
        np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(reference(x)))
        block = fdrop.DropPathResidual(_triple, 0.5, axis=axis, rngs=nnx.Rngs(dropout=0))
        assert block.axis == 1
        assert type(block.axis) is int
        with pytest.raises(TypeError, match="axis must be an int"):
            fdrop.DropPathResidual(_triple, 0.5, axis=True)

    def test_reprs_match_the_neutral_layers(self, fdrop):
        assert repr(fdrop.DropPath(0.25, scale_by_keep=False, axis=())) == (
            "DropPath(drop_prob=0.250, scale_by_keep=False, axis=())"
        )
        assert repr(fdrop.DropPathResidual(_triple, 0.5)) == (
            f"DropPathResidual(branch={_triple!r}, drop_prob=0.500)"
        )
        assert repr(fdrop.DropPathResidual(_triple, 0.5, fixed_size=False, deterministic=True)) == (
            f"DropPathResidual(branch={_triple!r}, drop_prob=0.500, fixed_size=False, deterministic=True)"
        )


def test_layer_arguments_name_the_drop_probability_as_the_layer_does():
    with pytest.raises(ValueError, match=r"^rate "):
        layer_arguments(1.5, True, 0, name="rate")
    with pytest.raises(TypeError, match=r"^p must be a real number"):
        layer_arguments("0.1", True, 0, name="p")


def test_describe_leaves_out_its_defaults():
    assert describe(0.5) == "drop_prob=0.500"
    assert (
        describe(0.5, False, 1, scale_at_test=True)
        == "drop_prob=0.500, scale_by_keep=False, scale_at_test=True, axis=1"
    )

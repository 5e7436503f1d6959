"""Test-time scaling (``scale_at_test``): no scaling in training, the branch times ``1 - p`` in evaluation.

The rule of the stochastic depth paper (Huang et al. 2016) and of keras-cv's
``StochasticDepth``, whose numbers the residual tests check: at rate 0.5 and
``shortcut = residual = u``, evaluation gives ``1.5 * u``.
"""

from __future__ import annotations

import numpy as np
import pytest

from anydrop import DropPath, DropPathResidual, drop_path, drop_path_add, drop_path_residual
from tests.backends import RESIDUAL_GATHERS, skip_unsupported
from tests.helpers import kept_samples, random_batch


def _identity(a):
    return a


def test_evaluation_multiplies_by_the_keep_probability(backend):
    x = random_batch(backend, (6, 3), "float64")
    out = drop_path(x, 0.25, False, False, scale_at_test=True)
    assert out is not x
    np.testing.assert_array_equal(backend.to_numpy(out), 0.75 * backend.to_numpy(x))
    np.testing.assert_array_equal(
        backend.to_numpy(x), backend.to_numpy(random_batch(backend, (6, 3), "float64"))
    )


def test_training_keeps_samples_unscaled(backend):
    x = random_batch(backend, (64, 3), "float64")
    rng = 0 if backend.name != "jax" else __import__("jax").random.key(0)
    out = backend.to_numpy(drop_path(x, 0.5, True, False, rng=rng, scale_at_test=True))
    kept = kept_samples(out, backend.to_numpy(x), (0,))
    assert 0 < kept.sum() < 64
    # The same draw as scale_by_keep=False without test-time scaling.
    np.testing.assert_array_equal(out, backend.to_numpy(drop_path(x, 0.5, True, False, rng=rng)))


def test_keras_cv_numbers_for_the_residual_forms(backend):
    # keras-cv StochasticDepth(rate=0.5)([u, u], training=False) is 1.5 * u.
    u = random_batch(backend, (4, 3), "float32")
    expected = 1.5 * backend.to_numpy(u)
    add = drop_path_add(u, u, 0.5, False, False, scale_at_test=True)
    np.testing.assert_allclose(backend.to_numpy(add), expected, rtol=1e-6)
    residual = drop_path_residual(u, _identity, 0.5, False, False, scale_at_test=True)
    np.testing.assert_allclose(backend.to_numpy(residual), expected, rtol=1e-6)


def test_drop_prob_zero_and_one(backend):
    x = backend.asarray(np.array([[1.0, np.inf], [np.nan, 2.0]]), "float32")
    assert drop_path(x, 0.0, False, False, scale_at_test=True) is x
    assert drop_path(x, 0.0, True, False, scale_at_test=True) is x
    # Exact zeros at drop_prob=1 even for inf and NaN, as training gives.
    np.testing.assert_array_equal(backend.to_numpy(drop_path(x, 1.0, False, False, scale_at_test=True)), 0.0)
    y = backend.asarray(np.ones((2, 2)), "float32")
    np.testing.assert_array_equal(
        backend.to_numpy(drop_path_add(y, x, 1.0, False, False, scale_at_test=True)), 1.0
    )
    calls = []

    def branch(a):
        calls.append(1)
        return a

    assert drop_path_residual(y, branch, 1.0, False, False, scale_at_test=True) is y
    assert calls == []  # a branch that is always dropped is not run, as in training


def test_the_expected_training_output_is_the_evaluation_output(backend):
    skip_unsupported(backend, RESIDUAL_GATHERS)
    x = backend.asarray(np.ones((20000, 1)), "float64")
    rng = 5 if backend.name != "jax" else __import__("jax").random.key(5)
    train = backend.to_numpy(drop_path(x, 0.3, True, False, rng=rng, scale_at_test=True))
    test = backend.to_numpy(drop_path(x, 0.3, False, False, scale_at_test=True))
    # 20000 Bernoulli(0.7) draws: the standard error of the mean is 0.0032.
    assert abs(train.mean() - test.mean()) < 0.02
    np.testing.assert_array_equal(test, 0.7)


@pytest.mark.parametrize("training", [True, False])
def test_both_scalings_are_refused_naming_both(backend, training):
    x = random_batch(backend, (4, 2))
    message = r"scale_at_test=True and scale_by_keep=True"
    with pytest.raises(ValueError, match=message):
        drop_path(x, 0.5, training, scale_at_test=True)
    with pytest.raises(ValueError, match=message):
        drop_path_add(x, x, 0.5, training, scale_at_test=True)
    with pytest.raises(ValueError, match=message):
        drop_path_residual(x, _identity, 0.5, training, scale_at_test=True)


@pytest.mark.parametrize("bad", [1, "yes", None, np.True_])
def test_a_non_bool_is_a_type_error(backend, bad):
    x = random_batch(backend, (4, 2))
    with pytest.raises(TypeError, match="scale_at_test must be a bool"):
        drop_path(x, 0.5, False, False, scale_at_test=bad)
    with pytest.raises(TypeError, match="scale_at_test must be a bool"):
        DropPath(0.5, False, scale_at_test=bad)


def test_neutral_layers(backend):
    skip_unsupported(backend, RESIDUAL_GATHERS)
    u = random_batch(backend, (4, 3), "float64")
    layer = DropPath(0.5, False, scale_at_test=True, rng=0)
    assert repr(layer) == "DropPath(drop_prob=0.500, scale_by_keep=False, scale_at_test=True, rng=0)"
    np.testing.assert_array_equal(backend.to_numpy(layer.eval()(u)), 0.5 * backend.to_numpy(u))
    np.testing.assert_array_equal(backend.to_numpy(layer.add(u, u)), 1.5 * backend.to_numpy(u))
    block = DropPathResidual(_identity, 0.5, False, scale_at_test=True).eval()
    np.testing.assert_array_equal(backend.to_numpy(block(u)), 1.5 * backend.to_numpy(u))
    with pytest.raises(ValueError, match="scale_at_test=True and scale_by_keep=True"):
        DropPath(0.5, scale_at_test=True)
    with pytest.raises(ValueError, match="scale_at_test=True and scale_by_keep=True"):
        DropPathResidual(_identity, 0.5, scale_at_test=True)


@pytest.mark.backends("torch")
def test_torch_modules():
    import torch

    from anydrop.torch import DropPath as TorchDropPath
    from anydrop.torch import DropPathResidual as TorchResidual

    u = torch.rand(8, 3, dtype=torch.float64) + 1
    layer = TorchDropPath(0.5, False, scale_at_test=True, rng=1)
    assert layer.extra_repr() == "drop_prob=0.500, scale_by_keep=False, scale_at_test=True, rng=1"
    trained = layer(u)
    assert all(torch.equal(row, ref) or not row.any() for row, ref in zip(trained, u, strict=True))
    torch.testing.assert_close(layer.eval()(u), 0.5 * u)
    block = TorchResidual(torch.nn.Identity(), 0.5, False, scale_at_test=True).eval()
    torch.testing.assert_close(block(u), 1.5 * u)
    with pytest.raises(ValueError, match="scale_at_test=True and scale_by_keep=True"):
        TorchDropPath(0.5, scale_at_test=True)


@pytest.mark.backends("jax")
def test_flax_modules():
    nnx = pytest.importorskip("flax.nnx", reason="needs flax (the nox jax session installs it)")
    import jax.numpy as jnp

    from anydrop.flax import DropPath as FlaxDropPath
    from anydrop.flax import DropPathResidual as FlaxResidual

    u = jnp.arange(1.0, 9.0).reshape(4, 2)
    layer = FlaxDropPath(0.5, scale_by_keep=False, scale_at_test=True, rngs=nnx.Rngs(dropout=0))
    assert repr(layer) == "DropPath(drop_prob=0.500, scale_by_keep=False, scale_at_test=True)"
    trained = np.asarray(layer(u))
    kept_samples(trained, np.asarray(u), (0,))
    layer.eval()
    np.testing.assert_array_equal(np.asarray(layer(u)), 0.5 * np.asarray(u))
    block = FlaxResidual(_identity, 0.5, scale_by_keep=False, scale_at_test=True, deterministic=True)
    np.testing.assert_array_equal(np.asarray(block(u)), 1.5 * np.asarray(u))
    with pytest.raises(ValueError, match="scale_at_test=True and scale_by_keep=True"):
        FlaxDropPath(0.5, scale_at_test=True)

"""anydrop.equinox: eqx.Module layers with eqx.nn.Dropout's conventions, under filter_jit, grad and vmap.

Runs in the JAX session (``pytest --backend jax``), which installs equinox.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

pytestmark = pytest.mark.backends("jax")


@pytest.fixture
def eqx(backend):
    return pytest.importorskip("equinox", reason="needs equinox (the nox jax session installs it)")


@pytest.fixture
def jax(eqx):
    import jax

    return jax


@pytest.fixture
def jnp(jax):
    return jax.numpy


@pytest.fixture
def edrop(eqx):
    import anydrop.equinox

    return anydrop.equinox


def _per_example(layer, x, keys, **kwargs):
    import equinox as eqx

    return eqx.filter_vmap(lambda x, k: layer(x, key=k, **kwargs))(x, keys)


def test_defaults_and_fields(edrop):
    layer = edrop.DropPath()
    assert (layer.p, layer.scale_by_keep, layer.scale_at_test, layer.axis, layer.inference) == (
        0.1,
        True,
        False,
        (),
        False,
    )
    assert edrop.DropPath(np.float32(0.5), axis=np.int64(1)).axis == 1


def test_vmapped_examples_are_dropped_or_kept_whole_with_their_own_keys(jax, jnp, edrop):
    from anydrop import drop_path

    x = jnp.arange(1.0, 1 + 64 * 6).reshape(64, 2, 3)
    keys = jax.random.split(jax.random.key(0), 64)
    out = np.asarray(_per_example(edrop.DropPath(0.5), x, keys))
    kept = np.array([np.array_equal(o, 2 * np.asarray(e)) for o, e in zip(out, x, strict=True)])
    dropped = np.all(out == 0, axis=(1, 2))
    assert np.all(kept | dropped)
    assert 10 < kept.sum() < 54
    # Example i is drop_path of example i with key i, the whole example one sample.
    for i in (0, 1, 2):
        np.testing.assert_array_equal(out[i], np.asarray(drop_path(x[i], 0.5, True, axis=(), rng=keys[i])))


def test_filter_jit_matches_eager_and_draws_fresh_masks_per_key(jax, jnp, eqx, edrop):
    layer = edrop.DropPath(0.5)
    x = jnp.ones((32, 4))
    keys = jax.random.split(jax.random.key(1), 32)
    jitted = eqx.filter_jit(_per_example)
    np.testing.assert_array_equal(
        np.asarray(jitted(layer, x, keys)), np.asarray(_per_example(layer, x, keys))
    )
    other = jax.random.split(jax.random.key(2), 32)
    assert not np.array_equal(np.asarray(jitted(layer, x, keys)), np.asarray(jitted(layer, x, other)))


def test_batched_input_with_axis_zero(jax, jnp, edrop):
    out = np.asarray(edrop.DropPath(0.5, axis=0)(jnp.ones((64, 3)), key=jax.random.key(3)))
    assert set(np.unique(out)) == {0.0, 2.0}
    assert np.all(out == out[:, :1])  # one decision per row


def test_training_without_a_key_is_a_clear_error(jnp, edrop):
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match=r"training mode \(inference=False\) with p=0.5 > 0 but got no key"):
        edrop.DropPath(0.5)(x)
    with pytest.raises(ValueError, match="but got no key"):
        edrop.DropPathResidual(lambda a: a, 0.5)(x)
    # No key is needed where nothing is drawn.
    assert edrop.DropPath(0.0)(x) is x
    assert edrop.DropPath(0.5, inference=True)(x) is x
    assert edrop.DropPath(0.5)(x, inference=True) is x


def test_inference_mode_and_tree_at_switch_modes(jax, jnp, eqx, edrop):
    block = eqx.nn.Sequential([eqx.nn.Lambda(lambda a: a), edrop.DropPath(0.5)])
    x = jnp.ones((3,))
    off = eqx.nn.inference_mode(block)
    assert off.layers[1].inference is True
    np.testing.assert_array_equal(np.asarray(off(x)), np.asarray(x))
    on = eqx.nn.inference_mode(off, value=False)
    assert on.layers[1].inference is False
    layer = eqx.tree_at(lambda m: m.inference, edrop.DropPath(0.5), True)
    assert layer(x) is x
    # The call's flag overrides the field.
    out = layer(x, key=jax.random.key(0), inference=False)
    assert set(np.unique(np.asarray(out))) <= {0.0, 2.0}


def test_filter_grad_through_the_residual_block(jax, jnp, eqx, edrop):
    linear = eqx.nn.Linear(3, 3, key=jax.random.key(0))
    block = edrop.DropPathResidual(linear, 0.5)
    x = jax.random.normal(jax.random.key(1), (16, 3))
    keys = jax.random.split(jax.random.key(2), 16)

    @eqx.filter_jit
    def loss(model, x):
        return jnp.sum(_per_example(model, x, keys) ** 2)

    grads = eqx.filter_grad(loss)(block, x)
    # The same loss written out: each example's branch kept (and doubled) or dropped.
    out = _per_example(block, x, keys)
    branch = jax.vmap(linear)(x)
    kept = np.any(np.asarray(out) != np.asarray(x), axis=1)
    assert 0 < kept.sum() < 16
    mask = jnp.asarray(kept, dtype=x.dtype)[:, None] * 2.0

    def manual(weight, bias):
        return jnp.sum((x + mask * (x @ weight.T + bias)) ** 2)

    gw, gb = jax.grad(manual, argnums=(0, 1))(linear.weight, linear.bias)
    np.testing.assert_allclose(np.asarray(grads.branch.weight), np.asarray(gw), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grads.branch.bias), np.asarray(gb), rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(out), np.asarray(x + mask * branch), rtol=1e-6
    )  # and the forward pass is that formula


def test_gradient_with_respect_to_the_input(jax, jnp, edrop):
    layer = edrop.DropPath(0.25)
    x = jnp.ones((8, 2))
    keys = jax.random.split(jax.random.key(4), 8)
    grad = np.asarray(jax.grad(lambda x: jnp.sum(_per_example(layer, x, keys)))(x))
    out = np.asarray(_per_example(layer, x, keys))
    np.testing.assert_allclose(grad, out, rtol=1e-6)  # d(mask * x)/dx is the mask, and x is ones


def test_scale_at_test_keras_cv_numbers(jax, jnp, edrop):
    u = jnp.arange(1.0, 7.0).reshape(2, 3)
    block = edrop.DropPathResidual(lambda a: a, 0.5, scale_by_keep=False, scale_at_test=True)
    np.testing.assert_array_equal(np.asarray(block(u, inference=True)), 1.5 * np.asarray(u))
    layer = edrop.DropPath(0.5, scale_by_keep=False, scale_at_test=True)
    np.testing.assert_array_equal(np.asarray(layer(u, inference=True)), 0.5 * np.asarray(u))
    trained = np.asarray(_per_example(layer, u, jax.random.split(jax.random.key(0), 2)))
    for row, ref in zip(trained, np.asarray(u), strict=True):
        assert np.array_equal(row, ref) or not row.any()  # no scaling in training


def test_argument_errors_name_the_argument(edrop):
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got 1.5"):
        edrop.DropPath(1.5)
    with pytest.raises(TypeError, match="p must be a real number"):
        edrop.DropPath("0.5")
    with pytest.raises(TypeError, match="inference must be a bool"):
        edrop.DropPath(0.5, inference=None)
    with pytest.raises(ValueError, match="scale_at_test=True and scale_by_keep=True"):
        edrop.DropPath(0.5, scale_at_test=True)
    with pytest.raises(TypeError, match="branch must be callable"):
        edrop.DropPathResidual(3, 0.5)
    with pytest.raises(TypeError, match="axis must be an int or a tuple of ints"):
        edrop.DropPathResidual(lambda a: a, 0.5, axis=[0])


def test_plain_jax_jit_over_the_module_says_what_to_use(jax, jnp, edrop):
    layer = edrop.DropPath(0.5)
    with pytest.raises(TypeError, match=r"inference must be a Python bool.*eqx.filter_jit"):
        jax.jit(lambda m, x: m(x, key=jax.random.key(0)))(layer, jnp.ones(3))


def test_residual_defaults_and_fields(edrop):
    def branch(a):
        return a

    block = edrop.DropPathResidual(branch)
    assert (block.p, block.scale_by_keep, block.scale_at_test, block.axis, block.inference) == (
        0.1,
        True,
        False,
        (),
        False,
    )
    assert block.branch is branch


def test_residual_argument_errors_name_the_argument(edrop):
    with pytest.raises(ValueError, match=r"^p must be in \[0, 1\], got 1.5"):
        edrop.DropPathResidual(lambda a: a, 1.5)
    with pytest.raises(ValueError, match="scale_at_test=True and scale_by_keep=True"):
        edrop.DropPathResidual(lambda a: a, 0.5, scale_at_test=True)
    with pytest.raises(TypeError, match=r"^inference must be a bool, got 1 of type int$"):
        edrop.DropPathResidual(lambda a: a, 0.5, inference=1)


def test_inference_flag_errors_say_the_whole_fix(jax, jnp, edrop):
    with pytest.raises(TypeError, match=r"^inference must be a bool, got 1 of type int$"):
        edrop.DropPath(0.5, inference=1)
    message = (
        "inference must be a Python bool, got 1; pass the module through eqx.filter_jit / "
        "eqx.filter_vmap (not jax.jit), and set inference with eqx.nn.inference_mode or per call"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        edrop.DropPath(0.5)(jnp.ones(3), key=jax.random.key(0), inference=1)


@pytest.mark.parametrize("residual", [False, True], ids=["DropPath", "DropPathResidual"])
def test_training_without_a_key_names_the_module_and_the_fix(jnp, edrop, residual):
    layer = edrop.DropPathResidual(lambda a: a, 0.25) if residual else edrop.DropPath(0.25)
    name = "DropPathResidual" if residual else "DropPath"
    message = (
        f"{name} is in training mode (inference=False) with p=0.25 > 0 but got no key: call it as "
        "layer(x, key=key), or set inference=True (eqx.nn.inference_mode) to turn drop path off"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        layer(jnp.ones(3))


def test_inference_mode_does_not_read_the_key(jax, jnp, edrop):
    # As eqx.nn.Dropout: the key is not used where nothing is drawn (drop_path would refuse
    # an array of keys).
    x = jnp.ones((2, 3))
    keys = jax.random.split(jax.random.key(0), 3)
    assert edrop.DropPath(0.5)(x, key=keys, inference=True) is x
    assert edrop.DropPath(0.5, inference=True)(x, key=keys) is x
    block = edrop.DropPathResidual(lambda a: 2 * a, 0.5, inference=True)
    np.testing.assert_array_equal(np.asarray(block(x, key=keys)), 3 * np.asarray(x))

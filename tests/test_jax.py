"""What only JAX has: PRNG keys, jax.jit, grad and vmap, and the flax.nnx modules.

The shared test files run on JAX too (``pytest --backend jax``); these tests
cover what they cannot: keys instead of generators, tracing, and flax.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from anydrop import DropPath, PortableRNG, drop_path, drop_path_add, drop_path_residual
from tests.helpers import kept_samples, random_batch
from tests.portable_spec import GOLDEN_BITS, GOLDEN_POSITION, GOLDEN_SEED, run_sequence

pytestmark = pytest.mark.backends("jax")


@pytest.fixture
def jax(backend):
    import jax

    return jax


@pytest.fixture
def jnp(jax):
    return jax.numpy


@pytest.fixture
def batch(backend):
    """``random_batch`` on the JAX backend: values in [1, 2), never zero."""
    return lambda shape, dtype="float32", seed=0: random_batch(backend, shape, dtype, seed)


def _kept(out) -> np.ndarray:
    """Which rows of a 2-d output are kept (not all zero)."""
    return np.any(np.asarray(out) != 0, axis=1)


# --- keys ---


def test_the_mask_is_bernoulli_of_the_first_folded_key(jax, jnp):
    # The documented draw: jax.random.bernoulli(fold_in(key, 0), keep, mask shape).
    key = jax.random.key(3)
    x = jnp.ones((64, 2))
    expected = jax.random.bernoulli(jax.random.fold_in(key, 0), 0.7, (64, 1)) / 0.7
    np.testing.assert_array_equal(np.asarray(drop_path(x, 0.3, True, rng=key)), np.asarray(x * expected))


def test_new_and_legacy_keys_and_int_seeds_draw_the_same_masks(jax, jnp):
    x = jnp.ones((64, 2))
    by_key = np.asarray(drop_path(x, 0.5, True, rng=jax.random.key(42)))
    by_legacy = np.asarray(drop_path(x, 0.5, True, rng=jax.random.PRNGKey(42)))
    by_seed = np.asarray(drop_path(x, 0.5, True, rng=42))
    np.testing.assert_array_equal(by_key, by_legacy)
    np.testing.assert_array_equal(by_key, by_seed)
    assert 0 < _kept(by_key).sum() < 64


def test_legacy_keys_of_the_rbg_implementation_are_taken(jax, jnp):
    # jax.random.PRNGKey makes uint32 arrays of shape (4,) when rbg is the default implementation.
    x = jnp.ones((64, 2))
    with jax.default_prng_impl("rbg"):
        legacy = jax.random.PRNGKey(7)
        assert legacy.shape == (4,)
        out = np.asarray(drop_path(x, 0.5, True, rng=legacy))
        typed = np.asarray(drop_path(x, 0.5, True, rng=jax.random.wrap_key_data(legacy, impl="rbg")))
    np.testing.assert_array_equal(out, typed)
    assert 0 < _kept(out).sum() < 64


def test_the_same_key_gives_the_same_mask_and_split_keys_differ(jax, jnp):
    x = jnp.ones((64, 2))
    key = jax.random.key(0)
    a, b = (np.asarray(drop_path(x, 0.5, True, rng=key)) for _ in range(2))
    np.testing.assert_array_equal(a, b)  # keys are values: nothing advances
    k1, k2 = jax.random.split(key)
    c, d = (np.asarray(drop_path(x, 0.5, True, rng=k)) for k in (k1, k2))
    assert not np.array_equal(c, d)  # equal with probability 2**-64


@pytest.mark.parametrize("seed", [2**32, 2**40 + 3, 2**63, 2**64 - 1])
def test_seeds_above_32_bits_are_not_truncated(jnp, seed):
    # jax.random.key keeps 32 bits of a seed without 64-bit mode; anydrop uses all 64.
    x = jnp.ones((64, 1))
    big = np.asarray(drop_path(x, 0.5, True, rng=seed))
    low = np.asarray(drop_path(x, 0.5, True, rng=seed & 0xFFFFFFFF))
    assert not np.array_equal(big, low)
    np.testing.assert_array_equal(big, np.asarray(drop_path(x, 0.5, True, rng=seed)))


def test_seeds_below_2_63_are_jax_random_key_in_64_bit_mode(jax, jnp):
    x = jnp.ones((64, 1))
    seed = 2**40 + 5
    np.testing.assert_array_equal(
        np.asarray(drop_path(x, 0.5, True, rng=seed)),
        np.asarray(drop_path(x, 0.5, True, rng=jax.random.key(seed))),
    )


@pytest.mark.parametrize("seed", [5, 2**31, 2**32 - 1, 2**32, 2**40 + 3, 2**63 - 1])
def test_int_seeds_make_the_64_bit_mode_key_in_32_bit_mode(jax, jnp, seed):
    # The key jax.random.key makes in 64-bit mode (the tests' mode), which keeps all 64 bits of
    # a seed; without that mode it would keep 32.
    key = jax.random.key(seed)
    with jax.enable_x64(False):
        x = jnp.ones((64, 1))
        by_seed = np.asarray(drop_path(x, 0.5, True, rng=seed))
        np.testing.assert_array_equal(by_seed, np.asarray(drop_path(x, 0.5, True, rng=key)))


def test_training_without_a_key_is_a_type_error_naming_the_fix(jnp):
    x = jnp.ones((4, 2))
    for call in (
        lambda: drop_path(x, 0.5, True),
        lambda: drop_path(x, 1.0, True),
        lambda: drop_path(x.astype(jnp.bfloat16), 0.1, True),
        lambda: drop_path_add(x, x, 0.5, True),
        lambda: drop_path_residual(x, lambda a: a, 0.5, True),
        lambda: drop_path_residual(x, lambda a: a, 0.5, True, fixed_size=True),
    ):
        with pytest.raises(TypeError, match=r"rng is required for JAX arrays .*jax\.random\.key"):
            call()


def test_no_key_is_needed_when_nothing_is_drawn(jnp):
    x = jnp.ones((4, 2))
    assert drop_path(x, 0.5, False) is x
    assert drop_path(x, 0.0, True) is x
    np.testing.assert_array_equal(np.asarray(drop_path_add(x, x, 0.5)), 2 * np.ones((4, 2)))
    np.testing.assert_array_equal(
        np.asarray(drop_path_residual(x, lambda a: a, 0.0, True)), 2 * np.ones((4, 2))
    )


def test_bad_keys_are_refused(jax, jnp):
    x = jnp.ones((4, 2))
    keys = (
        "rng must be a single JAX key, got an array of keys of shape (3,): pass one key per call "
        "(under jax.vmap, map over a batch of keys to give each example its own mask)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(keys)}$"):
        drop_path(x, 0.5, True, rng=jax.random.split(jax.random.key(0), 3))
    legacy = (
        "rng is a uint32 JAX array of shape (3,), not a legacy key (jax.random.PRNGKey gives shape "
        "(2,)); pass jax.random.key(seed)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(legacy)}$"):
        drop_path(x, 0.5, True, rng=jnp.zeros(3, dtype=jnp.uint32))
    with pytest.raises(TypeError, match=r"JAX PRNG key .*for jax arrays, got an object of type"):
        drop_path(x, 0.5, True, rng=jnp.zeros(2, dtype=jnp.float32))
    with pytest.raises(TypeError, match=r"numpy\.random\._generator\.Generator"):
        drop_path(x, 0.5, True, rng=np.random.default_rng(0))
    # Eval mode validates too: errors do not depend on the mode.
    with pytest.raises(ValueError, match="a single JAX key"):
        drop_path(x, 0.5, False, rng=jax.random.split(jax.random.key(0), 3))


def test_the_16_bit_scale_draws_two_independent_masks(jax, jnp):
    # The kept mask and the rounding choice come from different sub-keys: with one
    # key reused, the upper scale would go only to samples below a shared uniform.
    n, p = 200_000, 0.1
    x = jnp.ones((n, 1), dtype=jnp.bfloat16)
    out = np.asarray(drop_path(x, p, True, rng=jax.random.key(5)).astype(jnp.float32))[:, 0]
    kept = out != 0
    upper = out == out[kept].max()
    # P(upper | kept) is frac for independent draws; frac / keep for a reused key.
    lo, hi = 1.109375, 1.109375 + 2.0**-7
    frac = (1 / 0.9 - lo) / (hi - lo)
    k = int(kept.sum())
    assert abs(int(upper.sum()) - k * frac) <= 5 * math.sqrt(k * frac * (1 - frac))


# --- jax.jit, grad, vmap ---


def test_jit_with_a_traced_key_matches_eager_and_draws_per_key(batch, jax, jnp):
    x = batch((64, 3))
    f = jax.jit(lambda x, key: drop_path(x, 0.5, True, rng=key))
    keys = jax.random.split(jax.random.key(0), 2)
    for key in keys:
        np.testing.assert_array_equal(np.asarray(f(x, key)), np.asarray(drop_path(x, 0.5, True, rng=key)))
    assert not np.array_equal(np.asarray(f(x, keys[0])), np.asarray(f(x, keys[1])))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32", "complex64"])
def test_jit_with_static_drop_prob_and_training(batch, jax, jnp, dtype):
    x = batch((128, 2), dtype)
    f = jax.jit(drop_path, static_argnames=("drop_prob", "training", "axis"))
    key = jax.random.key(1)
    for p, training, axis in [(0.3, True, 0), (0.5, True, (0, 1)), (0.3, False, 0), (0.0, True, 0)]:
        out = f(x, drop_prob=p, training=training, axis=axis, rng=key)
        expected = drop_path(x, p, training, axis=axis, rng=key)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))


def test_traced_drop_prob_or_training_is_a_type_error(jax, jnp):
    x, key = jnp.ones((4, 2)), jax.random.key(0)
    with pytest.raises(TypeError, match=r"drop_prob must be a concrete number.*static"):
        jax.jit(lambda x, p: drop_path(x, p, True, rng=key))(x, 0.5)
    with pytest.raises(TypeError, match=r"training must be a Python bool.*static"):
        jax.jit(lambda x, t: drop_path(x, 0.5, t, rng=key))(x, True)
    with pytest.raises(TypeError, match=r"training must be a Python bool"):
        jax.jit(lambda x, t: drop_path_add(x, x, 0.5, t, rng=key))(x, True)
    with pytest.raises(TypeError, match=r"drop_prob must be a concrete number"):
        jax.vmap(lambda x, p: drop_path(x, p, True, axis=(), rng=key))(x, jnp.full(4, 0.5))


def test_an_int_seed_under_jit_is_a_constant_key(jax, jnp):
    x = jnp.ones((64, 1))
    out = jax.jit(lambda x: drop_path(x, 0.5, True, rng=7))(x)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(drop_path(x, 0.5, True, rng=7)))


def test_grad_is_the_mask_over_keep(batch, jax, jnp):
    x = batch((64, 3), "float64")
    key = jax.random.key(2)
    grad = jax.grad(lambda x: drop_path(x, 0.25, True, rng=key).sum())(x)
    mask = np.asarray(drop_path(jnp.ones_like(x), 0.25, True, rng=key))
    np.testing.assert_array_equal(np.asarray(grad), mask)
    assert set(np.unique(mask)) == {0.0, 1 / 0.75}
    jitted = jax.jit(jax.grad(lambda x, k: drop_path(x, 0.25, True, rng=k).sum()))(x, key)
    np.testing.assert_array_equal(np.asarray(jitted), mask)


@pytest.mark.parametrize("jit", [False, True])
def test_drop_prob_one_gives_zeros_and_finite_zero_gradients(jax, jnp, jit):
    host = np.array([[1.0, np.inf], [-np.inf, np.nan], [2.0, 3.0]])
    x = jnp.asarray(host)
    key = jax.random.key(0)

    def loss(x, key):
        return drop_path(x, 1.0, True, rng=key).sum()

    grad = jax.grad(loss)
    if jit:
        grad = jax.jit(grad)
    g = np.asarray(grad(x, key))
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(g, np.zeros_like(host))
    assert float(loss(x, key)) == 0.0
    add = jax.grad(lambda b: drop_path_add(jnp.zeros_like(b), b, 1.0, True, rng=key).sum())(x)
    np.testing.assert_array_equal(np.asarray(add), np.zeros_like(host))


def test_vmap_over_keys_drops_each_example_on_its_own(batch, jax, jnp):
    # Per-example code under vmap: axis=() drops a whole example; a batch of keys gives
    # each example its own draw, exactly as a loop over the examples would.
    x = batch((32, 5, 3))
    keys = jax.random.split(jax.random.key(4), 32)
    out = jax.vmap(lambda xi, k: drop_path(xi, 0.5, True, axis=(), rng=k))(x, keys)
    loop = jnp.stack([drop_path(x[i], 0.5, True, axis=(), rng=keys[i]) for i in range(32)])
    np.testing.assert_array_equal(np.asarray(out), np.asarray(loop))
    kept = np.any(np.asarray(out) != 0, axis=(1, 2))
    assert 0 < kept.sum() < 32
    jitted = jax.jit(jax.vmap(lambda xi, k: drop_path(xi, 0.5, True, axis=(), rng=k)))(x, keys)
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(out))


def test_vmap_with_one_key_for_all_gives_every_example_the_same_mask(jax, jnp):
    # JAX's own rule for unbatched keys, documented in docs/jax.md.
    x = jnp.ones((8, 16, 2))
    key = jax.random.key(6)
    out = np.asarray(jax.vmap(lambda xi: drop_path(xi, 0.5, True, rng=key))(x))
    for i in range(1, 8):
        np.testing.assert_array_equal(out[i], out[0])


# --- drop_path_add and drop_path_residual ---


def test_add_under_jit_is_x_plus_drop_path(batch, jax, jnp):
    x, branch = batch((64, 3), seed=1), batch((64, 3), seed=2)
    key = jax.random.key(8)
    out = jax.jit(lambda x, b, k: drop_path_add(x, b, 0.4, True, rng=k))(x, branch, key)
    np.testing.assert_allclose(
        np.asarray(out), np.asarray(x + drop_path(branch, 0.4, True, rng=key)), rtol=1e-6
    )


def test_residual_default_under_jit_asks_for_fixed_size(jax, jnp):
    x, key = jnp.ones((8, 2)), jax.random.key(0)
    with pytest.raises(TypeError, match="pass fixed_size=True"):
        jax.jit(lambda x: drop_path_residual(x, lambda a: a * 3, 0.5, True, rng=key))(x)


def test_residual_default_eagerly_runs_fn_on_the_kept_samples(batch, jax, jnp):
    x = batch((40, 3), "float64")
    key = jax.random.key(9)
    shapes = []

    def fn(a):
        shapes.append(a.shape)
        return a * 3

    out = drop_path_residual(x, fn, 0.5, True, rng=key)
    np.testing.assert_allclose(
        np.asarray(out), np.asarray(x + drop_path(3 * x, 0.5, True, rng=key)), rtol=1e-12
    )
    assert shapes == [(int(_kept(drop_path(x, 0.5, True, rng=key)).sum()), 3)]


def test_residual_fixed_size_under_jit_matches_eager_and_keeps_k(batch, jax, jnp):
    n, p = 40, 0.25
    k = round(n * (1 - p))
    x = batch((n, 3), "float64")
    shapes = []

    def fn(a):
        shapes.append(a.shape)
        return a * 3

    f = jax.jit(lambda x, key: drop_path_residual(x, fn, p, True, rng=key, fixed_size=True))
    for seed in range(3):
        key = jax.random.key(seed)
        out = np.asarray(f(x, key))
        eager = np.asarray(drop_path_residual(x, fn, p, True, rng=key, fixed_size=True))
        np.testing.assert_allclose(out, eager, rtol=1e-12)
        delta = (out - np.asarray(x)) / (3 * np.asarray(x))
        kept = ~np.isclose(delta[:, 0], 0.0)
        assert kept.sum() == k
        np.testing.assert_allclose(delta[kept], n / k, rtol=1e-12)
    assert set(shapes) == {(k, 3)}  # traced once with the static kept count, then eagerly


def test_residual_fixed_size_grad_reaches_the_branch_parameters(batch, jax, jnp):
    n, p = 16, 0.5
    x = batch((n, 2), "float64")
    key = jax.random.key(3)

    def loss(w, x):
        return drop_path_residual(x, lambda a: a * w, p, True, rng=key, fixed_size=True).sum()

    g_w, g_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(2.0), x)
    # d/dw sums the scaled kept samples (scale n / k = 2); d/dx is 1 + 2w on kept rows, 1 elsewhere.
    out = np.asarray(drop_path_residual(x, lambda a: a * 2.0, p, True, rng=key, fixed_size=True))
    kept = ~np.isclose(out, np.asarray(x))[:, 0]
    np.testing.assert_allclose(float(g_w), 2.0 * float(np.asarray(x)[kept].sum()), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(g_x)[kept], 1 + 2.0 * 2.0)
    np.testing.assert_allclose(np.asarray(g_x)[~kept], 1.0)


# --- PortableRNG and the framework-neutral layer ---


def test_portable_rng_follows_the_golden_bits_eagerly(jnp):
    rng = PortableRNG(GOLDEN_SEED)
    assert run_sequence(_JaxBackend(jnp), rng) == GOLDEN_BITS
    assert rng.position == GOLDEN_POSITION


def test_portable_rng_outputs_equal_numpys_bit_for_bit(jnp):
    host = np.random.default_rng(1).uniform(-3.0, 3.0, size=(64, 3)).astype(np.float32)
    ours = np.asarray(drop_path(jnp.asarray(host), 0.3, True, rng=PortableRNG(5)))
    np.testing.assert_array_equal(ours, drop_path(host, 0.3, True, rng=PortableRNG(5)))


def test_portable_rng_is_refused_on_tracers(jax, jnp):
    rng = PortableRNG(0)
    message = (
        "drop_path with a PortableRNG needs a concrete JAX array, got a tracer (inside jax.jit, grad or "
        "vmap): the host-drawn mask would be baked into the trace"
    )
    with pytest.raises(TypeError, match=f"(?m)^{re.escape(message)}$"):  # JAX adds lines below
        jax.jit(lambda t: drop_path(t, 0.5, True, rng=rng))(jnp.ones((4, 2)))
    assert rng.position == 0


def test_neutral_layer_with_an_int_seed_advances_eagerly_and_refuses_tracers(jax, jnp):
    layer = DropPath(0.5, rng=3)
    x = jnp.ones((64, 2))
    first, second = np.asarray(layer(x)), np.asarray(layer(x))
    assert not np.array_equal(first, second)
    kept_samples(first, 2 * np.ones((64, 2)), (0,))
    message = (
        "a DropPath layer with an int rng needs a concrete JAX array, got a tracer (inside jax.jit, grad "
        "or vmap): its key stream advances in Python, and the trace would keep one mask for every call; "
        "use anydrop.flax.DropPath with nnx.Rngs, or pass a key to drop_path"
    )
    with pytest.raises(TypeError, match=f"(?m)^{re.escape(message)}$"):  # JAX adds lines below
        jax.jit(layer)(x)
    assert jax.jit(layer.eval())(x).shape == (64, 2)


def test_neutral_layer_with_an_int_seed_draws_from_the_folded_keys_in_turn(jax, jnp):
    # Its stream is key(seed); draw i uses fold_in(key, i), the same as the mask of drop_path.
    layer = DropPath(0.5, rng=3)
    x = jnp.ones((64, 1))
    key = jax.random.key(3)
    for i in range(3):
        expected = 2.0 * np.asarray(jax.random.bernoulli(jax.random.fold_in(key, i), 0.5, (64, 1)))
        np.testing.assert_array_equal(np.asarray(layer(x)), expected)


def test_neutral_layer_refuses_a_key_at_construction(jax):
    with pytest.raises(TypeError, match=r"must not be a JAX key .*same mask on every call"):
        DropPath(0.5, rng=jax.random.key(0))


class _JaxBackend:
    """The two Backend helpers run_sequence needs, in JAX's default 32-bit dtypes."""

    def __init__(self, jnp):
        self.name, self.xp = "jax", jnp

    def asarray(self, values, dtype="float32"):
        return self.xp.asarray(np.asarray(values, dtype=dtype))

    def to_numpy(self, a):
        return np.asarray(a)


# --- flax.nnx modules ---


@pytest.fixture
def nnx(backend):
    return pytest.importorskip("flax.nnx", reason="needs flax (the nox jax session installs it)")


@pytest.fixture
def fdrop(nnx):
    import anydrop.flax

    return anydrop.flax


def test_flax_layer_draws_from_its_rngs_and_advances(nnx, fdrop, jnp):
    layer = fdrop.DropPath(0.5, rngs=nnx.Rngs(dropout=0))
    x = jnp.ones((64, 2))
    first, second = np.asarray(layer(x)), np.asarray(layer(x))
    assert not np.array_equal(first, second)
    kept = kept_samples(first, 2 * np.ones((64, 2)), (0,))
    assert 0 < kept.sum() < 64
    # The keys are those of the "dropout" stream: the same seed replays the same masks.
    twin = fdrop.DropPath(0.5, rngs=nnx.Rngs(dropout=0))
    np.testing.assert_array_equal(np.asarray(twin(x)), first)
    other = fdrop.DropPath(0.5, rngs=nnx.Rngs(dropout=1))
    assert not np.array_equal(np.asarray(other(x)), first)


def test_flax_layer_advances_under_nnx_jit(nnx, fdrop, jnp):
    layer = fdrop.DropPath(0.5, rngs=nnx.Rngs(dropout=0))
    step = nnx.jit(lambda layer, x: layer(x))
    x = jnp.ones((64, 2))
    masks = [np.asarray(step(layer, x)) for _ in range(3)]
    assert not np.array_equal(masks[0], masks[1])
    assert not np.array_equal(masks[1], masks[2])
    # Eager calls from the same seed draw the same sequence.
    eager = fdrop.DropPath(0.5, rngs=nnx.Rngs(dropout=0))
    for mask in masks:
        np.testing.assert_array_equal(np.asarray(eager(x)), mask)


def test_flax_layer_follows_deterministic_train_eval_and_view(nnx, fdrop, jnp):
    x = jnp.ones((64, 2))
    layer = fdrop.DropPath(0.5, deterministic=True, rngs=nnx.Rngs(0))
    assert layer(x) is x
    assert not np.array_equal(np.asarray(layer(x, deterministic=False)), np.asarray(x))
    layer.train()
    assert layer.deterministic is False
    assert not np.array_equal(np.asarray(layer(x)), np.asarray(x))
    assert layer(x, deterministic=True) is x
    layer.eval()
    assert layer(x) is x
    model = nnx.Sequential(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), fdrop.DropPath(0.5, rngs=nnx.Rngs(1)))
    assert nnx.view(model, deterministic=True).layers[1].deterministic is True
    with pytest.raises(ValueError, match="deterministic is None"):
        fdrop.DropPath(0.5, deterministic=None, rngs=nnx.Rngs(0))(x)


def test_flax_layer_takes_rngs_per_call(nnx, fdrop, jax, jnp):
    layer = fdrop.DropPath(0.5)
    x = jnp.ones((64, 2))
    key = jax.random.key(7)
    np.testing.assert_array_equal(
        np.asarray(layer(x, rngs=key)), np.asarray(drop_path(x, 0.5, True, rng=key))
    )
    by_rngs = np.asarray(layer(x, rngs=nnx.Rngs(dropout=7)))
    by_stream = np.asarray(layer(x, rngs=nnx.Rngs(dropout=7)["dropout"]))
    np.testing.assert_array_equal(by_rngs, by_stream)
    # A custom collection: the stored stream is forked from it, as nnx.Dropout does.
    custom = fdrop.DropPath(0.5, rng_collection="path", rngs=nnx.Rngs(path=7))
    forked = fdrop.DropPath(0.5, rngs=nnx.Rngs(dropout=7))
    np.testing.assert_array_equal(np.asarray(custom(x)), np.asarray(forked(x)))
    assert not np.array_equal(np.asarray(custom(x)), np.asarray(custom(x, rngs=nnx.Rngs(path=8))))


def test_flax_layer_without_rngs_says_how_to_give_them(nnx, fdrop, jnp):
    layer = fdrop.DropPath(0.5)
    x = jnp.ones((4, 2))
    with pytest.raises(ValueError, match=r"has no rngs: pass rngs=nnx\.Rngs\(dropout=seed\)"):
        layer(x)
    # Nothing is drawn in these cases: no rngs needed.
    assert layer(x, deterministic=True) is x
    assert fdrop.DropPath(0.0)(x) is x
    with pytest.raises(TypeError, match=r"rngs must be an nnx\.Rngs"):
        fdrop.DropPath(0.5, rngs=0)
    with pytest.raises(TypeError, match=r"rngs must be an nnx\.Rngs"):
        layer(x, rngs="key")


def test_flax_layer_validates_at_construction(nnx, fdrop):
    with pytest.raises(ValueError, match="drop_prob must be in"):
        fdrop.DropPath(1.5)
    with pytest.raises(TypeError, match="axis must be an int or a tuple"):
        fdrop.DropPath(0.1, axis=[0])
    with pytest.raises(TypeError, match="deterministic must be a bool or None"):
        fdrop.DropPath(0.1, deterministic=1)
    assert repr(fdrop.DropPath(0.25, axis=1, deterministic=True)) == (
        "DropPath(drop_prob=0.250, axis=1, deterministic=True)"
    )


def test_flax_model_trains_with_nnx_grad_and_jit(nnx, fdrop, jnp):
    class Block(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(4, 4, rngs=rngs)
            self.drop = fdrop.DropPath(0.5, rngs=rngs)

        def __call__(self, x):
            return x + self.drop(self.linear(x))

    model = Block(nnx.Rngs(params=0, dropout=1))
    x = jnp.ones((32, 4))

    @nnx.jit
    def grads(model, x):
        return nnx.grad(lambda m: m(x).sum())(model)

    for _ in range(2):
        g = grads(model, x)
        kernel, bias = np.asarray(g["linear"]["kernel"][...]), np.asarray(g["linear"]["bias"][...])
        # Each kept sample (of ones) adds its scale 2 to every entry; dropped ones add nothing.
        kept = bias[0] / 2.0
        assert kept == int(kept)
        assert 0 < kept < 32
        np.testing.assert_array_equal(bias, np.full(4, 2.0 * kept))
        np.testing.assert_array_equal(kernel, np.full((4, 4), 2.0 * kept))
    # The layer's dropout stream advanced once per jitted step.
    assert model.drop.rngs.count[...] == 2


def test_flax_residual_module_runs_the_branch_on_kept_samples_under_jit(nnx, fdrop, jnp):
    rngs = nnx.Rngs(params=0, dropout=1)
    block = fdrop.DropPathResidual(nnx.Linear(3, 3, rngs=rngs), 0.25, rngs=rngs)
    x = jnp.ones((40, 3))
    out = np.asarray(nnx.jit(lambda m, x: m(x))(block, x))
    changed = np.any(out != 1.0, axis=1)
    assert changed.sum() == 30  # round(40 * 0.75), fixed_size by default
    block.eval()
    np.testing.assert_allclose(np.asarray(block(x)), np.asarray(x + block.branch(x)), rtol=1e-6)
    assert len(nnx.state(block, nnx.Param)) > 0  # the branch's parameters are the block's


def test_flax_layer_passes_its_arguments_to_drop_path(nnx, fdrop, jax, jnp):
    key = jax.random.key(5)
    x = jnp.ones((64, 2))
    assert fdrop.DropPath().drop_prob == 0.1
    # Without scaling in training: kept samples stay 1; with a per-call key, drop_path's mask.
    plain = fdrop.DropPath(0.5, scale_by_keep=False)
    out = np.asarray(plain(x, rngs=key))
    np.testing.assert_array_equal(out, np.asarray(drop_path(x, 0.5, True, False, rng=key)))
    assert 0 < out[:, 0].sum() < 64
    assert set(np.unique(out)) == {0.0, 1.0}
    # axis=1: one draw per column, not per row.
    xt = jnp.ones((2, 64))
    np.testing.assert_array_equal(
        np.asarray(fdrop.DropPath(0.5, axis=1)(xt, rngs=key)),
        np.asarray(drop_path(xt, 0.5, True, axis=1, rng=key)),
    )
    # Eager errors do not depend on the mode: a bad axis fails when deterministic too.
    with pytest.raises(ValueError, match="axis"):
        fdrop.DropPath(0.5, axis=2, deterministic=True)(x)


def test_flax_layer_scales_at_test_when_asked(nnx, fdrop, jax, jnp):
    key = jax.random.key(5)
    x = jnp.ones((64, 2))
    layer = fdrop.DropPath(0.5, scale_by_keep=False, scale_at_test=True)
    assert repr(layer) == "DropPath(drop_prob=0.500, scale_by_keep=False, scale_at_test=True)"
    np.testing.assert_array_equal(
        np.asarray(layer(x, rngs=key)), np.asarray(drop_path(x, 0.5, True, False, rng=key))
    )
    layer.eval()
    np.testing.assert_array_equal(np.asarray(layer(x)), np.full((64, 2), 0.5))
    with pytest.raises(ValueError, match="would scale twice"):
        fdrop.DropPath(0.5, scale_at_test=True)


def test_flax_layer_errors_name_the_argument_and_its_type(nnx, fdrop, jnp):
    x = jnp.ones((4, 2))
    with pytest.raises(TypeError, match=r"^deterministic must be a bool or None, got 1 of type int$"):
        fdrop.DropPath(0.1, deterministic=1)
    with pytest.raises(TypeError, match=r"^rng_collection must be a str, got int$"):
        fdrop.DropPath(0.1, rng_collection=1)
    with pytest.raises(TypeError, match=r"^rngs must be an nnx\.Rngs, an nnx\.RngStream or None, got int$"):
        fdrop.DropPath(0.5, rngs=0)
    with pytest.raises(
        TypeError, match=r"^rngs must be an nnx\.Rngs, an nnx\.RngStream or a JAX key, got str$"
    ):
        fdrop.DropPath(0.5)(x, rngs="key")
    residual = fdrop.DropPathResidual(jnp.sin, 0.5, deterministic=None)
    with pytest.raises(
        ValueError,
        match=r"^deterministic is None for DropPathResidual: pass deterministic=True/False to the "
        r"constructor or the call, or set it with model\.train\(\) / model\.eval\(\)$",
    ):
        residual(x)
    with pytest.raises(
        ValueError,
        match=r"^DropPathResidual is not deterministic and drop_prob=0\.5 > 0, but it has no rngs: "
        r"pass rngs=nnx\.Rngs\(dropout=seed\) to the constructor or the call$",
    ):
        residual(x, deterministic=False)


def test_flax_layer_built_without_rngs_takes_a_stream_assigned_later(nnx, fdrop, jnp):
    # As with nnx.Dropout, the missing stream is a data attribute: a stream can be set afterwards.
    x = jnp.ones((64, 2))
    layer = fdrop.DropPath(0.5)
    layer.rngs = nnx.Rngs(dropout=3)["dropout"].fork()
    twin = fdrop.DropPath(0.5, rngs=nnx.Rngs(dropout=3))
    np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(twin(x)))


def _branch(v):
    return 2.0 * v + 1.0


def test_flax_residual_module_passes_its_arguments_to_drop_path_residual(nnx, fdrop, jax, jnp, batch):
    key = jax.random.key(11)
    x = batch((16, 3))
    assert fdrop.DropPathResidual(_branch).drop_prob == 0.1

    def check(module, x, **kwargs):
        expected = drop_path_residual(x, _branch, 0.5, True, rng=key, fixed_size=True, **kwargs)
        np.testing.assert_array_equal(np.asarray(module(x, rngs=key)), np.asarray(expected))

    check(fdrop.DropPathResidual(_branch, 0.5), x)
    check(fdrop.DropPathResidual(_branch, 0.5, scale_by_keep=False), x, scale_by_keep=False)
    check(fdrop.DropPathResidual(_branch, 0.5, axis=1), x.T, axis=1)
    # shards=2: half the kept samples in each half of the axis, a subset the whole axis does not draw.
    check(fdrop.DropPathResidual(_branch, 0.5, shards=2), x, shards=2)
    whole = drop_path_residual(x, _branch, 0.5, True, rng=key, fixed_size=True)
    halves = drop_path_residual(x, _branch, 0.5, True, rng=key, fixed_size=True, shards=2)
    assert not np.array_equal(np.asarray(whole), np.asarray(halves))
    # Test-time scaling: the branch times 1 - drop_prob when deterministic.
    paper = fdrop.DropPathResidual(_branch, 0.5, scale_by_keep=False, scale_at_test=True, deterministic=True)
    np.testing.assert_allclose(np.asarray(paper(x)), np.asarray(x + 0.5 * _branch(x)), rtol=1e-6)


def test_flax_residual_module_needs_rngs_only_when_it_draws(nnx, fdrop, jnp, batch):
    x = batch((8, 3))
    full = np.asarray(x + _branch(x))
    block = fdrop.DropPathResidual(_branch, 0.5)  # deterministic=False, no rngs
    np.testing.assert_allclose(np.asarray(block(x, deterministic=True)), full, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(fdrop.DropPathResidual(_branch, 0.0)(x)), full, rtol=1e-6)
    block.eval()
    np.testing.assert_allclose(np.asarray(block(x)), full, rtol=1e-6)
    with pytest.raises(ValueError, match="has no rngs"):
        block(x, deterministic=False)


def test_flax_residual_module_checks_and_shows_shards(nnx, fdrop):
    for shards in (1, 2):
        assert fdrop.DropPathResidual(_branch, shards=shards).shards == shards
    assert repr(fdrop.DropPathResidual(_branch, 0.5, shards=2, fixed_size=False)) == (
        f"DropPathResidual(branch={_branch!r}, drop_prob=0.500, fixed_size=False, shards=2)"
    )
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(TypeError, match=rf"^shards must be None or a positive int, got {bad!r}$"):
            fdrop.DropPathResidual(_branch, shards=bad)


def test_import_anydrop_imports_neither_jax_nor_flax(nnx):
    import subprocess
    import sys

    code = "import sys, anydrop; print('flax' in sys.modules, 'jax' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_without_jax_imported_no_rng_is_taken_for_a_jax_key(backend):
    # Checked in a process that has not imported jax: the layer's error is the general one.
    import subprocess
    import sys

    code = (
        "import sys, anydrop\n"
        "try:\n"
        "    anydrop.DropPath(0.5, rng='0')\n"
        "except TypeError as e:\n"
        "    print(e)\n"
        "print('jax' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    message, imported = result.stdout.splitlines()
    assert message.startswith("rng must be None, a non-negative int seed, an anydrop.PortableRNG, or a ")
    assert message.endswith("got an object of type builtins.str")
    assert imported == "False"

"""JAX on sharded arrays: meshes of 8 CPU devices, auto and explicit sharding, jit and shard_map.

JAX makes 8 CPU devices only if ``XLA_FLAGS=--xla_force_host_platform_device_count=8``
is set before it starts its backend: ``conftest.py`` sets it for ``--backend jax``
(and the nox jax session too), so ``pytest --backend jax tests/test_jax_sharding.py``
runs these; with fewer devices they skip. What they check: outputs keep the
input's sharding; masks equal the unsharded ones; the compiled programs hold
no collective the plain computation does not; drop_path_residual runs its
branch on each device's own kept samples (the compiled cost, per device);
and the shard_map recipes for data- and tensor-parallel masks.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from anydrop import drop_path, drop_path_add, drop_path_residual

pytestmark = pytest.mark.backends("jax")

DEVICES = 8
KINDS = "all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter"
# An HLO instruction: `%name = type kind(operands)`; async collectives end in -start.
COLLECTIVE = re.compile(rf"\s({KINDS})(?:-start)?\(")
# Meshes by name: shape, axis names, and how a (batch, seq, feature) x is sharded on them.
MESHES = {
    "data": ((8,), ("data",), ("data",)),
    "data_model": ((4, 2), ("data", "model"), ("data", None, "model")),
}


@pytest.fixture(scope="module")
def jax(backend):
    import jax

    if jax.device_count() < DEVICES:
        pytest.skip(
            f"needs {DEVICES} devices, JAX has {jax.device_count()}: on the CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={DEVICES} before JAX starts "
            "(conftest.py does for --backend jax unless XLA_FLAGS already names a device count)"
        )
    return jax


@pytest.fixture(scope="module")
def jnp(jax):
    return jax.numpy


def _mesh(jax, name, explicit):
    from jax.sharding import AxisType

    shape, names, _ = MESHES[name]
    kind = AxisType.Explicit if explicit else AxisType.Auto
    return jax.make_mesh(shape, names, axis_types=(kind,) * len(names))


def _sharded(jax, mesh, name, a):
    from jax.sharding import NamedSharding, PartitionSpec

    return jax.device_put(a, NamedSharding(mesh, PartitionSpec(*MESHES[name][2])))


def _batch(n=16, seq=4, dim=8, seed=0):
    """Values in [1, 2): a dropped sample (zero) is never mistaken for a kept one."""
    return np.random.default_rng(seed).uniform(1.0, 2.0, (n, seq, dim)).astype(np.float32)


def _collectives(jitted, *args) -> Counter[str]:
    return Counter(COLLECTIVE.findall(jitted.lower(*args).compile().as_text()))


def _same_placement(out, x) -> None:
    assert out.sharding.is_equivalent_to(x.sharding, x.ndim), (out.sharding, x.sharding)


def _no_new_collectives(got: Counter[str], plain: Counter[str]) -> None:
    extra = got - plain
    assert not extra, f"collectives the plain computation does not have: {dict(extra)}"


def _branch(jnp):
    """A per-sample branch: it keeps any sharding of its input, and needs no collective."""
    return lambda a: jnp.tanh(a * 0.5) + 1.0


CASES = [(name, explicit) for name in MESHES for explicit in (False, True)]
IDS = [f"{name}-{'explicit' if explicit else 'auto'}" for name, explicit in CASES]


@pytest.fixture(params=CASES, ids=IDS)
def setup(request, jax):
    """(mesh name, explicit, mesh); the sharded calls run with it set (``jax.set_mesh``), the
    unsharded references outside it."""
    name, explicit = request.param
    return name, explicit, _mesh(jax, name, explicit)


# --- drop_path, drop_path_add ---


@pytest.mark.parametrize("entry", ["drop_path", "drop_path_add"])
def test_masks_placement_and_collectives_match_the_unsharded_computation(jax, jnp, setup, entry):
    name, _, mesh = setup
    host = _batch()
    x = _sharded(jax, mesh, name, host)
    key = jax.random.key(7)
    if entry == "drop_path":
        f = jax.jit(lambda x, key: drop_path(x, 0.5, True, rng=key))
        plain = jax.jit(lambda x: x * 2.0)
    else:
        f = jax.jit(lambda x, key: drop_path_add(x, jnp.sin(x), 0.5, True, rng=key))
        plain = jax.jit(lambda x: x + jnp.sin(x))
    with jax.set_mesh(mesh):
        out = f(x, key)
        _no_new_collectives(_collectives(f, x, key), _collectives(plain, x))
    _same_placement(out, x)
    # The same key on one device draws the same mask: every sample kept or dropped alike.
    unsharded = f(jnp.asarray(host), key)
    np.testing.assert_allclose(np.asarray(out), np.asarray(unsharded), rtol=1e-6)


# --- drop_path_residual ---


def _residual_shards(name):
    return MESHES[name][0][0]


def test_residual_runs_per_shard_and_keeps_placement(jax, jnp, setup):
    name, explicit, mesh = setup
    shards = _residual_shards(name)
    fn = _branch(jnp)
    host = _batch()
    x = _sharded(jax, mesh, name, host)
    key = jax.random.key(3)
    arg = None if explicit else shards
    f = jax.jit(lambda x, key: drop_path_residual(x, fn, 0.5, True, rng=key, fixed_size=True, shards=arg))
    plain = jax.jit(lambda x: x + fn(x))
    with jax.set_mesh(mesh):
        out = f(x, key)
        _no_new_collectives(_collectives(f, x, key), _collectives(plain, x))
    _same_placement(out, x)
    got = np.asarray(out)
    changed = np.any(got != host, axis=(1, 2))
    size = 16 // shards
    k = max(1, round(size * 0.5))
    # Exactly k of each shard's samples went through the branch, scaled by size / k.
    np.testing.assert_array_equal(changed.reshape(shards, size).sum(axis=1), k)
    expected = host + (size / k) * np.asarray(jax.jit(fn)(host))
    np.testing.assert_allclose(got[changed], expected[changed], rtol=1e-5)
    # The same subset as shards= on an unsharded copy: the grouping, not the placement, decides.
    one = drop_path_residual(jnp.asarray(host), fn, 0.5, True, rng=key, fixed_size=True, shards=shards)
    np.testing.assert_allclose(got, np.asarray(one), rtol=1e-6)


def test_residual_gradients_match_the_unsharded_ones(jax, jnp, setup):
    name, explicit, mesh = setup
    shards = _residual_shards(name)
    fn = _branch(jnp)
    host = _batch(seed=1)
    x = _sharded(jax, mesh, name, host)
    key = jax.random.key(5)
    arg = None if explicit else shards

    def loss(x, key, shards=arg):
        y = drop_path_residual(x, fn, 0.5, True, rng=key, fixed_size=True, shards=shards)
        return (y * y).sum() + drop_path(x, 0.25, True, rng=key).sum()

    grad = jax.jit(jax.grad(loss))
    with jax.set_mesh(mesh):
        g = grad(x, key)
        plain = jax.jit(jax.grad(lambda x: (x + fn(x)).sum()))
        _no_new_collectives(_collectives(grad, x, key), _collectives(plain, x))
    _same_placement(g, x)
    ref = jax.grad(loss)(jnp.asarray(host), key, shards)
    np.testing.assert_allclose(np.asarray(g), np.asarray(ref), rtol=1e-5)


@pytest.mark.parametrize("explicit", [False, True], ids=["auto", "explicit"])
def test_residual_branch_costs_keep_times_the_plain_block_per_device(jax, jnp, explicit):
    # A block whose dot dominates: the per-device FLOPs XLA counts for the compiled program.
    dim = 256
    w = jax.random.normal(jax.random.key(0), (dim, dim)) / dim
    fn = lambda a: jnp.tanh(a @ w) @ w  # noqa: E731
    keep = 0.5
    mesh = _mesh(jax, "data", explicit)
    with jax.set_mesh(mesh):
        x = _sharded(jax, mesh, "data", np.ones((64, dim), np.float32))
        arg = None if explicit else DEVICES
        residual = jax.jit(
            lambda x, key: drop_path_residual(x, fn, 1 - keep, True, rng=key, fixed_size=True, shards=arg)
        )
        flops = residual.lower(x, jax.random.key(0)).compile().cost_analysis()["flops"]
        plain = jax.jit(lambda x: x + fn(x)).lower(x).compile().cost_analysis()["flops"]
    # k = round(8 * keep) = 4 of each device's 8 samples; what is left is drawing and gathering.
    assert flops / plain <= keep + 0.02, (flops, plain)


def test_residual_without_shards_in_auto_mode_is_the_whole_axis_subset(jax, jnp):
    # Under jit in auto mode the sharding is unknown when tracing: without shards= the subset
    # is drawn from the whole axis, exactly as on one device (correct; XLA then gathers).
    fn = _branch(jnp)
    host = _batch()
    key = jax.random.key(2)
    mesh = _mesh(jax, "data", explicit=False)
    f = jax.jit(lambda x, key: drop_path_residual(x, fn, 0.5, True, rng=key, fixed_size=True))
    with jax.set_mesh(mesh):
        x = _sharded(jax, mesh, "data", host)
        out = f(x, key)
        # What shards= avoids, and what the collective check would catch.
        assert _collectives(f, x, key) - _collectives(jax.jit(lambda x: x + fn(x)), x)
    _same_placement(out, x)
    whole = drop_path_residual(jnp.asarray(host), fn, 0.5, True, rng=key, fixed_size=True)
    np.testing.assert_allclose(np.asarray(out), np.asarray(whole), rtol=1e-6)


@pytest.mark.parametrize("explicit", [False, True], ids=["auto", "explicit"])
def test_residual_of_concrete_arrays_reads_their_shards(jax, jnp, explicit):
    fn = _branch(jnp)
    host = _batch()
    key = jax.random.key(4)
    mesh = _mesh(jax, "data", explicit)
    with jax.set_mesh(mesh):
        x = _sharded(jax, mesh, "data", host)
        fixed = drop_path_residual(x, fn, 0.5, True, rng=key, fixed_size=True)
        # fixed_size=False: drop_path's mask, the kept samples gathered across shards.
        bernoulli = drop_path_residual(x, fn, 0.5, True, rng=key)
        whole = drop_path_residual(x, fn, 0.5, True, rng=key, fixed_size=True, shards=1)
    for out in (fixed, bernoulli, whole):
        _same_placement(out, x)
    one = jnp.asarray(host)
    per_shard = drop_path_residual(one, fn, 0.5, True, rng=key, fixed_size=True, shards=DEVICES)
    np.testing.assert_allclose(np.asarray(fixed), np.asarray(per_shard), rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(bernoulli), np.asarray(drop_path_residual(one, fn, 0.5, True, rng=key)), rtol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(whole),
        np.asarray(drop_path_residual(one, fn, 0.5, True, rng=key, fixed_size=True)),
        rtol=1e-6,
    )


@pytest.mark.parametrize("explicit", [False, True], ids=["auto", "explicit"])
def test_residual_on_a_sample_axis_other_than_the_first(jax, jnp, explicit):
    # (seq, batch, feature): the batch, axis 1, over "data" and the features over "model".
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    fn = _branch(jnp)
    host = np.moveaxis(_batch(), 0, 1).copy()
    key = jax.random.key(9)
    mesh = _mesh(jax, "data_model", explicit)
    f = jax.jit(
        lambda x, key: drop_path_residual(
            x, fn, 0.5, True, axis=1, rng=key, fixed_size=True, shards=None if explicit else 4
        )
    )
    with jax.set_mesh(mesh):
        x = jax.device_put(host, NamedSharding(mesh, P(None, "data", "model")))
        out = f(x, key)
        _no_new_collectives(_collectives(f, x, key), _collectives(jax.jit(lambda x: x + fn(x)), x))
    _same_placement(out, x)
    one = drop_path_residual(jnp.asarray(host), fn, 0.5, True, axis=1, rng=key, fixed_size=True, shards=4)
    np.testing.assert_allclose(np.asarray(out), np.asarray(one), rtol=1e-6)


@pytest.mark.parametrize("explicit", [False, True], ids=["auto", "explicit"])
def test_residual_of_a_sample_axis_split_over_two_mesh_axes(jax, jnp, explicit):
    # The batch over ("data", "model"): 4 * 2 = 8 shards, read from the placement of a concrete
    # array, and from the spec under jit in explicit mode.
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    fn = _branch(jnp)
    host = _batch()
    key = jax.random.key(8)
    mesh = _mesh(jax, "data_model", explicit)
    outs = []
    with jax.set_mesh(mesh):
        x = jax.device_put(host, NamedSharding(mesh, P(("data", "model"))))
        outs.append(drop_path_residual(x, fn, 0.5, True, rng=key, fixed_size=True))
        if explicit:
            f = jax.jit(lambda x, key: drop_path_residual(x, fn, 0.5, True, rng=key, fixed_size=True))
            outs.append(f(x, key))
    one = drop_path_residual(jnp.asarray(host), fn, 0.5, True, rng=key, fixed_size=True, shards=DEVICES)
    for out in outs:
        _same_placement(out, x)
        np.testing.assert_allclose(np.asarray(out), np.asarray(one), rtol=1e-6)


@pytest.mark.parametrize("explicit", [False, True], ids=["auto", "explicit"])
def test_residual_of_a_batch_of_vectors_runs_per_shard(jax, jnp, explicit):
    # A 2-d x (batch, feature), the features over "model": the grouped samples have 3 axes, the
    # merged ones 2 again, each keeping its sharding.
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    fn = _branch(jnp)
    host = _batch()[:, 0, :]
    key = jax.random.key(10)
    mesh = _mesh(jax, "data_model", explicit)
    shards = None if explicit else 4
    f = jax.jit(lambda x, key: drop_path_residual(x, fn, 0.5, True, rng=key, fixed_size=True, shards=shards))
    with jax.set_mesh(mesh):
        x = jax.device_put(host, NamedSharding(mesh, P("data", "model")))
        out = f(x, key)
        _no_new_collectives(_collectives(f, x, key), _collectives(jax.jit(lambda x: x + fn(x)), x))
    _same_placement(out, x)
    one = drop_path_residual(jnp.asarray(host), fn, 0.5, True, rng=key, fixed_size=True, shards=4)
    np.testing.assert_allclose(np.asarray(out), np.asarray(one), rtol=1e-6)


@pytest.mark.parametrize("explicit", [False, True], ids=["auto", "explicit"])
def test_residual_of_a_batch_not_sharded_along_its_samples_is_the_whole_axis_subset(jax, jnp, explicit):
    # The features over "data", every sample on every device: one group, eagerly and under jit.
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    fn = _branch(jnp)
    host = _batch()
    key = jax.random.key(11)
    mesh = _mesh(jax, "data", explicit)
    f = jax.jit(lambda x, key: drop_path_residual(x, fn, 0.5, True, rng=key, fixed_size=True))
    with jax.set_mesh(mesh):
        x = jax.device_put(host, NamedSharding(mesh, P(None, None, "data")))
        outs = [drop_path_residual(x, fn, 0.5, True, rng=key, fixed_size=True), f(x, key)]
    whole = drop_path_residual(jnp.asarray(host), fn, 0.5, True, rng=key, fixed_size=True)
    for out in outs:
        _same_placement(out, x)
        np.testing.assert_allclose(np.asarray(out), np.asarray(whole), rtol=1e-6)


@pytest.mark.parametrize("explicit", [False, True], ids=["auto", "explicit"])
def test_residual_of_an_empty_sharded_batch_is_x(jax, jnp, explicit):
    mesh = _mesh(jax, "data", explicit)
    with jax.set_mesh(mesh):
        x = _sharded(jax, mesh, "data", np.ones((0, 4, 8), np.float32))
        out = drop_path_residual(x, jnp.sin, 0.5, True, rng=jax.random.key(0), fixed_size=True, shards=8)
    assert out is x


def test_residual_rounds_per_shard(jax, jnp):
    # 2 samples per shard at drop_prob=0.1: k = round(1.8) = 2, so nothing is dropped (scale 1),
    # where the whole batch of 16 would keep round(14.4) = 14.
    host = _batch()
    key = jax.random.key(0)
    fn = _branch(jnp)
    per_shard = drop_path_residual(jnp.asarray(host), fn, 0.1, True, rng=key, fixed_size=True, shards=8)
    np.testing.assert_allclose(np.asarray(per_shard), host + np.asarray(fn(host)), rtol=1e-6)
    whole = drop_path_residual(jnp.asarray(host), fn, 0.1, True, rng=key, fixed_size=True)
    assert np.sum(np.all(np.asarray(whole) == host, axis=(1, 2))) == 16 - 14  # the dropped ones


@pytest.mark.parametrize("explicit", [False, True], ids=["auto", "explicit"])
def test_residual_refuses_shards_it_cannot_honour(jax, jnp, explicit):
    key = jax.random.key(0)
    mesh = _mesh(jax, "data", explicit)
    with jax.set_mesh(mesh):
        x = _sharded(jax, mesh, "data", _batch())
        with pytest.raises(ValueError, match=r"shards=4, but x's sample axis is split into 8 shards"):
            drop_path_residual(x, jnp.sin, 0.5, True, rng=key, fixed_size=True, shards=4)
        with pytest.raises(ValueError, match=r"shards=8 needs fixed_size=True"):
            drop_path_residual(x, jnp.sin, 0.5, True, rng=key, shards=8)
    with pytest.raises(ValueError, match=r"shards=3 does not divide the 16 samples"):
        drop_path_residual(jnp.ones((16, 2)), jnp.sin, 0.5, True, rng=key, fixed_size=True, shards=3)
    with pytest.raises(TypeError, match=r"shards must be None or a positive int.*got 0"):
        drop_path_residual(jnp.ones((16, 2)), jnp.sin, 0.5, True, rng=key, fixed_size=True, shards=0)


@pytest.mark.parametrize("explicit", [False, True], ids=["auto", "explicit"])
def test_residual_of_a_tensor_parallel_mlp_adds_no_collective(jax, jnp, explicit):
    # Megatron's MLP: the hidden layer split over "model", whose sum over it the plain block
    # all-reduces too. The residual adds nothing to that, forward and backward (the weights' gradients).
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = _mesh(jax, "data_model", explicit)

    def mlp(a, w1, w2):
        h = jnp.tanh(jnp.einsum("bsd,dh->bsh", a, w1))
        # Explicit sharding asks where a sum over a sharded axis goes: where a is.
        where = {"out_sharding": jax.typeof(a).sharding} if explicit else {}
        return jnp.einsum("bsh,hd->bsd", h, w2, **where)

    shards = None if explicit else 4
    key = jax.random.key(0)
    with jax.set_mesh(mesh):
        x = jax.device_put(jnp.asarray(_batch()), NamedSharding(mesh, P("data")))
        w1 = jax.device_put(jnp.full((8, 32), 0.1), NamedSharding(mesh, P(None, "model")))
        w2 = jax.device_put(jnp.full((32, 8), 0.1), NamedSharding(mesh, P("model", None)))

        def residual(w1, w2, x, key):
            fn = lambda a: mlp(a, w1, w2)  # noqa: E731
            return drop_path_residual(x, fn, 0.5, True, rng=key, fixed_size=True, shards=shards).sum()

        def plain(w1, w2, x):
            return (x + mlp(x, w1, w2)).sum()

        for f, g in ((residual, plain), (jax.grad(residual), jax.grad(plain))):
            own = _collectives(jax.jit(g), w1, w2, x)
            assert own["all-reduce"] >= 1  # the sum over "model" the plain block needs
            _no_new_collectives(_collectives(jax.jit(f), w1, w2, x, key), own)
        grad = jax.jit(jax.grad(residual))(w1, w2, x, key)
    _same_placement(grad, w1)


@pytest.mark.parametrize("explicit", [False, True], ids=["auto", "explicit"])
def test_residual_in_bfloat16_runs_per_shard(jax, jnp, explicit):
    # 16-bit floats draw one scale per kept sample (the rounding of size / k): placed per shard too.
    mesh = _mesh(jax, "data", explicit)
    key = jax.random.key(6)
    host = _batch().astype(jnp.bfloat16)
    f = jax.jit(
        lambda x, key: drop_path_residual(
            x, lambda a: a * 2, 0.25, True, rng=key, fixed_size=True, shards=None if explicit else 8
        )
    )
    with jax.set_mesh(mesh):
        x = _sharded(jax, mesh, "data", host)
        out = f(x, key)
        _no_new_collectives(_collectives(f, x, key), Counter())
    _same_placement(out, x)
    double = lambda a: a * 2  # noqa: E731
    one = drop_path_residual(jnp.asarray(host), double, 0.25, True, rng=key, fixed_size=True, shards=8)
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(one, np.float32))


# --- flax ---


def test_flax_modules_on_sharded_arrays(jax, jnp, setup):
    nnx = pytest.importorskip("flax.nnx", reason="needs flax (the nox jax session installs it)")
    import anydrop.flax

    name, explicit, mesh = setup
    shards = _residual_shards(name)
    host = _batch()
    x = _sharded(jax, mesh, name, host)

    def model(shards):
        layer = anydrop.flax.DropPath(0.5, rngs=nnx.Rngs(dropout=0))
        block = anydrop.flax.DropPathResidual(_branch(jnp), 0.5, shards=shards, rngs=nnx.Rngs(dropout=1))
        return layer, block

    layer, block = model(None if explicit else shards)
    step = nnx.jit(lambda layer, block, x: block(layer(x)))
    with jax.set_mesh(mesh):
        out = step(layer, block, x)
        again = step(layer, block, x)  # the streams advance under nnx.jit: new masks
    _same_placement(out, x)
    _same_placement(again, x)
    assert not np.array_equal(np.asarray(again), np.asarray(out))
    # The same modules on one device, told the shard count: the same masks and subsets.
    twin_layer, twin_block = model(shards)
    dropped = twin_layer(jnp.asarray(host))
    np.testing.assert_allclose(np.asarray(out), np.asarray(twin_block(dropped)), rtol=1e-6)
    changed = np.any(np.asarray(out) != np.asarray(dropped), axis=(1, 2))
    np.testing.assert_array_equal(changed.reshape(shards, -1).sum(axis=1), 16 // shards // 2)


# --- shard_map: the local view ---


def _sample_masks(out) -> np.ndarray:
    """Per sample and per feature column, whether drop path kept it (inputs are never zero)."""
    return np.asarray(out)[:, 0, :] != 0


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "same-key"])
def test_shard_map_recipe_folds_in_the_data_index_only(jax, jnp, fold):
    # Tensor parallel: x's features split over "model", the batch over "data". Inside
    # shard_map each device sees its local block, and a key means what it means on one device.
    from jax.sharding import PartitionSpec as P

    mesh = _mesh(jax, "data_model", explicit=False)
    spec = P("data", None, "model")

    def local(x, key):
        if fold:
            key = jax.random.fold_in(key, jax.lax.axis_index("data"))
        return drop_path(x, 0.5, True, rng=key)

    with jax.set_mesh(mesh):
        x = _sharded(jax, mesh, "data_model", _batch(n=64))
        f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(spec, P()), out_specs=spec))
        kept = _sample_masks(f(x, jax.random.key(0)))
        _no_new_collectives(_collectives(f, x, jax.random.key(0)), Counter())
    # Both model shards of every sample agree (features 0-3 on one device, 4-7 on the other).
    np.testing.assert_array_equal(kept[:, :4], kept[:, 4:])
    per_data_shard = kept[:, 0].reshape(4, 16)
    distinct = {tuple(row) for row in per_data_shard}
    if fold:
        assert len(distinct) == 4, "data shards drew the same masks"
    else:
        # The pitfall the recipe avoids: one key, the same positions dropped in every shard.
        assert len(distinct) == 1


def test_shard_map_residual_runs_locally(jax, jnp):
    from jax.sharding import PartitionSpec as P

    fn = _branch(jnp)
    mesh = _mesh(jax, "data", explicit=False)

    def local(x, key):
        key = jax.random.fold_in(key, jax.lax.axis_index("data"))
        return drop_path_residual(x, fn, 0.5, True, rng=key, fixed_size=True)

    with jax.set_mesh(mesh):
        host = _batch(n=64)
        x = _sharded(jax, mesh, "data", host)
        f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P("data"), P()), out_specs=P("data")))
        out = f(x, jax.random.key(1))
        _same_placement(out, x)
        _no_new_collectives(_collectives(f, x, jax.random.key(1)), Counter())
    changed = np.any(np.asarray(out) != host, axis=(1, 2))
    np.testing.assert_array_equal(changed.reshape(8, 8).sum(axis=1), 4)


def test_the_docs_show_what_the_sharding_example_prints(jax):
    # docs/distributed.md shows the output of docs/examples/jax_sharding.py: the figures
    # (collectives, per-device FLOPs) come from the script, not typed by hand.
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    script = [sys.executable, "docs/examples/jax_sharding.py"]
    printed = subprocess.run(script, cwd=root, capture_output=True, text=True, check=True).stdout
    page = (root / "docs" / "distributed.md").read_text()
    shown = page.split("$ python docs/examples/jax_sharding.py\n", 1)[1].split("```", 1)[0]
    assert shown == printed

"""anydrop.keras on each Keras backend it supports: model.fit, jit_compile, stateless calls, save and load.

Keras picks its backend from ``KERAS_BACKEND`` when it is first imported, so
this file runs once per backend, each in its own process, with
``KERAS_BACKEND`` equal to ``--backend``: ``nox -s keras`` does so for jax,
torch and numpy. Elsewhere it skips, saying why.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = pytest.mark.backends("jax", "torch", "numpy")


@pytest.fixture(scope="module")
def keras(backend):
    if os.environ.get("KERAS_BACKEND") != backend.name:
        pytest.skip(
            f"set KERAS_BACKEND={backend.name} to run the Keras tests on {backend.name} "
            f"(KERAS_BACKEND is {os.environ.get('KERAS_BACKEND')!r}; nox -s keras runs each backend)"
        )
    keras = pytest.importorskip("keras", reason="needs keras (nox -s keras installs it)")
    assert keras.backend.backend() == backend.name
    return keras


@pytest.fixture(scope="module")
def kdrop(keras):
    import anydrop.keras

    return anydrop.keras


def _np(keras, a):
    return keras.ops.convert_to_numpy(a)


def _needs_fit(backend):
    if backend.name == "numpy":
        pytest.skip("Keras's NumPy backend is inference only: model.fit is not implemented there")


def _block_model(keras, kdrop, **kwargs):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(6)(inputs)
    hidden = kdrop.DropPathResidual(keras.layers.Dense(6), 0.5, seed=3, name="block", **kwargs)(hidden)
    hidden = kdrop.DropPath(0.25, seed=4, name="drop")(hidden)
    return keras.Model(inputs, keras.layers.Dense(1)(hidden))


def _data(n=32):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6)).astype("float32"), rng.normal(size=(n, 1)).astype("float32")


# --- what the layer computes ---


def test_training_drops_whole_samples_and_inference_is_the_identity(keras, kdrop):
    layer = kdrop.DropPath(0.5, seed=0)
    x = np.arange(1.0, 1 + 64 * 3, dtype="float32").reshape(64, 3)
    out = _np(keras, layer(x, training=True))
    kept = np.all(out == 2 * x, axis=1)
    assert np.all(kept | np.all(out == 0, axis=1))
    assert 10 < kept.sum() < 54
    np.testing.assert_array_equal(_np(keras, layer(x)), x)  # training=None: inference, as Dropout
    np.testing.assert_array_equal(_np(keras, layer(x, training=False)), x)


def test_the_seed_generator_advances_and_the_seed_reproduces(keras, kdrop):
    x = np.ones((64, 2), "float32")
    a, b = kdrop.DropPath(0.5, seed=7), kdrop.DropPath(0.5, seed=7)
    first = [_np(keras, a(x, training=True)) for _ in range(2)]
    assert not np.array_equal(first[0], first[1])  # a fresh mask per call
    np.testing.assert_array_equal(_np(keras, b(x, training=True)), first[0])  # same seed, same sequence
    assert int(_np(keras, a.seed_generator.state)[1]) == 2
    other = _np(keras, kdrop.DropPath(0.5, seed=8)(x, training=True))
    assert not np.array_equal(other, first[0])
    assert not np.array_equal(other, first[1])


def test_the_seed_generator_advances_only_on_calls_that_draw(keras, kdrop):
    x = np.ones((8, 2), "float32")
    makers = (
        lambda rate: kdrop.DropPath(rate, seed=3),
        lambda rate: kdrop.DropPathResidual(keras.layers.Identity(), rate, seed=3),
    )
    for make in makers:
        layer, never = make(0.5), make(0.0)
        layer(x)
        layer(x, training=False)
        never(x, training=True)
        assert int(_np(keras, layer.seed_generator.state)[1]) == 0
        assert int(_np(keras, never.seed_generator.state)[1]) == 0
        layer(x, training=True)
        assert int(_np(keras, layer.seed_generator.state)[1]) == 1


def test_axis_and_scale_by_keep(keras, kdrop):
    x = np.ones((4, 64, 2), "float32")
    out = _np(keras, kdrop.DropPath(0.5, axis=1, scale_by_keep=False, seed=1)(x, training=True))
    assert set(np.unique(out)) == {0.0, 1.0}
    # One draw per index along axis 1, broadcast over the other axes.
    assert np.all(out == out[:, :, :1])
    assert np.all(out == out[:1])
    assert 10 < out[0, :, 0].sum() < 54


def test_residual_runs_the_branch_on_kept_samples_only(keras, kdrop):
    seen = []

    class Record(keras.layers.Layer):
        def call(self, a):
            seen.append(tuple(a.shape))
            return 10 * a

    block = kdrop.DropPathResidual(Record(), 0.5, seed=0)
    x = np.ones((8, 3), "float32")
    out = _np(keras, block(x, training=True))
    assert seen[-1] == (4, 3)  # fixed_size: exactly round(8 * 0.5) samples
    assert sorted(set(out[:, 0].tolist())) == [1.0, 21.0]
    np.testing.assert_array_equal(_np(keras, block(x)), 11 * x)


def test_residual_drops_along_its_axis(keras, kdrop):
    block = kdrop.DropPathResidual(keras.layers.Identity(), 0.5, axis=1, seed=0)
    out = _np(keras, block(np.ones((4, 8, 2), "float32"), training=True))
    assert np.all(out == out[:1, :, :1])  # one draw per index along axis 1
    assert sorted(set(out[0, :, 0].tolist())) == [1.0, 3.0]


def test_scale_at_test_matches_keras_cv(keras, kdrop):
    # keras-cv StochasticDepth(rate=0.5)([u, u], training=False) is 1.5 * u.
    u = np.arange(1.0, 7.0, dtype="float32").reshape(2, 3)
    block = kdrop.DropPathResidual(keras.layers.Identity(), 0.5, scale_by_keep=False, scale_at_test=True)
    np.testing.assert_array_equal(_np(keras, block(u, training=False)), 1.5 * u)
    layer = kdrop.DropPath(0.5, scale_by_keep=False, scale_at_test=True, seed=0)
    np.testing.assert_array_equal(_np(keras, layer(u)), 0.5 * u)
    trained = _np(keras, layer(np.ones((64, 3), "float32"), training=True))
    assert set(np.unique(trained)) == {0.0, 1.0}  # no scaling in training


def test_symbolic_construction_and_output_shape(keras, kdrop):
    layer = kdrop.DropPath(0.1)
    assert layer.compute_output_shape((None, 5, 3)) == (None, 5, 3)
    inputs = keras.Input((5, 3))
    block = kdrop.DropPathResidual(keras.layers.Dense(3), 0.1)
    out = block(layer(inputs))
    assert tuple(out.shape) == (None, 5, 3)
    assert block.branch.built
    assert len(block.trainable_weights) == 2  # the branch's kernel and bias are the block's


# --- training ---


@pytest.mark.parametrize("jit_compile", [True, False])
def test_model_fit_trains_and_advances_the_seed_generators(backend, keras, kdrop, jit_compile):
    _needs_fit(backend)
    if jit_compile and backend.name == "torch":
        pytest.skip(
            "Keras's jit_compile on torch is torch.compile with inductor: minutes of C++ compilation "
            "on a CPU for this one test, and not Keras's default on torch"
        )
    keras.utils.set_random_seed(0)
    model = _block_model(keras, kdrop)
    model.compile(optimizer="sgd", loss="mse", jit_compile=jit_compile)
    x, y = _data()
    before = _np(keras, model.get_layer("block").branch.kernel).copy()
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert not np.array_equal(_np(keras, model.get_layer("block").branch.kernel), before)
    # 2 epochs of 4 steps: each layer drew 8 seeds, also in compiled, stateless JAX steps.
    assert int(_np(keras, model.get_layer("drop").seed_generator.state)[1]) == 8
    # Inference is deterministic: predict twice, same output.
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.backends("jax")
def test_jax_stateless_call_under_jit_returns_the_advanced_state(keras, kdrop):
    import jax

    layer = kdrop.DropPath(0.5, seed=5)
    x = np.ones((64, 2), "float32")
    layer.build(x.shape)

    @jax.jit
    def step(non_trainable, x):
        return layer.stateless_call([], non_trainable, x, training=True)

    state = [v.value for v in layer.non_trainable_variables]
    out1, state = step(state, x)
    out2, state = step(state, x)
    assert not np.array_equal(np.asarray(out1), np.asarray(out2))
    assert int(np.asarray(state[0])[1]) == 2
    assert int(_np(keras, layer.seed_generator.state)[1]) == 0  # stateless: the layer's own state untouched


@pytest.mark.backends("jax")
def test_jax_residual_without_fixed_size_under_jit_says_what_to_do(keras, kdrop):
    model = _block_model(keras, kdrop, fixed_size=False)
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    x, y = _data(8)
    with pytest.raises(TypeError, match="fixed_size=True"):
        model.fit(x, y, epochs=1, verbose=0)


# --- saving ---


def test_save_and_load_round_trip(backend, keras, kdrop, tmp_path):
    model = _block_model(keras, kdrop)
    x, y = _data(8)
    if backend.name != "numpy":
        model.compile(optimizer="sgd", loss="mse")
        model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    for name in ("drop", "block"):
        pairs = zip(loaded.get_layer(name).weights, model.get_layer(name).weights, strict=True)
        for ours, theirs in pairs:
            np.testing.assert_array_equal(_np(keras, ours), _np(keras, theirs))
    drop = loaded.get_layer("drop")
    assert type(drop) is kdrop.DropPath
    assert (drop.rate, drop.seed) == (0.25, 4)
    # The seed generators' states are saved too: the reloaded model draws the original's next masks.
    ones = np.ones((16, 6), "float32")
    np.testing.assert_array_equal(
        _np(keras, drop(ones, training=True)), _np(keras, model.get_layer("drop")(ones, training=True))
    )


def test_config_round_trip_keeps_every_argument(keras, kdrop):
    layer = kdrop.DropPath(0.3, scale_by_keep=False, scale_at_test=True, axis=(0, 1), seed=9, name="dp")
    config = layer.get_config()
    assert {k: config[k] for k in ("rate", "scale_by_keep", "scale_at_test", "axis", "seed")} == {
        "rate": 0.3,
        "scale_by_keep": False,
        "scale_at_test": True,
        "axis": (0, 1),
        "seed": 9,
    }
    json_like = dict(config, axis=[0, 1])  # a .keras file's JSON turns the tuple into a list
    clone = kdrop.DropPath.from_config(json_like)
    assert (clone.axis, clone.name, clone.scale_at_test) == ((0, 1), "dp", True)
    block = kdrop.DropPathResidual(keras.layers.Dense(2), 0.2, fixed_size=False, seed=1)
    clone = kdrop.DropPathResidual.from_config(block.get_config())
    assert type(clone.branch) is keras.layers.Dense
    assert (clone.rate, clone.fixed_size, clone.seed) == (0.2, False, 1)
    block = kdrop.DropPathResidual(keras.layers.Dense(2), axis=1)
    clone = kdrop.DropPathResidual.from_config(block.get_config())
    assert (clone.axis, clone.fixed_size) == (1, True)
    assert keras.saving.get_registered_name(kdrop.DropPath) == "anydrop>DropPath"


def test_a_config_without_an_axis_loads_with_axis_zero(keras, kdrop):
    for layer in (kdrop.DropPath(0.3, axis=1), kdrop.DropPathResidual(keras.layers.Dense(2), axis=1)):
        config = layer.get_config()
        del config["axis"]
        assert type(layer).from_config(config).axis == 0


# --- errors ---


def test_argument_errors_name_the_argument(keras, kdrop):
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\], got 1.5"):
        kdrop.DropPath(1.5)
    with pytest.raises(TypeError, match="rate must be a real number"):
        kdrop.DropPath("0.1")
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 4294967296\), got -1"):
        kdrop.DropPath(0.1, seed=-1)
    with pytest.raises(TypeError, match=r"seed must be a non-negative int, got 1\.0"):
        kdrop.DropPath(0.1, seed=1.0)
    with pytest.raises(ValueError, match="scale_at_test=True and scale_by_keep=True"):
        kdrop.DropPath(0.1, scale_at_test=True)
    with pytest.raises(TypeError, match=r"branch must be a keras\.layers\.Layer"):
        kdrop.DropPathResidual(lambda a: a, 0.1)
    with pytest.raises(TypeError, match="axis must be an int for a residual drop path"):
        kdrop.DropPathResidual(keras.layers.Identity(), 0.1, axis=(0,))


def test_unsupported_backends_are_refused_by_name(kdrop):
    # TensorFlow tensors are not array API arrays; construction on that backend
    # goes through this check (keras.backend.backend() is the name).
    message = (
        r"^anydrop\.keras layers run on the Keras backends jax, torch, numpy, whose tensors are array API "
        r"arrays, but keras\.backend\.backend\(\) is 'tensorflow'; set KERAS_BACKEND=jax, torch or numpy "
        r"before importing keras$"
    )
    with pytest.raises(ValueError, match=message):
        kdrop.check_backend("tensorflow")
    kdrop.check_backend("jax")

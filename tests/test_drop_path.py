"""Behaviour of anydrop.drop_path, run on every backend."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from array_api_compat import array_namespace, device

from anydrop import drop_path
from tests.backends import NO_ADVANCING_RNG, NO_DEFAULT_RNG, NO_STRIDED_VIEWS, make_generator
from tests.helpers import kept_samples, random_batch, scaled
from tests.internals import BY_TYPE, backend_for

# Count bounds are mean +- 5 standard deviations at a fixed seed: a correct
# implementation fails one with probability below 1e-6.
SIGMAS = 5.0
ALL_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64", "complex64", "complex128")


def test_identity_when_not_training(backend):
    x = random_batch(backend, (4, 3))
    assert drop_path(x) is x
    assert drop_path(x, 0.5) is x
    assert drop_path(x, 0.5, False) is x
    assert drop_path(x, 1.0, training=False, rng=0) is x


def test_identity_when_drop_prob_is_zero(backend):
    x = random_batch(backend, (4, 3))
    assert drop_path(x, 0.0, True) is x
    assert drop_path(x, 0, True, axis=(), rng=3) is x


def test_each_sample_is_zero_or_scaled(backend):
    x = random_batch(backend, (256, 3, 5))
    out = drop_path(x, 0.25, True, rng=0)
    kept = kept_samples(backend.to_numpy(out), backend.to_numpy(scaled(backend.xp, x, 0.75)), (0,))
    assert 0 < kept.sum() < kept.size


@pytest.mark.parametrize("dtype", ALL_FLOAT_DTYPES, indirect=True)
def test_dtypes_keep_structure_and_metadata(backend, dtype):
    x = random_batch(backend, (128, 2, 3), dtype)
    out = drop_path(x, 0.5, True, rng=1)
    assert out.dtype == x.dtype
    assert out.shape == x.shape
    assert device(out) == device(x)
    assert array_namespace(out) is array_namespace(x)
    kept = kept_samples(backend.to_numpy(out), backend.to_numpy(scaled(backend.xp, x, 0.5)), (0,))
    assert 0 < kept.sum() < kept.size


def test_scale_by_keep_false_leaves_kept_samples_exact(backend):
    x = random_batch(backend, (200, 4))
    out = drop_path(x, 0.3, True, scale_by_keep=False, rng=2)
    kept = kept_samples(backend.to_numpy(out), backend.to_numpy(x), (0,))
    assert 0 < kept.sum() < kept.size


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9])
def test_drop_count_within_binomial_bound(backend, p):
    n = 20_000
    x = backend.asarray(np.ones((n, 2)))
    out = backend.to_numpy(drop_path(x, p, True, rng=12345))
    dropped = int(np.sum(out[:, 0] == 0))
    sd = math.sqrt(n * p * (1 - p))
    assert abs(dropped - n * p) <= SIGMAS * sd, (dropped, n * p, sd)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_scale_by_keep_preserves_the_mean(backend, p):
    n = 20_000
    x = backend.asarray(np.full((n, 3), 2.0), "float64")
    out = backend.to_numpy(drop_path(x, p, True, rng=7))
    # Each sample is 2/keep with probability keep, else 0: mean 2, sd 2*sqrt(p/keep).
    se = 2.0 * math.sqrt(p / (1 - p) / n)
    assert abs(out.mean() - 2.0) <= SIGMAS * se


@pytest.mark.skip_backends(**NO_DEFAULT_RNG)
@pytest.mark.parametrize("scale_by_keep", [True, False])
def test_drop_prob_one_gives_exact_zeros(backend, scale_by_keep):
    host = np.array([[1.0, -2.0], [np.inf, -np.inf], [np.nan, 3.0]])
    x = backend.asarray(host)
    out = backend.to_numpy(drop_path(x, 1.0, True, scale_by_keep))
    assert out.shape == host.shape
    assert np.all(out == 0)
    assert not np.any(np.signbit(out)), "expected +0.0, not -0.0"


@pytest.mark.parametrize(
    ("axis", "axes"),
    [(0, (0,)), (1, (1,)), (-1, (2,)), ((0, 2), (0, 2)), ((-1, -3), (0, 2)), ((0, 1, 2), (0, 1, 2))],
)
def test_axis_selects_the_sample_axes(backend, axis, axes):
    shape = (12, 10, 8)
    x = random_batch(backend, shape)
    out = drop_path(x, 0.5, True, axis=axis, rng=5)
    kept = kept_samples(backend.to_numpy(out), backend.to_numpy(scaled(backend.xp, x, 0.5)), axes)
    assert kept.size == math.prod(shape[i] for i in axes)
    assert 0 < kept.sum() < kept.size


def test_axis_one_for_seq_batch_dim_layout(backend):
    # (seq, batch, dim): a dropped sample is a column over all positions.
    x = random_batch(backend, (7, 64, 4))
    out = backend.to_numpy(drop_path(x, 0.5, True, axis=1, rng=9))
    dropped = np.all(out == 0, axis=(0, 2))
    partially = np.any(out == 0, axis=(0, 2)) & ~dropped
    assert dropped.any()
    assert not dropped.all()
    assert not partially.any()


def test_empty_axis_drops_the_whole_array_at_once(backend):
    x = random_batch(backend, (3, 4))
    expected = backend.to_numpy(scaled(backend.xp, x, 0.5))
    outcomes = set()
    for seed in range(32):
        out = backend.to_numpy(drop_path(x, 0.5, True, axis=(), rng=seed))
        if np.all(out == 0):
            outcomes.add("dropped")
        else:
            np.testing.assert_array_equal(out, expected)
            outcomes.add("kept")
    assert outcomes == {"dropped", "kept"}


def test_zero_dimensional_input_with_empty_axis(backend):
    x = backend.asarray(np.float64(3.0), "float64")
    out = drop_path(x, 0.5, True, axis=(), rng=0)
    assert out.shape == ()
    assert type(out) is type(x)  # an array, not a NumPy scalar
    assert float(backend.to_numpy(out)) in (0.0, 6.0)


def test_empty_batch(backend):
    x = backend.asarray(np.ones((0, 3)))
    out = drop_path(x, 0.5, True, rng=0)
    assert out.shape == (0, 3)
    assert out.dtype == x.dtype


def test_same_seed_same_output_and_seeds_differ(backend):
    x = random_batch(backend, (64, 3))
    a = backend.to_numpy(drop_path(x, 0.5, True, rng=42))
    b = backend.to_numpy(drop_path(x, 0.5, True, rng=42))
    c = backend.to_numpy(drop_path(x, 0.5, True, rng=43))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)  # equal masks have probability 2**-64


@pytest.mark.skip_backends(**NO_ADVANCING_RNG)
def test_generator_advances_and_reproduces(backend):
    x = random_batch(backend, (64, 3))
    gen = make_generator(backend, 11)
    first = backend.to_numpy(drop_path(x, 0.5, True, rng=gen))
    second = backend.to_numpy(drop_path(x, 0.5, True, rng=gen))
    assert not np.array_equal(first, second)
    again = backend.to_numpy(drop_path(x, 0.5, True, rng=make_generator(backend, 11)))
    np.testing.assert_array_equal(first, again)


def test_int_seed_is_a_fresh_generator_with_that_seed(backend):
    x = random_batch(backend, (64, 3))
    by_seed = backend.to_numpy(drop_path(x, 0.5, True, rng=2024))
    by_generator = backend.to_numpy(drop_path(x, 0.5, True, rng=make_generator(backend, 2024)))
    np.testing.assert_array_equal(by_seed, by_generator)


@pytest.mark.skip_backends(**NO_DEFAULT_RNG)
def test_default_rng_draws_valid_masks(backend):
    x = random_batch(backend, (512, 2))
    out = drop_path(x, 0.5, True)
    kept = kept_samples(backend.to_numpy(out), backend.to_numpy(scaled(backend.xp, x, 0.5)), (0,))
    assert 0 < kept.sum() < kept.size


@pytest.mark.parametrize("p", [0.0, 0.4, 1.0])
@pytest.mark.parametrize("training", [True, False])
def test_input_is_never_modified(backend, p, training):
    x = random_batch(backend, (32, 4))
    before = backend.to_numpy(x).copy()
    drop_path(x, p, training, rng=0)
    drop_path(x, p, training, scale_by_keep=False, axis=1, rng=0)
    np.testing.assert_array_equal(backend.to_numpy(x), before)


@pytest.mark.skip_backends(**NO_STRIDED_VIEWS)
def test_non_contiguous_input(backend):
    x = random_batch(backend, (16, 6))
    view = backend.xp.permute_dims(x, (1, 0))  # a transposed view, not contiguous
    out = drop_path(view, 0.5, True, axis=0, rng=3)
    kept = kept_samples(backend.to_numpy(out), backend.to_numpy(scaled(backend.xp, view, 0.5)), (0,))
    assert kept.size == 6


@pytest.mark.backends("numpy")
@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_ndarray_subclass_is_multiplied_elementwise():
    # For np.matrix, * is a matrix product: the mask must be applied elementwise.
    x = np.matrix(np.arange(1.0, 10.0).reshape(3, 3))
    out = drop_path(x, 0.5, True, rng=3)
    assert out.shape == (3, 3)
    kept_samples(np.asarray(out), np.asarray(x) * 2.0, (0,))


@pytest.mark.backends("numpy")
def test_non_native_byte_order_keeps_the_dtype():
    x = np.arange(1.0, 9.0).reshape(4, 2).astype(">f8")
    out = drop_path(x, 0.5, True, rng=0)
    assert out.dtype == x.dtype
    kept = kept_samples(out, x * 2.0, (0,))
    assert 0 < kept.sum() < kept.size


@pytest.mark.backends("numpy")
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_children_do_not_replay_the_parent_masks():
    # DataLoader workers are forked: with rng=None they must not draw the parent's masks.
    x = np.ones((64, 1))
    drop_path(x, 0.5, True)  # the process-wide default generator now exists
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.write(write_end, drop_path(x, 0.5, True).astype(np.uint8).tobytes())
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 64):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    child = np.frombuffer(data, dtype=np.uint8)
    parent = drop_path(x, 0.5, True).astype(np.uint8).ravel()
    assert child.size == 64
    assert not np.array_equal(child, parent)  # equal with probability 2**-64


@pytest.mark.backends("array_api_strict")
def test_output_stays_on_a_non_default_device(backend):
    xp = backend.xp
    dev = xp.Device("device1")
    x = xp.asarray([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], device=dev)
    for rng in (0, None, np.random.default_rng(0)):
        out = drop_path(x, 0.5, True, rng=rng)
        assert out.device == dev


#: The backend anydrop picks for each test library's arrays.
_BACKEND_NAMES = {
    "numpy": "numpy",
    "torch": "torch",
    "cupy": "cupy",
    "array_api_strict": "generic",
    "dask": "dask",
    "jax": "jax",
}


@pytest.mark.thread_unsafe
def test_an_array_type_met_for_the_first_time_gets_its_librarys_backend_once(backend):
    # The backend is looked up once per array type and cached: forget the type to see the lookup itself.
    x = random_batch(backend, (16, 2), "float64")
    saved = BY_TYPE.pop(type(x), None)
    try:
        assert backend_for(x).name == _BACKEND_NAMES[backend.name]
        entry = BY_TYPE[type(x)]
        assert entry[0] is array_namespace(x)
        out = drop_path(x, 0.5, True, rng=0)
        assert BY_TYPE[type(x)] is entry
        assert list(entry[2]) == [x.dtype]  # the per-dtype cache the call filled
        kept = kept_samples(backend.to_numpy(out), backend.to_numpy(scaled(backend.xp, x, 0.5)), (0,))
        assert 0 < kept.sum() < kept.size
    finally:
        if saved is not None:
            BY_TYPE[type(x)] = saved

"""anydrop.PortableRNG: the same masks on every array library, from a written-down stream.

Every backend session checks its masks against the specification (an
independent pure-Python version in ``tests/portable_spec.py``) and against
golden bits, so masks agree across NumPy, PyTorch, CuPy, array-api-strict and
JAX without all of them being installed at once.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anydrop import DropPath, PortableRNG, drop_path
from tests.helpers import random_batch
from tests.internals import portable_masks, splitmix64_numpy, splitmix64_python, stream_value
from tests.portable_spec import (
    GAMMA,
    GOLDEN_BITS,
    GOLDEN_POSITION,
    GOLDEN_SEED,
    M64,
    mix,
    run_sequence,
    spec_kept,
    spec_uniforms,
)


def test_splitmix64_matches_its_published_reference_values():
    # SplitMix64 from state 1234567, as published with the algorithm's reference implementations.
    expected = [
        6457827717110365317,
        3203168211198807973,
        9817491932198370423,
        4593380528125082431,
        16408922859458223821,
    ]
    assert splitmix64_python(1234567, 0, 5) == expected
    assert splitmix64_numpy(np, 1234567, 0, 5).tolist() == expected
    assert splitmix64_python(1234567, 3, 2) == expected[3:]


@settings(max_examples=200, derandomize=True, deadline=None, database=None)
@given(
    state=st.integers(0, 2**64 - 1),
    start=st.integers(0, 2**64 + 10),
    n=st.integers(0, 40),
)
def test_numpy_and_pure_python_streams_agree(state, start, n):
    assert splitmix64_numpy(np, state, start, n).tolist() == splitmix64_python(state, start, n)


@pytest.mark.parametrize(
    "dtype", ["float16", "bfloat16", "float32", "float64", "complex64", "complex128"], indirect=True
)
def test_masks_follow_the_specification_and_the_golden_bits(backend, dtype):
    rng = PortableRNG(GOLDEN_SEED)
    assert run_sequence(backend, rng, dtype) == GOLDEN_BITS
    assert rng.position == GOLDEN_POSITION
    # The golden bits are the specification's: 12 + 15 + 1 + 4 values, then 10 more.
    spec = spec_kept(GOLDEN_SEED, 0, 12, 0.5)
    assert "".join("1" if k else "0" for k in spec) == GOLDEN_BITS[0]
    spec = spec_kept(GOLDEN_SEED, 32, 10, 0.9)
    assert "".join("1" if k else "0" for k in spec) == GOLDEN_BITS[4]


@pytest.mark.parametrize("p", [0.001, 0.3, 0.5, 0.999])
def test_large_masks_follow_the_specification(backend, p):
    n = 3000
    rng = PortableRNG(99, position=12345)
    x = backend.asarray(np.ones((n, 1)))
    kept = backend.to_numpy(drop_path(x, p, True, rng=rng))[:, 0] != 0
    np.testing.assert_array_equal(kept, spec_kept(99, 12345, n, 1.0 - p))


# Not 16-bit floats: there the masks agree (checked above) but each library
# rounds 1/keep its own way (NumPy rounds keep to float16 first).
@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"], indirect=True)
def test_outputs_equal_numpys_bit_for_bit(backend, dtype):
    host = np.random.default_rng(1).uniform(-3.0, 3.0, size=(64, 3, 2))
    if dtype.startswith("complex"):
        host = host + 1j * host[::-1]
    x_host = host.astype(dtype)
    x = backend.asarray(x_host, dtype)
    for p, scale_by_keep, axis in [(0.3, True, 0), (0.7, False, (0, 2)), (1.0, True, 1)]:
        ours = backend.to_numpy(drop_path(x, p, True, scale_by_keep, axis=axis, rng=PortableRNG(5)))
        reference = drop_path(x_host, p, True, scale_by_keep, axis=axis, rng=PortableRNG(5))
        np.testing.assert_array_equal(ours.view(np.uint8), reference.view(np.uint8))


def test_nested_masks_share_one_draw(backend):
    # Several probabilities compare the same uniform: a kept mask and a nested one.
    rng = PortableRNG(8)
    x = backend.asarray(np.ones((500, 2)))
    kept, upper = portable_masks(rng, (500, 1), (0.6, 0.2), backend.dtype("float32"), x=x, xp=backend.xp)
    kept, upper = backend.to_numpy(kept)[:, 0], backend.to_numpy(upper)[:, 0]
    u = np.array(spec_uniforms(8, 0, 500))
    np.testing.assert_array_equal(kept, (u < 0.6).astype(np.float32))
    np.testing.assert_array_equal(upper, (u < 0.2).astype(np.float32))
    assert rng.position == 500


def test_successive_calls_advance_and_draw_fresh_masks(backend):
    rng = PortableRNG(3)
    x = random_batch(backend, (64, 2))
    first = backend.to_numpy(drop_path(x, 0.5, True, rng=rng))
    assert rng.position == 64
    second = backend.to_numpy(drop_path(x, 0.5, True, rng=rng))
    assert rng.position == 128
    assert not np.array_equal(first, second)  # equal with probability 2**-64
    # Identity calls draw nothing.
    assert drop_path(x, 0.0, True, rng=rng) is x
    assert drop_path(x, 0.5, False, rng=rng) is x
    assert rng.position == 128


def test_position_resumes_a_stream(backend):
    x = random_batch(backend, (32, 2))
    rng = PortableRNG(11)
    drop_path(x, 0.5, True, rng=rng)
    expected = backend.to_numpy(drop_path(x, 0.5, True, rng=rng))
    resumed = PortableRNG(11, position=32)
    np.testing.assert_array_equal(backend.to_numpy(drop_path(x, 0.5, True, rng=resumed)), expected)
    assert resumed.position == rng.position == 64


@pytest.mark.parametrize("clone", [copy.deepcopy, copy.copy, lambda r: pickle.loads(pickle.dumps(r))])
def test_copies_continue_the_stream_independently(backend, clone):
    x = random_batch(backend, (32, 2))
    rng = PortableRNG(12)
    drop_path(x, 0.5, True, rng=rng)
    twin = clone(rng)
    assert repr(twin) == repr(rng) == "PortableRNG(seed=12, position=32)"
    a = backend.to_numpy(drop_path(x, 0.5, True, rng=rng))
    b = backend.to_numpy(drop_path(x, 0.5, True, rng=twin))
    np.testing.assert_array_equal(a, b)
    assert rng.position == twin.position == 64
    drop_path(x, 0.5, True, rng=twin)
    assert rng.position == 64  # the copy advances alone


def test_seed_and_position_accept_numpy_integers():
    rng = PortableRNG(np.uint64(2**64 - 1), position=np.int64(5))
    assert (rng.seed, rng.position) == (2**64 - 1, 5)
    assert type(rng.seed) is int


def test_layers_share_and_advance_one_stream(backend):
    rng = PortableRNG(21)
    a, b = DropPath(0.5, rng=rng), DropPath(0.5, rng=rng)
    x = random_batch(backend, (16, 2))
    first, second = backend.to_numpy(a(x)), backend.to_numpy(b(x))
    assert rng.position == 32
    np.testing.assert_array_equal(first[:, 0] != 0, spec_kept(21, 0, 16, 0.5))
    np.testing.assert_array_equal(second[:, 0] != 0, spec_kept(21, 16, 16, 0.5))
    assert repr(a) == "DropPath(drop_prob=0.500, rng=<PortableRNG>)"
    a.eval()(x)
    assert rng.position == 32


def test_threads_sharing_one_rng_use_disjoint_stretches():
    import threading

    rng = PortableRNG(4)
    x = np.ones((1000, 1))
    results: list[np.ndarray] = []

    def work():
        for _ in range(20):
            results.append(drop_path(x, 0.5, True, rng=rng)[:, 0] != 0)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert rng.position == 80 * 1000
    # Every mask is one of the 80 stretches of the stream, each used once.
    stretches = {spec_kept_fast(4, 1000 * i, 1000).tobytes() for i in range(80)}
    assert {r.tobytes() for r in results} == stretches


def spec_kept_fast(seed: int, position: int, n: int) -> np.ndarray:
    ints = splitmix64_numpy(np, mix(seed), position, n) >> np.uint64(11)
    return ints < np.uint64(2**52)


@pytest.mark.backends("torch")
def test_works_without_numpy_in_pure_python():
    # A process where importing numpy fails, as on an install without it.
    code = textwrap.dedent(
        """
        import sys, warnings
        class NoNumpy:
            def find_spec(self, name, path=None, target=None):
                if name == "numpy" or name.startswith("numpy."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, NoNumpy())
        warnings.simplefilter("ignore")
        import torch
        from anydrop import PortableRNG, drop_path
        rng = PortableRNG(2024)
        out = drop_path(torch.ones(12, 2), 0.5, True, rng=rng)
        empty = drop_path(torch.ones(0, 2), 0.5, True, rng=rng)
        assert "numpy" not in sys.modules
        print("".join("1" if v else "0" for v in (out[:, 0] != 0).tolist()), tuple(empty.shape), rng.position)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [GOLDEN_BITS[0], "(0,", "2)", "12"]


# The tests below kill mutants that survived `nox -s mutation` (docs/development.md).


@pytest.mark.parametrize("seed", [0, 7, GOLDEN_SEED, 2**64 - 1])
def test_stream_value_is_value_k_of_the_documented_stream(seed):
    # The per-step seeds of synchronized_rng and the Keras layers: value k of PortableRNG(seed)'s stream.
    for k in [0, 1, 5, 2**64 - 1]:
        assert stream_value(seed, k) == mix((mix(seed) + (k + 1) * GAMMA) & M64)
    assert [(stream_value(seed, k) >> 11) * 2.0**-53 for k in range(4)] == spec_uniforms(seed, 0, 4)


def test_a_sample_whose_uniform_equals_keep_is_dropped(backend):
    # Kept when u < keep, compared exactly: at u == keep the sample is dropped. The first
    # uniform of seed 1 is at least 0.5, so keep = 1 - (1 - u) is exactly u.
    u = spec_uniforms(1, 0, 8)
    assert u[0] >= 0.5
    drop_prob = 1.0 - u[0]
    assert 1.0 - drop_prob == u[0]
    x = backend.asarray(np.ones((8, 1)), "float64")
    out = backend.to_numpy(drop_path(x, drop_prob, True, rng=PortableRNG(1)))
    kept = out[:, 0] != 0
    assert not kept[0]
    np.testing.assert_array_equal(kept, [v < u[0] for v in u])


@pytest.mark.parametrize("dtype", ["float32", "float64"], indirect=True)
def test_masks_are_of_x_dtype_and_scale_by_one_over_keep_rounded_to_it(backend, dtype):
    kept_only = backend.asarray(np.ones((40, 1)), dtype)
    rng = PortableRNG(6)
    masks = portable_masks(rng, (40, 1), (0.7,), backend.dtype(dtype), x=kept_only, xp=backend.xp)
    assert str(backend.to_numpy(masks[0]).dtype) == dtype
    # The mask is drawn in x's dtype and divided by keep there: the scale is 1/keep in that dtype.
    host = np.random.default_rng(2).uniform(1.0, 2.0, size=(40, 3)).astype(dtype)
    out = backend.to_numpy(drop_path(backend.asarray(host, dtype), 0.3, True, rng=PortableRNG(6)))
    kept = spec_kept(6, 0, 40, 0.7)
    assert 0 < kept.sum() < 40
    scale = np.ones((), dtype) / np.asarray(0.7, dtype)
    np.testing.assert_array_equal(out[kept], host[kept] * scale)
    assert not out[~kept].any()


def test_the_pure_python_stream_without_numpy_gives_the_same_uniform_ints():
    # A process where importing numpy fails: the uniforms come from the pure-Python stream.
    code = textwrap.dedent(
        """
        import sys
        class NoNumpy:
            def find_spec(self, name, path=None, target=None):
                if name == "numpy" or name.startswith("numpy."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, NoNumpy())
        from anydrop import PortableRNG
        from anydrop._core._portable import take_uniform_ints
        rng = PortableRNG(2024, position=5)
        ints, np = take_uniform_ints(rng, 6)
        assert "numpy" not in sys.modules
        print(np is None, rng.position, *ints)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert result.returncode == 0, result.stderr
    expected = [str(int(u * 2**53)) for u in spec_uniforms(2024, 5, 6)]
    assert result.stdout.split() == ["True", "11", *expected]

"""drop_path_add, drop_path_residual and the unbiased 16-bit scale, on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest
from array_api_compat import array_namespace, device

from anydrop import DropPath, DropPathResidual, PortableRNG, drop_path, drop_path_add, drop_path_residual
from tests.backends import NO_ADVANCING_RNG, RESIDUAL_GATHERS, make_generator
from tests.helpers import random_batch

# Bounds are mean +- 5 standard deviations at fixed seeds (false alarm < 1e-6 each).
SIGMAS = 5.0


def _close(backend, a, b):
    np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=1e-12, atol=0)


def _ones_like(a):
    return a * 0 + 1


def _triple(a):
    # The branch used below: elementwise, so it treats samples independently.
    return a * 3.0


@pytest.mark.parametrize("axis", [0, 1, -1, (0, 2), ()])
def test_add_is_x_plus_drop_path_of_branch_for_the_same_seed(backend, axis):
    x = random_batch(backend, (64, 5, 3), "float64", seed=1)
    branch = random_batch(backend, (64, 5, 3), "float64", seed=2)
    out = drop_path_add(x, branch, 0.4, True, axis=axis, rng=7)
    _close(backend, out, x + drop_path(branch, 0.4, True, axis=axis, rng=7))


def test_add_broadcasts_like_plus(backend):
    x = random_batch(backend, (1, 5, 3), "float64", seed=1)
    branch = random_batch(backend, (32, 5, 3), "float64", seed=2)
    out = drop_path_add(x, branch, 0.5, True, rng=3)
    assert out.shape == (32, 5, 3)
    _close(backend, out, x + drop_path(branch, 0.5, True, rng=3))


def test_add_broadcasts_a_branch_smaller_than_x(backend):
    x = random_batch(backend, (16, 5, 3), "float64", seed=1)
    branch = random_batch(backend, (16, 1, 3), "float64", seed=2)
    out = drop_path_add(x, branch, 0.5, True, rng=3)
    assert out.shape == (16, 5, 3)
    _close(backend, out, x + drop_path(branch, 0.5, True, rng=3))


@pytest.mark.parametrize(
    ("x_dtype", "branch_dtype"), [("float32", "float64"), ("float64", "float32"), ("complex128", "float64")]
)
def test_add_promotes_mixed_dtypes_like_plus(backend, x_dtype, branch_dtype):
    x = random_batch(backend, (16, 3), x_dtype, seed=1)
    branch = random_batch(backend, (16, 3), branch_dtype, seed=2)
    out = drop_path_add(x, branch, 0.5, True, rng=3)
    expected = x + drop_path(branch, 0.5, True, rng=3)
    assert out.dtype == expected.dtype
    _close(backend, out, expected)


def test_add_without_dropping_is_plain_addition(backend):
    x = random_batch(backend, (8, 3), seed=1)
    branch = random_batch(backend, (8, 3), seed=2)
    for out in (drop_path_add(x, branch, 0.5), drop_path_add(x, branch, 0.0, True, rng=0)):
        assert out is not x
        _close(backend, out, x + branch)


def test_add_with_p_one_adds_exact_zeros_even_for_inf_and_nan(backend):
    x = random_batch(backend, (6, 2), "float64")
    branch = backend.asarray(np.full((6, 2), np.inf), "float64")
    branch_nan = backend.asarray(np.full((6, 2), np.nan), "float64")
    for b in (branch, branch_nan):
        out = drop_path_add(x, b, 1.0, True, rng=0)
        np.testing.assert_array_equal(backend.to_numpy(out), backend.to_numpy(x))


def test_add_keeps_metadata_and_leaves_inputs_alone(backend):
    x = random_batch(backend, (16, 4), seed=1)
    branch = random_batch(backend, (16, 4), seed=2)
    before = backend.to_numpy(x).copy(), backend.to_numpy(branch).copy()
    out = drop_path_add(x, branch, 0.5, True, rng=0)
    assert out.dtype == x.dtype
    assert out.shape == x.shape
    assert device(out) == device(x)
    assert array_namespace(out) is array_namespace(x)
    np.testing.assert_array_equal(backend.to_numpy(x), before[0])
    np.testing.assert_array_equal(backend.to_numpy(branch), before[1])


def test_add_rejects_mixed_libraries_and_bad_arguments(backend):
    branch = random_batch(backend, (4, 2))
    with pytest.raises(TypeError, match="x must be an array of the same array library"):
        drop_path_add([[0.0, 0.0]] * 4, branch, 0.5, True)
    with pytest.raises(ValueError, match="drop_prob must be in"):
        drop_path_add(branch, branch, 1.5, True)
    with pytest.raises(TypeError, match="axis must be an int"):
        drop_path_add(branch, branch, 0.5, True, axis="0")


class _Counting:
    """A branch that records the shapes it is called with."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, a):
        self.shapes.append(tuple(a.shape))
        return _triple(a)


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_residual_equals_x_plus_drop_path_of_fn_for_the_same_seed(backend, axis):
    x = random_batch(backend, (40, 6, 3), "float64", seed=4)
    n = x.shape[axis]

    def kept_count(seed):
        ref = backend.to_numpy(drop_path(backend.xp.ones_like(x), 0.5, True, axis=axis, rng=seed))
        return int(np.count_nonzero(np.moveaxis(ref, axis, 0).reshape(n, -1)[:, 0]))

    # A seed that keeps some samples and drops others (axis -1 has only 3, which each
    # library's stream may drop or keep all of for a given seed).
    seed, kept = next((s, k) for s in range(11, 111) if 0 < (k := kept_count(s)) < n)
    fn = _Counting()
    out = drop_path_residual(x, fn, 0.5, True, axis=axis, rng=seed)
    expected = x + drop_path(_triple(x), 0.5, True, axis=axis, rng=seed)
    _close(backend, out, expected)
    # fn ran once, on exactly the kept samples along axis.
    assert len(fn.shapes) == 1
    assert fn.shapes[0][axis % 3] == kept


def test_residual_without_dropping_is_x_plus_fn_of_x(backend):
    x = random_batch(backend, (8, 3), "float64")
    for out in (drop_path_residual(x, _triple, 0.5), drop_path_residual(x, _triple, 0.0, True, rng=0)):
        _close(backend, out, x + _triple(x))


def test_residual_with_p_one_returns_x_without_calling_fn(backend):
    x = random_batch(backend, (8, 3))
    fn = _Counting()
    assert drop_path_residual(x, fn, 1.0, True, rng=0) is x
    assert fn.shapes == []


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
@pytest.mark.parametrize("p", [0.25, 0.5, 0.9])
def test_residual_fixed_size_keeps_exactly_k_samples_scaled_by_n_over_k(backend, p):
    n = 40
    k = max(1, round(n * (1 - p)))
    x = random_batch(backend, (n, 3), "float64", seed=5)
    fn = _Counting()
    seen = np.zeros(n, dtype=int)
    for seed in range(100):
        out = backend.to_numpy(drop_path_residual(x, fn, p, True, rng=seed, fixed_size=True))
        host = backend.to_numpy(x)
        delta = (out - host) / (3.0 * host)  # 0 for dropped samples, n / k for kept ones
        rows = delta[:, 0]
        np.testing.assert_allclose(delta, np.repeat(rows[:, None], 3, axis=1), rtol=1e-12)
        kept = ~np.isclose(rows, 0.0)
        np.testing.assert_allclose(rows[kept], n / k, rtol=1e-12)
        assert kept.sum() == k
        seen += kept
    assert fn.shapes == [(k, 3)] * 100
    # Different subsets from different seeds: every sample is kept sometimes.
    assert seen.min() > 0
    assert seen.max() < 100


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
def test_residual_fixed_size_is_reproducible_and_leaves_x_alone(backend):
    x = random_batch(backend, (16, 4), seed=3)
    before = backend.to_numpy(x).copy()
    a = drop_path_residual(x, _triple, 0.5, True, rng=2, fixed_size=True)
    b = drop_path_residual(x, _triple, 0.5, True, rng=2, fixed_size=True)
    np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))
    np.testing.assert_array_equal(backend.to_numpy(x), before)


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
@pytest.mark.parametrize("axis", [0, 1])
def test_residual_with_shards_keeps_exactly_k_of_each_group(backend, axis):
    # shards=s: the subset is drawn per group of n / s consecutive samples (per device, where
    # the sample axis is sharded), each keeping k = round(n / s * keep) scaled by (n / s) / k.
    n, shards, p = 24, 4, 0.5
    size, k = n // shards, round(n // shards * (1 - p))
    shape = (n, 3) if axis == 0 else (2, n, 3)
    x = random_batch(backend, shape, "float64", seed=8)
    fn = _Counting()
    seen = np.zeros(n, dtype=int)
    for seed in range(20):
        out = drop_path_residual(x, fn, p, True, axis=axis, rng=seed, fixed_size=True, shards=shards)
        host = backend.to_numpy(x)
        delta = np.moveaxis((backend.to_numpy(out) - host) / (3.0 * host), axis, 0).reshape(n, -1)
        kept = ~np.isclose(delta[:, 0], 0.0)
        np.testing.assert_allclose(delta[kept], size / k, rtol=1e-12)
        np.testing.assert_allclose(delta[~kept], 0.0, atol=0)
        np.testing.assert_array_equal(kept.reshape(shards, size).sum(axis=1), k)
        seen += kept
    expected = list(shape)
    expected[axis] = shards * k
    assert fn.shapes == [tuple(expected)] * 20
    assert seen.min() > 0
    assert seen.max() < 20


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
def test_residual_refuses_shards_it_cannot_use(backend):
    x = random_batch(backend, (12, 2))
    with pytest.raises(ValueError, match=r"shards=5 does not divide the 12 samples"):
        drop_path_residual(x, _triple, 0.5, True, rng=0, fixed_size=True, shards=5)
    with pytest.raises(ValueError, match=r"shards=4 needs fixed_size=True"):
        drop_path_residual(x, _triple, 0.5, True, rng=0, shards=4)
    for bad in (0, -2, 2.0, True):
        with pytest.raises(TypeError, match=r"shards must be None or a positive int"):
            drop_path_residual(x, _triple, 0.5, True, rng=0, fixed_size=True, shards=bad)


def test_residual_errors(backend):
    x = random_batch(backend, (4, 3))
    with pytest.raises(TypeError, match="fn must be callable"):
        drop_path_residual(x, "mlp", 0.5, True)
    with pytest.raises(TypeError, match="axis must be an int"):
        drop_path_residual(x, _triple, 0.5, True, axis=(0,))
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        drop_path_residual(x, _triple, 0.5, True, axis=2)
    with pytest.raises(ValueError, match="drop_prob must be in"):
        drop_path_residual(x, _triple, -0.1, True)


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
def test_residual_fn_of_the_wrong_shape_is_a_value_error(backend):
    x = random_batch(backend, (4, 3))
    with pytest.raises(ValueError, match=r"fn must return an array of its input's shape"):
        drop_path_residual(x, lambda a: a[:, :1], 0.5, True, rng=0)


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
def test_residual_module_runs_branch_on_kept_samples_and_eval_adds_it(backend):
    x = random_batch(backend, (32, 3), "float64")
    fn = _Counting()
    block = DropPathResidual(fn, 0.5, rng=4)
    out = block(x)
    assert fn.shapes[0][0] < 32
    assert out.shape == x.shape
    block.eval()
    _close(backend, block(x), x + _triple(x))
    assert "fixed_size=True" in repr(DropPathResidual(fn, 0.5, fixed_size=True))


def test_module_add_matches_module_call(backend):
    x = random_batch(backend, (32, 3), "float64", seed=1)
    branch = random_batch(backend, (32, 3), "float64", seed=2)
    _close(backend, DropPath(0.3, rng=9).add(x, branch), x + DropPath(0.3, rng=9)(branch))
    _close(backend, DropPath(0.3, rng=9).eval().add(x, branch), x + branch)


# --- 16-bit floats: the scale 1 / keep without rounding bias ---


def _neighbours(keep: float, eps: float) -> tuple[float, float]:
    scale = 1.0 / keep
    spacing = eps * 2.0 ** (math.frexp(scale)[1] - 1)
    lo = math.floor(scale / spacing) * spacing
    return lo, lo + spacing


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"], indirect=True)
@pytest.mark.parametrize("p", [0.1, 0.3])
def test_16_bit_scale_is_unbiased(backend, dtype, p):
    n = 400_000
    keep = 1.0 - p
    ones = backend.xp.ones((n, 1), dtype=backend.dtype(dtype), device=device(random_batch(backend, (1,))))
    out = backend.to_numpy(drop_path(ones, p, True, rng=0)).astype(np.float64)[:, 0]
    kept = out != 0
    eps = float(backend.xp.finfo(backend.dtype(dtype)).eps)
    lo, hi = _neighbours(keep, eps)
    # Only the two representable neighbours of 1 / keep occur ...
    assert set(np.unique(out[kept])) == {lo, hi}
    # ... mixed so that the mean scale is 1 / keep: relative bias within 2e-4 (timm's
    # round-to-nearest scale is off by up to eps / 2, e.g. -1.6e-3 for bfloat16 at p = 0.1).
    frac = (1.0 / keep - lo) / (hi - lo)
    k = int(kept.sum())
    n_hi = int((out == hi).sum())
    assert abs(n_hi - k * frac) <= SIGMAS * math.sqrt(k * frac * (1 - frac))
    assert abs(out[kept].mean() * keep - 1.0) <= 2e-4
    assert abs(k - n * keep) <= SIGMAS * math.sqrt(n * keep * p)
    # The same unbiased scale in the fused paths.
    add = backend.to_numpy(drop_path_add(ones * 0, ones, p, True, rng=0)).astype(np.float64)[:, 0]
    assert abs(add[add != 0].mean() * keep - 1.0) <= 2e-4


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"], indirect=True)
def test_16_bit_fixed_size_residual_scale_is_unbiased(backend, dtype):
    n = 300
    # x = 0 and fn = 1 make the output the scale itself, with no rounding of a sum.
    zeros = backend.xp.zeros((n, 1), dtype=backend.dtype(dtype), device=device(random_batch(backend, (1,))))
    k = round(n * 0.9)
    scales = []
    for seed in range(200):
        out = drop_path_residual(zeros, lambda a: a + 1, 0.1, True, rng=seed, fixed_size=True)
        host = backend.to_numpy(out).astype(np.float64)[:, 0]
        scales.append(host[host != 0])
    values = np.concatenate(scales)
    assert values.size == 200 * k
    assert abs(values.mean() * k / n - 1.0) <= 2e-4


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
@pytest.mark.parametrize("fixed_size", [False, True])
def test_portable_rng_gives_the_same_residual_on_every_backend(backend, fixed_size):
    from anydrop import PortableRNG

    host = np.random.default_rng(0).uniform(1.0, 2.0, size=(24, 3))
    x = backend.asarray(host, "float64")
    out = drop_path_residual(x, _triple, 0.5, True, rng=PortableRNG(3), fixed_size=fixed_size)
    reference = drop_path_residual(host, _triple, 0.5, True, rng=PortableRNG(3), fixed_size=fixed_size)
    np.testing.assert_array_equal(backend.to_numpy(out), reference)
    add = drop_path_add(x, x, 0.5, True, rng=PortableRNG(4))
    reference = drop_path_add(host, host, 0.5, True, rng=PortableRNG(4))
    np.testing.assert_array_equal(backend.to_numpy(add), reference)


# The tests below kill mutants that survived `nox -s mutation` (docs/development.md).


def test_add_names_both_types_when_x_is_an_array_of_another_library(backend):
    branch = random_batch(backend, (4, 2))
    x = np.zeros((4, 2))
    if type(x) is type(branch):
        # NumPy's session installs no other array library but what the test extra brings.
        xps = pytest.importorskip("array_api_strict", reason="needs a second array library beside NumPy")
        x = xps.zeros((4, 2))
    message = f"got an object of type {type(x).__name__} for branch of type {type(branch).__name__}"
    with pytest.raises(TypeError, match=message):
        drop_path_add(x, branch, 0.5, True, rng=0)


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
def test_add_at_drop_prob_one_is_x_exactly_in_x_dtype(backend):
    x = random_batch(backend, (6, 2), "float32", seed=1)
    out = drop_path_add(x, random_batch(backend, (6, 2), "float32", seed=2), 1.0, True, rng=0)
    assert out.dtype == x.dtype
    np.testing.assert_array_equal(backend.to_numpy(out), backend.to_numpy(x))


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
def test_residual_fixed_size_keeps_one_sample_where_n_times_keep_rounds_below_two(backend):
    fn = _Counting()
    drop_path_residual(random_batch(backend, (4, 3)), fn, 0.9, True, rng=0, fixed_size=True)
    assert fn.shapes == [(1, 3)]


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
def test_residual_fixed_size_without_scale_by_keep_adds_the_branch_unscaled(backend):
    x = random_batch(backend, (40, 3), "float64", seed=5)
    out = backend.to_numpy(drop_path_residual(x, _triple, 0.5, True, False, rng=3, fixed_size=True))
    host = backend.to_numpy(x)
    rows = ((out - host) / (3.0 * host))[:, 0]
    kept = ~np.isclose(rows, 0.0)
    assert kept.sum() == 20
    np.testing.assert_allclose(rows[kept], 1.0, rtol=1e-12)


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
def test_residual_fixed_size_in_float16_dithers_the_scale_between_its_two_neighbours(backend):
    if "float16" not in backend.float_dtypes:
        pytest.skip(f"{backend.name} has no float16")
    # x is below half a unit in the last place of the scales, so out is the scale where kept.
    x = backend.asarray(np.full((2000, 1), 2.0**-14), "float16")
    out = drop_path_residual(x, _ones_like, 0.1, True, rng=4, fixed_size=True)
    assert out.dtype == x.dtype
    host = backend.to_numpy(out).astype(np.float64)[:, 0]
    kept = host[host > 0.5]
    assert kept.size == 1800
    # 1/0.9 is not a float16: each kept sample gets one of its two neighbours, the mean 1/0.9.
    values = sorted(set(kept.tolist()))
    assert len(values) == 2, values
    assert values[0] < 1 / 0.9 < values[1]
    assert abs(kept.mean() - 1 / 0.9) < 2e-4


def test_drop_prob_one_as_a_numpy_or_python_int_is_accepted(backend):
    # Not a Python float, so these take check_drop_prob's path, not the fast one.
    x = random_batch(backend, (4, 2))
    for p in (np.float64(1.0), 1):
        np.testing.assert_array_equal(backend.to_numpy(drop_path(x, p, True, rng=0)), 0.0)
    assert DropPath(1).drop_prob == 1.0


def _float16(backend):
    if "float16" not in backend.float_dtypes:
        pytest.skip(f"{backend.name} has no float16")


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
def test_residual_fixed_size_refuses_a_scale_n_over_k_that_overflows_float16(backend):
    _float16(backend)
    # k = max(1, round(70000 * 1e-5)) = 1: the scale 70000 is past float16's 65504, though
    # 1/keep is not checked here (fixed_size scales by n/k); it was an inf, silently.
    x = backend.asarray(np.ones((70000, 1)), "float16")
    rng = PortableRNG(0)
    with pytest.raises(ValueError, match=r"k=1 of n=70000 .* n/k = 70000 overflows"):
        drop_path_residual(x, _ones_like, 1 - 1e-5, True, rng=rng, fixed_size=True)
    assert rng.position == 0
    out = drop_path_residual(x, _ones_like, 1 - 1e-5, True, False, rng=rng, fixed_size=True)
    assert bool(backend.xp.all(backend.xp.isfinite(out)))


def test_float16_scale_up_to_the_dtype_max_is_accepted_and_past_it_refused(backend):
    _float16(backend)
    x = backend.asarray(np.ones((64, 1)), "float16")
    # keep = 2**-15 exactly: the scale 32768 is a float16.
    out = backend.to_numpy(drop_path(x, 1 - 2.0**-15, True, rng=PortableRNG(1)))
    assert set(np.unique(out).tolist()) <= {0.0, 32768.0}
    with pytest.raises(ValueError, match=r"the scale 1/keep = 131072 overflows .*or use a wider dtype"):
        drop_path(x, 1 - 2.0**-17, True, rng=0)


@pytest.mark.parametrize("p", [0.7, 0.1])
def test_float16_scale_is_one_of_the_two_float16_neighbours_of_one_over_keep(backend, p):
    _float16(backend)
    x = backend.asarray(np.ones((4000, 1)), "float16")
    kept = backend.to_numpy(drop_path(x, p, True, rng=PortableRNG(2))).astype(np.float64)
    values = sorted(set(kept[kept != 0].tolist()))
    lo = np.float16(1 / (1 - p))
    lo = lo if float(lo) <= 1 / (1 - p) else np.nextafter(lo, np.float16(0))
    assert values == [float(lo), float(np.nextafter(lo, np.float16(np.inf)))]


@pytest.mark.skip_backends(**NO_ADVANCING_RNG)
def test_float16_with_an_exact_scale_draws_as_float32_does(backend):
    _float16(backend)
    # 1/0.5 is a float16: one draw per call, so successive calls match float32's sample for sample.
    gens = make_generator(backend, 3), make_generator(backend, 3)
    masks = [
        [
            backend.to_numpy(drop_path(random_batch(backend, (64, 1), d), 0.5, True, rng=g)) != 0
            for _ in range(3)
        ]
        for d, g in zip(("float16", "float32"), gens, strict=True)
    ]
    for a, b in zip(*masks, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
def test_residual_without_scale_by_keep_adds_the_branch_unscaled(backend):
    x = random_batch(backend, (40, 3), "float64", seed=6)
    out = backend.to_numpy(drop_path_residual(x, _triple, 0.5, True, False, rng=4))
    host = backend.to_numpy(x)
    rows = ((out - host) / (3.0 * host))[:, 0]
    kept = ~np.isclose(rows, 0.0)
    assert 0 < kept.sum() < 40
    np.testing.assert_allclose(rows[kept], 1.0, rtol=1e-12)


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
def test_residual_on_a_batch_of_one_keeps_it_when_drawn(backend):
    x = random_batch(backend, (1, 3), "float64")
    out = drop_path_residual(x, _triple, 1e-9, True, rng=0)
    np.testing.assert_allclose(backend.to_numpy(out), 4.0 * backend.to_numpy(x), rtol=1e-8)


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
def test_residual_refuses_a_branch_that_returns_no_array(backend):
    x = random_batch(backend, (8, 3))
    with pytest.raises(ValueError, match=r"fn must return an array of its input's shape .*got float"):
        drop_path_residual(x, lambda a: 1.0, 0.5, True, rng=0)


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
def test_residual_equals_drop_path_add_on_a_large_batch(backend):
    # Many samples: puts each kept result back in place through a sort of the whole batch.
    x = random_batch(backend, (3000, 2), "float64", seed=7)
    for seed in range(3):
        np.testing.assert_allclose(
            backend.to_numpy(drop_path_residual(x, _triple, 0.5, True, rng=seed)),
            backend.to_numpy(drop_path_add(x, _triple(x), 0.5, True, rng=seed)),
            rtol=1e-12,
        )


def test_residual_names_the_type_of_a_branch_that_is_not_callable(backend):
    with pytest.raises(TypeError, match="fn must be callable, got an object of type int"):
        drop_path_residual(random_batch(backend, (4, 2)), 3, 0.5, True, rng=0)


@pytest.mark.backends("numpy")
@pytest.mark.parametrize(
    "shape", [(64, 197, 8), (3, 2**17 + 5), (2, 3, 2**16), (2, 2**18 + 5), (10, 5, 2**13 + 1)]
)
def test_numpy_blocked_add_equals_the_two_pass_add_bit_for_bit(shape):
    # Large per-sample adds are done in cache-sized blocks: the same operations, the same bits.
    gen = np.random.default_rng(1)
    x, branch = (gen.standard_normal(shape, dtype=np.float32) for _ in range(2))
    branch[0, 0] = np.inf  # a dropped or kept inf gives NaN or inf, as x + branch * mask does
    out = drop_path_add(x, branch, 0.3, True, rng=7)
    two_pass = x + drop_path(branch, 0.3, True, rng=7)
    np.testing.assert_array_equal(out, two_pass)
    assert out.dtype == x.dtype
    assert out.shape == shape


@pytest.mark.backends("numpy")
@pytest.mark.parametrize(
    ("x_shape", "x_dtype", "branch_shape", "branch_dtype", "axis"),
    [
        ((4, 2**16), "float32", (4, 2**16), "float32", 1),
        ((4, 2**16), "float32", (4, 1), "float32", 0),
        ((4, 2**16), "float32", (4, 2**16), "float64", 0),
    ],
    ids=["mask-along-axis-1", "branch-broadcast", "wider-branch"],
)
def test_numpy_large_adds_that_cannot_go_block_by_block(x_shape, x_dtype, branch_shape, branch_dtype, axis):
    # Only a per-sample mask and x and branch of one shape and dtype go block by block.
    gen = np.random.default_rng(2)
    x = gen.standard_normal(x_shape).astype(x_dtype)
    branch = gen.standard_normal(branch_shape).astype(branch_dtype)
    out = drop_path_add(x, branch, 0.3, True, axis=axis, rng=7)
    two_pass = x + drop_path(branch, 0.3, True, axis=axis, rng=7)
    assert out.dtype == two_pass.dtype
    np.testing.assert_array_equal(out, two_pass)


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
def test_portable_fixed_size_keeps_the_smallest_uniforms_and_dithers_by_the_next_ones(backend):
    _float16(backend)
    from tests.portable_spec import spec_uniforms

    # n = 40, k = 30: the kept samples are those of the 30 smallest of the first 40
    # uniforms; the next 30, one per kept sample in that order, pick the upper
    # float16 neighbour of n/k = 4/3 when below frac.
    n, k = 40, 30
    x = backend.asarray(np.zeros((n, 1)), "float16")
    rng = PortableRNG(9)
    out = backend.to_numpy(drop_path_residual(x, _ones_like, 0.25, True, rng=rng, fixed_size=True))[:, 0]
    assert rng.position == n + k
    lo = np.float16(n / k)
    lo = lo if float(lo) < n / k else np.nextafter(lo, np.float16(0))
    hi = np.nextafter(lo, np.float16(np.inf))
    frac = (n / k - float(lo)) / (float(hi) - float(lo))
    order = np.argsort(spec_uniforms(9, 0, n), kind="stable")
    expected = np.zeros(n, np.float16)
    expected[order[:k]] = [hi if v < frac else lo for v in spec_uniforms(9, n, k)]
    assert len(set(expected[order[:k]].tolist())) == 2
    np.testing.assert_array_equal(out, expected)


@pytest.mark.backends("numpy")
@pytest.mark.parametrize("rng", [PortableRNG, np.random.default_rng])
def test_add_in_float16_rounds_as_x_plus_drop_path_does(backend, rng):
    # The 16-bit mask is of x's dtype: NumPy rounds branch * mask to float16 before the add,
    # as in x + drop_path(branch), not added in a wider dtype with one rounding. (torch's
    # fused add rounds once, so this is NumPy's behaviour only.)
    x = random_batch(backend, (256, 8), "float16", seed=3)
    branch = random_batch(backend, (256, 8), "float16", seed=4)
    out = drop_path_add(x, branch, 0.1, True, rng=rng(5))
    np.testing.assert_array_equal(
        backend.to_numpy(out), backend.to_numpy(x + drop_path(branch, 0.1, True, rng=rng(5)))
    )


@pytest.mark.backends("array_api_strict")
def test_fixed_size_residual_stays_on_a_non_default_device(backend):
    # Its uniforms are drawn on the host: they must be moved to x's device before they are ranked.
    xp = backend.xp
    dev = xp.Device("device1")
    x = xp.asarray(np.random.default_rng(0).uniform(1.0, 2.0, (16, 3)), device=dev)
    for rng in (0, None, np.random.default_rng(0)):
        out = drop_path_residual(x, _triple, 0.5, True, rng=rng, fixed_size=True)
        assert out.device == dev
        kept = ~np.all(backend.to_numpy(out) == backend.to_numpy(x), axis=1)
        assert kept.sum() == 8

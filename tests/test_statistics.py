"""Statistical tests of the masks, with exact bounds, on every backend.

A drop-path bug rarely crashes: a biased keep probability, a wrong scale or
masks that repeat train a worse model in silence. These tests check the
distribution of the masks at fixed seeds (so every run is the same run):

* kept count ~ Binomial(n, 1 - p): exact two-sided test (``stats.binomial_acceptance``);
* scaled mean unbiased: the sum of the output is within the exact binomial
  band of ``n * x`` (plus a Hoeffding margin for per-sample scale choices);
* independence of successive calls, of adjacent seeds and of neighbouring
  samples within a mask: Fisher's exact test on the 2x2 table of paired
  kept/dropped outcomes (``stats.hypergeometric_acceptance``).

False alarms. Every test below has an exact false-alarm rate of at most
``ALPHA = 1e-6``: for a correct implementation, the probability over seeds
that the test fails. Per entry point in ``ENTRY_POINTS`` and backend session
there are at most 4 * 4 * 7 = 112 count tests, 4 * 4 = 16 mean tests and
5 * 3 + 2 * 3 + 2 * 3 = 27 independence tests (``test_false_alarm_budget``
recounts them), 155 in all, so a correct implementation fails any of them
with probability at most 155e-6 per entry point and session (union bound). With
the three entry points (``drop_path``, ``drop_path_add``,
``drop_path_residual``) that is 465 tests and at most 4.7e-4 per backend
session, under 3e-3 for all six backend sessions (NumPy, PyTorch, CuPy,
array-api-strict, Dask and JAX). Some backends run fewer (``FEWER``,
``KEY_IS_THE_SEED``: parametrizations that would repeat a draw), never more.
With fixed seeds a run either passes or fails forever; the rate says how
likely a correct change that shifts the random streams (a new seed, a new
torch) is to trip a test.

Power. At n = 1,000,000 samples the count test rejects a keep probability off by
0.5% (absolute, at p = 0.5), the mean test at n = 2**22 a scale off by 0.1% at
p = 0.1, and the independence test a correlation of 0.01;
``TestThePowerOfTheTests`` shows each of them failing on a real wrong mask.

Adding an entry point: append an
``EntryPoint`` to ``ENTRY_POINTS`` whose ``apply(branch, p, rng)`` returns what
the entry point adds for ``branch`` (an array of one repeated non-zero value,
shaped ``(n, 1)``) when training with ``scale_by_keep=True``; every test here
then runs on it too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from array_api_compat import array_namespace

from anydrop import DropPath, PortableRNG, drop_path, drop_path_add, drop_path_residual
from tests.backends import NO_ADVANCING_RNG, RESIDUAL_GATHERS, make_generator, skip_unsupported
from tests.stats import Acceptance, binomial_acceptance, hoeffding_slack, hypergeometric_acceptance

ALPHA = 1e-6


@dataclass(frozen=True)
class EntryPoint:
    """One drop-path entry point, reduced to what the statistics need."""

    name: str
    #: (branch, drop_prob, rng) -> the array the entry point adds for ``branch``
    #: in training with scale_by_keep=True, shaped like ``branch``.
    apply: Callable[[Any, float, Any], Any]


def _drop_path(branch: Any, p: float, rng: Any) -> Any:
    return drop_path(branch, p, True, rng=rng)


def _drop_path_add(branch: Any, p: float, rng: Any) -> Any:
    return drop_path_add(array_namespace(branch).zeros_like(branch), branch, p, True, rng=rng)


def _drop_path_residual(branch: Any, p: float, rng: Any) -> Any:
    # x = 0, so the output is the scaled branch output of the kept samples. The
    # branch maps the k kept rows to branch's first k rows: every test here
    # fills branch with one value, so rows are interchangeable.
    xp = array_namespace(branch)
    return drop_path_residual(
        xp.zeros_like(branch), lambda t: t + branch[: t.shape[0], ...], p, True, rng=rng
    )


# fixed_size=True is not here: its kept count is exact, not binomial.
ENTRY_POINTS = [
    EntryPoint("drop_path", _drop_path),
    EntryPoint("drop_path_add", _drop_path_add),
    EntryPoint("drop_path_residual", _drop_path_residual),
]

COUNT_PS = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
COUNT_DTYPES = ("float16", "bfloat16", "float32", "float64")
MEAN_PS = (0.1, 0.5, 0.9, 0.99)
INDEPENDENCE_PS = (0.1, 0.5, 0.9)
N = 1_000_000
N_MEAN = 2**22
SEED = 20_240_611


@dataclass(frozen=True)
class Fewer:
    """The parametrizations an entry point runs on one backend, where fewer than all, and why."""

    count_dtypes: tuple[str, ...]
    mean_dtypes: tuple[str, ...]
    independence_ps: tuple[float, ...]
    why: str


#: Where an entry point runs fewer parametrizations on one backend: (backend, entry point) -> Fewer.
FEWER = {
    ("jax", "drop_path_residual"): Fewer(
        count_dtypes=("float32",),
        mean_dtypes=("float32", "bfloat16"),
        independence_ps=(0.5,),
        why="JAX draws the kept samples from the key before any dtype enters, so every dtype keeps "
        "the same ones (test_jax_keeps_the_same_samples_in_every_dtype), and drop_prob only moves the "
        "threshold of the draw whose independence is tested; drop_path_residual cannot be jitted, and "
        "eagerly it compiles its gathers anew for every kept count (the slowest calls here), so it "
        "counts in one dtype, checks the mean in one dtype of each scale (rounded once, and the "
        "unbiased 16-bit one) and independence at one drop_prob, and drop_path runs every case",
    ),
}
#: An int seed on JAX makes the key that make_generator makes: the same draw as the seed kind.
KEY_IS_THE_SEED = {
    "jax": "a JAX generator is the key an int seed makes (tests/test_jax.py): the seed kind's draw"
}


@pytest.fixture(params=ENTRY_POINTS, ids=lambda e: e.name)
def entry(request, backend):
    if request.param.name == "drop_path_residual":
        skip_unsupported(backend, RESIDUAL_GATHERS)
    return request.param


def _skip_fewer(
    backend,
    entry: EntryPoint,
    *,
    count_dtype: str | None = None,
    mean_dtype: str | None = None,
    independence_p: float | None = None,
) -> None:
    """Skip a parametrization that ``FEWER`` leaves out for this backend and entry point."""
    fewer = FEWER.get((backend.name, entry.name))
    if fewer is None:
        return
    for test, value, kept in [
        ("count", count_dtype, fewer.count_dtypes),
        ("mean", mean_dtype, fewer.mean_dtypes),
        ("independence", independence_p, fewer.independence_ps),
    ]:
        if value is not None and value not in kept:
            only = ", ".join(map(str, kept))
            pytest.skip(f"{entry.name} on {backend.name}: the {test} tests at {only} only: {fewer.why}")


_CONSTANTS: dict[tuple[str, int, float, str], Any] = {}


def _constant(backend, n: int, value: float, dtype: str = "float32") -> Any:
    """An (n, 1) array of ``value``: made once per session, since drop_path never modifies its input."""
    key = (backend.name, n, value, dtype)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = backend.asarray(np.full((n, 1), value), dtype)
    return _CONSTANTS[key]


def _rng(kind: str, backend, seed: int) -> Any:
    """A fresh rng of one kind, seeded with ``seed``; skips kinds the backend has no seedable form of."""
    if kind == "seed":
        return seed
    if kind == "generator":
        return make_generator(backend, seed)
    if kind == "portable":
        return PortableRNG(seed)
    if kind == "global":
        backend.seed_default_rng(seed)
        return None
    raise AssertionError(kind)


def _kept(backend, entry: EntryPoint, p: float, rng: Any, *, dtype: str = "float32") -> np.ndarray:
    out = backend.to_numpy(entry.apply(_constant(backend, N, 1.5, dtype), p, rng))
    return out[:, 0] != 0


def _fisher(a: np.ndarray, b: np.ndarray) -> tuple[int, Acceptance]:
    """The count of samples kept in both masks, and its acceptance region if the masks are independent."""
    both = int(np.count_nonzero(a & b))
    return both, hypergeometric_acceptance(a.size, int(a.sum()), int(b.sum()), ALPHA)


# --- the tests' own distributions, against exact rational arithmetic ---


def _exact_region(pmf: dict[int, Fraction], alpha: float) -> tuple[int, int]:
    ks = sorted(pmf)
    half = Fraction(alpha) / 2
    lo = next(k for k in ks if sum(pmf[j] for j in ks if j <= k) > half)
    hi = next(k for k in reversed(ks) if sum(pmf[j] for j in ks if j >= k) > half)
    return lo, hi


@pytest.mark.parametrize(
    ("n", "q", "alpha"), [(40, 0.3, 0.01), (25, 0.9, 0.05), (60, 0.5, 1e-4), (7, 0.2, 0.2)]
)
def test_binomial_region_matches_exact_arithmetic(n, q, alpha):
    fq = Fraction(q)
    pmf = {k: math.comb(n, k) * fq**k * (1 - fq) ** (n - k) for k in range(n + 1)}
    region = binomial_acceptance(n, q, alpha)
    assert (region.lo, region.hi) == _exact_region(pmf, alpha)
    outside = sum(v for k, v in pmf.items() if k not in region)
    assert region.false_alarm == pytest.approx(float(outside), rel=1e-9)
    assert region.false_alarm <= alpha


@pytest.mark.parametrize(
    ("total", "marked", "drawn", "alpha"), [(50, 20, 25, 0.01), (30, 5, 28, 0.05), (80, 40, 40, 1e-4)]
)
def test_hypergeometric_region_matches_exact_arithmetic(total, marked, drawn, alpha):
    denominator = math.comb(total, drawn)
    pmf = {
        a: Fraction(math.comb(marked, a) * math.comb(total - marked, drawn - a), denominator)
        for a in range(max(0, marked + drawn - total), min(marked, drawn) + 1)
    }
    region = hypergeometric_acceptance(total, marked, drawn, alpha)
    assert (region.lo, region.hi) == _exact_region(pmf, alpha)
    assert region.false_alarm <= alpha


def test_stated_false_alarm_rates_hold_for_the_sizes_used():
    for q in (1 - p for p in COUNT_PS + MEAN_PS):
        assert binomial_acceptance(N, q, ALPHA).false_alarm <= ALPHA
    assert binomial_acceptance(N_MEAN, 0.9, ALPHA / 2).false_alarm <= ALPHA / 2
    assert hypergeometric_acceptance(N, N // 2, N // 10, ALPHA).false_alarm <= ALPHA


def test_false_alarm_budget():
    # Keep the module docstring's count honest when parameters are added.
    count = len(RNG_KINDS) * len(COUNT_DTYPES) * len(COUNT_PS)
    mean = len(COUNT_DTYPES) * len(MEAN_PS)
    independence = (len(SUCCESSIVE_KINDS) + len(SEED_KINDS) + len(WITHIN_KINDS)) * len(INDEPENDENCE_PS)
    assert (count, mean, independence) == (112, 16, 27)


# --- Binomial counts ---

RNG_KINDS = ("seed", "generator", "portable", "global")
_KIND_MARKS = {"generator": pytest.mark.skip_backends(**KEY_IS_THE_SEED)}


@pytest.mark.parametrize("p", COUNT_PS)
@pytest.mark.parametrize("dtype", COUNT_DTYPES, indirect=True)
@pytest.mark.parametrize("kind", [pytest.param(k, marks=_KIND_MARKS.get(k, ())) for k in RNG_KINDS])
def test_kept_count_is_binomial(backend, entry, kind, dtype, p):
    _skip_fewer(backend, entry, count_dtype=dtype)
    kept = _kept(backend, entry, p, _rng(kind, backend, SEED), dtype=dtype)
    region = binomial_acceptance(N, 1.0 - p, ALPHA)
    k = int(kept.sum())
    assert k in region, f"{k} of {N} kept at p={p}; a correct mask keeps {region.lo}..{region.hi}"


@pytest.mark.backends("jax")
@pytest.mark.parametrize("kind", ["seed", "portable"])
def test_jax_keeps_the_same_samples_in_every_dtype(backend, entry, kind):
    # What FEWER's JAX entry rests on, checked on a short batch: the dtype changes the scale only.
    kept = {}
    for dtype in COUNT_DTYPES:
        branch = backend.asarray(np.full((1000, 1), 1.5), dtype)
        out = backend.to_numpy(entry.apply(branch, 0.5, _rng(kind, backend, SEED)))
        kept[dtype] = out[:, 0] != 0
    assert 0 < kept["float32"].sum() < 1000
    for dtype in COUNT_DTYPES:
        np.testing.assert_array_equal(kept[dtype], kept["float32"], err_msg=dtype)


# --- unbiased scaled mean ---

_MANTISSA = {"float16": 11, "bfloat16": 8, "float32": 24, "float64": 53}


def mean_band(n: int, keep: float, dtype: str, *, dithered: bool) -> tuple[float, float]:
    """Bounds for sum(output) / x over n samples of a constant x, at false-alarm rate ALPHA.

    Kept samples are scaled by s with E[s] = 1/keep. In 32- and 64-bit floats
    s is 1/keep rounded once (a bias of at most two units in the last place, allowed for);
    in 16-bit floats s may be either neighbour of 1/keep in the dtype, chosen
    per sample, and must be unbiased: the margin for those choices is
    Hoeffding's, with half of ALPHA.
    """
    region = binomial_acceptance(n, keep, ALPHA / 2 if dithered else ALPHA)
    scale = 1.0 / keep
    ulp = 2.0 ** (math.frexp(scale)[1] - _MANTISSA[dtype])
    if dithered:
        slack = hoeffding_slack(region.hi, ulp, ALPHA / 2)
        return region.lo * scale - slack, region.hi * scale + slack
    return region.lo * (scale - 2 * ulp), region.hi * (scale + 2 * ulp)


@pytest.mark.parametrize("p", MEAN_PS)
@pytest.mark.parametrize("dtype", COUNT_DTYPES, indirect=True)
def test_scaled_mean_is_unbiased(backend, entry, dtype, p):
    _skip_fewer(backend, entry, mean_dtype=dtype)
    x = 1.0
    out = backend.to_numpy(entry.apply(_constant(backend, N_MEAN, x, dtype), p, SEED)).astype(np.float64)
    values, counts = np.unique(out, return_counts=True)
    total = math.fsum(float(v) * int(c) for v, c in zip(values, counts, strict=True))
    lo, hi = mean_band(N_MEAN, 1.0 - p, dtype, dithered=dtype in ("float16", "bfloat16"))
    mean, expected = total / N_MEAN, x
    assert lo <= total / x <= hi, (
        f"mean {mean!r} for x = {expected}: outside [{lo / N_MEAN!r}, {hi / N_MEAN!r}] at p={p}"
    )


# --- independence ---


def _successive(kind: str, backend, entry: EntryPoint, p: float) -> tuple[np.ndarray, np.ndarray]:
    """Two masks of successive calls that share one stream."""
    if kind == "layer":
        layer = DropPath(p, rng=SEED)
        branch = _constant(backend, N, 1.5)
        first, second = (backend.to_numpy(layer(branch))[:, 0] != 0 for _ in range(2))
        return first, second
    if kind == "generator":
        skip_unsupported(backend, NO_ADVANCING_RNG)
    rng = _rng(kind, backend, SEED)
    return _kept(backend, entry, p, rng), _kept(backend, entry, p, rng)


SUCCESSIVE_KINDS = ("generator", "portable", "layer", "global", "seed_then_next")
SEED_KINDS = ("seed", "portable")
WITHIN_KINDS = ("seed", "portable")


@pytest.mark.parametrize("p", INDEPENDENCE_PS)
@pytest.mark.parametrize("kind", SUCCESSIVE_KINDS)
def test_masks_of_successive_calls_are_independent(backend, entry, kind, p):
    _skip_fewer(backend, entry, independence_p=p)
    if kind == "seed_then_next":
        # Two calls of a training loop that passes the step as the seed.
        a, b = _kept(backend, entry, p, SEED), _kept(backend, entry, p, SEED + 1)
    else:
        a, b = _successive(kind, backend, entry, p)
    both, region = _fisher(a, b)
    assert both in region, (
        f"{both} samples kept in both calls; independent masks give {region.lo}..{region.hi}"
    )


@pytest.mark.parametrize("p", INDEPENDENCE_PS)
@pytest.mark.parametrize("kind", SEED_KINDS)
def test_masks_of_adjacent_seeds_are_independent(backend, entry, kind, p):
    _skip_fewer(backend, entry, independence_p=p)
    a = _kept(backend, entry, p, _rng(kind, backend, 0))
    b = _kept(backend, entry, p, _rng(kind, backend, 1))
    both, region = _fisher(a, b)
    assert both in region, f"{both} samples kept for seeds 0 and 1; expected {region.lo}..{region.hi}"


@pytest.mark.parametrize("p", INDEPENDENCE_PS)
@pytest.mark.parametrize("kind", WITHIN_KINDS)
def test_neighbouring_samples_are_independent(backend, entry, kind, p):
    _skip_fewer(backend, entry, independence_p=p)
    kept = _kept(backend, entry, p, _rng(kind, backend, SEED))
    # Disjoint pairs (0, 1), (2, 3), ...: independent observations under the null.
    both, region = _fisher(kept[0::2], kept[1::2])
    assert both in region, f"{both} neighbouring pairs both kept; expected {region.lo}..{region.hi}"


# --- the tests can fail: each one on a real wrong mask ---


@pytest.mark.backends("numpy")
class TestThePowerOfTheTests:
    def test_count_test_rejects_a_keep_probability_off_by_half_a_percent(self):
        kept = np.random.default_rng(SEED).random(N) < 0.505
        assert int(kept.sum()) not in binomial_acceptance(N, 0.5, ALPHA)

    def test_count_test_rejects_swapped_drop_and_keep(self):
        kept = np.random.default_rng(SEED).random(N) < 0.1  # keep = p instead of 1 - p
        assert int(kept.sum()) not in binomial_acceptance(N, 0.9, ALPHA)

    def test_mean_test_rejects_a_scale_off_by_a_tenth_of_a_percent(self):
        keep = 0.9
        kept = np.random.default_rng(SEED).random(N_MEAN) < keep
        total = int(kept.sum()) * (1.001 / keep)
        lo, hi = mean_band(N_MEAN, keep, "float32", dithered=False)
        assert not lo <= total <= hi
        # ... and accepts the right scale on the same mask.
        assert lo <= int(kept.sum()) / keep <= hi

    def test_mean_test_rejects_bfloat16_rounding_bias(self):
        keep = 0.9
        kept = np.random.default_rng(SEED).random(N_MEAN) < keep
        lo, hi = mean_band(N_MEAN, keep, "bfloat16", dithered=True)
        assert not lo <= int(kept.sum()) * 1.109375 <= hi  # 1/0.9 rounded to bfloat16

    def test_independence_test_rejects_a_reused_seed(self):
        x = np.ones((N, 1))
        a, b = (drop_path(x, 0.5, True, rng=SEED)[:, 0] != 0 for _ in range(2))
        both, region = _fisher(a, b)
        assert both not in region

    def test_independence_test_rejects_a_correlation_of_one_percent(self):
        gen = np.random.default_rng(SEED)
        a = gen.random(N) < 0.5
        copy = gen.random(N) < 0.01  # b copies a for 1% of the samples
        b = np.where(copy, a, gen.random(N) < 0.5)
        both, region = _fisher(a, b)
        assert both not in region

    def test_within_mask_test_rejects_paired_samples(self):
        gen = np.random.default_rng(SEED)
        pairs = gen.random(N // 2) < 0.5
        kept = np.repeat(pairs, 2)  # a per-pair mask where a per-sample one was asked for
        kept[gen.random(N) < 0.45] ^= True
        both, region = _fisher(kept[0::2], kept[1::2])
        assert both not in region

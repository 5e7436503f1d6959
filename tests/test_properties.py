"""Property-based tests (hypothesis) of drop_path, run on every backend.

Inputs are drawn at random: shapes of 1 to 5 dimensions with sides 0 to 4
(size-0 axes included, and 0-d arrays with ``axis=()``), every float dtype of
the backend, every axis form (an int, a negative int, a NumPy int, a tuple in
any order, the empty tuple), ``drop_prob`` anywhere in [0, 1] with both ends
and as a Python int, float or NumPy scalar, ``scale_by_keep`` both ways, and
every kind of ``rng`` (None, a seed, the backend's generator, a PortableRNG).

Properties (11): the output's shape, dtype, namespace and device are x's
(4); each slice along the drop axes is all zero or exactly ``x * scale`` (5);
x itself is returned when not training (6) and at ``drop_prob == 0`` (7);
finite input gives finite output (8); x is never modified (9);
``drop_prob == 1`` gives exact ``+0.0`` even for inf and NaN input (10); in
torch, the gradient is the mask over keep (11). 150 examples per test.

The runs are derandomised with a fixed number of examples, so CI sees the same
examples every time.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from array_api_compat import array_namespace, device
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from anydrop import PortableRNG, drop_path
from tests.backends import NO_DEFAULT_RNG, make_generator
from tests.helpers import scaled

PROPERTY = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_NUMPY_INT = (np.int8, np.int64, np.uint16)


@st.composite
def axis_forms(draw: st.DrawFn, ndim: int) -> tuple[Any, tuple[int, ...]]:
    """An axis argument for ``ndim`` dimensions, and the sorted non-negative axes it means."""
    if ndim == 0:
        return (), ()
    chosen = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim))
    spelled = [a - ndim if draw(st.booleans()) else a for a in chosen]
    form = draw(st.sampled_from(["tuple", "int", "numpy int"])) if len(chosen) == 1 else "tuple"
    if form == "int":
        axis: Any = spelled[0]
    elif form == "numpy int":
        axis = draw(st.sampled_from(_NUMPY_INT))(chosen[0])
    else:
        axis = tuple(spelled)
    return axis, tuple(sorted(chosen))


drop_probs = st.one_of(
    st.sampled_from(
        [0.0, 1.0, 0, 1, 0.5, 1e-300, math.nextafter(1.0, 0.0), np.float32(0.25), np.float64(0.75)]
    ),
    st.floats(0.0, 1.0),
)


@st.composite
def cases(draw: st.DrawFn, backend) -> dict[str, Any]:
    dtype = draw(st.sampled_from(backend.float_dtypes))
    ndim = draw(st.integers(0, 5))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=ndim, max_size=ndim)))
    axis, axes = draw(axis_forms(ndim))
    p = draw(drop_probs)
    keep = 1.0 - float(p)
    if keep > 0.0:
        # Past this 1/keep overflows the dtype (float16 only): see test_nonfinite.py.
        assume(1.0 / keep <= _max(backend, dtype) / 4)
    seed = draw(st.integers(0, 2**32 - 1))
    kinds = (
        ["seed", "generator", "portable"]
        if backend.name in NO_DEFAULT_RNG
        else ["none", "seed", "generator", "portable"]
    )
    rng_kind = draw(st.sampled_from(kinds))
    rng = {
        "none": None,
        "seed": seed,
        "generator": make_generator(backend, seed) if rng_kind == "generator" else None,
        "portable": PortableRNG(seed),
    }[rng_kind]
    host = np.random.default_rng(seed).uniform(-2.0, 2.0, size=shape)
    host[np.random.default_rng(seed + 1).random(shape) < 0.1] = 0.0
    if dtype.startswith("complex"):
        host = host + 1j * np.random.default_rng(seed + 2).uniform(-2.0, 2.0, size=shape)
    return {
        "x": backend.asarray(host, dtype),
        "p": p,
        "keep": keep,
        "axis": axis,
        "axes": axes,
        "scale_by_keep": draw(st.booleans()),
        "rng": rng,
    }


def samples(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``a`` as (one row per slice along ``axes``, the slice's elements); size-0 axes too."""
    other = [i for i in range(a.ndim) if i not in axes]
    rows = math.prod(a.shape[i] for i in axes)
    return np.transpose(a, list(axes) + other).reshape(rows, math.prod(a.shape[i] for i in other))


def _max(backend, dtype: str) -> float:
    real = {"complex64": "float32", "complex128": "float64"}.get(dtype, dtype)
    return float(backend.xp.finfo(backend.dtype(real)).max)


def _scaled_candidates(backend, x, case) -> list[Any]:
    """What a kept slice may equal: x * scale, with scale 1/keep rounded in x's dtype.

    In float16 and bfloat16 an inexact 1/keep is rounded per slice, down or up,
    to one of its two representable neighbours (the unbiased 16-bit scale).
    """
    if not case["scale_by_keep"]:
        return [x]
    xp = backend.xp
    if xp.isdtype(x.dtype, "real floating") and xp.finfo(x.dtype).bits == 16:
        scale = 1.0 / case["keep"]
        spacing = float(xp.finfo(x.dtype).eps) * 2.0 ** (math.frexp(scale)[1] - 1)
        lo = math.floor(scale / spacing) * spacing
        return [x * xp.asarray(v, dtype=x.dtype, device=device(x)) for v in (lo, lo + spacing)]
    return [scaled(xp, x, case["keep"])]


def _check_slices(backend, x, out, case) -> None:
    """Each slice along the drop axes is all zero or exactly x times the scale."""
    got = backend.to_numpy(out)
    if case["keep"] == 0.0:
        assert np.all(got == 0)
        return
    rows_out = samples(got, case["axes"])
    ok = np.all(rows_out == 0, axis=1)
    for expected in _scaled_candidates(backend, x, case):
        ok |= np.all(rows_out == samples(backend.to_numpy(expected), case["axes"]), axis=1)
    bad = np.flatnonzero(~ok)
    assert bad.size == 0, f"slices {bad[:5]} are neither all zero nor exactly x * scale"


@PROPERTY
@given(data=st.data())
def test_metadata_preserved_and_slices_zero_or_scaled(backend, data):
    case = data.draw(cases(backend))
    x = case["x"]
    out = drop_path(x, case["p"], True, case["scale_by_keep"], axis=case["axis"], rng=case["rng"])
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert array_namespace(out) is array_namespace(x)
    assert device(out) == device(x)
    _check_slices(backend, x, out, case)


@PROPERTY
@given(data=st.data())
def test_identity_when_not_training_or_nothing_dropped(backend, data):
    case = data.draw(cases(backend))
    x = case["x"]
    assert drop_path(x, case["p"], False, case["scale_by_keep"], axis=case["axis"], rng=case["rng"]) is x
    assert drop_path(x, 0.0, True, case["scale_by_keep"], axis=case["axis"], rng=case["rng"]) is x


@PROPERTY
@given(data=st.data())
def test_finite_input_gives_finite_output_and_is_untouched(backend, data):
    case = data.draw(cases(backend))
    x = case["x"]
    before = backend.to_numpy(x).copy()
    out = drop_path(x, case["p"], True, case["scale_by_keep"], axis=case["axis"], rng=case["rng"])
    assert np.all(np.isfinite(backend.to_numpy(out)))
    after = backend.to_numpy(x)
    # Bit patterns, so that even a 0.0 turned into -0.0 counts as a change.
    assert after.tobytes() == before.tobytes()


@PROPERTY
@given(data=st.data(), specials=st.lists(st.sampled_from([math.inf, -math.inf, math.nan]), min_size=1))
def test_drop_prob_one_gives_exact_zeros_for_inf_and_nan(backend, data, specials):
    case = data.draw(cases(backend))
    x_host = backend.to_numpy(case["x"]).astype(np.complex128 if "complex" in str(case["x"].dtype) else float)
    assume(x_host.size > 0)
    flat = x_host.reshape(-1)
    positions = data.draw(
        st.lists(st.integers(0, flat.size - 1), min_size=len(specials), max_size=len(specials))
    )
    for i, value in zip(positions, specials, strict=True):
        flat[i] = value
    dtype = _dtype_name(backend, case["x"].dtype)
    x = backend.asarray(x_host, dtype)
    out = backend.to_numpy(drop_path(x, 1.0, True, case["scale_by_keep"], axis=case["axis"], rng=case["rng"]))
    assert np.all(out == 0)
    assert not np.any(np.signbit(out.real)), "expected +0.0, not -0.0"


def _dtype_name(backend, dtype: Any) -> str:
    return next(name for name in backend.float_dtypes if backend.dtype(name) == dtype)


@pytest.mark.backends("torch")
@PROPERTY
@given(data=st.data())
def test_torch_gradient_is_the_mask_over_keep(backend, data):
    import torch

    case = data.draw(cases(backend))
    assume(case["keep"] > 0.0 and case["x"].dtype in (torch.float32, torch.float64))
    # 0-d tensors that require grad: test_nonfinite.py's xfail for a torch warning.
    assume(case["x"].ndim > 0)
    x = case["x"].detach().clone().requires_grad_(True)
    out = drop_path(x, case["p"], True, case["scale_by_keep"], axis=case["axis"], rng=case["rng"])
    upstream = torch.ones_like(x)
    out.backward(upstream)
    kept = torch.as_tensor(samples(backend.to_numpy(out), case["axes"]) != 0).any(dim=1)
    grad_rows = samples(backend.to_numpy(x.grad), case["axes"])
    scale = (
        float(scaled(backend.xp, torch.ones((), dtype=x.dtype), case["keep"]))
        if case["scale_by_keep"]
        else 1.0
    )
    for row, is_kept in zip(grad_rows, kept.tolist(), strict=True):
        # A kept slice of all-zero x looks dropped; its gradient is then either value.
        assert np.all(row == scale) or (np.all(row == 0) and not is_kept)

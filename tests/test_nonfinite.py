"""Non-finite input and the edges of floating point, on every backend.

With ``drop_prob == 1`` a branch that produces inf or NaN gives exact zeros,
selected rather than multiplied (0 * inf is NaN), and finite gradients. With
``drop_prob < 1`` the one-pass multiply is the documented contract: dropped
rows are ``0 * x``, exact zeros for finite x.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from anydrop import PortableRNG, drop_path
from tests.backends import NO_DEFAULT_RNG, skip_unsupported
from tests.helpers import scaled
from tests.portable_spec import spec_kept

SPECIALS = [math.inf, -math.inf, math.nan]


def _special_batch(backend, dtype: str = "float32", n: int = 64):
    """Rows of (inf, -inf, nan, finite) in turn, so that every row holds a non-finite value but the last."""
    host = np.ones((n, 3))
    for i in range(n - 1):
        host[i, i % 3] = SPECIALS[i % 3]
    return backend.asarray(host, dtype), host


@pytest.mark.parametrize("axis", [0, (0, 1), ()])
@pytest.mark.parametrize("scale_by_keep", [True, False])
@pytest.mark.parametrize("rng", ["seed", "portable", "none"])
def test_drop_prob_one_gives_exact_zeros_for_any_input(backend, axis, scale_by_keep, rng):
    if rng == "none":
        skip_unsupported(backend, NO_DEFAULT_RNG)
    x, _ = _special_batch(backend)
    r = {"seed": 3, "portable": PortableRNG(3), "none": None}[rng]
    out = backend.to_numpy(drop_path(x, 1.0, True, scale_by_keep, axis=axis, rng=r))
    assert np.all(out == 0)
    assert not np.any(np.signbit(out)), "expected +0.0, not -0.0"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64", "complex64"], indirect=True)
def test_drop_prob_one_exact_zeros_in_every_dtype(backend, dtype):
    x, _ = _special_batch(backend, dtype)
    out = backend.to_numpy(drop_path(x, 1.0, True, rng=0))
    assert np.all(out == 0)


@pytest.mark.parametrize("p", [0.3, 0.7])
def test_dropped_samples_are_zero_times_x_in_one_pass(backend, p):
    # The documented contract for p < 1: one multiply, as timm's and torchvision's,
    # so a dropped row is 0 * x: exact zeros where x is finite, NaN where x is inf
    # or NaN (p = 1 selects instead; the test above). A select would cost a second
    # pass over x on every call to guard a row whose neighbours are kept anyway.
    x, _ = _special_batch(backend)
    with np.errstate(invalid="ignore"):
        out = backend.to_numpy(drop_path(x, p, True, rng=PortableRNG(1)))
    host = backend.to_numpy(x)
    kept = spec_kept(1, 0, out.shape[0], 1 - p)  # PortableRNG's stream is known in advance
    assert 0 < kept.sum() < kept.size
    np.testing.assert_array_equal(out[kept], backend.to_numpy(scaled(backend.xp, x, 1 - p))[kept])
    finite = np.isfinite(host)
    dropped = ~kept[:, None] & np.ones_like(finite)
    assert np.all(out[dropped & finite] == 0)
    assert np.all(np.isnan(out[dropped & ~finite]))


@pytest.mark.backends("torch")
@pytest.mark.parametrize("p", [1.0, 0.5])
def test_torch_gradients_stay_finite_for_non_finite_branches(backend, p):
    import torch

    x, _ = _special_batch(backend, "float64")
    x = x.clone().requires_grad_(True)
    out = drop_path(x, p, True, rng=PortableRNG(2))
    out.backward(torch.ones_like(out))
    assert torch.all(torch.isfinite(x.grad))
    kept = ~torch.all(out == 0, dim=1)
    scale = 1 / (1 - p) if p < 1 else 0.0
    expected = kept[:, None].to(torch.float64) * scale * torch.ones_like(x)
    # Finite rows that were kept get 1/keep; everything else 0.
    finite_rows = torch.all(torch.isfinite(x.detach()), dim=1)
    assert torch.equal(x.grad[finite_rows], expected[finite_rows])


@pytest.mark.parametrize("dtype", ["float16"], indirect=True)
def test_a_scale_that_overflows_float16_is_a_value_error(backend, dtype):
    x = backend.asarray(np.zeros((1, 2)), dtype)
    before = backend.to_numpy(x).copy()
    # 1 / keep = 1e5 is inf in float16, and 0 * inf is NaN: refuse rather than return NaN.
    with pytest.raises(ValueError, match=r"drop_prob=0\.99999 .*overflows .*float16"):
        drop_path(x, 1 - 1e-5, True, rng=0)
    np.testing.assert_array_equal(backend.to_numpy(x), before)
    # Without the scale there is nothing to overflow.
    out = backend.to_numpy(drop_path(x, 1 - 1e-5, True, scale_by_keep=False, rng=0))
    assert np.all(out == 0)


@pytest.mark.backends("torch")
def test_zero_dimensional_tensor_that_requires_grad_does_not_warn():
    import torch

    x = torch.tensor(2.0, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = drop_path(x, 0.5, True, axis=(), rng=0)
    assert out.shape == ()

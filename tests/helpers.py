"""Assertions shared by the test files."""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import device


def samples(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """View ``a`` as (number of samples along ``axes``, everything else)."""
    other = [i for i in range(a.ndim) if i not in axes]
    moved = np.transpose(a, list(axes) + other)
    n = int(np.prod([a.shape[i] for i in axes], dtype=np.int64))
    return moved.reshape(n, -1)


def kept_samples(out: np.ndarray, expected_kept: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Check every sample of ``out`` is all zero or equal to ``expected_kept``; return which were kept.

    ``expected_kept`` must have no zeros, so the two cases cannot be confused.
    """
    assert not np.any(expected_kept == 0)
    rows_out = samples(out, axes)
    rows_ref = samples(expected_kept, axes)
    zero = np.all(rows_out == 0, axis=1)
    same = np.all(rows_out == rows_ref, axis=1)
    bad = np.flatnonzero(~(zero | same))
    assert bad.size == 0, f"samples {bad[:10]} are neither all zero nor exactly x * scale"
    return same


def scaled(xp: Any, x: Any, keep: float) -> Any:
    """``x`` times ``1 / keep``, the factor rounded in x's (real) dtype, on x's device."""
    real = x.dtype
    if x.dtype == xp.complex64:
        real = xp.float32
    elif x.dtype == xp.complex128:
        real = xp.float64
    one = xp.ones((), dtype=real, device=device(x))
    return x * (one / keep)


def random_batch(backend: Any, shape: tuple[int, ...], dtype: str = "float32", seed: int = 0) -> Any:
    """Values in [1, 2) (never zero) of ``dtype``; complex dtypes get a non-zero imaginary part too."""
    host = np.random.default_rng(seed).uniform(1.0, 2.0, size=shape)
    if dtype.startswith("complex"):
        host = host + 1j * np.random.default_rng(seed + 1).uniform(1.0, 2.0, size=shape)
    return backend.asarray(host, dtype)

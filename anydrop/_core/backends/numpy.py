# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""NumPy: host-drawn masks as for any namespace, with NumPy's ufuncs for the arithmetic."""

from __future__ import annotations

import sys
from typing import Any

from .._sources import MaskSource
from .generic import HostBackend, HostGenerator, numpy_default_generator

__all__ = ["NumPyBackend", "NumPyGenerator"]


class NumPyGenerator(HostGenerator):
    """A ``numpy.random.Generator`` drawing for NumPy arrays: no device to move to."""

    __slots__ = ()

    def bernoulli(self, keep: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any) -> Any:
        gen = self.gen if self.gen is not None else numpy_default_generator()
        return (gen.random(shape) < keep).astype(dtype)

    def uniform(self, shape: tuple[int, ...], x: Any, xp: Any) -> Any:
        return self.generator().random(shape)


def _result(out: Any, *inputs: Any) -> Any:
    """``out`` with the dtype the standard's operators give ``inputs``, and as an array when 0-d."""
    import numpy as np

    dtype = inputs[0].dtype if len(inputs) == 1 else np.result_type(*inputs)
    if out.dtype != dtype:
        # NumPy computes non-native byte orders in native order.
        out = out.astype(dtype)
    if out.ndim == 0:
        # NumPy turns 0-d arithmetic results into scalars.
        out = np.asarray(out)
    return out


#: Elements per block of the blocked add: three such blocks of float32 stay in a core's L2 or L3 cache.
_BLOCK = 2**17


def _blockable(np: Any, x: Any, branch: Any, mask: Any) -> bool:
    """Whether ``x + branch * mask`` can go block by block: large C-contiguous arrays, a per-sample mask."""
    return (
        type(x) is np.ndarray
        and type(branch) is np.ndarray
        and x.size >= 2 * _BLOCK
        and x.shape == branch.shape
        and x.dtype == branch.dtype == mask.dtype
        and x.dtype.isnative
        and mask.shape == (x.shape[0],) + (1,) * (x.ndim - 1)
        and x.flags.c_contiguous
        and branch.flags.c_contiguous
    )


def _add_product_blocked(np: Any, x: Any, branch: Any, mask: Any) -> Any:
    """``x + branch * mask`` in cache-sized blocks: the add reads the product from cache, not memory.

    The same two operations per element as the unblocked ufuncs, so the same
    result bit for bit, in one pass over memory instead of two.
    """
    out = np.empty_like(x)
    n = x.shape[0]
    size = x.size // n
    x2, b2, o2, m2 = x.reshape(n, size), branch.reshape(n, size), out.reshape(n, size), mask.reshape(n, 1)
    if size >= _BLOCK:  # large samples: blocks within each
        for i in range(n):
            for start in range(0, size, _BLOCK):
                o = o2[i, start : start + _BLOCK]
                np.multiply(b2[i, start : start + _BLOCK], m2[i], out=o)
                np.add(x2[i, start : start + _BLOCK], o, out=o)
    else:  # small samples: whole ones per block
        rows = _BLOCK // size
        for i in range(0, n, rows):
            o = o2[i : i + rows]
            np.multiply(b2[i : i + rows], m2[i : i + rows], out=o)
            np.add(x2[i : i + rows], o, out=o)
    return out


class NumPyBackend(HostBackend):
    """NumPy arrays."""

    name = "numpy"

    def generator_source(self, gen: Any) -> MaskSource:
        return NumPyGenerator(gen)

    def source(self, rng: object, x: Any) -> MaskSource:
        # A numpy.random.Generator, the common rng, without the general lookup:
        # on a tiny array that is a tenth of the call.
        if type(rng) is sys.modules["numpy"].random.Generator:
            return NumPyGenerator(rng)
        return super().source(rng, x)

    def multiply(self, x: Any, mask: Any) -> Any:
        np = sys.modules["numpy"]
        # The ufunc, not *: for ndarray subclasses such as np.matrix, * is a matmul.
        out = np.multiply(x, mask)
        if type(out) is np.ndarray and out.dtype is x.dtype:  # already what _result makes
            return out
        return _result(out, x)

    def add_product(self, x: Any, branch: Any, mask: Any) -> Any:
        import numpy as np

        if _blockable(np, x, branch, mask):
            return _add_product_blocked(np, x, branch, mask)
        out = np.multiply(branch, mask)
        if out.shape == np.broadcast_shapes(x.shape, out.shape) and np.result_type(x, out) == out.dtype:
            # Add into the product: one temporary instead of two.
            np.add(x, out, out=out)
        else:
            out = np.add(x, out)
        return _result(out, x, branch)

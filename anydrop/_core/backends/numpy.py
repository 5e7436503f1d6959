# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""NumPy: host-drawn masks as for any namespace, with NumPy's ufuncs for the arithmetic."""

from __future__ import annotations

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


class NumPyBackend(HostBackend):
    """NumPy arrays."""

    name = "numpy"

    def generator_source(self, gen: Any) -> MaskSource:
        return NumPyGenerator(gen)

    def multiply(self, x: Any, mask: Any) -> Any:
        import numpy as np

        # The ufunc, not *: for ndarray subclasses such as np.matrix, * is a matmul.
        return _result(np.multiply(x, mask), x)

    def add_product(self, x: Any, branch: Any, mask: Any) -> Any:
        import numpy as np

        out = np.multiply(branch, mask)
        if out.shape == np.broadcast_shapes(x.shape, out.shape) and np.result_type(x, out) == out.dtype:
            # Add into the product: one temporary instead of two.
            np.add(x, out, out=out)
        else:
            out = np.add(x, out)
        return _result(out, x, branch)

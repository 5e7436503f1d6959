# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""Any array API namespace without a random module of its own (array-api-strict, ...).

Such a namespace has no generator we can rely on, so masks are drawn on the
host with a ``numpy.random.Generator`` and moved to x's device: a mask has one
value per sample, small next to x. NumPy's and Dask's backends build on this
one, since they take the same generators.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .._compat import device
from .._sources import MaskSource
from ._base import Backend

__all__ = ["HostBackend", "HostGenerator", "numpy_default_generator"]

_numpy_default: Any = None


def numpy_default_generator() -> Any:
    """The process-wide ``numpy.random.Generator`` that ``rng=None`` draws from on host-drawn backends.

    Fresh OS entropy, once per process: as unpredictable as a new
    ``default_rng()`` per call (SPEC 7's None) at a tenth of the cost.
    """
    global _numpy_default
    if _numpy_default is None:
        import numpy as np

        _numpy_default = np.random.default_rng()
    return _numpy_default


def _forget_numpy_default() -> None:
    # A forked child (e.g. a DataLoader worker) must not replay its parent's masks.
    global _numpy_default
    _numpy_default = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_numpy_default)


class HostGenerator(MaskSource):
    """A ``numpy.random.Generator`` (None: the process-wide one); masks are moved to x's device."""

    __slots__ = ("gen",)

    def __init__(self, gen: Any) -> None:
        self.gen = gen

    def generator(self) -> Any:
        """The ``numpy.random.Generator`` to draw from."""
        return self.gen if self.gen is not None else numpy_default_generator()

    def bernoulli(self, keep: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any) -> Any:
        return xp.astype(xp.asarray(self.generator().random(shape) < keep, device=device(x)), dtype)

    def uniform(self, shape: tuple[int, ...], x: Any, xp: Any) -> Any:
        return xp.asarray(self.generator().random(shape), device=device(x))


class HostBackend(Backend):
    """Masks drawn on the host with NumPy for any other array API namespace."""

    name = "generic"
    generator_names = "numpy.random.Generator"

    def is_generator(self, rng: object) -> bool:
        np = sys.modules.get("numpy")
        return np is not None and isinstance(rng, np.random.Generator)

    def seeded(self, seed: int, x: Any) -> Any:
        import numpy as np

        return np.random.default_rng(seed)

    def generator_source(self, gen: Any) -> MaskSource:
        return HostGenerator(gen)

    def library(self, x: Any) -> str:
        return type(x).__module__.partition(".")[0]

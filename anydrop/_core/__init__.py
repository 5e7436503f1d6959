# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""anydrop's core: the one drop-path implementation, written against the array API standard.

This folder is self-contained so that other libraries can vendor it: it
imports nothing from the rest of anydrop, and array-api-compat only through
``_compat.py``, whose imports a vendoring project may point at its own copy.
Array frameworks are imported lazily, only once an array of theirs is seen.

``rng`` follows SPEC 7: ``None`` (the library's default source), a
non-negative ``int`` seed, or a generator object of the library; JAX has no
default source and no generator objects, and takes a PRNG key, used as given.
A :class:`PortableRNG` gives the same masks on every library.

Modules, each depending only on those before it:

``_compat``
    the array-api-compat names used.
``_checks``
    argument checks, written once.
``_portable``
    PortableRNG's SplitMix64 stream.
``_sources``
    mask sources: where one call's random bits come from.
``backends``
    one backend object per array library (NumPy, PyTorch, CuPy, JAX, Dask,
    and any other array API namespace) and the lookup from an array's type.
``_scale``
    the scaled mask and the unbiased 16-bit scale.
``_api``, ``_residual``
    the entry points.
"""

from ._api import drop_path, drop_path_add
from ._portable import PortableRNG
from ._residual import drop_path_residual

__all__ = ["PortableRNG", "drop_path", "drop_path_add", "drop_path_residual"]

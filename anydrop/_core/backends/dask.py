# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""Dask: lazy masks, chunked like x along the drop axes and independent of every chunking.

Element i of a mask (C order over its shape) is kept when value i of a
SplitMix64 stream (PortableRNG's) is below the threshold. Each value is a
function of its position alone, so the mask's blocks line up with x's
(``x * mask`` is one task per block, no rechunk), the result is the same for
any chunking of x, and the workers need only NumPy and Dask, not anydrop. A
mask of up to ``HOST_MASK_SIZE`` elements (one per sample, as drop path's
usually is) is computed on the host at call time, which takes microseconds and
touches no block of x, and enters the graph as data, one task per block; a
larger one is built lazily with Dask array arithmetic on index ranges chunked
like x, a dozen tasks per block, so that nothing of its size is made at call time.

A seed, a ``numpy.random.Generator`` or None (the process-wide NumPy
generator) is turned into the stream's 64-bit key by one draw from that
generator on the host, fresh for every mask: a generator advances, two masks
drawn from it are independent, and ``rng=seed`` equals
``rng=numpy.random.default_rng(seed)``. A PortableRNG gives the masks it gives
on NumPy, built lazily from its stream's positions.
"""

from __future__ import annotations

import math
from typing import Any

from .._checks import MAX_SEED, ONES
from .._portable import UNIFORM_BITS, PortableRNG, mix64, splitmix64_at, take_stretch, thresholds
from .._sources import MaskSource, PortableSource
from .generic import HostBackend, HostGenerator

__all__ = ["HOST_MASK_SIZE", "DaskBackend", "DaskPortable", "DaskStream", "stream_masks"]

#: The largest mask (in elements) computed on the host: 256 KiB of float32 in the graph at most.
HOST_MASK_SIZE = 2**16

_REFUSAL = (
    "drop_path_residual does not support Dask arrays: it gathers the kept samples, whose number "
    "is known only once the mask is computed; use drop_path_add(x, fn(x), ...) instead"
)


def stream_masks(  # noqa: PLR0917
    state: int, start: int, shape: tuple[int, ...], limits: list[int], dtype: Any, x: Any
) -> list[Any]:
    """Lazy 0/1 Dask arrays of ``shape``: element i is ``value(start + i) >> 11 < limit``, per limit.

    ``shape`` is x's along the drop axes and 1 elsewhere; the masks take x's
    chunks along the drop axes.
    """
    import dask.array as da
    import numpy as np

    if any(math.isnan(n) for n in shape):  # Dask's shape for an unknown chunk size
        raise ValueError(
            f"x has unknown chunk sizes along a drop axis (shape {tuple(x.shape)}): call "
            "x.compute_chunk_sizes() first, so that the mask can be chunked like x"
        )
    u64 = np.uint64
    chunks = tuple(x.chunks[i] if n == x.shape[i] else (1,) for i, n in enumerate(shape))
    size = math.prod(shape)
    if size <= HOST_MASK_SIZE:
        # The same values as the lazy build below: position i of the C order is element i.
        host_ints = splitmix64_at(u64, state, start, np.arange(size, dtype=u64)) >> u64(64 - UNIFORM_BITS)
        host = [(host_ints < u64(t)).astype(dtype).reshape(shape) for t in limits]
        from_array: Any = da.from_array  # untyped in Dask
        return [from_array(mask, chunks=chunks) for mask in host]
    ndim = len(shape)
    # Each element's position in the mask's C order, as a sum of one broadcast
    # arange per axis: built per block from the block's offsets, never materialised whole.
    flat = da.zeros(ONES[ndim], dtype=u64, chunks=1)
    stride = 1
    for i in reversed(range(ndim)):
        if shape[i] != 1:
            index = da.arange(shape[i], chunks=(chunks[i],), dtype=u64) * u64(stride)
            flat = flat + index[(None,) * i + (slice(None),) + (None,) * (ndim - 1 - i)]
        stride *= shape[i]
    if ndim == 0:
        # NumPy turns 0-d blocks into scalars, whose wrapping arithmetic warns of overflow.
        flat = flat.reshape((1,))
    uniform_ints = splitmix64_at(u64, state, start, flat) >> u64(64 - UNIFORM_BITS)
    return [(uniform_ints < u64(t)).astype(dtype).reshape(shape) for t in limits]


class DaskStream(HostGenerator):
    """A ``numpy.random.Generator`` (None: the process-wide one) that keys one lazy stream per mask."""

    __slots__ = ()

    def bernoulli(self, keep: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any) -> Any:
        import numpy as np

        key = int(self.generator().integers(0, MAX_SEED, dtype=np.uint64))
        (mask,) = stream_masks(mix64(key), 0, shape, thresholds((keep,)), dtype, x)
        return mask

    def uniform(self, shape: tuple[int, ...], x: Any, xp: Any) -> Any:
        raise TypeError(_REFUSAL)


class DaskPortable(PortableSource):
    """PortableRNG's stream on Dask: NumPy's masks, built lazily from the stream's positions."""

    __slots__ = ()

    def masks(
        self, shape: tuple[int, ...], probs: tuple[float, ...], dtype: Any, x: Any, xp: Any
    ) -> list[Any]:
        state, start = take_stretch(self.rng, math.prod(shape))
        return stream_masks(state, start, shape, thresholds(probs), dtype, x)


class DaskBackend(HostBackend):
    """Dask arrays (of NumPy blocks)."""

    name = "dask"
    residual_refusal = _REFUSAL

    def generator_source(self, gen: Any) -> MaskSource:
        return DaskStream(gen)

    def portable_source(self, rng: PortableRNG, x: Any) -> MaskSource:
        return DaskPortable(rng)

"""The Dask case: anydrop's lazy mask beside a hand-written Dask mask, computed, with graph sizes."""

from __future__ import annotations

import importlib
from typing import Any

import anydrop

from ._measure import VIT, Case

#: A ViT batch of 256 in chunks of 32 samples, and the same for ``--quick`` with 8 samples per chunk.
DASK_SHAPE, DASK_CHUNK = (256, *VIT[1:]), 32
DASK_QUICK_SHAPE, DASK_QUICK_CHUNK = (32, *VIT[1:]), 8
#: The candidate ``x * (mask / keep)`` with a Dask mask chunked like x's first axis.
DASK_REFERENCE = "dask mask reference"


def dask_cases(quick: bool) -> list[Case]:
    """``drop_path(x).compute()`` on a persisted Dask array, and the task count of each graph."""
    import numpy as np

    da: Any = importlib.import_module("dask.array")  # untyped: its functions are Any here

    shape, chunk = (DASK_QUICK_SHAPE, DASK_QUICK_CHUNK) if quick else (DASK_SHAPE, DASK_CHUNK)
    p = 0.1
    keep = np.float32(1.0 - p)
    host = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    # In memory, chunked: a compute measures the mask and the product, not making x.
    x = da.from_array(host, chunks=(chunk, *shape[1:])).persist()
    mask_shape = (shape[0],) + (1,) * (len(shape) - 1)
    mask_chunks = (chunk,) + (1,) * (len(shape) - 1)
    seeds = iter(range(2**62))  # a new mask per call, as training draws

    def reference() -> Any:
        drawn = da.random.default_rng(next(seeds)).random(mask_shape, chunks=mask_chunks) < keep
        return x * (drawn.astype(np.float32) / keep)

    def ours() -> Any:
        return anydrop.drop_path(x, p, True, rng=next(seeds))

    graphs = {DASK_REFERENCE: reference, "anydrop": ours}
    return [
        Case(
            "drop_path compute, ViT",
            "dask",
            "float32",
            shape,
            {name: _computed(build) for name, build in graphs.items()},
            DASK_REFERENCE,
            bytes_moved=2 * host.nbytes,
            graph_tasks={name: len(build().__dask_graph__()) for name, build in graphs.items()},
        )
    ]


def _computed(build: Any) -> Any:
    return lambda: build().compute()

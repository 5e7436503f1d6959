"""Dask: lazy, chunk-aligned masks that do not depend on chunking, and a real ``dask.distributed`` cluster.

The shared test files run on Dask arrays too (``--backend dask``); the tests
here check what only a lazy, chunked backend can get wrong: computing at call
time, masks whose blocks do not line up with x's (a rechunk per call), masks
that change with the chunking, and an array larger than a worker's memory.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from anydrop import DropPath, PortableRNG, drop_path, drop_path_add, drop_path_residual
from tests.stats import binomial_acceptance

pytestmark = pytest.mark.backends("dask")

da = pytest.importorskip("dask.array", reason="the Dask tests need dask[array] installed")
dask = pytest.importorskip("dask")

ALPHA = 1e-6


class CountingScheduler:
    """A synchronous Dask scheduler that records every computation it is asked for."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return dask.get(dsk, keys, **kwargs)


def _rngs() -> list[Any]:
    return [None, 5, np.random.default_rng(5), PortableRNG(5)]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("entry", ["drop_path", "drop_path_add", "layer"])
def test_nothing_is_computed_until_the_user_computes(entry, dtype):
    scheduler = CountingScheduler()
    with dask.config.set(scheduler=scheduler):
        x = da.random.default_rng(0).random((64, 8), chunks=(16, 4)).astype(dtype)
        outs = []
        for rng in _rngs():
            if entry == "drop_path":
                outs.append(drop_path(x, 0.3, True, rng=rng))
            elif entry == "drop_path_add":
                outs.append(drop_path_add(x, x, 0.3, True, rng=rng))
            else:
                outs.append(DropPath(0.3, rng=rng)(x))
        # float16's scale takes two draws (see the 16-bit scale): both lazy too.
        assert scheduler.calls == 0
        assert all(isinstance(out, da.Array) for out in outs)
        dask.compute(*outs)
    assert scheduler.calls == 1


def _joins_blocks(array: Any) -> list[str]:
    """What in ``array``'s graph is not block for block: rechunks, tasks reading two blocks of one array."""
    (optimised,) = dask.optimize(array)
    graph = dict(optimised.__dask_graph__())
    dependencies, _ = dask.core.get_deps(graph)
    found = [name for name in array.dask.layers if "rechunk" in name]
    for key, deps in dependencies.items():
        names = [d[0] for d in deps if isinstance(d, tuple)]
        if len(names) != len(set(names)):
            found.append(str(key))
    return found


@pytest.mark.parametrize(
    ("chunks", "axis"), [((16, 4, 5), 0), ((16, 3, 5), 1), ((7, 4, 2), (0, 2)), ((64, 8, 5), -1)]
)
def test_mask_blocks_line_up_with_x_blocks(chunks, axis):
    x = da.from_array(np.ones((64, 8, 5)), chunks=chunks)
    out = drop_path(x, 0.5, True, axis=axis, rng=1)
    assert out.chunks == x.chunks
    # x * mask is one task per block of x, reading one block of x and one of the mask.
    assert _joins_blocks(out) == []
    assert _joins_blocks(x * da.from_array(np.ones((64, 1, 1)), chunks=(8, 1, 1))) != []  # the check can fail


def test_result_does_not_depend_on_chunking_along_any_axis():
    host = np.random.default_rng(3).uniform(1.0, 2.0, size=(60, 6, 4))
    results = []
    for chunks in [(60, 6, 4), (60, 1, 3), (7, 6, 4), (13, 5, 1), (1, 2, 4)]:
        x = da.from_array(host, chunks=chunks)
        results.append(drop_path(x, 0.5, True, axis=(0, 2), rng=2024).compute())
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    dropped = np.all(results[0] == 0, axis=1)
    assert 0 < dropped.sum() < dropped.size


@pytest.mark.parametrize(("dtype", "p"), [("float32", 0.5), ("float64", 0.3), ("float16", 0.1)])
def test_portable_rng_gives_numpys_masks_for_any_chunking(dtype, p):
    # float16 at p = 0.1 takes the unbiased scale's nested draw.
    host = np.random.default_rng(4).uniform(1.0, 2.0, size=(50, 3)).astype(dtype)
    expected = drop_path(host, p, True, rng=PortableRNG(9, position=7))
    for chunks in [(50, 3), (9, 2), (1, 1)]:
        rng = PortableRNG(9, position=7)
        out = drop_path(da.from_array(host, chunks=chunks), p, True, rng=rng)
        assert rng.position == 57  # advanced at call time, computed or not
        np.testing.assert_array_equal(out.compute(), expected)


def test_successive_masks_from_one_generator_differ_and_reproduce():
    x = da.ones((256, 2), chunks=(64, 2))
    gen = np.random.default_rng(8)
    first, second = (drop_path(x, 0.5, True, rng=gen).compute() for _ in range(2))
    assert not np.array_equal(first, second)
    again = drop_path(x, 0.5, True, rng=np.random.default_rng(8)).compute()
    np.testing.assert_array_equal(again, first)


def test_drop_path_residual_is_refused_with_the_reason():
    x = da.ones((8, 3), chunks=(4, 3))
    with pytest.raises(TypeError, match="drop_path_residual does not support Dask arrays: it gathers"):
        drop_path_residual(x, lambda a: 2 * a, 0.5, True, rng=0)
    with pytest.raises(TypeError, match="drop_path_residual does not support Dask arrays"):
        drop_path_residual(x, lambda a: 2 * a, 0.5, True, rng=0, fixed_size=True)
    # Nothing to gather in eval mode: x + fn(x), lazily.
    out = drop_path_residual(x, lambda a: 2 * a, 0.5, False)
    np.testing.assert_array_equal(out.compute(), np.full((8, 3), 3.0))


def test_unknown_chunk_sizes_along_a_drop_axis_are_a_value_error():
    x = da.from_array(np.arange(1.0, 13.0).reshape(6, 2), chunks=(3, 2))
    unknown = x[x[:, 0] > 4]  # boolean indexing: chunk sizes unknown until computed
    message = (
        r"^x has unknown chunk sizes along a drop axis \(shape \(nan, 2\)\): call x\.compute_chunk_sizes\(\) "
        r"first, so that the mask can be chunked like x$"
    )
    with pytest.raises(ValueError, match=message):
        drop_path(unknown, 0.5, True, rng=0)
    # Along another axis they are fine: the mask has size 1 there.
    out = drop_path(unknown.T, 0.5, True, rng=0).compute()
    assert out.shape == (2, 4)


# --- a real cluster: two worker processes on loopback, an array larger than a worker's memory ---

WORKER_MEMORY = 400 * 2**20
SHAPE = (384, 1024, 1024)  # float32: 1.5 GiB, more than both workers' limits together
P = 0.25


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip(
        "distributed", reason="the cluster test needs dask.distributed installed"
    )
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        memory_limit=WORKER_MEMORY,
        host="127.0.0.1",
        dashboard_address=None,
    )
    try:
        with distributed.Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def test_cluster_drops_whole_samples_of_an_array_larger_than_a_worker(client):
    x = da.random.default_rng(1).random(SHAPE, dtype=np.float32, chunks=(8, 1024, 1024))
    assert x.nbytes > 2 * WORKER_MEMORY
    out = drop_path(x, P, True, rng=2026)
    # Per-sample sums of x and of the output in one pass: each block of x is
    # made once, on a worker, and never gathered.
    x_sums, out_sums = dask.compute(
        x.sum(axis=(1, 2), dtype=np.float64), out.sum(axis=(1, 2), dtype=np.float64)
    )
    kept = out_sums != 0
    scale = float(np.float32(1.0) / np.float32(1.0 - P))
    # Every sample is dropped whole (sum 0) or scaled by 1/keep (to float32 rounding of each element).
    np.testing.assert_allclose(out_sums[kept], x_sums[kept] * scale, rtol=1e-6)
    assert np.all(x_sums > 0)
    region = binomial_acceptance(SHAPE[0], 1.0 - P, ALPHA)
    assert int(kept.sum()) in region, (int(kept.sum()), region)

    # The same seed keeps the same samples of another array with other blocks,
    # along the drop axis too.
    ones = da.ones(SHAPE, dtype=np.float32, chunks=(24, 512, 1024))
    again = drop_path(ones, P, True, rng=2026).sum(axis=(1, 2), dtype=np.float64).compute()
    np.testing.assert_array_equal(again != 0, kept)
    np.testing.assert_array_equal(again[kept], math.prod(SHAPE[1:]) * scale)
    # The graph holds only NumPy and Dask functions: the workers never needed anydrop.
    # (A function of this module would be pickled by reference and import it,
    # and anydrop with it, on the workers: send a builtin and a string instead.)
    imported = client.run(eval, "'anydrop' in __import__('sys').modules")
    assert imported
    assert not any(imported.values()), imported


@pytest.mark.parametrize("rng", [lambda: 5, lambda: PortableRNG(5)])
def test_masks_made_on_the_host_equal_the_lazily_built_ones(rng):
    # Per sample, the mask is small and computed at call time; elementwise on
    # a large array it is built lazily; position i of both is the same value.
    n = 3 * 2**16  # more elements than the host computes
    x = da.ones((n, 2), chunks=(2**15, 2))
    lazy = drop_path(x, 0.5, True, axis=(0, 1), rng=rng())
    host = drop_path(x[: 2**14], 0.5, True, axis=(0, 1), rng=rng())
    np.testing.assert_array_equal(host.compute(), lazy.compute()[: 2**14])
    # A mask of one value per sample adds no more tasks than a hand-written Dask mask does.
    small = da.ones((256, 197, 8), chunks=(32, 197, 8))
    mask = da.random.default_rng(0).random((256, 1, 1), chunks=(32, 1, 1)) < 0.5
    assert len(drop_path(small, 0.5, True, rng=rng()).dask) <= len((small * (mask / 0.5)).dask)


@pytest.mark.parametrize(
    ("shape", "chunks", "axis"),
    [((70000,), (30000,), 0), ((40, 50, 40), (16, 25, 40), (0, 1, 2)), ((300, 3, 250), (64, 3, 100), (0, 2))],
    ids=["1-d", "3-d", "axes-0-and-2"],
)
def test_lazily_built_masks_are_numpys_masks_chunked_like_x(shape, chunks, axis):
    # Masks of more elements than the host computes, built from each element's position in C order.
    host = np.random.default_rng(5).uniform(1.0, 2.0, size=shape).astype(np.float32)
    assert math.prod(host.shape[a] for a in np.atleast_1d(axis)) > 2**16
    x = da.from_array(host, chunks=chunks)
    out = drop_path(x, 0.5, True, axis=axis, rng=PortableRNG(9))
    assert out.dtype == np.float32
    assert out.chunks == x.chunks
    assert _joins_blocks(out) == []
    np.testing.assert_array_equal(out.compute(), drop_path(host, 0.5, True, axis=axis, rng=PortableRNG(9)))

# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""torch DTensor: masks of the global view, each rank drawing only what it needs, with no communication.

A DTensor's random ops (``bernoulli_`` on one) ignore a ``generator`` and draw
from each rank's own global generator (or DTensor's RNG tracker where one is
set up), so the masks of ranks that hold the same samples (``Replicate()``, or
a shard along a feature axis, as in tensor parallelism) would differ: a
logical tensor whose replicas disagree. Here masks never go through DTensor's
random ops:

- an int seed, a ``torch.Generator`` or a ``PortableRNG`` draws the whole
  mask (one value per sample: small) on every rank, as drop path would draw
  it for the unsharded tensor, and each rank keeps its part. Ranks agree
  whenever their generators are in the same state, which an int seed, a
  ``PortableRNG`` of one seed or :func:`anydrop.torch.synchronized_rng` make
  so by construction;
- ``rng=None`` draws from each rank's global generator, which data-parallel
  scripts seed per rank: so it draws the rank's own shard of the mask only
  where no two ranks hold the same sample (every mesh dimension shards an axis
  the mask varies along), and refuses otherwise.
"""

from __future__ import annotations

import math
from typing import Any

from .._portable import PortableRNG
from .._sources import MaskSource
from .torch import TorchBackend, TorchGenerator

__all__ = ["DTensorBackend", "GlobalView", "is_dtensor"]

_AGREE = (
    "rng=None draws from each rank's own global generator (torch.manual_seed), and ranks are "
    "usually seeded apart, but x is a DTensor with placements {placements}, under which the ranks "
    "along a mesh dimension hold parts of the same samples, and their masks must agree: pass an int "
    "seed, anydrop.PortableRNG(seed), or a torch.Generator in the same state on every rank "
    "(anydrop.torch.synchronized_rng(seed, step)). DTensors sharded only along the sample axis "
    "(Shard(0)) can use rng=None"
)


def is_dtensor(x: object) -> bool:
    """Whether ``x`` is a DTensor (without importing torch.distributed).

    Raises TypeError for one of torch before 2.4, whose DTensor (in
    ``torch.distributed._tensor``) lacks what the masks' layout needs.
    """
    import sys

    for name in ("torch.distributed.tensor", "torch.distributed._tensor"):
        dtensor = getattr(sys.modules.get(name), "DTensor", None)
        if dtensor is not None and isinstance(x, dtensor):
            if name.endswith("._tensor") and "torch.distributed.tensor" not in sys.modules:
                raise TypeError(
                    "x is a DTensor of a torch before 2.4 (torch.distributed._tensor); anydrop lays out "
                    "DTensor masks with the API of torch.distributed.tensor: upgrade to torch>=2.4"
                )
            return True
    return False


def _mask_placements(shape: tuple[int, ...], x: Any) -> tuple[list[Any], bool]:
    """The mask's placements on x's mesh, and whether every mesh dimension splits the samples.

    A mesh dimension that shards x along an axis the mask varies along gives
    its ranks different samples: the mask is sharded alike. Any other
    placement (``Replicate()``, ``Partial()``, a shard of a broadcast axis)
    gives its ranks the same samples: the mask is replicated there.
    """
    from torch.distributed.tensor import Replicate, Shard

    placements: list[Any] = []
    independent = True
    aligned = len(shape) == x.ndim
    for p in x.placements:
        dim: int = p.dim if isinstance(p, Shard) else -1  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        if aligned and dim >= 0 and shape[dim] == x.shape[dim] > 1:
            placements.append(Shard(dim))
        else:
            placements.append(Replicate())
            independent = False
    return placements, independent


def _spread(mask: Any, shape: tuple[int, ...], x: Any) -> Any:
    """The DTensor whose global value is ``mask`` (a local tensor, equal on every rank), laid out like x."""
    from torch.distributed.tensor import DTensor, Replicate

    mesh = x.device_mesh
    placements, _ = _mask_placements(shape, x)
    whole = DTensor.from_local(mask, mesh, [Replicate()] * mesh.ndim, run_check=False)
    # Replicate to Shard keeps each rank's chunk: no communication.
    return whole.redistribute(mesh, placements)


class GlobalView(MaskSource):
    """Draws the mask of the whole (global) tensor with ``inner`` on every rank; each keeps its part."""

    __slots__ = ("inner",)

    def __init__(self, inner: MaskSource) -> None:
        self.inner = inner

    def bernoulli(self, keep: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any) -> Any:
        return _spread(self.inner.bernoulli(keep, shape, dtype, x.to_local(), xp), shape, x)

    def bernoulli_pair(  # noqa: PLR0917
        self, keep: float, frac: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any
    ) -> tuple[Any, Any]:
        kept, upper = self.inner.bernoulli_pair(keep, frac, shape, dtype, x.to_local(), xp)
        return _spread(kept, shape, x), _spread(upper, shape, x)

    def unbiased(  # noqa: PLR0917
        self,
        keep: float,
        rounding: tuple[float, float, float],
        shape: tuple[int, ...],
        dtype: Any,
        x: Any,
        xp: Any,
    ) -> Any:
        return _spread(self.inner.unbiased(keep, rounding, shape, dtype, x.to_local(), xp), shape, x)

    def uniform(self, shape: tuple[int, ...], x: Any, xp: Any) -> Any:
        return _spread(self.inner.uniform(shape, x.to_local(), xp), shape, x)


class ShardLocal(MaskSource):
    """``rng=None``: each rank draws its own shard of the mask from its global generator."""

    __slots__ = ()

    def _local(self, shape: tuple[int, ...], x: Any) -> tuple[Any, tuple[int, ...], Any]:
        from torch.distributed.tensor import Shard

        placements, independent = _mask_placements(shape, x)
        if not independent:
            raise ValueError(_AGREE.format(placements=tuple(x.placements)))
        local = x.to_local()
        sharded: set[int] = {p.dim for p in placements if isinstance(p, Shard)}  # pyright: ignore[reportUnknownMemberType]
        local_shape = tuple(local.shape[d] if d in sharded else shape[d] for d in range(len(shape)))
        return placements, local_shape, local

    def _wrap(self, mask: Any, placements: list[Any], shape: tuple[int, ...], x: Any) -> Any:
        import torch
        from torch.distributed.tensor import DTensor

        # The global shape and strides, given: shards may be uneven.
        stride = tuple(math.prod(shape[d + 1 :]) for d in range(len(shape)))
        return DTensor.from_local(
            mask, x.device_mesh, placements, run_check=False, shape=torch.Size(shape), stride=stride
        )

    def bernoulli(self, keep: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any) -> Any:
        placements, local_shape, local = self._local(shape, x)
        mask = TorchGenerator(None).bernoulli(keep, local_shape, dtype, local, xp)
        return self._wrap(mask, placements, shape, x)

    def unbiased(  # noqa: PLR0917
        self,
        keep: float,
        rounding: tuple[float, float, float],
        shape: tuple[int, ...],
        dtype: Any,
        x: Any,
        xp: Any,
    ) -> Any:
        placements, local_shape, local = self._local(shape, x)
        mask = TorchGenerator(None).unbiased(keep, rounding, local_shape, dtype, local, xp)
        return self._wrap(mask, placements, shape, x)

    def uniform(self, shape: tuple[int, ...], x: Any, xp: Any) -> Any:
        # drop_path_residual's fixed-size subsets: every rank draws those of all shards and keeps its own.
        raise ValueError(
            "drop_path_residual with fixed_size=True on a DTensor draws the random subset of every shard "
            "of the batch on every rank, so the ranks must draw the same numbers, and rng=None draws from "
            "each rank's own global generator: pass an int seed, anydrop.PortableRNG(seed), or a "
            "torch.Generator in the same state on every rank (anydrop.torch.synchronized_rng(seed, step))"
        )


class DTensorBackend(TorchBackend):
    """``torch.distributed.tensor.DTensor``: torch's backend, with masks laid out on x's device mesh."""

    #: Why drop_path_residual's default (a kept batch sized by the mask) cannot run on a DTensor.
    variable_size_refusal = (
        "drop_path_residual with fixed_size=False sizes the kept batch from the mask (torch.nonzero), "
        "which DTensor cannot shard; pass fixed_size=True (exactly round(n * (1 - drop_prob)) samples "
        "kept, static shapes), or use drop_path_add(x, branch(x), ...)"
    )

    def generator_source(self, gen: Any) -> MaskSource:
        return ShardLocal() if gen is None else GlobalView(TorchGenerator(gen))

    def source(self, rng: object, x: Any) -> MaskSource:
        found = super().source(rng, x)
        return found if isinstance(found, (GlobalView, ShardLocal)) else GlobalView(found)

    def portable_source(self, rng: PortableRNG, x: Any) -> MaskSource:
        return GlobalView(super().portable_source(rng, x))

    def keep_for(self, drop_prob: object, keep: float, source: MaskSource) -> Any:
        return keep

    def sample_shards(self, x: Any, axis: int) -> int | None:
        # The mesh dimensions that shard the sample axis: drop_path_residual's fixed-size
        # subset is then drawn per shard, and each rank gathers and runs the branch on its own.
        from torch.distributed.tensor import Shard

        sizes = [
            x.device_mesh.size(i)
            for i, p in enumerate(x.placements)
            if isinstance(p, Shard) and p.dim == axis  # pyright: ignore[reportUnknownMemberType]
        ]
        return math.prod(sizes) if sizes else None

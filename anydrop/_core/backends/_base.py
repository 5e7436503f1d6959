# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""The abstract backend: everything drop path does differently per array library.

The array API standard has no random module, so each library gets one
``Backend`` object that says which generator objects it takes, makes seeded
ones, and wraps a generator in a :class:`~.._sources.MaskSource` that draws on
x's device. It also owns the arithmetic where a library has a faster
equivalent of the standard operators (one fused pass, no temporary) and what
the library cannot do. The hooks that raise ``NotImplementedError`` must be
implemented; the others have the array API's behaviour.
"""

from __future__ import annotations

from typing import Any

from .._checks import check_seed, is_integer, type_name
from .._compat import device
from .._portable import PortableRNG
from .._sources import MaskSource, PortableSource

__all__ = ["Backend"]


class Backend:
    """One array library's drawing and arithmetic."""

    #: The library's name, as error messages say it.
    name = "abstract"
    #: What error messages list as the accepted generator objects.
    generator_names = "generator"
    #: Why ``drop_path_residual`` cannot gather this library's kept samples, or None if it can.
    residual_refusal: str | None = None
    #: Why ``drop_path_residual`` with ``fixed_size=False`` cannot run here, or None if it can.
    variable_size_refusal: str | None = None

    def __init__(self) -> None:
        #: The source ``rng=None`` draws from.
        self.default_source = self.generator_source(None)

    # --- hooks ---

    def is_generator(self, rng: object) -> bool:
        """Whether ``rng`` is a generator object of this library (without importing the library)."""
        raise NotImplementedError

    def check_generator(self, rng: Any, x: Any) -> None:
        """Raise if ``rng`` (a generator of this library) cannot draw for ``x``."""

    def seeded(self, seed: int, x: Any) -> Any:
        """A new generator for ``x``'s device seeded with ``seed``, as ``generator_source`` takes it."""
        raise NotImplementedError

    def generator_source(self, gen: Any) -> MaskSource:
        """The source that draws from ``gen`` (a generator, or None for the library's default source)."""
        raise NotImplementedError

    def portable_source(self, rng: PortableRNG, x: Any) -> MaskSource:
        """The source that draws PortableRNG's stream for ``x``."""
        return PortableSource(rng)

    def keep_for(self, drop_prob: object, keep: float, source: MaskSource) -> Any:
        """What ``source`` draws with and the mask is divided by, for a ``drop_prob`` that is no float.

        ``keep`` (``1 - drop_prob`` as a float) by default; PyTorch keeps a
        tensor ``drop_prob`` a tensor, as timm does.
        """
        return keep

    def multiply(self, x: Any, mask: Any) -> Any:
        """``x * mask``."""
        return x * mask

    def add_product(self, x: Any, branch: Any, mask: Any) -> Any:
        """``x + branch * mask``."""
        return x + branch * mask

    def sample_shards(self, x: Any, axis: int) -> int | None:
        """Into how many shards ``x`` is split along ``axis``, where ``x`` itself says so; else None.

        ``drop_path_residual(fixed_size=True)`` then selects its samples per
        shard, so that each device gathers and runs the branch on its own. The
        array API has no notion of sharding: None, nothing known.
        """
        return None

    def split_samples(self, a: Any, axis: int, groups: int, xp: Any) -> Any:
        """``a`` with ``axis`` split into ``(groups, size // groups)``, each group on its shard's devices."""
        shape: tuple[int, ...] = a.shape
        return xp.reshape(a, (*shape[:axis], groups, shape[axis] // groups, *shape[axis + 1 :]))

    def merge_samples(self, a: Any, axis: int, xp: Any) -> Any:
        """The inverse of :meth:`split_samples`: axes ``axis`` and ``axis + 1`` merged into one."""
        shape: tuple[int, ...] = a.shape
        return xp.reshape(a, (*shape[:axis], shape[axis] * shape[axis + 1], *shape[axis + 2 :]))

    def take(self, a: Any, indices: Any, axis: int, xp: Any, like: Any = None) -> Any:
        """``xp.take(a, indices, axis=axis)``, placed as ``like`` where given, else whole along ``axis``.

        Where arrays carry a sharding in their type, a gather across shards
        must say where its result goes; ``like`` is the array it is added to.
        """
        return xp.take(a, indices, axis=axis)

    def place_groups(self, a: Any, like: Any, axis: int) -> Any:
        """``a``, a small per-group array (indices, scales), placed as ``like``'s groups along ``axis``.

        ``like`` comes from :meth:`split_samples`; where arrays carry a
        sharding in their type, an operation between differently sharded
        arrays must say where its result goes, so ``a`` is moved first.
        """
        return a

    def defers(self, x: object) -> bool:
        """Whether ``x``, which is no array, is a tracer's stand-in for one of this library's arrays.

        ``torch.fx`` traces with proxies, which are not tensors: drop path
        cannot run on them, but can be recorded as one call in the trace.
        """
        return False

    def defer(self, fn: Any, arrays: tuple[Any, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Record ``fn(*args, **kwargs)`` in the trace of ``arrays`` (where :meth:`defers`), not run it."""
        raise NotImplementedError

    def device_name(self, x: Any) -> str:
        """The name of ``x``'s device, which keys a layer's per-device generators."""
        return str(device(x))

    def library(self, x: Any) -> str:
        """The library's name in an error message about ``x``."""
        return self.name

    # --- resolving rng, written once for every library ---

    def source(self, rng: object, x: Any) -> MaskSource:
        """Turn the user's ``rng`` (not None) into the source that draws for ``x``."""
        if self.is_generator(rng):
            self.check_generator(rng, x)
            return self.generator_source(rng)
        if isinstance(rng, MaskSource):  # a layer's own stream, from an int seed
            return rng
        if is_integer(rng):
            return self.generator_source(self.seeded(check_seed(rng), x))
        if isinstance(rng, PortableRNG):
            return self.portable_source(rng, x)
        raise TypeError(
            f"rng must be None, a non-negative int seed, an anydrop.PortableRNG or a "
            f"{self.generator_names} for {self.library(x)} arrays, got an object of type {type_name(rng)}"
        )

    def check(self, rng: object, x: Any) -> None:
        """Validate ``rng`` for ``x`` as :meth:`source` does, without making a generator (eval mode)."""
        if rng is None:
            return
        if is_integer(rng):
            check_seed(rng)
            return
        self.source(rng, x)  # a source draws nothing until asked

# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""JAX: ``rng`` is a PRNG key (or an int seed that makes one); masks are drawn on x's device.

Keys are functional: the same key gives the same mask, and nothing advances.
The user splits a key per step, as with ``flax.nnx.Dropout``. JAX has no
global random state, so training with ``drop_prob > 0`` needs a key.
Everything here works on tracers, so ``jax.jit``, ``grad`` and ``vmap`` trace
through it; a PortableRNG (drawn on the host) works on concrete arrays only.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import Any

from .._portable import PortableRNG
from .._sources import MaskSource
from ._base import Backend

__all__ = ["JaxBackend", "KeyStream"]

_NO_KEY = (
    "rng is required for JAX arrays when training with drop_prob > 0: JAX has no global random "
    "state. Pass a key, e.g. rng=jax.random.key(0), and split a new one for every step "
    "(key, sub = jax.random.split(key)); anydrop.flax.DropPath takes its keys from nnx.Rngs"
)


# Reserves a KeyStream's next counter. One lock for all streams: drop_path
# makes a stream per call, and a lock each would cost more than the draw's
# bookkeeping; it is held for two lines, never across a JAX call.
_COUNTER_LOCK = threading.Lock()


class KeyStream(MaskSource):
    """A JAX key that gives each draw its own sub-key: ``fold_in(key, i)`` for draw i.

    drop_path draws twice for 16-bit floats (the mask and the rounding of the
    scale), and so does drop_path_residual with ``fixed_size=True`` (the subset
    and the scales); each draw needs an independent key. The key itself is
    never drawn from: JAX's random functions and ``fold_in`` hash the same key
    with small counters, so a key drawn from directly would be correlated with
    keys folded from it. The counter is Python state at trace time, so this
    works under ``jax.jit``. ``key=None`` (``rng=None``) refuses to draw.
    Threads sharing a stream (a layer's, from an int seed) each get their own
    counter values.
    """

    __slots__ = ("draws", "key")

    def __init__(self, key: Any) -> None:
        self.key = key
        self.draws = 0

    def counter(self) -> int:
        """The counter of the next draw, reserved: its sub-key is ``fold_in(key, counter)``."""
        if self.key is None:
            raise TypeError(_NO_KEY)
        with _COUNTER_LOCK:
            draw = self.draws
            self.draws = draw + 1
        return draw

    def bernoulli(self, keep: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any) -> Any:
        return _draws()[0](self.key, self.counter(), keep, shape, dtype)

    def uniform(self, shape: tuple[int, ...], x: Any, xp: Any) -> Any:
        return _draws()[1](self.key, self.counter(), shape)


_DRAWS: list[tuple[Any, Any]] = []


def _draws() -> tuple[Any, Any]:
    """The jitted draws (fold_in, then bernoulli or uniform): one dispatch each for eager calls.

    Eager JAX dispatches every operation on its own, and a tiny call is mostly
    dispatch; under an outer ``jax.jit`` they are inlined. ``keep``, the shape
    and the dtype are static, so the draw is the one the operations make
    unjitted, bit for bit (a traced ``keep`` would be compared in another dtype).
    """
    if not _DRAWS:
        import jax

        def bernoulli(key: Any, draw: Any, keep: float, shape: tuple[int, ...], dtype: Any) -> Any:
            return jax.random.bernoulli(jax.random.fold_in(key, draw), keep, shape).astype(dtype)

        def uniform(key: Any, draw: Any, shape: tuple[int, ...]) -> Any:
            return jax.random.uniform(jax.random.fold_in(key, draw), shape)

        jit: Any = jax.jit  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        _DRAWS.append((jit(bernoulli, static_argnums=(2, 3, 4)), jit(uniform, static_argnums=(2,))))
    return _DRAWS[0]


def _refuse_tracer(x: Any, message: str) -> None:
    core = sys.modules.get("jax.core")
    tracer = getattr(core, "Tracer", None)
    if tracer is not None and isinstance(x, tracer):
        raise TypeError(message)


def _explicit_spec(a: Any) -> tuple[Any, ...] | None:
    """``a``'s partition spec, one entry per axis, if its type carries one (explicit sharding); else None."""
    import jax
    from jax.sharding import AxisType

    sharding: Any = getattr(jax.typeof(a), "sharding", None)
    mesh: Any = getattr(sharding, "mesh", None)
    if mesh is None or AxisType.Explicit not in getattr(mesh, "axis_types", ()):
        return None
    spec: tuple[Any, ...] = tuple(sharding.spec)
    return spec + (None,) * (len(a.shape) - len(spec))


def _partition_spec(*entries: Any) -> Any:
    """``jax.sharding._partition_spec(*entries)`` (typed as Any: its constructor has no annotations)."""
    import jax

    spec: Any = jax.sharding.PartitionSpec
    return spec(*entries)


def _names(entry: Any) -> tuple[str, ...]:
    """The mesh axis names of one partition spec entry (None, a name, or a tuple of names)."""
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, tuple) else (entry,)  # pyright: ignore[reportUnknownArgumentType, reportUnknownVariableType]


class JaxBackend(Backend):
    """JAX arrays, traced or concrete."""

    name = "jax"
    generator_names = "JAX PRNG key (jax.random.key(seed), or a legacy jax.random.PRNGKey(seed))"

    def is_generator(self, rng: object) -> bool:
        if "jax" not in sys.modules:
            return False  # not imported, so rng cannot be one of its arrays
        import jax

        if not isinstance(rng, jax.Array):
            return False
        return bool(jax.numpy.issubdtype(rng.dtype, jax.dtypes.prng_key)) or rng.dtype == "uint32"

    def check_generator(self, rng: Any, x: Any) -> None:
        import jax

        if jax.numpy.issubdtype(rng.dtype, jax.dtypes.prng_key):
            if rng.shape != ():
                raise ValueError(
                    f"rng must be a single JAX key, got an array of keys of shape {rng.shape}: pass one key "
                    "per call (under jax.vmap, map over a batch of keys to give each example its own mask)"
                )
        elif rng.shape not in ((2,), (4,)):
            raise ValueError(
                f"rng is a uint32 JAX array of shape {rng.shape}, not a legacy key (jax.random.PRNGKey "
                "gives shape (2,)); pass jax.random.key(seed)"
            )

    def seeded(self, seed: int, x: Any) -> Any:
        import jax

        # A constant even inside jax.jit: a module caching it must not keep a tracer.
        with jax.ensure_compile_time_eval():
            if seed < 2**31:
                return jax.random.key(seed)
            # jax.random.key keeps only 32 bits of a larger seed unless 64-bit mode is on; build
            # the key it makes in that mode, [seed >> 32, seed & 0xFFFFFFFF], in either mode.
            # jax.numpy.array's device parameter names a type jax does not export: unknown to pyright.
            data = jax.numpy.array([seed >> 32, seed & 0xFFFFFFFF], dtype="uint32")  # pyright: ignore[reportUnknownMemberType]
            return jax.random.wrap_key_data(data, impl="threefry2x32")  # pyright: ignore[reportUnknownVariableType]

    def generator_source(self, gen: Any) -> MaskSource:
        return KeyStream(gen)

    def sample_shards(self, x: Any, axis: int) -> int | None:
        import jax
        from jax.sharding import AxisType

        # Explicit sharding: the spec is part of the type, under jax.jit too.
        sharding: Any = getattr(jax.typeof(x), "sharding", None)
        mesh: Any = getattr(sharding, "mesh", None)
        if mesh is not None and not getattr(mesh, "empty", True):
            types = dict(zip(mesh.axis_names, mesh.axis_types, strict=True))
            spec: tuple[Any, ...] = tuple(sharding.spec)
            names = _names(spec[axis]) if axis < len(spec) else ()
            if names and all(types[name] == AxisType.Explicit for name in names):
                return math.prod(int(mesh.shape[name]) for name in names)
        core = sys.modules.get("jax.core")
        if not isinstance(x, getattr(core, "Tracer", ())):
            # A concrete array knows its placement, whatever kind of sharding it has.
            n: int = x.shape[axis]
            local: int = x.sharding.shard_shape(x.shape)[axis]
            return -(-n // local) if local else 1
        # Traced in auto mode (or a tracer of vmap, shard_map's local view): XLA decides the
        # placement later, so nothing here says it. None: the caller's shards argument, or 1.
        if mesh is not None and AxisType.Auto not in mesh.axis_types and AxisType.Explicit in mesh.axis_types:
            return 1
        return None

    def split_samples(self, a: Any, axis: int, groups: int, xp: Any) -> Any:
        spec = _explicit_spec(a)
        if spec is None:
            return super().split_samples(a, axis, groups, xp)
        shape: tuple[int, ...] = a.shape
        new = (*shape[:axis], groups, shape[axis] // groups, *shape[axis + 1 :])
        # The groups where the samples were, each group's samples whole on its devices.
        where = _partition_spec(*spec[:axis], spec[axis], None, *spec[axis + 1 :])
        return xp.reshape(a, new, out_sharding=where)

    def merge_samples(self, a: Any, axis: int, xp: Any) -> Any:
        spec = _explicit_spec(a)
        if spec is None:
            return super().merge_samples(a, axis, xp)
        shape: tuple[int, ...] = a.shape
        new = (*shape[:axis], shape[axis] * shape[axis + 1], *shape[axis + 2 :])
        where = _partition_spec(*spec[:axis], spec[axis], *spec[axis + 2 :])
        return xp.reshape(a, new, out_sharding=where)

    def take(self, a: Any, indices: Any, axis: int, xp: Any, like: Any = None) -> Any:
        spec = _explicit_spec(a)
        target = _explicit_spec(like) if like is not None else None
        if target is None:
            if spec is None or spec[axis] is None:
                return xp.take(a, indices, axis=axis)
            # The kept samples of every shard, on every device of the sample axis: explicit
            # sharding asks where they go, and they may come from any shard.
            target = (*spec[:axis], None, *spec[axis + 1 :])
        where = (slice(None),) * axis + (indices,)
        return a.at[where].get(out_sharding=_partition_spec(*target))

    def place_groups(self, a: Any, like: Any, axis: int) -> Any:
        spec = _explicit_spec(like)
        if spec is None or spec[axis] is None:
            return a
        import jax

        reshard: Any = jax.sharding.reshard  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        # a is replicated (every device drew all of the few uniforms); taking each device's
        # rows of it is a local slice, no communication.
        where = _partition_spec(*(None,) * axis, spec[axis], *(None,) * (len(a.shape) - axis - 1))
        return reshard(a, where)

    def source(self, rng: object, x: Any) -> MaskSource:
        if isinstance(rng, PortableRNG):
            _refuse_tracer(
                x,
                "drop_path with a PortableRNG needs a concrete JAX array, got a tracer (inside jax.jit, "
                "grad or vmap): the host-drawn mask would be baked into the trace",
            )
        elif isinstance(rng, KeyStream):
            # The stream of a DropPath layer given an int seed: it advances in Python, so a
            # traced call would replay one mask on every call of the compiled function.
            _refuse_tracer(
                x,
                "a DropPath layer with an int rng needs a concrete JAX array, got a tracer (inside "
                "jax.jit, grad or vmap): its key stream advances in Python, and the trace would keep one "
                "mask for every call; use anydrop.flax.DropPath with nnx.Rngs, or pass a key to drop_path",
            )
        return super().source(rng, x)

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

    def next(self) -> Any:
        """The sub-key of the next draw."""
        if self.key is None:
            raise TypeError(_NO_KEY)
        import jax

        with _COUNTER_LOCK:
            draw = self.draws
            self.draws = draw + 1
        return jax.random.fold_in(self.key, draw)

    def bernoulli(self, keep: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any) -> Any:
        import jax

        return jax.random.bernoulli(self.next(), keep, shape).astype(dtype)

    def uniform(self, shape: tuple[int, ...], x: Any, xp: Any) -> Any:
        import jax

        return jax.random.uniform(self.next(), shape)


def _refuse_tracer(x: Any, message: str) -> None:
    core = sys.modules.get("jax.core")
    tracer = getattr(core, "Tracer", None)
    if tracer is not None and isinstance(x, tracer):
        raise TypeError(message)


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

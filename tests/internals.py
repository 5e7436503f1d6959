"""The names of anydrop's internals that tests check directly, imported in this one place.

The public API is what the other tests use. These few internal functions are
checked on their own (the SplitMix64 stream against published values, the
nested masks of one draw, the per-step seeds of ``synchronized_rng``, the
lookup of an array type's backend, cached per type), so a move inside the
package changes only this module.
"""

from __future__ import annotations

from typing import Any

from anydrop._core._portable import splitmix64_numpy, splitmix64_python, stream_value
from anydrop._core.backends import BY_TYPE, backend_for

__all__ = [
    "BY_TYPE",
    "backend_for",
    "portable_masks",
    "splitmix64_numpy",
    "splitmix64_python",
    "stream_value",
]


def portable_masks(
    rng: Any, shape: tuple[int, ...], probs: tuple[float, ...], dtype: Any, *, x: Any, xp: Any
) -> list[Any]:
    """The masks ``u < p``, one per p in ``probs``, from one draw of PortableRNG's stream for ``x``."""
    return backend_for(x).portable_source(rng, x).masks(shape, probs, dtype, x, xp)

# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""Where a call's random bits come from: a mask source, chosen once per call from ``rng``.

A backend turns the user's ``rng`` into one of these (``Backend.source``): its
own generator (NumPy's, torch's, CuPy's, or its default source for
``rng=None``), a JAX key, or PortableRNG's stream. The algorithm then draws
from the source without knowing which it is.
"""

from __future__ import annotations

import math
from typing import Any

from ._compat import device
from ._portable import UNIFORM_BITS, PortableRNG, take_uniform_ints, thresholds

__all__ = ["MaskSource", "PortableSource"]


class MaskSource:
    """The draws one call of drop path makes. Subclasses implement :meth:`bernoulli` and :meth:`uniform`.

    Every array a source returns is new, of the requested shape, on ``x``'s
    device, and may be modified in place by the caller. The arguments are
    positional: drop path calls a source on every call, and keyword arguments
    cost a measurable share of a call on a tiny array.
    """

    __slots__ = ()

    def bernoulli(self, keep: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any) -> Any:
        """0/1 values of ``dtype``, each 1 with probability ``keep``."""
        raise NotImplementedError

    def bernoulli_pair(  # noqa: PLR0917
        self, keep: float, frac: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any
    ) -> tuple[Any, Any]:
        """Masks ``kept`` (1 with probability ``keep``) and ``upper`` (1 with probability ``frac``).

        Only ``kept * upper`` and ``kept`` matter to the caller, so ``upper`` may
        be drawn independently of ``kept`` (the default: two draws) or nested in it.
        """
        return self.bernoulli(keep, shape, dtype, x, xp), self.bernoulli(frac, shape, dtype, x, xp)

    def uniform(self, shape: tuple[int, ...], x: Any, xp: Any) -> Any:
        """Uniform floats in [0, 1)."""
        raise NotImplementedError

    def unbiased(  # noqa: PLR0917
        self,
        keep: float,
        rounding: tuple[float, float, float],
        shape: tuple[int, ...],
        dtype: Any,
        x: Any,
        xp: Any,
    ) -> Any:
        """The 16-bit scaled mask: 0 if dropped, else ``lo + spacing`` with probability ``frac``, or ``lo``.

        ``rounding`` is ``(lo, spacing, frac)`` (see ``_scale.dither``). By
        default from :meth:`bernoulli_pair`; a source that can draw the three
        values at once, in fewer operations, does so.
        """
        lo, spacing, frac = rounding
        kept, upper = self.bernoulli_pair(keep, frac, shape, dtype, x, xp)
        # Both scales are exact in the dtype, and so is every product here. In
        # place: the mask then costs the two allocations of its draws.
        upper *= spacing
        upper += lo
        kept *= upper
        return kept


class PortableSource(MaskSource):
    """PortableRNG's stream, drawn on the host and moved to x's device: the same bits on every backend."""

    __slots__ = ("rng",)

    def __init__(self, rng: PortableRNG) -> None:
        self.rng = rng

    def masks(
        self, shape: tuple[int, ...], probs: tuple[float, ...], dtype: Any, x: Any, xp: Any
    ) -> list[Any]:
        """0/1 arrays ``u < p`` for each p in ``probs``, all from one uniform u per element."""
        ints, np = take_uniform_ints(self.rng, math.prod(shape))
        dev = device(x)
        limits = thresholds(probs)
        if np is not None:
            host = [(ints < np.uint64(t)).reshape(shape) for t in limits]
            return [xp.astype(xp.asarray(h, device=dev), dtype) for h in host]
        return [
            xp.astype(xp.reshape(xp.asarray([k < t for k in ints], dtype=xp.bool, device=dev), shape), dtype)
            for t in limits
        ]

    def bernoulli(self, keep: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any) -> Any:
        (mask,) = self.masks(shape, (keep,), dtype, x, xp)
        return mask

    def bernoulli_pair(  # noqa: PLR0917
        self, keep: float, frac: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any
    ) -> tuple[Any, Any]:
        # One uniform u per sample: kept when u < keep; given that, u / keep is
        # uniform, so u < keep * frac is the upper choice with probability frac.
        kept, upper = self.masks(shape, (keep, keep * frac), dtype, x, xp)
        return kept, upper

    def uniform(self, shape: tuple[int, ...], x: Any, xp: Any) -> Any:
        ints, np = take_uniform_ints(self.rng, math.prod(shape))
        host = [k * 2.0**-UNIFORM_BITS for k in (ints.tolist() if np is not None else ints)]
        return xp.reshape(xp.asarray(host, device=device(x)), shape)

# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""The unbiased rounding of the scale in 16-bit floats.

bfloat16 holds 1/0.9 as 1.109375, 0.16% low: scaling every kept sample by it
biases them all the same way. Instead each kept sample's scale is ``lo`` or
the next representable value ``lo + spacing``, the latter with probability
``frac``, so that the expected scale is exactly ``1 / keep``.
"""

from __future__ import annotations

import math
from typing import Any

from ._checks import DtypeInfo
from ._sources import MaskSource

__all__ = ["dither", "eval_scaled", "fixed_scales", "rounding_16_bit"]


def dither(keep: float, info: DtypeInfo) -> tuple[float, float, float] | None:
    """How to round ``1 / keep`` to a 16-bit float without bias: ``(lo, spacing, frac)``.

    None if no rounding is needed: ``1 / keep`` is exact in the dtype (keep =
    0.5, ...), or its upper neighbour would be inf, when it is rounded to
    nearest as timm does.
    """
    scale = 1.0 / keep
    _, exponent = math.frexp(scale)  # scale is in [2**(exponent-1), 2**exponent)
    spacing = info.eps * 2.0 ** (exponent - 1)
    lo = math.floor(scale / spacing) * spacing
    frac = (scale - lo) / spacing
    if frac == 0.0 or lo + spacing > info.max:
        return None
    return lo, spacing, frac


# Every training call in a 16-bit dtype asks for its rounding: computed once per (keep, dtype).
_ROUNDINGS: dict[tuple[float, DtypeInfo], tuple[float, float, float] | None] = {}
_MAX_ROUNDINGS = 256
_UNKNOWN = object()


def rounding_16_bit(keep: float, info: DtypeInfo, dtype: Any) -> tuple[float, float, float] | None:
    """:func:`dither` for drop path's scale ``1 / keep``; ValueError if it overflows the 16-bit ``dtype``.

    (float32 overflows for no ``keep`` a float64 ``drop_prob`` can give.) An
    inf scale would turn zeros into NaN.
    """
    found = _ROUNDINGS.get((keep, info), _UNKNOWN)
    if found is not _UNKNOWN:
        return found  # type: ignore[return-value]
    if 1.0 / keep > info.max:
        raise ValueError(
            f"drop_prob={1.0 - keep:.6g} is too close to 1 for {dtype}: the scale 1/keep = "
            f"{1.0 / keep:.6g} overflows {dtype} (max {info.max:g}); pass scale_by_keep=False "
            "or use a wider dtype"
        )
    rounding = dither(keep, info)
    if len(_ROUNDINGS) >= _MAX_ROUNDINGS:  # drop_prob can follow a schedule: keep the cache bounded
        _ROUNDINGS.clear()
    _ROUNDINGS[keep, info] = rounding
    return rounding


def fixed_scales(  # noqa: PLR0917
    source: MaskSource, scale: float, k: int, info: DtypeInfo, x: Any, xp: Any
) -> Any:
    """The scales ``n / k`` of the fixed-size residual: a float, or k values that average to it (16-bit)."""
    rounding = dither(1.0 / scale, info) if info.eps and scale != 1.0 else None
    if rounding is None:
        return scale
    lo, spacing, frac = rounding
    # All k samples are kept: the upper value is taken with probability frac.
    upper = xp.astype(source.uniform((k,), x, xp) < frac, info.mask)
    return upper * spacing + lo


def eval_scaled(a: Any, keep: float, xp: Any) -> Any:
    """Test-time scaling: ``keep * a``, a new array, with exact zeros at ``keep == 0``.

    Select, not multiply, at ``keep == 0``, as training does at ``drop_prob=1``:
    0 * inf would be NaN.
    """
    if keep == 0.0:
        return xp.where(xp.zeros_like(a, dtype=xp.bool), a, 0)
    return a * keep

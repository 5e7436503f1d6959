"""Per-block drop-path rates."""

from __future__ import annotations

import numbers

from ._core import check_drop_prob

__all__ = ["drop_path_rates"]


def drop_path_rates(drop_path_rate: float, depth: int) -> list[float]:
    """Return the linear stochastic-depth schedule for ``depth`` blocks.

    Block ``i`` gets ``drop_path_rate * i / (depth - 1)``: 0.0 for the first
    block and exactly ``drop_path_rate`` for the last, as ``timm`` builds it
    with ``linspace`` (timm's values are the float32 roundings of these).

    Raises ValueError for ``depth < 1`` or a rate outside [0, 1], TypeError for
    a ``depth`` that is not an int.

    Examples
    --------
    >>> from anydrop import drop_path_rates
    >>> drop_path_rates(0.2, 5)
    [0.0, 0.05, 0.1, 0.15000000000000002, 0.2]
    """
    rate = check_drop_prob(drop_path_rate, "drop_path_rate")
    depth = _check_depth(depth)
    if depth == 1:
        return [0.0]
    step = rate / (depth - 1)
    # numpy.linspace's rule: i * step, with the end point exact.
    return [i * step for i in range(depth - 1)] + [rate]


def _check_depth(depth: object) -> int:
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral):
        raise TypeError(f"depth must be an int, got {depth!r} of type {type(depth).__name__}")
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    return int(depth)

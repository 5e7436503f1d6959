"""Per-block drop-path rates."""

from __future__ import annotations

from ._core._checks import check_drop_prob, is_integer

__all__ = ["drop_path_rates"]


def drop_path_rates(drop_path_rate: float, depth: int) -> list[float]:
    """Return the linear stochastic-depth schedule for ``depth`` blocks.

    Block ``i`` gets ``drop_path_rate * i / (depth - 1)``: 0.0 for the first
    block and exactly ``drop_path_rate`` for the last, by ``numpy.linspace``'s
    rule, in float64. timm builds the same schedule with ``torch.linspace`` in
    float32 (``[r.item() for r in torch.linspace(0, rate, depth)]``), so its
    values differ from these by float32 rounding, at most 2e-7 relative.

    Parameters
    ----------
    drop_path_rate
        The last block's rate, in [0, 1].
    depth
        The number of blocks, at least 1; ``depth=1`` gives ``[0.0]``.

    Returns
    -------
    ``depth`` Python floats.

    Raises
    ------
    ValueError
        ``depth < 1``, or a rate outside [0, 1].
    TypeError
        ``depth`` is not an int, or the rate is not a real number.

    Examples
    --------
    >>> from anydrop import drop_path_rates
    >>> drop_path_rates(0.2, 5)
    [0.0, 0.05, 0.1, 0.15000000000000002, 0.2]
    """
    rate = check_drop_prob(drop_path_rate, "drop_path_rate")
    if not is_integer(depth):
        raise TypeError(f"depth must be an int, got {depth!r} of type {type(depth).__name__}")
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    if depth == 1:
        return [0.0]
    step = rate / (depth - 1)
    # numpy.linspace's rule: i * step, with the end point exact.
    return [i * step for i in range(depth - 1)] + [rate]

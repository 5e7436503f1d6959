# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""drop_path_residual: the residual block that runs its branch on the kept samples only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._api import Array, prepare
from ._checks import ONES, DtypeInfo, check_callable, check_sample_axis, is_integer
from ._scale import eval_scaled, fixed_scales
from ._sources import MaskSource
from .backends import Backend, Deferred

__all__ = ["drop_path_residual"]


def drop_path_residual(
    x: Array,
    fn: Callable[[Array], Array],
    drop_prob: float = 0.0,
    training: bool = False,
    scale_by_keep: bool = True,
    *,
    axis: int = 0,
    rng: Any = None,
    fixed_size: bool = False,
    scale_at_test: bool = False,
    shards: int | None = None,
) -> Array:
    """Return ``x + drop_path(fn(x), ...)`` in distribution, calling ``fn`` on the kept samples only.

    Stochastic depth skips a residual branch for the dropped samples, so there
    is no need to compute it for them: the kept samples (selected along
    ``axis``) are gathered, passed through ``fn`` and their scaled result is
    added back into ``x``; dropped samples pass through as ``x``. At
    ``drop_prob=0.5`` the branch costs about half, forward and backward.

    ``fn`` must treat samples along ``axis`` independently, as a per-token MLP
    or attention over each sample does: a branch with batch statistics (a
    BatchNorm in training mode) sees a smaller batch and gives other results.
    It must return an array of its input's shape.

    Parameters
    ----------
    x
        Input of the residual block, a floating-point array of any supported library.
    fn
        The residual branch, called as ``fn(kept)`` on an array shaped like ``x``
        but with only the kept samples along ``axis``.
    drop_prob, training, scale_by_keep, rng
        As in :func:`drop_path`; the mask is the same one ``drop_path`` would
        draw for ``x`` with the same ``rng`` (when ``fixed_size`` is false).
    axis
        The one sample axis (an int).
    fixed_size
        False (default): each sample is kept independently with probability
        ``1 - drop_prob`` (as in :func:`drop_path`), so the number kept varies
        from call to call: a data-dependent shape, which costs a host sync on
        GPUs, a graph break under ``torch.compile`` and cannot be captured in
        CUDA graphs. True: exactly ``k = round(n * (1 - drop_prob))`` samples
        (at least 1) are kept, chosen uniformly at random, and scaled by
        ``n / k`` (DINOv2's ``drop_add_residual_stochastic_depth``): static
        shapes for compilers, CUDA graphs and ``jax.jit``. Both are unbiased.
        Under ``jax.jit`` (or ``vmap``) the default is a ``TypeError`` asking
        for ``fixed_size=True``; eager JAX calls support both.
    shards
        For ``fixed_size=True`` on an ``x`` whose sample axis is split over
        devices: the number of shards ``s`` (which must divide ``n``). The
        subset is then drawn per shard, ``k = round(n/s * (1 - drop_prob))``
        samples (at least 1) out of each shard's ``n/s``, scaled by ``(n/s) /
        k``, so that every device gathers and runs ``fn`` on its own samples
        only, with no communication. Exactly ``k`` per shard is not exactly
        ``k * s`` chosen from all ``n``: the subset differs from the unsharded
        one for the same ``rng`` (still unbiased), and the drop rate used is
        ``1 - k / (n/s)``, which with few samples per shard can be far from
        ``drop_prob`` (2 per shard at 0.1 keep both). None (default): the number
        of shards ``x`` shows, where it does: a JAX array sharded with
        explicit axes (``AxisType.Explicit``, also traced under ``jax.jit``)
        or a concrete sharded JAX array; else 1, the subset of the whole
        axis. Under ``jax.jit`` in auto sharding mode the sharding is not
        known when tracing, so pass it here, e.g. ``shards=mesh.shape["data"]``;
        without it the result is the same in distribution, but XLA
        gathers the kept samples onto every device and runs ``fn`` on all of
        them. ``shards=1`` always draws from the whole axis, as without
        sharding (the kept samples are then gathered across shards); any other
        ``shards`` that contradicts the split ``x`` shows is a ``ValueError``.
        On an unsharded ``x``, ``shards=s`` draws the same subset as on ``x``
        split into ``s`` shards, for the same ``rng``. With
        ``fixed_size=False`` the mask is ``drop_path``'s, whose kept count
        varies per shard: ``shards`` must be None or 1 there, and the kept
        samples are gathered across shards.

    Returns
    -------
    A new array; ``x + fn(x)`` when ``training`` is false or ``drop_prob == 0``
    (with ``scale_at_test``, see there);
    ``x`` itself when ``drop_prob == 1`` (``fn`` is not called). If by chance
    no sample is kept, ``fn`` is called on an empty batch. Neither ``x`` nor
    anything else is modified. Gradients flow to ``x`` and to ``fn``'s
    parameters.

    Examples
    --------
    >>> import numpy as np
    >>> from anydrop import drop_path_residual
    >>> x = np.ones((4, 2))
    >>> calls = []
    >>> def branch(a):
    ...     calls.append(a.shape[0])
    ...     return 10 * a
    >>> drop_path_residual(x, branch, 0.5, training=True, rng=0)
    array([[ 1.,  1.],
           [21., 21.],
           [21., 21.],
           [21., 21.]])
    >>> calls  # the branch ran on the 3 kept samples only
    [3]
    """
    check_callable(fn, "fn")
    ax = check_sample_axis(axis)
    if shards is not None and (not is_integer(shards) or shards < 1):
        raise TypeError(f"shards must be None or a positive int (the sample axis's shards), got {shards!r}")
    # Checks the arguments and finds the mask source, drawing nothing yet: a
    # refusal below must leave the generator as it was.
    try:
        prepared = prepare(x, drop_prob, training, scale_by_keep, ax, rng, False, scale_at_test=scale_at_test)
    except Deferred as traced:
        args = (x, fn, drop_prob, training, scale_by_keep)
        kwargs = {"axis": axis, "rng": rng, "fixed_size": fixed_size, "scale_at_test": scale_at_test}
        if shards is not None:
            kwargs["shards"] = shards
        return traced.backend.defer(drop_path_residual, (x,), args, kwargs)  # type: ignore[no-any-return]
    xp, backend, info, keep, shape, source = prepared
    if source is None:
        if scale_at_test and keep != 1.0:  # evaluation with test-time scaling
            # As in training at drop_prob=1, a branch that always drops is not called.
            return x if keep == 0.0 else x + eval_scaled(fn(x), keep, xp)
        return x + fn(x)  # type: ignore[operator, no-any-return]
    ndim = len(shape)
    ax %= ndim
    n: int = x.shape[ax]  # type: ignore[attr-defined]
    drops_all: bool = keep == 0.0 or n == 0  # pyright: ignore[reportUnknownVariableType]
    refusal = None if drops_all else _refusal(backend, fixed_size)
    if refusal is not None:
        raise TypeError(refusal)
    groups = _groups(shards, backend.sample_shards(x, ax), n, fixed_size)  # pyright: ignore[reportUnknownArgumentType]
    if groups > 1 and not drops_all:
        return _grouped(x, fn, source, keep, groups, ax, info, scale_by_keep, backend, xp)  # type: ignore[no-any-return]
    if fixed_size and not drops_all:
        idx, position, scales = _fixed_subset(source, keep, n, info, scale_by_keep, x, xp)  # pyright: ignore[reportUnknownArgumentType]
    else:
        # drop_path's own mask (the source above drew nothing, so this is the first draw).
        mask = prepare(x, drop_prob, training, scale_by_keep, ax, rng)[5]
        if drops_all:
            return x
        idx, position, scales = _bernoulli_subset(xp.reshape(mask, (n,)), scale_by_keep, x, xp)
    branch_in = backend.take(x, idx, ax, xp)
    y = _call(fn, branch_in)
    if isinstance(scales, float):
        scaled = y * scales if scales != 1.0 else y
    else:
        scaled = y * xp.reshape(scales, (-1, *ONES[ndim - 1 - ax]))
    # Put the k results back in place with a gather rather than a scatter:
    # `position` is, per sample, 0 if dropped and r + 1 for the r-th kept one,
    # and row 0 of `padded` is zeros. take() is in the standard, keeps static
    # shapes for fixed_size, and its gradient is the backend's scatter-add;
    # integer-array setitem is neither standard nor static-shaped.
    # zeros_like of a slice rather than zeros(..., device=device(x)): no device
    # lookup, which torch.compile would trace through array-api-compat.
    zero = xp.zeros_like(backend.take(x, xp.zeros_like(position[:1]), ax, xp), dtype=scaled.dtype)
    padded = xp.concat((zero, scaled), axis=ax)
    return x + backend.take(padded, position, ax, xp, like=x)  # type: ignore[no-any-return]


def _refusal(backend: Backend, fixed_size: bool) -> str | None:
    """Why ``backend`` cannot run this residual, or None."""
    if backend.residual_refusal is not None:
        return backend.residual_refusal
    return None if fixed_size else backend.variable_size_refusal


def _kept_count(n: int, keep: float) -> int:
    return min(n, max(1, round(n * keep)))


def _fixed_subset(  # noqa: PLR0917
    source: MaskSource,
    keep: float,
    n: int,
    info: DtypeInfo,
    scale_by_keep: bool,
    x: Any,
    xp: Any,
    groups: int = 0,
) -> tuple[Any, Any, Any]:
    """A uniformly random subset of exactly k samples: their indices, each sample's place, the scales.

    ``position`` is, per sample, 0 if dropped and r + 1 for the r-th kept one;
    the scales are a float or one value per kept sample. With ``groups``, one
    subset of k of n per group: each array gets a leading axis of ``groups``.
    """
    k = _kept_count(n, keep)
    scale = n / k if scale_by_keep else 1.0
    if scale > info.max:
        # Before the draw, so that the refusal leaves the source as it was. n / k can
        # exceed 1 / keep (k is rounded, and at least 1), so rounding_16_bit's check is not enough.
        raise ValueError(
            f"drop_prob={1.0 - keep:.6g} keeps k={k} of n={n} samples with fixed_size=True, and the scale "
            f"n/k = {scale:.6g} overflows {x.dtype} (max {info.max:g}); pass scale_by_keep=False "
            "or use a wider dtype"
        )
    # From sorting uniforms: argsort is in the standard and has static shapes,
    # unlike a Bernoulli mask.
    shape = (groups, n) if groups else (n,)
    order = xp.argsort(source.uniform(shape, x, xp), axis=-1)
    idx = order[..., :k]
    # Sample order[j] is the j-th kept one; argsort(order) inverts the permutation.
    rank = xp.argsort(order, axis=-1)
    position = xp.where(rank < k, rank + 1, xp.zeros_like(rank))
    return idx, position, fixed_scales(source, scale, k * max(groups, 1), info, x, xp)


def _bernoulli_subset(mask: Any, scale_by_keep: bool, x: Any, xp: Any) -> tuple[Any, Any, Any]:
    """The samples a scaled mask of one value per sample keeps, as :func:`_fixed_subset` returns them."""
    kept = mask > 0
    try:
        (idx,) = xp.nonzero(kept)
    except TypeError as exc:  # e.g. jax.numpy.nonzero on a tracer: the count is data-dependent
        raise TypeError(
            "drop_path_residual with fixed_size=False sizes the kept batch from the mask, which "
            f"needs concrete values, and x is a {type(x).__name__} (inside jax.jit or vmap?); "
            "pass fixed_size=True for static shapes"
        ) from exc
    # Kept samples first, each group in index order; the inverse permutation
    # gives each kept sample its place among them (argsort rather than
    # cumulative_sum, which array-api-compat wraps in a namespace lookup).
    order = xp.argsort(xp.astype(kept, xp.int8), descending=True, stable=True)
    rank = xp.argsort(order)
    position = xp.where(kept, rank + 1, xp.zeros_like(rank))
    scales = xp.take(mask, idx) if scale_by_keep else 1.0
    return idx, position, scales


def _call(fn: Callable[[Any], Any], branch_in: Any) -> Any:
    """``fn(branch_in)``, checked to have its input's shape."""
    y: Any = fn(branch_in)
    if getattr(y, "shape", None) != branch_in.shape:
        raise ValueError(
            f"fn must return an array of its input's shape {tuple(branch_in.shape)}, "
            f"got {getattr(y, 'shape', type(y).__name__)}"
        )
    return y


def _groups(shards: int | None, shown: int | None, n: int, fixed_size: bool) -> int:
    """The number of groups the subset is drawn in: ``shards``, checked against what ``x`` shows."""
    if shards is not None and shown is not None and shown > 1 and shards not in {1, shown}:
        raise ValueError(
            f"shards={shards}, but x's sample axis is split into {shown} shards: pass shards={shown} "
            "or None to take it from x, or shards=1 to draw the subset from the whole axis"
        )
    groups = shown if shards is None else int(shards)
    if groups is None or groups == 1:
        return 1
    if not fixed_size:
        if shards is None:
            # drop_path's mask, whose kept count varies per shard: the kept samples of all
            # shards are gathered together, as without sharding (correct, not shard-local).
            return 1
        raise ValueError(
            f"shards={shards} needs fixed_size=True: with fixed_size=False the mask is drop_path's, "
            "whose kept count varies from shard to shard; pass fixed_size=True, or shards=None"
        )
    if n % groups:
        raise ValueError(
            f"shards={groups} does not divide the {n} samples along the sample axis: shard the batch "
            "evenly, or pass shards=1 to draw the subset from the whole axis (gathered across shards)"
        )
    return groups


def _grouped(  # noqa: PLR0917
    x: Any,
    fn: Callable[[Any], Any],
    source: MaskSource,
    keep: float,
    groups: int,
    ax: int,
    info: DtypeInfo,
    scale_by_keep: bool,
    backend: Backend,
    xp: Any,
) -> Any:
    """drop_path_residual's fixed-size subset drawn per group of consecutive samples (per shard).

    The sample axis becomes two, (groups, n / groups), and the selection, the
    gather and the putting back run along the second one only, batched over
    the first: a partitioner keeps each group on the devices that hold it.
    """
    ndim = len(x.shape)
    xg = backend.split_samples(x, ax, groups, xp)
    size: int = xg.shape[ax + 1]
    idx, position, scales = _fixed_subset(source, keep, size, info, scale_by_keep, x, xp, groups)
    # Per-group arrays broadcast along every other axis of xg.
    before, after = ONES[ax], ONES[ndim - 1 - ax]
    idx = backend.place_groups(xp.reshape(idx, (*before, groups, -1, *after)), xg, ax)
    position = backend.place_groups(xp.reshape(position, (*before, groups, size, *after)), xg, ax)
    branch_in = backend.merge_samples(xp.take_along_axis(xg, idx, axis=ax + 1), ax, xp)
    y = backend.split_samples(_call(fn, branch_in), ax, groups, xp)
    if isinstance(scales, float):
        scaled = y * scales if scales != 1.0 else y
    else:
        scaled = y * backend.place_groups(xp.reshape(scales, (*before, groups, -1, *after)), xg, ax)
    # As in drop_path_residual: a zero row first in each group, then a gather puts results back.
    zero = xp.zeros_like(scaled[(slice(None),) * (ax + 1) + (slice(0, 1), ...)])
    padded = xp.concat((zero, scaled), axis=ax + 1)
    return x + backend.merge_samples(xp.take_along_axis(padded, position, axis=ax + 1), ax, xp)

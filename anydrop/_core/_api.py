# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""drop_path and drop_path_add: the algorithm, written once against the array API standard.

Nothing here knows which array library it runs on: the namespace comes from
``array_namespace`` and the random mask from the library's backend object,
through the mask source that ``rng`` selects.
"""

from __future__ import annotations

from typing import Any, TypeVar

from ._checks import ONES, DtypeInfo, check_drop_prob, check_test_scaling, dtype_info, mask_shape
from ._compat import array_namespace
from ._scale import eval_scaled, rounding_16_bit
from .backends import BY_TYPE, Backend, Deferred, register

__all__ = ["Array", "Axis", "drop_path", "drop_path_add", "prepare"]

Array = TypeVar("Array")
Axis = int | tuple[int, ...]


def prepare(  # noqa: PLR0917
    x: Any,
    drop_prob: object,
    training: object,
    scale_by_keep: bool,
    axis: object,
    rng: object,
    draw: bool = True,
    *,
    scale_at_test: object = False,
) -> tuple[Any, Backend, DtypeInfo, float, tuple[int, ...], Any]:
    """Check the arguments every entry point shares, then draw the scaled mask for ``x``.

    Returns ``(xp, backend, dtype info, keep, mask shape, mask)``. The mask is
    None when nothing is dropped (eval mode or ``drop_prob == 0``; ``rng`` is
    still checked), and ``keep`` is then ``1 - drop_prob``, the factor of
    test-time scaling (1 when training); else 0 for dropped samples and the scale (or 1) for kept
    ones, drawn as timm draws it (a Bernoulli mask divided by ``keep`` in x's
    dtype), so ``torch.manual_seed`` reproduces timm's masks bit for bit
    wherever the scale is exact or the dtype is 32/64-bit. With ``draw=False``
    it is the mask source instead, undrawn (drop_path_residual's fixed-size
    subset draws its own).

    drop_path does the same, inline: it is the call every model makes, and on a
    tiny array one more Python call costs a few percent of the whole.
    ``tests/test_bad_inputs.py`` runs its catalogue through drop_path and
    drop_path_add alike, so that the two cannot check differently.
    """
    xp, backend, dtypes = BY_TYPE.get(type(x)) or register(x)  # pyright: ignore[reportUnknownArgumentType]
    p = drop_prob if type(drop_prob) is float and 0.0 <= drop_prob <= 1.0 else check_drop_prob(drop_prob)
    if scale_at_test is not False:
        check_test_scaling(scale_by_keep, scale_at_test)
    info = dtypes.get(x.dtype) or dtype_info(xp, dtypes, x.dtype)
    shape: tuple[int, ...] = x.shape
    if type(axis) is int and axis == 0 and shape:
        shape = (shape[0],) + ONES[len(shape) - 1]
    else:
        shape = mask_shape(shape, axis)
    try:
        identity = not training or p == 0.0
    except TypeError as exc:  # a traced flag (jax.jit): free on the common path
        raise _traced(training) from exc
    if identity:
        backend.check(rng, x)
        return xp, backend, info, 1.0 - p, shape, None
    keep = 1.0 - p
    source = backend.default_source if rng is None else backend.source(rng, x)
    if not draw:
        return xp, backend, info, keep, shape, source
    # In 16-bit floats, 1/keep rounded to the dtype would bias every kept sample alike.
    rounding = rounding_16_bit(keep, info, x.dtype) if info.eps and scale_by_keep and keep > 0.0 else None
    if rounding is not None:
        mask = source.unbiased(keep, rounding, shape, info.mask, x, xp)
    else:
        drawn = keep if type(drop_prob) is float else backend.keep_for(drop_prob, keep, source)
        mask = source.bernoulli(drawn, shape, info.mask, x, xp)
        if scale_by_keep and keep > 0.0:
            # In place on our own small mask: scale it, not the big array.
            mask /= drawn
    return xp, backend, info, keep, shape, mask


def _traced(training: object) -> TypeError:
    return TypeError(
        f"training must be a Python bool, got a {type(training).__name__} without a concrete value; "
        "inside jax.jit pass training as a static argument (static_argnames), not as a traced one"
    )


def drop_path(
    x: Array,
    drop_prob: float = 0.0,
    training: bool = False,
    scale_by_keep: bool = True,
    *,
    axis: Axis = 0,
    rng: Any = None,
    scale_at_test: bool = False,
) -> Array:
    """Drop whole samples of ``x`` at random (stochastic depth).

    Each index along ``axis`` is kept with probability ``1 - drop_prob`` and
    otherwise set to zero across all other axes; kept entries are divided by
    ``1 - drop_prob`` when ``scale_by_keep`` so that the expected output is
    ``x``. Positional arguments and defaults match ``timm.layers.drop_path``.

    Parameters
    ----------
    x
        Floating-point array of any array API library (NumPy, PyTorch, CuPy,
        array-api-strict, ...).
    drop_prob
        Probability of dropping each sample, in [0, 1]: a Python or NumPy
        number, or a 0-d real array.
    training
        When false, ``x`` itself is returned (or ``(1 - drop_prob) * x`` with
        ``scale_at_test``).
    scale_by_keep
        Divide kept samples by ``1 - drop_prob`` in training (timm's rule, the
        default), so that evaluation needs no scaling.
    axis
        Axis or axes along which samples are drawn (negative allowed). The mask
        is broadcast over the others. ``0`` is per-sample drop path, ``1``
        suits (seq, batch, dim) layouts and ``()`` drops the whole array at
        once (torchvision's ``mode="batch"``).
    rng
        ``None`` for the backend's default source (torch's global generator, so
        ``torch.manual_seed`` reproduces timm), an int seed, or a generator of
        the backend (``numpy.random.Generator``, ``torch.Generator`` on x's
        device, ``cupy.random.Generator``), which advances, or an
        :class:`anydrop.PortableRNG` for the same masks on every library. For
        Dask arrays a seed, a ``numpy.random.Generator`` or None keys a lazy
        mask chunked like x, the same for any chunking. For JAX arrays: a PRNG key
        (``jax.random.key`` or a legacy ``jax.random.PRNGKey``), used as given,
        so split a new one per step; an int seed ``s`` is ``jax.random.key(s)``.
        JAX has no default source: ``None`` is a ``TypeError`` when training
        with ``drop_prob > 0``.
    scale_at_test
        The other way to keep training's expected output equal to evaluation's,
        that of the stochastic depth paper (Huang et al. 2016) and of keras-cv's
        ``StochasticDepth``: kept samples are not scaled in training, and in
        evaluation the output is ``(1 - drop_prob) * x``. It replaces
        ``scale_by_keep``, so it needs ``scale_by_keep=False``: both together
        are a ``ValueError``. A separate bool rather than a mode string keeps
        timm's positional ``scale_by_keep`` and its default as they are.

    Returns
    -------
    An array of the namespace, device, shape and dtype of ``x``; ``x`` itself
    when ``drop_prob == 0`` or ``training`` is false (unless ``scale_at_test``).
    ``x`` is never modified.

    Raises
    ------
    TypeError
        ``x`` is not a floating-point array of a supported library, or
        ``drop_prob``, ``axis`` or ``rng`` has a wrong type, or a JAX ``x`` is
        trained without a key.
    ValueError
        ``drop_prob`` is outside [0, 1] or NaN, ``axis`` is out of range or
        repeated, an int ``rng`` is negative, a generator is on another device,
        ``1 / (1 - drop_prob)`` overflows x's 16-bit dtype, a Dask ``x``
        has unknown chunk sizes along a drop axis, or ``scale_at_test`` and
        ``scale_by_keep`` are both true.

    Notes
    -----
    Under ``jax.jit``, ``x`` and the key may be traced, but ``drop_prob``,
    ``training``, ``scale_by_keep`` and ``axis`` must be static Python values
    (a traced ``drop_prob`` or ``training`` is a ``TypeError``); ``jax.grad``
    and ``jax.vmap`` work too.

    Examples
    --------
    >>> import numpy as np
    >>> from anydrop import drop_path
    >>> x = np.ones((4, 3))
    >>> drop_path(x, 0.5, training=True, rng=0)
    array([[0., 0., 0.],
           [2., 2., 2.],
           [2., 2., 2.],
           [2., 2., 2.]])

    Test-time scaling: kept samples unscaled in training, all scaled in evaluation.

    >>> drop_path(x, 0.5, training=True, scale_by_keep=False, rng=0, scale_at_test=True)[:2]
    array([[0., 0., 0.],
           [1., 1., 1.]])
    >>> drop_path(x, 0.5, training=False, scale_by_keep=False, scale_at_test=True)[:1]
    array([[0.5, 0.5, 0.5]])
    """
    # prepare(), inline (see there why): the same checks in the same order, then the same draw.
    try:
        xp, backend, dtypes = BY_TYPE.get(type(x)) or register(x)
    except Deferred as traced:
        args = (x, drop_prob, training, scale_by_keep)
        kwargs = {"axis": axis, "rng": rng, "scale_at_test": scale_at_test}
        return traced.backend.defer(drop_path, (x,), args, kwargs)  # type: ignore[no-any-return]
    p = drop_prob if type(drop_prob) is float and 0.0 <= drop_prob <= 1.0 else check_drop_prob(drop_prob)
    if scale_at_test is not False:
        check_test_scaling(scale_by_keep, scale_at_test)
    info = dtypes.get(x.dtype) or dtype_info(xp, dtypes, x.dtype)  # type: ignore[attr-defined]
    # x is an Array TypeVar, unbound: to a type checker its shape is unknown.
    shape: tuple[int, ...] = x.shape  # type: ignore[attr-defined]
    ndim: int = len(shape)  # pyright: ignore[reportUnknownArgumentType]
    if type(axis) is int and axis == 0 and ndim:
        shape = (shape[0],) + ONES[ndim - 1]  # pyright: ignore[reportUnknownVariableType]
    else:
        shape = mask_shape(shape, axis)  # pyright: ignore[reportUnknownArgumentType]
    try:
        identity = not training or p == 0.0
    except TypeError as exc:
        raise _traced(training) from exc
    if identity:
        backend.check(rng, x)
        if scale_at_test and p > 0.0:  # evaluation with test-time scaling
            return eval_scaled(x, 1.0 - p, xp)  # type: ignore[no-any-return]
        return x
    keep = 1.0 - p
    source = backend.default_source if rng is None else backend.source(rng, x)
    rounding = rounding_16_bit(keep, info, x.dtype) if info.eps and scale_by_keep and keep > 0.0 else None  # type: ignore[attr-defined]
    if rounding is not None:
        mask = source.unbiased(keep, rounding, shape, info.mask, x, xp)  # pyright: ignore[reportUnknownArgumentType]
    else:
        drawn = keep if type(drop_prob) is float else backend.keep_for(drop_prob, keep, source)
        mask = source.bernoulli(drawn, shape, info.mask, x, xp)  # pyright: ignore[reportUnknownArgumentType]
        if scale_by_keep and keep > 0.0:
            mask /= drawn
    if keep == 0.0:
        # The mask is all zeros, but drawing it advances the generator as timm
        # does. Select, not multiply: 0 * inf would be NaN. Stays in the autograd graph.
        return xp.where(mask > 0, x, 0)  # type: ignore[no-any-return]
    return backend.multiply(x, mask)  # type: ignore[no-any-return]


def _same_library(branch: Any, x: Any) -> None:
    """Raise TypeError unless ``x`` is an array of ``branch``'s library (checked before anything is drawn)."""
    if type(x) is not type(branch):
        register(branch)  # branch must be an array itself: that error first
        try:
            array_namespace(branch, x)
        except TypeError:
            raise TypeError(
                f"x must be an array of the same array library as branch, got an object of type "
                f"{type(x).__name__} for branch of type {type(branch).__name__}"
            ) from None


def drop_path_add(
    x: Array,
    branch: Array,
    drop_prob: float = 0.0,
    training: bool = False,
    scale_by_keep: bool = True,
    *,
    axis: Axis = 0,
    rng: Any = None,
    scale_at_test: bool = False,
) -> Array:
    """Return ``x + drop_path(branch, ...)``, in one pass over the data where the backend allows.

    The residual add that follows drop path in every block, fused: on PyTorch
    it is one ``addcmul`` that reads ``x`` and ``branch`` once and writes the
    result once, where ``x + drop_path(branch)`` makes two passes and a
    temporary. Masks are drawn from ``rng`` exactly as :func:`drop_path` draws
    them for ``branch``, so both give the same result for the same seed.

    Parameters
    ----------
    x
        The residual stream; broadcast with ``branch`` as ``x + branch`` would be.
    branch
        The branch output that is dropped per sample, an array of x's library.
    drop_prob, training, scale_by_keep, axis, rng, scale_at_test
        As in :func:`drop_path`; ``axis`` refers to ``branch``'s axes.

    Returns
    -------
    A new array ``x + mask * branch``; ``x + branch`` when ``training`` is
    false or ``drop_prob == 0`` (``x + (1 - drop_prob) * branch`` in
    evaluation with ``scale_at_test``). Neither input is modified. Differentiable in
    PyTorch with respect to both.

    Examples
    --------
    >>> import numpy as np
    >>> from anydrop import drop_path_add
    >>> x, branch = np.zeros((4, 2)), np.ones((4, 2))
    >>> drop_path_add(x, branch, 0.5, training=True, rng=0)
    array([[0., 0.],
           [2., 2.],
           [2., 2.],
           [2., 2.]])
    """
    try:
        _same_library(branch, x)
        xp, backend, _, keep, _, mask = prepare(
            branch, drop_prob, training, scale_by_keep, axis, rng, scale_at_test=scale_at_test
        )
    except Deferred as traced:
        args = (x, branch, drop_prob, training, scale_by_keep)
        kwargs = {"axis": axis, "rng": rng, "scale_at_test": scale_at_test}
        return traced.backend.defer(drop_path_add, (x, branch), args, kwargs)  # type: ignore[no-any-return]
    if mask is None:
        if scale_at_test and keep != 1.0:  # evaluation with test-time scaling
            return x + eval_scaled(branch, keep, xp)  # type: ignore[no-any-return]
        return x + branch  # type: ignore[operator, no-any-return]
    if keep == 0.0:
        # Select, not multiply, as in drop_path: an inf or NaN branch adds exact zeros.
        return x + xp.where(mask > 0, branch, 0)  # type: ignore[no-any-return]
    return backend.add_product(x, branch, mask)  # type: ignore[no-any-return]

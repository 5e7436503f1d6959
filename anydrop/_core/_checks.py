# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""Argument checks, each written once: the entry points, PortableRNG and every layer use these.

A bad value is a ``ValueError`` and a bad type a ``TypeError``, each naming the
argument and what it got.
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple, cast

from ._compat import array_namespace, is_array_api_obj

__all__ = [
    "MAX_SEED",
    "ONES",
    "DtypeInfo",
    "check_axis",
    "check_callable",
    "check_count",
    "check_drop_prob",
    "check_sample_axis",
    "check_seed",
    "check_test_scaling",
    "dtype_info",
    "is_integer",
    "mask_shape",
    "normalize_axis",
    "type_name",
]

#: Seeds are 64-bit: every int in [0, MAX_SEED) is one.
MAX_SEED = 2**64

#: ``ONES[n]`` is ``(1,) * n``: the trailing shape of a per-sample mask, looked up rather than built.
ONES = tuple((1,) * n for n in range(65))


def is_integer(value: object) -> bool:
    """Whether ``value`` is an integer (Python's or NumPy's), bools excluded: the one integer test."""
    # bool is registered as an Integral at run time, which type checkers do not see.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # pyright: ignore[reportUnnecessaryIsInstance]


def type_name(obj: object) -> str:
    """``obj``'s type as ``module.QualName``, for error messages."""
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def check_count(value: object, name: str, limit: int | None = None) -> int:
    """Return ``value`` as a non-negative int, below ``limit`` if given, or raise naming ``name``."""
    if not is_integer(value):
        raise TypeError(f"{name} must be a non-negative int, got {value!r} of type {type(value).__name__}")
    n = int(cast("numbers.Integral", value))
    if limit is not None and not 0 <= n < limit:
        bound = "[0, 2**64)" if limit == MAX_SEED else f"[0, {limit})"
        raise ValueError(f"{name} must be an int in {bound}, got {n}")
    if n < 0:
        raise ValueError(f"{name} must be a non-negative int, got {n}")
    return n


def check_seed(rng: Any) -> int:
    """Return an int ``rng`` as a seed in [0, 2**64), or raise ValueError."""
    seed = int(rng)
    if not 0 <= seed < MAX_SEED:
        raise ValueError(f"rng must be a seed in [0, 2**64) when it is an int, got {seed}")
    return seed


def _is_real_scalar_array(value: Any) -> bool:
    # A 0-d array such as torch.linspace(0, 0.1, 12)[i], which timm accepts too.
    if not is_array_api_obj(value) or getattr(value, "shape", None) != ():
        return False
    xp = array_namespace(value)
    return bool(xp.isdtype(value.dtype, ("real floating", "integral")))


def check_drop_prob(value: object, name: str = "drop_prob") -> float:
    """Return ``value`` as a float, or raise naming ``name`` if it is not a probability."""
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) or _is_real_scalar_array(value)):
        raise TypeError(
            f"{name} must be a real number in [0, 1], got {value!r} of type {type(value).__name__}"
        )
    try:
        p = float(value)  # type: ignore[arg-type]
    except TypeError as exc:
        # A traced 0-d array (jax.jit, grad, vmap) has no value yet, and the
        # checks and the mask's shape need one.
        raise TypeError(
            f"{name} must be a concrete number, got a {type(value).__name__} without a value "
            f"({type(exc).__name__}); inside jax.jit pass {name} as a static Python float "
            f"(static_argnames), not as a traced argument"
        ) from exc
    if not 0.0 <= p <= 1.0:  # also false for NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return p


def check_test_scaling(scale_by_keep: object, scale_at_test: object) -> bool:
    """Return ``scale_at_test``, or raise: TypeError unless a bool, ValueError if both scalings are asked for.

    ``scale_by_keep`` divides the kept samples by ``1 - drop_prob`` in
    training and ``scale_at_test`` multiplies the branch by ``1 - drop_prob``
    in evaluation: each on its own keeps training's expected output equal to
    evaluation's, both together would scale twice.
    """
    if not isinstance(scale_at_test, bool):
        raise TypeError(
            f"scale_at_test must be a bool, got {scale_at_test!r} of type {type(scale_at_test).__name__}"
        )
    if scale_at_test and scale_by_keep:
        raise ValueError(
            f"scale_at_test=True and scale_by_keep={scale_by_keep!r} would scale twice: test-time "
            "scaling (the branch times 1 - drop_prob in evaluation, as in Huang et al. 2016) replaces "
            "the scaling of kept samples in training; pass scale_by_keep=False with scale_at_test=True"
        )
    return scale_at_test


def check_axis(axis: object) -> tuple[int, ...]:
    """Return ``axis`` (an int or a tuple of ints) as a tuple of ints, or raise TypeError."""
    items: tuple[object, ...] = cast("tuple[object, ...]", axis) if isinstance(axis, tuple) else (axis,)
    if not all(is_integer(a) for a in items):
        raise TypeError(f"axis must be an int or a tuple of ints, got {axis!r}")
    return tuple(int(cast("numbers.Integral", a)) for a in items)


def check_sample_axis(axis: object) -> int:
    """Return the one sample axis of a residual drop path as an int, or raise TypeError."""
    if not is_integer(axis):
        raise TypeError(f"axis must be an int for a residual drop path (the one sample axis), got {axis!r}")
    return int(cast("numbers.Integral", axis))


def check_callable(fn: object, name: str) -> None:
    """Raise TypeError unless ``fn`` is callable."""
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got an object of type {type(fn).__name__}")


def normalize_axis(axis: object, ndim: int) -> tuple[int, ...]:
    """Return ``axis`` as sorted non-negative ints for an array of ``ndim`` dimensions."""
    items = check_axis(axis)
    for a in items:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for x with {ndim} dimension(s) (axis={axis!r})")
    axes = tuple(sorted({a % ndim for a in items}))
    if len(axes) != len(items):
        raise ValueError(f"axis must not repeat an axis, got {axis!r}")
    return axes


def mask_shape(shape: tuple[int, ...], axis: object) -> tuple[int, ...]:
    """The mask's shape for ``x.shape``: x's length along the drop axes, 1 elsewhere."""
    axes = normalize_axis(axis, len(shape))
    return tuple(n if i in axes else 1 for i, n in enumerate(shape))


class DtypeInfo(NamedTuple):
    """What drawing a mask for one dtype of x needs to know."""

    mask: Any  # the real dtype masks are made in
    eps: float  # > 0 for 16-bit floats, whose 1/keep needs an unbiased rounding
    max: float


def dtype_info(xp: Any, cache: dict[Any, DtypeInfo], dtype: Any) -> DtypeInfo:
    """``dtype``'s :class:`DtypeInfo`, cached per namespace; TypeError if x cannot have it."""
    info = cache.get(dtype)
    if info is not None:
        return info
    if xp.isdtype(dtype, "real floating"):
        finfo = xp.finfo(dtype)
        if finfo.bits < 16:
            raise TypeError(f"x must have a floating-point dtype of 16 bits or more, got {dtype}")
        mask = dtype
    elif xp.isdtype(dtype, "complex floating"):
        # A real mask keeps the product complex and the scale exact.
        mask = xp.float32 if dtype == xp.complex64 else xp.float64
        finfo = xp.finfo(mask)
    else:
        raise TypeError(f"x must have a floating-point dtype, got {dtype}")
    eps = float(finfo.eps) if finfo.bits == 16 else 0.0
    info = cache[dtype] = DtypeInfo(mask, eps, float(finfo.max))
    return info

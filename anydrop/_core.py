"""The one drop-path implementation, written against the array API standard.

Nothing here knows which array library it runs on: the namespace comes from
``array_api_compat.array_namespace`` and the random mask from the backend's
RNG adapter in ``_rng``.
"""

from __future__ import annotations

import numbers
from typing import Any, TypeVar

from array_api_compat import array_namespace, is_array_api_obj

from ._rng import adapter_for

__all__ = ["check_drop_prob", "drop_path", "normalize_axis"]

Array = TypeVar("Array")
Axis = int | tuple[int, ...]


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
    p = float(value)  # type: ignore[arg-type]
    if not 0.0 <= p <= 1.0:  # also false for NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return p


def check_axis_type(axis: object) -> tuple[int, ...]:
    """Return ``axis`` as a tuple of ints, or raise TypeError."""
    items = axis if isinstance(axis, tuple) else (axis,)
    for a in items:
        if isinstance(a, bool) or not isinstance(a, numbers.Integral):
            raise TypeError(f"axis must be an int or a tuple of ints, got {axis!r}")
    return tuple(int(a) for a in items)


def normalize_axis(axis: object, ndim: int) -> tuple[int, ...]:
    """Return ``axis`` as sorted non-negative ints for an array of ``ndim`` dimensions."""
    items = check_axis_type(axis)
    for a in items:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for x with {ndim} dimension(s) (axis={axis!r})")
    axes = tuple(sorted({a % ndim for a in items}))
    if len(axes) != len(items):
        raise ValueError(f"axis must not repeat an axis, got {axis!r}")
    return axes


_MASK_DTYPES: dict[tuple[str, Any], Any] = {}


def _mask_dtype(xp: Any, dtype: Any) -> Any:
    """The real dtype the mask is made in for an ``x`` of ``dtype``; TypeError if unsupported."""
    key = (xp.__name__, dtype)
    found = _MASK_DTYPES.get(key)
    if found is not None:
        return found
    if xp.isdtype(dtype, "real floating"):
        if xp.finfo(dtype).bits < 16:
            raise TypeError(f"x must have a floating-point dtype of 16 bits or more, got {dtype}")
        found = dtype
    elif xp.isdtype(dtype, "complex floating"):
        # A real mask keeps the product complex and the scale exact.
        found = xp.float32 if dtype == xp.complex64 else xp.float64
    else:
        raise TypeError(f"x must have a floating-point dtype, got {dtype}")
    _MASK_DTYPES[key] = found
    return found


def drop_path(
    x: Array,
    drop_prob: float = 0.0,
    training: bool = False,
    scale_by_keep: bool = True,
    *,
    axis: Axis = 0,
    rng: Any = None,
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
        When false, ``x`` itself is returned.
    scale_by_keep
        Divide kept samples by ``1 - drop_prob``.
    axis
        Axis or axes along which samples are drawn (negative allowed). The mask
        is broadcast over the others. ``0`` is per-sample drop path, ``1``
        suits (seq, batch, dim) layouts and ``()`` drops the whole array at
        once (torchvision's ``mode="batch"``).
    rng
        ``None`` for the backend's default source (torch's global generator, so
        ``torch.manual_seed`` reproduces timm), an int seed, or a generator of
        the backend (``numpy.random.Generator``, ``torch.Generator`` on x's
        device, ``cupy.random.Generator``), which advances.

    Returns
    -------
    An array of the namespace, device, shape and dtype of ``x``; ``x`` itself
    when ``training`` is false or ``drop_prob == 0``. ``x`` is never modified.

    Raises
    ------
    TypeError
        ``x`` is not a floating-point array of a supported library, or
        ``drop_prob``, ``axis`` or ``rng`` has a wrong type.
    ValueError
        ``drop_prob`` is outside [0, 1] or NaN, ``axis`` is out of range or
        repeated, an int ``rng`` is negative, or a generator is on another device.

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
    """
    try:
        xp = array_namespace(x)
    except TypeError:
        raise TypeError(
            "x must be an array of a supported array library (NumPy, PyTorch, CuPy "
            f"or another array API namespace), got an object of type {type(x).__name__}"
        ) from None
    p = check_drop_prob(drop_prob)
    dtype = x.dtype  # type: ignore[attr-defined]
    mask_dtype = _mask_dtype(xp, dtype)
    shape = x.shape  # type: ignore[attr-defined]
    axes = normalize_axis(axis, len(shape))
    adapter = adapter_for(x)

    if not training or p == 0.0:
        adapter.check(rng, x)
        return x

    keep = 1.0 - p
    mask_shape = tuple(n if i in axes else 1 for i, n in enumerate(shape))
    mask = adapter.bernoulli(adapter.resolve(rng, x), keep, mask_shape, mask_dtype, x=x, xp=xp)
    if keep == 0.0:
        # The mask above is all zeros, but drawing it advances the generator as
        # timm does. Select, not multiply: 0 * inf would be NaN. Stays in the autograd graph.
        out = xp.where(mask > 0, x, 0)
    else:
        if scale_by_keep:
            # Scale the small mask, not the big array, and divide as timm does so
            # results are bit-identical to it.
            mask = mask / keep
        # multiply, not *: for ndarray subclasses such as np.matrix, * is a matmul.
        out = xp.multiply(x, mask)
    if out.dtype != dtype:
        # NumPy computes non-native byte orders in native order.
        out = xp.astype(out, dtype)
    if not shape:
        # NumPy turns 0-d arithmetic results into scalars; keep an array.
        out = xp.asarray(out)
    return out  # type: ignore[no-any-return]

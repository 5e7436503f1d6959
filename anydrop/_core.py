"""The one drop-path implementation, written against the array API standard.

This module is self-contained so that other libraries can vendor it: it imports
nothing from the rest of anydrop, and array-api-compat only through the
``_compat`` shim next to it, which a vendoring project points at its own copy.

Nothing in ``drop_path`` knows which array library it runs on: the namespace
comes from ``array_namespace`` and the random mask from the backend's adapter
below. The array API standard has no random module, so each array library gets
a small adapter that turns the user's ``rng`` into a generator of that library
and draws a Bernoulli mask with it on ``x``'s device. Adapters are picked from
the array's type without importing any framework that is not already loaded
(the ``is_*_array`` helpers only look at ``sys.modules``).

``rng`` follows SPEC 7: ``None`` (the backend's default source), a non-negative
``int`` seed, or a generator object of the backend.
"""

from __future__ import annotations

import numbers
import os
import sys
from typing import Any, TypeVar

from ._compat import (
    array_namespace,
    device,
    is_array_api_obj,
    is_cupy_array,
    is_dask_array,
    is_jax_array,
    is_numpy_array,
    is_torch_array,
)

__all__ = [
    "RNGAdapter",
    "adapter_for",
    "check_axis_type",
    "check_drop_prob",
    "check_rng_type",
    "drop_path",
    "normalize_axis",
]

Array = TypeVar("Array")
Axis = int | tuple[int, ...]

# --- RNG adapters: the only per-backend code ---

_MAX_SEED = 2**64


def _is_seed(rng: object) -> bool:
    return isinstance(rng, numbers.Integral) and not isinstance(rng, bool)


def _type_name(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _seed(rng: Any) -> int:
    seed = int(rng)
    if not 0 <= seed < _MAX_SEED:
        raise ValueError(f"rng must be a seed in [0, 2**64) when it is an int, got {seed}")
    return seed


class RNGAdapter:
    """How one array library draws masks. Subclasses override the hooks."""

    name = "generic"
    #: What the error message lists as accepted generator objects.
    generator_names = "numpy.random.Generator"

    def is_generator(self, rng: object) -> bool:
        np = sys.modules.get("numpy")
        return np is not None and isinstance(rng, np.random.Generator)

    def check_generator(self, rng: Any, x: Any) -> None:
        """Raise if ``rng`` (a generator of this backend) cannot draw for ``x``."""

    def default(self, x: Any) -> Any:
        return _numpy_default_generator()

    def seeded(self, seed: int, x: Any) -> Any:
        import numpy as np

        return np.random.default_rng(seed)

    def bernoulli(self, gen: Any, keep: float, shape: tuple[int, ...], dtype: Any, *, x: Any, xp: Any) -> Any:
        """Return 0/1 values of ``dtype`` and ``shape`` on ``x``'s device, 1 with probability ``keep``."""
        # Any other namespace has no RNG we can rely on: draw the (small) mask on
        # the host with NumPy and move it over.
        kept = gen.random(shape) < keep
        return xp.astype(xp.asarray(kept, device=device(x)), dtype)

    def resolve(self, rng: object, x: Any, *, create: bool = True) -> Any:
        """Turn the user's ``rng`` into a generator this adapter can draw from.

        With ``create=False`` only validate it: nothing is made (the eval path).
        """
        if rng is None:
            return self.default(x) if create else None
        if _is_seed(rng):
            seed = _seed(rng)
            return self.seeded(seed, x) if create else None
        if self.is_generator(rng):
            self.check_generator(rng, x)
            return rng
        library = type(x).__module__.partition(".")[0]
        raise TypeError(
            f"rng must be None, a non-negative int seed or a {self.generator_names} "
            f"for {library} arrays, got an object of type {_type_name(rng)}"
        )

    def check(self, rng: object, x: Any) -> None:
        """Validate ``rng`` for ``x`` as :meth:`resolve` does, without creating anything."""
        self.resolve(rng, x, create=False)


class NumPyRNG(RNGAdapter):
    name = "numpy"

    def bernoulli(self, gen: Any, keep: float, shape: tuple[int, ...], dtype: Any, *, x: Any, xp: Any) -> Any:
        return (gen.random(shape) < keep).astype(dtype)


class TorchRNG(RNGAdapter):
    name = "torch"
    generator_names = "torch.Generator on x's device"

    def is_generator(self, rng: object) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(rng, torch.Generator)

    def check_generator(self, rng: Any, x: Any) -> None:
        dev, gdev = x.device, rng.device
        if gdev.type != dev.type or (
            gdev.index is not None and dev.index is not None and gdev.index != dev.index
        ):
            raise ValueError(f"rng is a torch.Generator on device {gdev}, but x is on device {dev}")

    def default(self, x: Any) -> Any:
        # None makes bernoulli_ use the device's global generator, exactly as
        # timm does, so torch.manual_seed reproduces timm's masks.
        return None

    def seeded(self, seed: int, x: Any) -> Any:
        import torch

        if x.device.type == "meta":
            return None  # meta tensors hold no data and have no generator
        return torch.Generator(device=x.device).manual_seed(seed)

    def bernoulli(self, gen: Any, keep: float, shape: tuple[int, ...], dtype: Any, *, x: Any, xp: Any) -> Any:
        import torch

        return torch.empty(shape, dtype=dtype, device=x.device).bernoulli_(keep, generator=gen)


class CuPyRNG(RNGAdapter):
    name = "cupy"
    generator_names = "cupy.random.Generator"

    def is_generator(self, rng: object) -> bool:
        cupy = sys.modules.get("cupy")
        # CuPy's ROCm build has no Generator class.
        generator = getattr(cupy.random, "Generator", None) if cupy is not None else None
        return generator is not None and isinstance(rng, generator)

    def check_generator(self, rng: Any, x: Any) -> None:
        # CuPy keeps a generator's state on the device it was made on.
        gdev = getattr(rng.bit_generator, "_current_device", None)
        if gdev is not None and gdev != x.device.id:
            raise ValueError(
                f"rng is a cupy.random.Generator on device {gdev}, but x is on device {x.device.id}"
            )

    def default(self, x: Any) -> Any:
        # None means cupy.random's global state, which cupy.random.seed controls.
        return None

    def seeded(self, seed: int, x: Any) -> Any:
        import cupy

        with x.device:
            return cupy.random.default_rng(seed)

    def bernoulli(self, gen: Any, keep: float, shape: tuple[int, ...], dtype: Any, *, x: Any, xp: Any) -> Any:
        import cupy

        with x.device:
            uniform = cupy.random.random(shape) if gen is None else gen.random(shape)
            return (uniform < keep).astype(dtype)


class _Unsupported(RNGAdapter):
    """Backends whose RNG model needs its own adapter (planned), refused clearly."""

    def __init__(self, name: str) -> None:
        self.name = name

    def resolve(self, rng: object, x: Any, *, create: bool = True) -> Any:
        raise TypeError(
            f"drop_path does not support {self.name} arrays yet: a host-side mask "
            f"would be baked into traced or lazy graphs"
        )


_GENERIC = RNGAdapter()
_NUMPY = NumPyRNG()
_TORCH = TorchRNG()
_CUPY = CuPyRNG()
_JAX = _Unsupported("JAX")
_DASK = _Unsupported("Dask")
_BY_TYPE: dict[type, RNGAdapter] = {}


def adapter_for(x: Any) -> RNGAdapter:
    """Return the RNG adapter for ``x``'s array library (cached per type)."""
    cls = type(x)
    adapter = _BY_TYPE.get(cls)
    if adapter is None:
        if is_torch_array(x):
            adapter = _TORCH
        elif is_cupy_array(x):
            adapter = _CUPY
        elif is_jax_array(x):
            adapter = _JAX
        elif is_dask_array(x):
            adapter = _DASK
        elif is_numpy_array(x):
            adapter = _NUMPY
        else:
            adapter = _GENERIC
        _BY_TYPE[cls] = adapter
    return adapter


def check_rng_type(rng: object) -> None:
    """Check ``rng`` before the backend is known (module construction)."""
    if rng is None:
        return
    if _is_seed(rng):
        _seed(rng)
        return
    if any(a.is_generator(rng) for a in (_GENERIC, _TORCH, _CUPY)):
        return
    raise TypeError(
        "rng must be None, a non-negative int seed, or a numpy.random.Generator, "
        f"torch.Generator or cupy.random.Generator, got an object of type {_type_name(rng)}"
    )


_numpy_default: Any = None


def _numpy_default_generator() -> Any:
    # One process-wide Generator from fresh OS entropy: as unpredictable as a
    # new default_rng() per call (SPEC 7's None) at a tenth of the cost.
    global _numpy_default
    if _numpy_default is None:
        import numpy as np

        _numpy_default = np.random.default_rng()
    return _numpy_default


def _forget_numpy_default() -> None:
    # A forked child (e.g. a DataLoader worker) must not replay its parent's masks.
    global _numpy_default
    _numpy_default = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_numpy_default)


# --- Validation ---


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

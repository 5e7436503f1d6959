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

import math
import numbers
import os
import sys
import threading
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
    "PortableRNG",
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
        if isinstance(rng, PortableRNG):  # PortableRNG hook: it draws on the host for every backend
            return rng
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
            f"rng must be None, a non-negative int seed, an anydrop.PortableRNG or a "
            f"{self.generator_names} for {library} arrays, got an object of type {_type_name(rng)}"
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


class JaxRNG(_Unsupported):
    """JAX: only :class:`PortableRNG`, and only outside traced functions (PortableRNG hook).

    A mask drawn on the host is right for an eager call, but inside ``jax.jit``,
    ``grad`` or ``vmap`` it would become a constant of the trace: every call of
    the compiled function would reuse it. Functional JAX keys need an adapter of their own.
    """

    def __init__(self) -> None:
        super().__init__("JAX")

    def resolve(self, rng: object, x: Any, *, create: bool = True) -> Any:
        if not isinstance(rng, PortableRNG):
            got = "rng=None" if rng is None else f"an rng of type {_type_name(rng)}"
            raise TypeError(
                f"drop_path supports JAX arrays only with rng=anydrop.PortableRNG(seed) for now, got {got}"
            )
        core = sys.modules.get("jax.core")
        tracer = getattr(core, "Tracer", None)
        if tracer is not None and isinstance(x, tracer):
            raise TypeError(
                "drop_path with a PortableRNG needs a concrete JAX array, got a tracer (inside jax.jit, "
                "grad or vmap): the host-drawn mask would be baked into the trace"
            )
        return rng


_GENERIC = RNGAdapter()
_NUMPY = NumPyRNG()
_TORCH = TorchRNG()
_CUPY = CuPyRNG()
_JAX = JaxRNG()
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
    if isinstance(rng, PortableRNG):  # PortableRNG hook
        return
    if any(a.is_generator(rng) for a in (_GENERIC, _TORCH, _CUPY)):
        return
    raise TypeError(
        "rng must be None, a non-negative int seed, an anydrop.PortableRNG, or a numpy.random.Generator, "
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
    gen = adapter.resolve(rng, x)
    if isinstance(gen, PortableRNG):  # PortableRNG hook: the same host draw for every backend
        (mask,) = _portable_masks(gen, mask_shape, (keep,), mask_dtype, x=x, xp=xp)
    else:
        mask = adapter.bernoulli(gen, keep, mask_shape, mask_dtype, x=x, xp=xp)
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


# --- PortableRNG: masks that are bit-identical on every array library ---
#
# Apart from the adapters on purpose: it draws the same way for every backend,
# on the host, and meets the rest of this module only in the hooks marked
# "PortableRNG hook" (RNGAdapter.resolve, JaxRNG, check_rng_type and the mask
# draw in drop_path).

_MASK64 = 2**64 - 1
_GOLDEN_GAMMA = 0x9E3779B97F4A7C15
_MIX_1 = 0xBF58476D1CE4E5B9
_MIX_2 = 0x94D049BB133111EB
#: A uniform is the top 53 bits of a 64-bit value: exactly the doubles k * 2**-53 in [0, 1).
_UNIFORM_BITS = 53


def _mix64(z: int) -> int:
    """SplitMix64's output function: a bijection of 64-bit ints; an input bit flips about half the output."""
    z = ((z ^ (z >> 30)) * _MIX_1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX_2) & _MASK64
    return z ^ (z >> 31)


def _splitmix64_python(state: int, start: int, n: int) -> list[int]:
    """Values ``start .. start + n - 1`` of the SplitMix64 stream from ``state``, in pure Python.

    Value k is ``mix64(state + (k + 1) * gamma mod 2**64)``: any stretch of the
    stream can be computed without the ones before it.
    """
    first = state + (start + 1) * _GOLDEN_GAMMA
    return [_mix64((first + i * _GOLDEN_GAMMA) & _MASK64) for i in range(n)]


def _splitmix64_numpy(np: Any, state: int, start: int, n: int) -> Any:
    """The same values as :func:`_splitmix64_python`, as a NumPy uint64 array."""
    u64 = np.uint64
    # uint64 array arithmetic wraps modulo 2**64, which is the definition.
    z = np.arange(n, dtype=u64)
    z *= u64(_GOLDEN_GAMMA)
    z += u64((state + (start + 1) * _GOLDEN_GAMMA) & _MASK64)
    z ^= z >> u64(30)
    z *= u64(_MIX_1)
    z ^= z >> u64(27)
    z *= u64(_MIX_2)
    z ^= z >> u64(31)
    return z


def _stream_value(seed: int, k: int) -> int:
    """Value ``k`` of the stream of ``PortableRNG(seed)``, as a 64-bit int (per-step seeds)."""
    return _mix64((_mix64(seed) + (k + 1) * _GOLDEN_GAMMA) & _MASK64)


def _host_numpy() -> Any:
    """NumPy if it can be imported, else None: PortableRNG then computes in pure Python."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy


class PortableRNG:
    """A seeded mask source that gives bit-identical masks on every array library.

    Pass it as ``rng`` to :func:`~anydrop.drop_path` or a ``DropPath`` layer.
    The same seed and the same sequence of calls give the same masks on NumPy,
    PyTorch (any device), CuPy, JAX and array-api-strict, so a model ported
    from one framework to another can be checked output for output. Like a
    generator, it advances: successive calls draw fresh masks.

    The mask is drawn on the host and moved to x's device: a draw of one 64-bit
    value per sample (microseconds for a batch) and a transfer of the small
    mask. On a GPU that transfer waits for the host, so the backend's own
    generator is faster in training; PortableRNG is for checking.

    The stream is SplitMix64 started from ``mix64(seed)``: value k is
    ``mix64(mix64(seed) + (k + 1) * 0x9E3779B97F4A7C15 mod 2**64)``. A draw of
    n samples (in C order over the mask's shape) takes the next n values and
    keeps sample i when ``(v_i >> 11) * 2**-53 < 1 - drop_prob``, compared
    exactly on the host, so no backend's float rounding enters. NumPy computes
    it when installed; otherwise the same numbers come from pure Python, slower
    but fine for masks of thousands of samples.

    Parameters
    ----------
    seed
        An int in [0, 2**64).
    position
        How many values of the stream are already used (default 0): pass a
        saved :attr:`position` to resume a stream, e.g. from a checkpoint.

    Examples
    --------
    >>> import numpy as np
    >>> from anydrop import PortableRNG, drop_path
    >>> rng = PortableRNG(7)
    >>> drop_path(np.ones((6, 1)), 0.5, training=True, rng=rng).ravel()
    array([0., 2., 0., 0., 0., 2.])
    >>> rng  # one value used per sample
    PortableRNG(seed=7, position=6)
    >>> import torch
    >>> drop_path(torch.ones(6, 1), 0.5, training=True, rng=PortableRNG(7)).ravel()
    tensor([0., 2., 0., 0., 0., 2.])
    """

    def __init__(self, seed: int, *, position: int = 0) -> None:
        self._seed = _checked_count(seed, "seed", _MAX_SEED)
        self._position = _checked_count(position, "position", None)
        self._state = _mix64(self._seed)
        # Drawing reserves a stretch of the stream under this lock, so threads
        # sharing one PortableRNG never reuse values.
        self._lock = threading.Lock()

    @property
    def seed(self) -> int:
        """The seed the stream was started from."""
        return self._seed

    @property
    def position(self) -> int:
        """How many values of the stream have been used: one per sample drawn."""
        return self._position

    def _reserve(self, n: int) -> int:
        with self._lock:
            start = self._position
            self._position = start + n
        return start

    def _uniform_ints(self, n: int) -> tuple[Any, Any]:
        """The next ``n`` 53-bit uniforms as ints ``k`` (u = k * 2**-53), and the NumPy used or None."""
        start = self._reserve(n)
        np = _host_numpy()
        if np is None:
            return [v >> (64 - _UNIFORM_BITS) for v in _splitmix64_python(self._state, start, n)], None
        return _splitmix64_numpy(np, self._state, start, n) >> np.uint64(64 - _UNIFORM_BITS), np

    def __repr__(self) -> str:
        return f"PortableRNG(seed={self._seed}, position={self._position})"

    def __getstate__(self) -> dict[str, int]:
        return {"seed": self._seed, "position": self._position}

    def __setstate__(self, state: dict[str, int]) -> None:
        # The lock cannot be pickled: a copy gets its own.
        self._seed = _checked_count(state["seed"], "seed", _MAX_SEED)
        self._position = _checked_count(state["position"], "position", None)
        self._state = _mix64(self._seed)
        self._lock = threading.Lock()


def _checked_count(value: object, name: str, limit: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a non-negative int, got {value!r} of type {type(value).__name__}")
    n = int(value)
    if n < 0 or (limit is not None and n >= limit):
        bound = "[0, 2**64)" if limit == _MAX_SEED else "non-negative"
        raise ValueError(f"{name} must be an int in {bound}, got {n}")
    return n


def _portable_masks(
    rng: PortableRNG, shape: tuple[int, ...], probs: tuple[float, ...], dtype: Any, *, x: Any, xp: Any
) -> list[Any]:
    """0/1 arrays of ``dtype`` and ``shape`` on x's device: ``u < p`` for each p in ``probs``.

    One uniform u per element, drawn by ``rng`` on the host; the comparisons
    are exact integer ones there, so every backend gets the same bits. Several
    ``probs`` share the draw (a kept mask and a nested one, say).
    """
    n = math.prod(shape)
    ints, np = rng._uniform_ints(n)
    # u < p  <=>  k < p * 2**53  <=>  k < ceil(p * 2**53), exactly, for integer k.
    thresholds = [math.ceil(p * 2.0**_UNIFORM_BITS) for p in probs]
    dev = device(x)
    if np is not None:
        host = [(ints < np.uint64(t)).reshape(shape) for t in thresholds]
        return [xp.astype(xp.asarray(h, device=dev), dtype) for h in host]
    return [
        xp.astype(xp.reshape(xp.asarray([k < t for k in ints], dtype=xp.bool, device=dev), shape), dtype)
        for t in thresholds
    ]

# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
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
``int`` seed, or a generator object of the backend. JAX has no default source
and no generator objects: there ``rng`` is a PRNG key, used as given.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

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
    "drop_path_add",
    "drop_path_residual",
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
    """How one array library draws masks and applies them. Subclasses override the hooks.

    The arithmetic hooks (``multiply``, ``add_product``) default to the array API
    operators; a backend overrides them only where it has a faster equivalent
    with the same result (one fused pass, no temporary).
    """

    name = "generic"
    #: What the error message lists as accepted generator objects.
    generator_names = "numpy.random.Generator"

    def is_generator(self, rng: object) -> bool:
        np = sys.modules.get("numpy")
        return np is not None and isinstance(rng, np.random.Generator)

    def check_generator(self, rng: Any, x: Any) -> None:
        """Raise if ``rng`` (a generator of this backend) cannot draw for ``x``."""

    def default(self, x: Any) -> Any:
        """The generator ``rng=None`` draws from; the draw hooks get None for it and call this."""
        return _numpy_default_generator()

    def seeded(self, seed: int, x: Any) -> Any:
        import numpy as np

        return np.random.default_rng(seed)

    def bernoulli(self, gen: Any, keep: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any) -> Any:  # noqa: PLR0917
        """Return 0/1 values of ``dtype`` and ``shape`` on ``x``'s device, 1 with probability ``keep``.

        ``gen`` is what :meth:`resolve` returned: a generator, or None for the
        default source. Positional: drop_path calls it on every call, and
        keyword arguments cost a measurable share of a call on a tiny array.
        """
        if gen is None:
            gen = self.default(x)
        # Any other namespace has no RNG we can rely on: draw the (small) mask on
        # the host with NumPy and move it over.
        kept = gen.random(shape) < keep
        return xp.astype(xp.asarray(kept, device=device(x)), dtype)

    def uniform(self, gen: Any, shape: tuple[int, ...], *, x: Any, xp: Any) -> Any:
        """Return uniform [0, 1) floats of ``shape`` on ``x``'s device (``gen`` as in :meth:`bernoulli`)."""
        if gen is None:
            gen = self.default(x)
        return xp.asarray(gen.random(shape), device=device(x))

    def multiply(self, x: Any, mask: Any) -> Any:
        """``x * mask``."""
        return x * mask

    #: Why ``drop_path_residual`` cannot gather this library's kept samples, or None if it can.
    residual_refusal: str | None = None

    def portable_masks(
        self, rng: PortableRNG, shape: tuple[int, ...], thresholds: list[int], dtype: Any, x: Any
    ) -> list[Any] | None:
        """PortableRNG hook: its masks built by this backend, or None to draw them on the host.

        Mask j keeps an element when its stream value's top 53 bits are below ``thresholds[j]``.
        """
        return None

    def add_product(self, x: Any, branch: Any, mask: Any) -> Any:
        """``x + branch * mask``."""
        return x + branch * mask

    def resolve(self, rng: object, x: Any, *, create: bool = True) -> Any:
        """Turn the user's ``rng`` into a generator this adapter can draw from.

        None stays None, the default source, which the draw hooks look up
        themselves: torch and CuPy draw from their global state without a
        generator object, and drop_path's fast path saves a call. With
        ``create=False`` only validate ``rng``: nothing is made (the eval path).
        """
        if isinstance(rng, PortableRNG):  # PortableRNG hook: it draws on the host for every backend
            return rng
        if rng is None:
            return None
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

    def bernoulli(self, gen: Any, keep: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any) -> Any:  # noqa: PLR0917
        if gen is None:
            gen = self.default(x)
        return (gen.random(shape) < keep).astype(dtype)

    def uniform(self, gen: Any, shape: tuple[int, ...], *, x: Any, xp: Any) -> Any:
        if gen is None:
            gen = self.default(x)
        return gen.random(shape)

    def multiply(self, x: Any, mask: Any) -> Any:
        import numpy as np

        # The ufunc, not *: for ndarray subclasses such as np.matrix, * is a matmul.
        out = np.multiply(x, mask)
        return _numpy_result(out, x)

    def add_product(self, x: Any, branch: Any, mask: Any) -> Any:
        import numpy as np

        out = np.multiply(branch, mask)
        if out.shape == np.broadcast_shapes(x.shape, out.shape) and np.result_type(x, out) == out.dtype:
            # Add into the product: one temporary instead of two, which matters
            # where page faults dominate large allocations.
            np.add(x, out, out=out)
        else:
            out = np.add(x, out)
        return _numpy_result(out, x, branch)


def _numpy_result(out: Any, *inputs: Any) -> Any:
    import numpy as np

    dtype = inputs[0].dtype if len(inputs) == 1 else np.result_type(*inputs)
    if out.dtype != dtype:
        # NumPy computes non-native byte orders in native order.
        out = out.astype(dtype)
    if out.ndim == 0:
        # NumPy turns 0-d arithmetic results into scalars; keep an array.
        out = np.asarray(out)
    return out


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

    def seeded(self, seed: int, x: Any) -> Any:
        import torch

        if x.device.type == "meta":
            return None  # meta tensors hold no data and have no generator
        return torch.Generator(device=x.device).manual_seed(seed)

    def bernoulli(self, gen: Any, keep: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any) -> Any:  # noqa: PLR0917
        # new_empty, as timm does: same device, one op. Keyword arguments cost a
        # few tenths of a microsecond per call in torch's binding: pass only those needed.
        # gen None (rng=None): the device's global generator, exactly as timm
        # draws, so torch.manual_seed reproduces timm's masks.
        mask = x.new_empty(shape) if dtype is x.dtype else x.new_empty(shape, dtype=dtype)
        return mask.bernoulli_(keep) if gen is None else mask.bernoulli_(keep, generator=gen)

    def uniform(self, gen: Any, shape: tuple[int, ...], *, x: Any, xp: Any) -> Any:
        import torch

        # float32 rather than float64: every device type has it.
        return x.new_empty(shape, dtype=torch.float32).uniform_(0.0, 1.0, generator=gen)

    def add_product(self, x: Any, branch: Any, mask: Any) -> Any:
        import torch

        # One fused pass: reads x and branch once and writes the output once.
        return torch.addcmul(x, branch, mask)


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

    def seeded(self, seed: int, x: Any) -> Any:
        import cupy

        with x.device:
            return cupy.random.default_rng(seed)

    def bernoulli(self, gen: Any, keep: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any) -> Any:  # noqa: PLR0917
        import cupy

        with x.device:
            # gen None (rng=None): cupy.random's global state, which cupy.random.seed controls.
            uniform = cupy.random.random(shape) if gen is None else gen.random(shape)
            return (uniform < keep).astype(dtype)

    def uniform(self, gen: Any, shape: tuple[int, ...], *, x: Any, xp: Any) -> Any:
        import cupy

        with x.device:
            return cupy.random.random(shape) if gen is None else gen.random(shape)


class DaskRNG(RNGAdapter):
    """Dask: lazy masks, chunked like x along the drop axes and independent of every chunking.

    Element i of a mask (C order over its shape) is kept when value i of a
    SplitMix64 stream (:class:`PortableRNG`'s) is below the threshold. Each value
    is a function of its position alone, so the mask is built with Dask array
    arithmetic on index ranges chunked like x: nothing is computed at call
    time, the mask's blocks line up with x's (``x * mask`` is one task per
    block, no rechunk), the result is the same for any chunking of x, and the
    workers need only NumPy and Dask, not anydrop.

    A seed, a ``numpy.random.Generator`` or None (anydrop's process-wide NumPy
    generator) is turned into the stream's 64-bit key by one draw from that
    generator on the host, fresh for every mask: a generator advances, two
    masks drawn from it are independent, and ``rng=seed`` equals
    ``rng=numpy.random.default_rng(seed)``. A :class:`PortableRNG` gives the
    masks it gives on NumPy, built lazily from its stream's positions.
    """

    name = "dask"
    residual_refusal = (
        "drop_path_residual does not support Dask arrays: it gathers the kept samples, whose number "
        "is known only once the mask is computed; use drop_path_add(x, fn(x), ...) instead"
    )

    def bernoulli(self, gen: Any, keep: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any) -> Any:  # noqa: PLR0917
        import numpy as np

        if gen is None:
            gen = self.default(x)
        key = int(gen.integers(0, _MAX_SEED, dtype=np.uint64))
        threshold = math.ceil(keep * 2.0**_UNIFORM_BITS)
        (mask,) = _dask_stream_masks(_mix64(key), 0, shape, [threshold], dtype=dtype, x=x)
        return mask

    def uniform(self, gen: Any, shape: tuple[int, ...], *, x: Any, xp: Any) -> Any:
        raise TypeError(self.residual_refusal)

    def portable_masks(
        self, rng: PortableRNG, shape: tuple[int, ...], thresholds: list[int], dtype: Any, x: Any
    ) -> list[Any] | None:
        start = rng._reserve(math.prod(shape))
        return _dask_stream_masks(rng._state, start, shape, thresholds, dtype=dtype, x=x)


def _dask_stream_masks(
    state: int, start: int, shape: tuple[int, ...], thresholds: list[int], *, dtype: Any, x: Any
) -> list[Any]:
    """Lazy 0/1 Dask arrays of ``shape``: element i is ``value(start + i) >> 11 < threshold``.

    ``shape`` is x's along the drop axes and 1 elsewhere; the masks take x's
    chunks along the drop axes.
    """
    import dask.array as da
    import numpy as np

    if any(math.isnan(n) for n in shape):  # Dask's shape for an unknown chunk size
        raise ValueError(
            f"x has unknown chunk sizes along a drop axis (shape {tuple(x.shape)}): call "
            "x.compute_chunk_sizes() first, so that the mask can be chunked like x"
        )
    u64 = np.uint64
    chunks = tuple(x.chunks[i] if n == x.shape[i] else (1,) for i, n in enumerate(shape))
    ndim = len(shape)
    # Each element's position in the mask's C order, as a sum of one broadcast
    # arange per axis: built per block from the block's offsets, never materialised whole.
    flat = da.zeros(_ONES[ndim], dtype=u64, chunks=1)
    stride = 1
    for i in reversed(range(ndim)):
        if shape[i] != 1:
            index = da.arange(shape[i], chunks=(chunks[i],), dtype=u64) * u64(stride)
            flat = flat + index[(None,) * i + (slice(None),) + (None,) * (ndim - 1 - i)]
        stride *= shape[i]
    if ndim == 0:
        # NumPy turns 0-d blocks into scalars, whose wrapping arithmetic warns of overflow.
        flat = flat.reshape((1,))
    uniform_ints = _splitmix64_at(u64, state, start, flat) >> u64(64 - _UNIFORM_BITS)
    return [(uniform_ints < u64(t)).astype(dtype).reshape(shape) for t in thresholds]


class _JaxKeys:
    """A JAX key that gives each draw its own sub-key: ``fold_in(key, i)`` for draw i.

    JAX keys are values, not generators: drawing twice from one key gives the
    same bits. drop_path draws twice for 16-bit floats (the mask and the
    rounding of the scale), and so does drop_path_residual with
    ``fixed_size=True`` (the subset and the scales); each draw needs an
    independent key. The key itself is never drawn from: JAX's random
    functions and ``fold_in`` hash the same key with small counters, so a key
    drawn from directly would be correlated with keys folded from it.
    Splitting here is Python-level work at trace time, so it is fine under ``jax.jit``.
    """

    __slots__ = ("draws", "key")

    def __init__(self, key: Any) -> None:
        self.key = key
        self.draws = 0

    def next(self) -> Any:
        import jax

        sub = jax.random.fold_in(self.key, self.draws)
        self.draws += 1
        return sub


class JaxRNG(RNGAdapter):
    """JAX: ``rng`` is a PRNG key (or an int seed that makes one); the mask is drawn on x's device.

    Keys are functional: the same key gives the same mask, and nothing
    advances. The user splits a key per step, as with ``flax.nnx.Dropout``.
    JAX has no global random state, so training with ``drop_prob > 0`` needs
    a key. Everything here works on tracers, so ``jax.jit``, ``grad`` and
    ``vmap`` trace through it; a :class:`PortableRNG` (drawn on the host)
    works on concrete arrays only (PortableRNG hook).
    """

    name = "jax"
    generator_names = "JAX PRNG key (jax.random.key(seed), or a legacy jax.random.PRNGKey(seed))"

    def is_generator(self, rng: object) -> bool:
        jax = sys.modules.get("jax")
        if jax is None or not isinstance(rng, jax.Array):
            return False
        dtype = rng.dtype
        return bool(jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)) or dtype == "uint32"

    def check_generator(self, rng: Any, x: Any) -> None:
        import jax

        if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
            if rng.shape != ():
                raise ValueError(
                    f"rng must be a single JAX key, got an array of keys of shape {rng.shape}: pass one key "
                    "per call (under jax.vmap, map over a batch of keys to give each example its own mask)"
                )
        elif rng.shape not in ((2,), (4,)):
            raise ValueError(
                f"rng is a uint32 JAX array of shape {rng.shape}, not a legacy key (jax.random.PRNGKey "
                "gives shape (2,)); pass jax.random.key(seed)"
            )

    def default(self, x: Any) -> Any:
        raise TypeError(
            "rng is required for JAX arrays when training with drop_prob > 0: JAX has no global random "
            "state. Pass a key, e.g. rng=jax.random.key(0), and split a new one for every step "
            "(key, sub = jax.random.split(key)); anydrop.flax.DropPath takes its keys from nnx.Rngs"
        )

    def seeded(self, seed: int, x: Any) -> Any:
        import jax

        # A constant even inside jax.jit: a module caching it must not keep a tracer.
        with jax.ensure_compile_time_eval():
            if seed < 2**31:
                return jax.random.key(seed)
            # jax.random.key keeps only 32 bits of a larger seed unless 64-bit mode is on; build
            # the key it makes in that mode, [seed >> 32, seed & 0xFFFFFFFF], in either mode.
            data = jax.numpy.asarray([seed >> 32, seed & 0xFFFFFFFF], dtype="uint32")
            return jax.random.wrap_key_data(data, impl="threefry2x32")

    def resolve(self, rng: object, x: Any, *, create: bool = True) -> Any:
        if isinstance(rng, PortableRNG):  # PortableRNG hook
            self._refuse_tracer(
                x,
                "drop_path with a PortableRNG needs a concrete JAX array, got a tracer (inside jax.jit, "
                "grad or vmap): the host-drawn mask would be baked into the trace",
            )
            return rng
        if isinstance(rng, _JaxKeys):
            # The stream of a DropPath layer given an int seed: it advances in Python, so a
            # traced call would replay one mask on every call of the compiled function.
            self._refuse_tracer(
                x,
                "a DropPath layer with an int rng needs a concrete JAX array, got a tracer (inside "
                "jax.jit, grad or vmap): its key stream advances in Python, and the trace would keep one "
                "mask for every call; use anydrop.flax.DropPath with nnx.Rngs, or pass a key to drop_path",
            )
            return rng
        if rng is None:
            return None  # the draw hooks refuse it: JAX has no default source
        if _is_seed(rng):
            seed = _seed(rng)
            return _JaxKeys(self.seeded(seed, x)) if create else None
        if self.is_generator(rng):
            self.check_generator(rng, x)
            return _JaxKeys(rng) if create else None
        raise TypeError(
            "rng must be None, a non-negative int seed, an anydrop.PortableRNG or a "
            f"{self.generator_names} for jax arrays, got an object of type {_type_name(rng)}"
        )

    @staticmethod
    def _refuse_tracer(x: Any, message: str) -> None:
        core = sys.modules.get("jax.core")
        tracer = getattr(core, "Tracer", None)
        if tracer is not None and isinstance(x, tracer):
            raise TypeError(message)

    def bernoulli(self, gen: Any, keep: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any) -> Any:  # noqa: PLR0917
        import jax

        if gen is None:
            gen = self.default(x)  # raises: there is no default key
        return jax.random.bernoulli(gen.next(), keep, shape).astype(dtype)

    def uniform(self, gen: Any, shape: tuple[int, ...], *, x: Any, xp: Any) -> Any:
        import jax

        if gen is None:
            gen = self.default(x)  # raises: there is no default key
        return jax.random.uniform(gen.next(), shape)


_GENERIC = RNGAdapter()
_NUMPY = NumPyRNG()
_TORCH = TorchRNG()
_CUPY = CuPyRNG()
_JAX = JaxRNG()
_DASK = DaskRNG()
#: Per array type: its namespace, its adapter and a per-dtype cache. Both depend
#: on the type alone, and looking them up once per type keeps the per-call
#: overhead of tiny arrays close to that of a hand-written torch function.
_BY_TYPE: dict[type, tuple[Any, RNGAdapter, dict[Any, _DtypeInfo]]] = {}


def adapter_for(x: Any) -> RNGAdapter:
    """Return the RNG adapter for ``x``'s array library (cached per type)."""
    return _backend(x)[1]


def _backend(x: Any) -> tuple[Any, RNGAdapter, dict[Any, _DtypeInfo]]:
    entry = _BY_TYPE.get(type(x))
    if entry is None:
        entry = _register(x)
    return entry


def _register(x: Any) -> tuple[Any, RNGAdapter, dict[Any, _DtypeInfo]]:
    try:
        xp = array_namespace(x)
    except TypeError:
        raise TypeError(
            "x must be an array of a supported array library (NumPy, PyTorch, CuPy "
            f"or another array API namespace), got an object of type {type(x).__name__}"
        ) from None
    adapter: RNGAdapter
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
    entry = _BY_TYPE[type(x)] = (xp, adapter, {})
    return entry


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
    if _JAX.is_generator(rng):
        # A layer would pass the one key on every call, and a key does not advance.
        raise TypeError(
            "rng must not be a JAX key for a DropPath layer: the layer would draw the same mask on "
            "every call. Use anydrop.flax.DropPath with nnx.Rngs, or an int seed outside jax.jit"
        )
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
    try:
        p = float(value)  # type: ignore[arg-type]
    except TypeError as exc:
        # A traced 0-d array (jax.jit, grad, vmap) has no value yet, and the checks
        # and the mask's shape below need one.
        raise TypeError(
            f"{name} must be a concrete number, got a {type(value).__name__} without a value "
            f"({type(exc).__name__}); inside jax.jit pass {name} as a static Python float "
            f"(static_argnames), not as a traced argument"
        ) from exc
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


class _DtypeInfo(NamedTuple):
    mask: Any  # the real dtype masks are made in
    eps: float  # > 0 for 16-bit floats, whose 1/keep needs an unbiased rounding
    max: float


def _dtype_info(xp: Any, cache: dict[Any, _DtypeInfo], dtype: Any) -> _DtypeInfo:
    """What drop_path needs to know of ``x``'s dtype; TypeError if it is unsupported."""
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
    info = cache[dtype] = _DtypeInfo(mask, eps, float(finfo.max))
    return info


_ONES = tuple((1,) * n for n in range(65))


def _prepare(
    x: Any, drop_prob: object, axis: object
) -> tuple[Any, RNGAdapter, _DtypeInfo, float, tuple[int, ...]]:
    """Validate the arguments shared by every entry point; return what drawing a mask needs."""
    xp, adapter, dtypes = _BY_TYPE.get(type(x)) or _register(x)
    # Fast paths first: a per-call cost of a few microseconds matters for tiny arrays.
    p = drop_prob if type(drop_prob) is float and 0.0 <= drop_prob <= 1.0 else check_drop_prob(drop_prob)
    info = dtypes.get(x.dtype) or _dtype_info(xp, dtypes, x.dtype)
    return xp, adapter, info, p, _mask_shape(x.shape, axis)


def _mask_shape(shape: tuple[int, ...], axis: object) -> tuple[int, ...]:
    if type(axis) is int and axis == 0 and shape:
        return (shape[0],) + _ONES[len(shape) - 1]
    axes = normalize_axis(axis, len(shape))
    return tuple(n if i in axes else 1 for i, n in enumerate(shape))


def _dither(keep: float, info: _DtypeInfo) -> tuple[float, float, float] | None:
    """How to round ``1 / keep`` to a 16-bit float without bias, or None if no rounding is needed.

    bfloat16 holds 1/0.9 as 1.109375, 0.16% low: scaling by it biases every
    kept sample the same way. Instead each sample's scale is ``lo`` or the next
    representable value ``lo + spacing``, the latter with probability ``frac``,
    so that the expected scale is exactly ``1 / keep``. Returns ``(lo,
    spacing, frac)``.
    """
    scale = 1.0 / keep
    _, exponent = math.frexp(scale)  # scale is in [2**(exponent-1), 2**exponent)
    spacing = info.eps * 2.0 ** (exponent - 1)
    lo = math.floor(scale / spacing) * spacing
    frac = (scale - lo) / spacing
    if frac == 0.0 or lo + spacing > info.max:
        # Exact in the dtype (keep = 0.5, ...), or the upper neighbour would be
        # inf: then 1/keep is rounded to nearest, as timm does.
        return None
    return lo, spacing, frac


def _scaled_mask(
    x: Any,
    keep: float,
    mask_shape: tuple[int, ...],
    *,
    xp: Any,
    adapter: RNGAdapter,
    info: _DtypeInfo,
    scale_by_keep: bool,
    rng: Any,
) -> Any:
    """The mask of ``mask_shape``: 0 for dropped samples, the scale (or 1) for kept ones."""
    if info.eps and scale_by_keep and keep > 0.0 and 1.0 / keep > info.max:
        # 16-bit floats only (float32 overflows for no keep a float64 p can give):
        # an inf scale would turn zeros into NaN.
        raise ValueError(
            f"drop_prob={1.0 - keep:.6g} is too close to 1 for {x.dtype}: the scale 1/keep = "
            f"{1.0 / keep:.6g} overflows {x.dtype} (max {info.max:g}); pass scale_by_keep=False "
            "or use a wider dtype"
        )
    gen = None if rng is None else adapter.resolve(rng, x)
    dither = _dither(keep, info) if info.eps and scale_by_keep and keep > 0.0 else None
    if dither is not None:
        lo, spacing, frac = dither
        # Both values are exact in the dtype, and so is every product below.
        if isinstance(gen, PortableRNG):  # PortableRNG hook
            # One uniform u per sample: kept when u < keep; given that, u / keep
            # is uniform, so u < keep * frac picks the upper value with probability frac.
            kept, upper = _portable_masks(gen, mask_shape, (keep, keep * frac), info.mask, x=x, xp=xp)
            return kept * lo + upper * spacing
        # Two independent draws: kept with probability keep, and the upper value
        # with probability frac. In place, so the mask costs two allocations:
        # on a large array each extra small one showed up in the timings.
        mask = adapter.bernoulli(gen, keep, mask_shape, info.mask, x, xp)
        upper = adapter.bernoulli(gen, frac, mask_shape, info.mask, x, xp)
        upper *= spacing
        upper += lo
        mask *= upper
        return mask
    # The same draw and division as timm, so torch.manual_seed reproduces its
    # masks bit for bit wherever the scale is exact or the dtype is 32/64-bit.
    if isinstance(gen, PortableRNG):  # PortableRNG hook
        (mask,) = _portable_masks(gen, mask_shape, (keep,), info.mask, x=x, xp=xp)
    else:
        mask = adapter.bernoulli(gen, keep, mask_shape, info.mask, x, xp)
    if scale_by_keep and keep > 0.0:
        # In place on our own small mask: scale it, not the big array.
        mask /= keep
    return mask


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
        device, ``cupy.random.Generator``), which advances, or an
        :class:`anydrop.PortableRNG` for the same masks on every library. For
        Dask arrays a seed, a ``numpy.random.Generator`` or None keys a lazy
        mask chunked like x (see ``DaskRNG``). For JAX arrays: a PRNG key
        (``jax.random.key`` or a legacy ``jax.random.PRNGKey``), used as given,
        so split a new one per step; an int seed ``s`` is ``jax.random.key(s)``.
        JAX has no default source: ``None`` is a ``TypeError`` when training
        with ``drop_prob > 0``.

    Under ``jax.jit``, ``x`` and the key may be traced, but ``drop_prob``,
    ``training``, ``scale_by_keep`` and ``axis`` must be static Python values
    (a traced ``drop_prob`` or ``training`` is a ``TypeError``); ``jax.grad``
    and ``jax.vmap`` work too.

    Returns
    -------
    An array of the namespace, device, shape and dtype of ``x``; ``x`` itself
    when ``training`` is false or ``drop_prob == 0``. ``x`` is never modified.

    Raises
    ------
    TypeError
        ``x`` is not a floating-point array of a supported library, or
        ``drop_prob``, ``axis`` or ``rng`` has a wrong type, or a JAX ``x`` is
        trained without a key.
    ValueError
        ``drop_prob`` is outside [0, 1] or NaN, ``axis`` is out of range or
        repeated, an int ``rng`` is negative, a generator is on another device,
        ``1 / (1 - drop_prob)`` overflows x's 16-bit dtype, or a Dask ``x``
        has unknown chunk sizes along a drop axis.

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
    # _prepare, inlined with its fast paths: on a tiny tensor each Python call
    # costs a few percent of the whole, and timm's drop_path has none.
    xp, adapter, dtypes = _BY_TYPE.get(type(x)) or _register(x)
    p = drop_prob if type(drop_prob) is float and 0.0 <= drop_prob <= 1.0 else check_drop_prob(drop_prob)
    info = dtypes.get(x.dtype) or _dtype_info(xp, dtypes, x.dtype)  # type: ignore[attr-defined]
    shape = x.shape  # type: ignore[attr-defined]
    if type(axis) is int and axis == 0 and shape:
        # Concatenation: fewer bytecodes than unpacking into a tuple.
        mask_shape = (shape[0],) + _ONES[len(shape) - 1]
    else:
        mask_shape = _mask_shape(shape, axis)
    # _is_identity, inlined: one call less per call.
    try:
        identity = not training or p == 0.0
    except TypeError:
        identity = _is_identity(training, p)  # raises the error that says what to do
    if identity:
        adapter.check(rng, x)
        return x
    keep = 1.0 - p
    if info.eps and scale_by_keep:
        mask = _scaled_mask(
            x, keep, mask_shape, xp=xp, adapter=adapter, info=info, scale_by_keep=scale_by_keep, rng=rng
        )
    else:
        # _scaled_mask's common case, inlined: a function call is a tenth of
        # the whole cost of a call on a tiny tensor.
        gen = None if rng is None else adapter.resolve(rng, x)
        if rng is not None and isinstance(gen, PortableRNG):  # PortableRNG hook
            (mask,) = _portable_masks(gen, mask_shape, (keep,), info.mask, x=x, xp=xp)
        else:
            mask = adapter.bernoulli(gen, keep, mask_shape, info.mask, x, xp)
        if scale_by_keep and keep > 0.0:
            mask /= keep
    if keep == 0.0:
        # The mask above is all zeros, but drawing it advances the generator as
        # timm does. Select, not multiply: 0 * inf would be NaN. Stays in the autograd graph.
        return xp.where(mask > 0, x, 0)  # type: ignore[no-any-return]
    return adapter.multiply(x, mask)  # type: ignore[no-any-return]


def _is_identity(training: object, p: float) -> bool:
    """Whether nothing is dropped; drop_path inlines this, the other entry points call it."""
    try:
        return not training or p == 0.0
    except TypeError as exc:  # a traced flag (jax.jit): free on the common path
        raise TypeError(
            f"training must be a Python bool, got a {type(training).__name__} without a concrete value; "
            "inside jax.jit pass training as a static argument (static_argnames), not as a traced one"
        ) from exc


def _same_namespace(x: Any, other: Any, name: str) -> None:
    if type(other) is not type(x):
        try:
            array_namespace(x, other)
        except TypeError:
            raise TypeError(
                f"{name} must be an array of the same array library as x, got an object of type "
                f"{type(other).__name__} for x of type {type(x).__name__}"
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
    drop_prob, training, scale_by_keep, axis, rng
        As in :func:`drop_path`; ``axis`` refers to ``branch``'s axes.

    Returns
    -------
    A new array ``x + mask * branch``; ``x + branch`` when ``training`` is
    false or ``drop_prob == 0``. Neither input is modified. Differentiable in
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
    xp, adapter, info, p, mask_shape = _prepare(branch, drop_prob, axis)
    _same_namespace(branch, x, "x")
    if _is_identity(training, p):
        adapter.check(rng, branch)
        return x + branch  # type: ignore[operator, no-any-return]
    keep = 1.0 - p
    mask = _scaled_mask(
        branch, keep, mask_shape, xp=xp, adapter=adapter, info=info, scale_by_keep=scale_by_keep, rng=rng
    )
    if keep == 0.0:
        # Select, not multiply, as in drop_path: an inf or NaN branch adds exact zeros.
        return x + xp.where(mask > 0, branch, 0)  # type: ignore[no-any-return]
    return adapter.add_product(x, branch, mask)  # type: ignore[no-any-return]


def _kept_count(n: int, keep: float) -> int:
    return min(n, max(1, round(n * keep)))


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

    Returns
    -------
    A new array; ``x + fn(x)`` when ``training`` is false or ``drop_prob == 0``;
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
    if not callable(fn):
        raise TypeError(f"fn must be callable, got an object of type {type(fn).__name__}")
    axis_arg: object = axis
    if isinstance(axis_arg, bool) or not isinstance(axis_arg, numbers.Integral):
        raise TypeError(f"axis must be an int for drop_path_residual, got {axis!r}")
    xp, adapter, info, p, mask_shape = _prepare(x, drop_prob, axis)
    if _is_identity(training, p):
        adapter.check(rng, x)
        return x + fn(x)  # type: ignore[operator, no-any-return]
    keep = 1.0 - p
    shape = x.shape  # type: ignore[attr-defined]
    ax = int(axis) % len(shape)
    n = shape[ax]
    if keep == 0.0 or n == 0:
        # Draw as drop_path does, so that the generator advances the same way.
        _scaled_mask(
            x, keep, mask_shape, xp=xp, adapter=adapter, info=info, scale_by_keep=scale_by_keep, rng=rng
        )
        return x
    if adapter.residual_refusal is not None:
        raise TypeError(adapter.residual_refusal)
    idx, position, scales = _residual_selection(
        x,
        keep,
        n,
        xp=xp,
        adapter=adapter,
        info=info,
        scale_by_keep=scale_by_keep,
        rng=rng,
        fixed_size=fixed_size,
    )
    branch_in = xp.take(x, idx, axis=ax)
    y: Any = fn(branch_in)
    if getattr(y, "shape", None) != branch_in.shape:
        raise ValueError(
            f"fn must return an array of its input's shape {tuple(branch_in.shape)}, "
            f"got {getattr(y, 'shape', type(y).__name__)}"
        )
    if isinstance(scales, float):
        scaled = y * scales if scales != 1.0 else y
    else:
        scaled = y * xp.reshape(scales, (-1, *_ONES[len(shape) - 1 - ax]))
    # Put the k results back in place with a gather rather than a scatter:
    # `position` is, per sample, 0 if dropped and r + 1 for the r-th kept one,
    # and row 0 of `padded` is zeros. take() is in the standard, keeps static
    # shapes for fixed_size, and its gradient is the backend's scatter-add;
    # integer-array setitem is neither standard nor static-shaped.
    # zeros_like of a slice rather than zeros(..., device=device(x)): no device
    # lookup, which torch.compile would trace through array-api-compat.
    zero = xp.zeros_like(xp.take(x, xp.zeros_like(position[:1]), axis=ax), dtype=scaled.dtype)
    padded = xp.concat((zero, scaled), axis=ax)
    return x + xp.take(padded, position, axis=ax)  # type: ignore[no-any-return]


def _residual_selection(
    x: Any,
    keep: float,
    n: int,
    *,
    xp: Any,
    adapter: RNGAdapter,
    info: _DtypeInfo,
    scale_by_keep: bool,
    rng: Any,
    fixed_size: bool,
) -> tuple[Any, Any, Any]:
    """Which samples drop_path_residual keeps: their indices, each sample's place among them, the scales.

    ``position`` is, per sample, 0 if dropped and r + 1 for the r-th kept one;
    ``scales`` a float or one value per kept sample.
    """
    if fixed_size:
        k = _kept_count(n, keep)
        gen = None if rng is None else adapter.resolve(rng, x)
        # A uniformly random k-subset, from sorting uniforms: argsort is in the
        # standard and has static shapes, unlike a Bernoulli mask.
        order = xp.argsort(_uniform(adapter, gen, (n,), x=x, xp=xp))
        idx = order[:k]
        # Sample order[j] is the j-th kept one; argsort(order) inverts the permutation.
        rank = xp.argsort(order)
        position = xp.where(rank < k, rank + 1, xp.zeros_like(rank))
        scale = n / k if scale_by_keep else 1.0
        scales = _fixed_scales(x, scale, k, xp=xp, adapter=adapter, info=info, gen=gen)
    else:
        mask = _scaled_mask(
            x, keep, (n,), xp=xp, adapter=adapter, info=info, scale_by_keep=scale_by_keep, rng=rng
        )
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


def _uniform(adapter: RNGAdapter, gen: Any, shape: tuple[int, ...], *, x: Any, xp: Any) -> Any:
    """Uniform [0, 1) floats from the backend's generator or from a PortableRNG."""
    if isinstance(gen, PortableRNG):  # PortableRNG hook
        ints, np = gen._uniform_ints(math.prod(shape))
        host = [k * 2.0**-_UNIFORM_BITS for k in (ints.tolist() if np is not None else ints)]
        return xp.reshape(xp.asarray(host, device=device(x)), shape)
    return adapter.uniform(gen, shape, x=x, xp=xp)


def _fixed_scales(
    x: Any, scale: float, k: int, *, xp: Any, adapter: RNGAdapter, info: _DtypeInfo, gen: Any
) -> Any:
    """Scales ``n / k`` for the fixed-size residual: a float, or k values that average to it."""
    dither = _dither(1.0 / scale, info) if info.eps and scale != 1.0 else None
    if dither is None:
        return scale
    lo, spacing, frac = dither
    u = _uniform(adapter, gen, (k,), x=x, xp=xp)
    # All k samples are kept: the upper value is taken with probability frac.
    upper = xp.astype(u < frac, info.mask)
    return upper * spacing + lo


# --- PortableRNG: masks that are bit-identical on every array library ---
#
# Apart from the adapters on purpose: it draws the same way for every backend,
# on the host, and meets the rest of this module only in the hooks marked
# "PortableRNG hook" (RNGAdapter.resolve, RNGAdapter.portable_masks, which
# DaskRNG overrides to build the masks lazily, JaxRNG, check_rng_type and the
# mask draw in drop_path).

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
    return _splitmix64_at(np.uint64, state, start, np.arange(n, dtype=np.uint64))


def _splitmix64_at(u64: Any, state: int, start: int, z: Any) -> Any:
    """Values ``start + z`` of the stream, for an array ``z`` of uint64 offsets (consumed).

    NumPy's, or any array whose uint64 arithmetic wraps as NumPy's does (Dask's,
    which has no in-place operators: each line then makes a new lazy array).
    """
    # uint64 array arithmetic wraps modulo 2**64, which is the definition.
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
    # u < p  <=>  k < p * 2**53  <=>  k < ceil(p * 2**53), exactly, for integer k.
    thresholds = [math.ceil(p * 2.0**_UNIFORM_BITS) for p in probs]
    built = _BY_TYPE[type(x)][1].portable_masks(rng, shape, thresholds, dtype, x)
    if built is not None:  # a lazy backend builds them from the stream's positions
        return built
    n = math.prod(shape)
    ints, np = rng._uniform_ints(n)
    dev = device(x)
    if np is not None:
        host = [(ints < np.uint64(t)).reshape(shape) for t in thresholds]
        return [xp.astype(xp.asarray(h, device=dev), dtype) for h in host]
    return [
        xp.astype(xp.reshape(xp.asarray([k < t for k in ints], dtype=xp.bool, device=dev), shape), dtype)
        for t in thresholds
    ]

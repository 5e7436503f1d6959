"""Random-number adapters: the only per-backend code in anydrop.

The array API standard has no random module, so each array library gets a small
adapter that turns the user's ``rng`` argument into a generator of that library
and draws a Bernoulli mask with it on ``x``'s device. Adapters are picked from
the array's type without importing any framework that is not already loaded
(``array_api_compat.is_*_array`` only looks at ``sys.modules``).

``rng`` follows SPEC 7: ``None`` (the backend's default source), a non-negative
``int`` seed, or a generator object of the backend.
"""

from __future__ import annotations

import numbers
import os
import sys
from typing import Any

from array_api_compat import (
    device,
    is_cupy_array,
    is_dask_array,
    is_jax_array,
    is_numpy_array,
    is_torch_array,
)

__all__ = ["RNGAdapter", "adapter_for", "check_rng_type"]

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

# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""One backend object per array library, and the lookup from an array's type to its backend.

The lookup uses array-api-compat's ``is_*_array`` helpers, which only look at
``sys.modules``: no framework that is not already loaded gets imported.
"""

from __future__ import annotations

from typing import Any

from .._checks import DtypeInfo, check_seed, is_integer, type_name
from .._compat import (
    array_namespace,
    is_cupy_array,
    is_dask_array,
    is_jax_array,
    is_numpy_array,
    is_torch_array,
)
from .._portable import PortableRNG
from ._base import Backend
from .cupy import CuPyBackend
from .dask import DaskBackend
from .dtensor import DTensorBackend, is_dtensor
from .generic import HostBackend
from .jax import JaxBackend
from .numpy import NumPyBackend
from .torch import TorchBackend

__all__ = ["BY_TYPE", "Backend", "Deferred", "backend_for", "check_layer_rng", "lookup", "register"]

NUMPY = NumPyBackend()
TORCH = TorchBackend()
DTENSOR = DTensorBackend()
CUPY = CuPyBackend()
JAX = JaxBackend()
DASK = DaskBackend()
GENERIC = HostBackend()

#: Per array type: its namespace, its backend and a per-dtype cache. All three
#: depend on the type alone; looking them up once per type keeps the per-call
#: cost of a tiny array close to that of a hand-written torch function.
BY_TYPE: dict[type, tuple[Any, Backend, dict[Any, DtypeInfo]]] = {}


class Deferred(TypeError):
    """register's error for a tracer's stand-in for an array: the entry point records the call instead."""

    def __init__(self, backend: Backend, message: str) -> None:
        super().__init__(message)
        self.backend = backend


def register(x: Any) -> tuple[Any, Backend, dict[Any, DtypeInfo]]:
    """Find and cache the namespace and backend of ``x``'s type; TypeError if it is no array.

    The TypeError is a :class:`Deferred` if a backend records calls on ``x`` in a trace.
    """
    message = (
        "x must be an array of a supported array library (NumPy, PyTorch, CuPy "
        f"or another array API namespace), got an object of type {type(x).__name__}"
    )
    # torch first, without array-api-compat's cached type checks: a first call
    # inside torch.compile would have dynamo trace them, with a warning each.
    entry: tuple[Any, Backend, dict[Any, DtypeInfo]]
    xp = TORCH.namespace_for(x)
    if xp is not None:
        entry = BY_TYPE[type(x)] = (xp, DTENSOR if is_dtensor(x) else TORCH, {})
        return entry
    # Before array_namespace, which would record its own probing in the trace.
    if TORCH.defers(x):
        raise Deferred(TORCH, message)
    try:
        xp = array_namespace(x)
    except TypeError:
        raise TypeError(message) from None
    backend: Backend
    if is_torch_array(x):
        backend = TORCH
    elif is_cupy_array(x):
        backend = CUPY
    elif is_jax_array(x):
        backend = JAX
    elif is_dask_array(x):
        backend = DASK
    elif is_numpy_array(x):
        backend = NUMPY
    else:
        backend = GENERIC
    entry = BY_TYPE[type(x)] = (xp, backend, {})  # pyright: ignore[reportUnknownArgumentType]
    return entry


def lookup(x: Any) -> tuple[Any, Backend, dict[Any, DtypeInfo]]:
    """The namespace, backend and dtype cache of ``x``'s type (cached per type)."""
    entry = BY_TYPE.get(type(x))  # pyright: ignore[reportUnknownArgumentType]
    return entry if entry is not None else register(x)


def backend_for(x: Any) -> Backend:
    """The backend of ``x``'s array library."""
    return lookup(x)[1]


def check_layer_rng(rng: object) -> None:
    """Check a layer's ``rng`` before the array library is known (at construction)."""
    if rng is None or isinstance(rng, PortableRNG):
        return
    if is_integer(rng):
        check_seed(rng)
        return
    if any(b.is_generator(rng) for b in (NUMPY, TORCH, CUPY)):
        return
    if JAX.is_generator(rng):
        # A layer would pass the one key on every call, and a key does not advance.
        raise TypeError(
            "rng must not be a JAX key for a DropPath layer: the layer would draw the same mask on "
            "every call. Use anydrop.flax.DropPath with nnx.Rngs, or an int seed outside jax.jit"
        )
    raise TypeError(
        "rng must be None, a non-negative int seed, an anydrop.PortableRNG, or a numpy.random.Generator, "
        f"torch.Generator or cupy.random.Generator, got an object of type {type_name(rng)}"
    )

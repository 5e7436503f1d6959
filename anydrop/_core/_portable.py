# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""PortableRNG: a written-down SplitMix64 stream that gives the same masks on every array library.

The stream is computed on the host, with NumPy's wrapping uint64 arithmetic
when NumPy is installed and in pure Python otherwise; the comparisons that turn
it into masks are exact integer ones, so no library's float rounding enters.
``_sources.PortableSource`` moves the masks to x's device; the Dask backend
builds them lazily from the stream's positions.
"""

# take_stretch is this module's accessor of PortableRNG's private state.
# pyright: reportPrivateUsage=false
from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from ._checks import MAX_SEED, check_count

__all__ = [
    "SPLITMIX64",
    "UNIFORM_BITS",
    "PortableRNG",
    "attach_counter",
    "counted_stretch",
    "mix64",
    "splitmix64_at",
    "splitmix64_numpy",
    "splitmix64_python",
    "stream_value",
    "take_stretch",
    "take_uniform_ints",
    "thresholds",
]

_MASK64 = 2**64 - 1
_GOLDEN_GAMMA = 0x9E3779B97F4A7C15
_MIX_1 = 0xBF58476D1CE4E5B9
_MIX_2 = 0x94D049BB133111EB
#: SplitMix64's constants: the stream's increment (gamma) and the two multipliers of mix64.
SPLITMIX64 = (_GOLDEN_GAMMA, _MIX_1, _MIX_2)
#: A uniform is the top 53 bits of a 64-bit value: exactly the doubles k * 2**-53 in [0, 1).
UNIFORM_BITS = 53


def mix64(z: int) -> int:
    """SplitMix64's output function: a bijection of 64-bit ints; an input bit flips about half the output."""
    z = ((z ^ (z >> 30)) * _MIX_1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX_2) & _MASK64
    return z ^ (z >> 31)


def splitmix64_python(state: int, start: int, n: int) -> list[int]:
    """Values ``start .. start + n - 1`` of the SplitMix64 stream from ``state``, in pure Python.

    Value k is ``mix64(state + (k + 1) * gamma mod 2**64)``: any stretch of the
    stream can be computed without the ones before it.
    """
    first = state + (start + 1) * _GOLDEN_GAMMA
    return [mix64((first + i * _GOLDEN_GAMMA) & _MASK64) for i in range(n)]


def splitmix64_numpy(np: Any, state: int, start: int, n: int) -> Any:
    """The same values as :func:`splitmix64_python`, as a NumPy uint64 array."""
    return splitmix64_at(np.uint64, state, start, np.arange(n, dtype=np.uint64))


def splitmix64_at(u64: Any, state: int, start: int, z: Any) -> Any:
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


def stream_value(seed: int, k: int) -> int:
    """Value ``k`` of the stream of ``PortableRNG(seed)``, as a 64-bit int (per-step seeds)."""
    return mix64((mix64(seed) + (k + 1) * _GOLDEN_GAMMA) & _MASK64)


def thresholds(probs: tuple[float, ...]) -> list[int]:
    """Integer thresholds for ``u < p``: ``k < ceil(p * 2**53)`` exactly, for each p, where u = k * 2**-53."""
    return [math.ceil(p * 2.0**UNIFORM_BITS) for p in probs]


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
    generator is faster in training; PortableRNG is for checking. Inside a
    ``torch.compile`` graph the same values are computed on x's device, with
    no transfer.

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
        self.__setstate__({"seed": seed, "position": position})

    @property
    def seed(self) -> int:
        """The seed the stream was started from."""
        return self._seed

    @property
    def position(self) -> int:
        """How many values of the stream have been used, one per sample drawn."""
        counter = self._counter
        return self._position if counter is None else int(counter)

    def __repr__(self) -> str:
        return f"PortableRNG(seed={self._seed}, position={self.position})"

    def __copy__(self) -> PortableRNG:
        clone = PortableRNG(self._seed, position=self.position)
        counter = self._counter
        if counter is not None:
            # A counter of its own, at the same position: a copied model compiles as the original.
            clone._counter = counter + 0
        return clone

    def __deepcopy__(self, memo: dict[int, Any]) -> PortableRNG:
        return self.__copy__()

    def __getstate__(self) -> dict[str, int]:
        return {"seed": self._seed, "position": self.position}

    def __setstate__(self, state: dict[str, int]) -> None:
        self._seed = check_count(state["seed"], "seed", MAX_SEED)
        self._position = check_count(state["position"], "position")
        self._state = mix64(self._seed)
        # Drawing reserves a stretch of the stream under this lock, so threads
        # sharing one PortableRNG never reuse values. A lock cannot be pickled:
        # a copy gets its own.
        self._lock = threading.Lock()
        # Once set, a 0-d int64 array that holds the position in place of
        # _position: a backend whose traced graphs draw from the stream
        # (torch.compile) advances it in place, where a Python int would be a
        # constant of the graph, compiled anew for each value.
        self._counter: Any = None


def take_stretch(rng: PortableRNG, n: int) -> tuple[int, int]:
    """Reserve the next ``n`` values of ``rng``'s stream; return the stream's state and the first position."""
    with rng._lock:
        counter = rng._counter
        if counter is None:
            start = rng._position
            rng._position = start + n
        else:
            start = int(counter)
            rng._counter = counter + n  # a new array: see counted_stretch
    return rng._state, start


def attach_counter(rng: PortableRNG, make_counter: Callable[[int], Any]) -> None:
    """Move ``rng``'s position into a 0-d int64 array made by ``make_counter(position)``, if not yet done.

    Done eagerly, before a traced graph draws: a graph then reads the position
    from an input array rather than making it from a constant.
    """
    if rng._counter is not None:
        return
    with rng._lock:
        if rng._counter is None:
            rng._counter = make_counter(rng._position)


def counted_stretch(rng: PortableRNG, n: Any, make_counter: Callable[[int], Any]) -> tuple[int, Any]:
    """Reserve the next ``n`` values inside a traced graph; return the stream's state and the first position.

    The position moves into a 0-d int64 array, made by ``make_counter(position)``
    on first use. The first position comes back as that array, and the rng
    gets a new one: no counter is changed in place, so a graph that saved one
    for its backward pass (to recompute a mask there) reads the value it drew
    from. No lock: a graph cannot take one.
    """
    counter = rng._counter
    if counter is None:
        counter = make_counter(rng._position)
    rng._counter = counter + n
    return rng._state, counter


def take_uniform_ints(rng: PortableRNG, n: int) -> tuple[Any, Any]:
    """The next ``n`` 53-bit uniforms as ints ``k`` (u = k * 2**-53), and the NumPy used, or None.

    With NumPy they are a uint64 array, without it a list of ints.
    """
    state, start = take_stretch(rng, n)
    np = _host_numpy()
    if np is None:
        return [v >> (64 - UNIFORM_BITS) for v in splitmix64_python(state, start, n)], None
    return splitmix64_numpy(np, state, start, n) >> np.uint64(64 - UNIFORM_BITS), np

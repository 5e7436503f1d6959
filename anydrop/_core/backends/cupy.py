# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""CuPy: masks drawn on x's GPU with ``cupy.random``."""

from __future__ import annotations

import sys
from typing import Any

from .._sources import MaskSource
from ._base import Backend

__all__ = ["CuPyBackend", "CuPyGenerator"]


class CuPyGenerator(MaskSource):
    """A ``cupy.random.Generator``, or None for ``cupy.random``'s global state (``cupy.random.seed``)."""

    __slots__ = ("gen",)

    def __init__(self, gen: Any) -> None:
        self.gen = gen

    def uniform(self, shape: tuple[int, ...], x: Any, xp: Any) -> Any:
        import cupy

        with x.device:
            return cupy.random.random(shape) if self.gen is None else self.gen.random(shape)

    def bernoulli(self, keep: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any) -> Any:
        with x.device:
            return (self.uniform(shape, x, xp) < keep).astype(dtype)


class CuPyBackend(Backend):
    """CuPy arrays."""

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

    def generator_source(self, gen: Any) -> MaskSource:
        return CuPyGenerator(gen)

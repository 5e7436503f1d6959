# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""PyTorch: masks drawn on x's device with ``bernoulli_``, as timm draws them; a fused ``addcmul``."""

from __future__ import annotations

import sys
from typing import Any

from .._sources import MaskSource
from ._base import Backend

__all__ = ["TorchBackend", "TorchGenerator", "devices_match"]


def devices_match(a: Any, b: Any) -> bool:
    """Whether torch devices ``a`` and ``b`` are the same, an unspecified index matching any."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


class TorchGenerator(MaskSource):
    """A ``torch.Generator``, or None for the device's global generator (``torch.manual_seed``)."""

    __slots__ = ("gen",)

    def __init__(self, gen: Any) -> None:
        self.gen = gen

    def bernoulli(self, keep: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any) -> Any:
        # new_empty, as timm does: same device, one op. Keyword arguments cost a
        # few tenths of a microsecond per call in torch's binding: pass only those needed.
        # gen None: the device's global generator, exactly as timm draws, so
        # torch.manual_seed reproduces timm's masks.
        mask = x.new_empty(shape) if dtype is x.dtype else x.new_empty(shape, dtype=dtype)
        gen = self.gen
        return mask.bernoulli_(keep) if gen is None else mask.bernoulli_(keep, generator=gen)

    def uniform(self, shape: tuple[int, ...], x: Any, xp: Any) -> Any:
        import torch

        # float32 rather than float64: every device type has it.
        return x.new_empty(shape, dtype=torch.float32).uniform_(0.0, 1.0, generator=self.gen)


class TorchBackend(Backend):
    """PyTorch tensors, on any device."""

    name = "torch"
    generator_names = "torch.Generator on x's device"

    def is_generator(self, rng: object) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(rng, torch.Generator)

    def check_generator(self, rng: Any, x: Any) -> None:
        if not devices_match(rng.device, x.device):
            raise ValueError(
                f"rng is a torch.Generator on device {rng.device}, but x is on device {x.device}"
            )

    def seeded(self, seed: int, x: Any) -> Any:
        import torch

        if x.device.type == "meta":
            return None  # meta tensors hold no data and have no generator
        return torch.Generator(device=x.device).manual_seed(seed)

    def generator_source(self, gen: Any) -> MaskSource:
        return TorchGenerator(gen)

    def add_product(self, x: Any, branch: Any, mask: Any) -> Any:
        import torch

        # One fused pass: reads x and branch once and writes the output once.
        return torch.addcmul(x, branch, mask)

# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""PyTorch: masks drawn on x's device with ``bernoulli_``, as timm draws them; a fused ``addcmul``."""

from __future__ import annotations

import sys
from typing import Any

from .._compat import torch_namespace
from .._portable import PortableRNG, mix64
from .._sources import MaskSource, PortableSource
from ._base import Backend

__all__ = ["TorchBackend", "TorchGenerator", "devices_match", "in_backward", "prepare_for_compile"]


def devices_match(a: Any, b: Any) -> bool:
    """Whether torch devices ``a`` and ``b`` are the same, an unspecified index matching any."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def in_backward() -> bool:
    """Whether torch's autograd engine is running a backward pass in this thread (eagerly, not compiling).

    Activation checkpointing recomputes a forward there, after restoring only
    torch's global generators.
    """
    import torch

    if torch.compiler.is_compiling():
        return False
    graph_task: int = torch._C._current_graph_task_id()  # pyright: ignore[reportPrivateUsage]
    return graph_task != -1


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

    def unbiased(  # noqa: PLR0917
        self,
        keep: float,
        rounding: tuple[float, float, float],
        shape: tuple[int, ...],
        dtype: Any,
        x: Any,
        xp: Any,
    ) -> Any:
        # One uniform u per sample picks among the three values: lo + spacing
        # when u < keep * frac, lo when u < keep, else 0. That is one draw and
        # two small ops (bucketize, take) where two Bernoulli masks cost four
        # more, on a tiny tensor most of the call. u is float64, compared
        # exactly, as a Bernoulli draw with a float probability is.
        table = _TABLES.get((keep, dtype, x.device))
        if table is None:
            if x.device.type not in {"cpu", "cuda"}:  # float64 may be missing (mps), or no data (meta)
                return MaskSource.unbiased(self, keep, rounding, shape, dtype, x, xp)
            table = _one_draw_table(keep, rounding, dtype, x.device)
        bounds, values, bucketize, float64 = table
        u = x.new_empty(shape, dtype=float64)
        gen = self.gen
        u = u.uniform_() if gen is None else u.uniform_(generator=gen)
        return values.take(bucketize(u, bounds, right=True))


# (keep, dtype, device) -> (bounds, values, torch.bucketize, torch.float64) of TorchGenerator.unbiased.
_TABLES: dict[tuple[float, Any, Any], tuple[Any, Any, Any, Any]] = {}
_MAX_TABLES = 256


def _one_draw_table(
    keep: float, rounding: tuple[float, float, float], dtype: Any, dev: Any
) -> tuple[Any, Any, Any, Any]:
    """The bucket bounds and values of a 16-bit mask's one draw, cached unless torch.compile is tracing."""
    import torch

    lo, spacing, frac = rounding
    bounds = torch.tensor([keep * frac, keep], dtype=torch.float64, device=dev)
    values = torch.tensor([lo + spacing, lo, 0.0], dtype=dtype, device=dev)
    table = (bounds, values, torch.bucketize, torch.float64)
    if not torch.compiler.is_compiling():
        if len(_TABLES) >= _MAX_TABLES:  # drop_prob can follow a schedule: keep the cache bounded
            _TABLES.clear()
        _TABLES[keep, dtype, dev] = table
    return table


_EAGER_PORTABLE: list[type[PortableSource]] = []


def eager_portable_source() -> type[PortableSource]:
    """PortableSource whose draws run outside torch.compile's graphs (made once torch is imported).

    The stream is host-side integer arithmetic on a Python object that each
    draw advances; dynamo cannot trace it, so a compiled function runs the
    draw eagerly between graphs and gets the eager masks bit for bit.
    """
    if not _EAGER_PORTABLE:
        import torch

        def eager(fn: Any) -> Any:
            reason = (
                "anydrop.PortableRNG draws its masks on the host, between graphs: compile with "
                "fullgraph=False, or use rng=None (torch's generators) for one graph"
            )
            disable: Any = torch.compiler.disable  # pyright: ignore[reportUnknownVariableType, reportUnknownMemberType]
            try:
                return disable(fn, reason=reason)
            except TypeError:  # older torch takes no reason
                return disable(fn)

        class EagerPortableSource(PortableSource):
            __slots__ = ()
            bernoulli = eager(PortableSource.bernoulli)
            bernoulli_pair = eager(PortableSource.bernoulli_pair)
            uniform = eager(PortableSource.uniform)

        _EAGER_PORTABLE.append(EagerPortableSource)
    return _EAGER_PORTABLE[0]


def prepare_for_compile() -> None:
    """Make, eagerly, what a compiled PortableRNG draw needs, once torch.compile's dynamo is loaded.

    Dynamo cannot trace a class definition: made inside a trace, the class
    costs a graph break (an error under ``fullgraph=True``). Not before dynamo
    is loaded, since ``torch.compiler.disable`` imports it, which takes seconds.
    """
    if not _EAGER_PORTABLE and "torch._dynamo" in sys.modules:
        eager_portable_source()


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

    def source(self, rng: object, x: Any) -> MaskSource:
        if (isinstance(rng, PortableRNG) or self.is_generator(rng)) and in_backward():
            raise RuntimeError(
                f"drop path was called with rng={type(rng).__name__} inside a backward pass, as "
                "torch.utils.checkpoint does when it recomputes a forward: the generator has "
                "advanced since the forward, so the recomputed mask, and the gradient, would "
                "belong to another draw. Use anydrop.torch.DropPath (it replays its draw under "
                "checkpointing), an int seed (the same mask on every call), or rng=None "
                "(torch's global generator, which checkpointing restores)"
            )
        return super().source(rng, x)

    def keep_for(self, drop_prob: object, keep: float, source: MaskSource) -> Any:
        torch = sys.modules["torch"]
        if isinstance(drop_prob, torch.Tensor) and type(source) is TorchGenerator:
            # timm passes 1 - drop_prob to bernoulli_ and div_ as a tensor, and
            # bernoulli_ draws differently for a tensor probability than for a float.
            tensor: Any = drop_prob
            return 1 - tensor
        return keep

    def namespace_for(self, x: object) -> Any:
        """array-api-compat's torch namespace if ``x`` is a tensor, else None, without array_namespace."""
        torch = sys.modules.get("torch")
        return torch_namespace() if torch is not None and isinstance(x, torch.Tensor) else None

    def device_name(self, x: Any) -> str:
        # x.device, not array-api-compat's device(): its cached type checks
        # would be traced, with a warning, inside torch.compile.
        return str(x.device)

    def defers(self, x: object) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and torch.overrides.has_torch_function((x,))

    def defer(self, fn: Any, arrays: tuple[Any, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        import torch

        # __torch_function__: a torch.fx.Proxy records the call as one node of its graph.
        return torch.overrides.handle_torch_function(fn, arrays, *args, **kwargs)

    def seeded(self, seed: int, x: Any) -> Any:
        import torch

        if x.device.type == "meta":
            return None  # meta tensors hold no data and have no generator
        if seed >> 32 and x.device.type == "cpu":
            # A CPU generator (mt19937) keeps the low 32 bits of its seed only,
            # so 5 and 2**32 + 5 would draw the same masks: seeds above 32 bits
            # go through SplitMix64's mixer instead.
            seed = mix64(seed) & 0xFFFFFFFF
        return torch.Generator(device=x.device).manual_seed(seed)

    def generator_source(self, gen: Any) -> MaskSource:
        return TorchGenerator(gen)

    def portable_source(self, rng: PortableRNG, x: Any) -> MaskSource:
        import torch

        if torch.compiler.is_compiling():
            return eager_portable_source()(rng)
        prepare_for_compile()
        return PortableSource(rng)

    def add_product(self, x: Any, branch: Any, mask: Any) -> Any:
        import torch

        # One fused pass: reads x and branch once and writes the output once.
        return torch.addcmul(x, branch, mask)

# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""PyTorch: masks drawn on x's device with ``bernoulli_``, as timm draws them; a fused ``addcmul``."""

from __future__ import annotations

import math
import sys
from typing import Any

from .._compat import torch_namespace
from .._limbs import stream_uniform_ints
from .._portable import UNIFORM_BITS, PortableRNG, attach_counter, counted_stretch, mix64
from .._sources import MaskSource, PortableSource
from ._base import Backend

__all__ = [
    "GraphOneDraw",
    "GraphPortableSource",
    "TorchBackend",
    "TorchGenerator",
    "break_for_generator",
    "devices_match",
    "in_backward",
    "one_draw_table",
    "prepare_portable",
]


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


def break_for_generator(seeded: bool) -> None:
    """Under torch.compile, break the graph before a ``torch.Generator`` is used, saying why and what to do.

    Dynamo cannot put a generator in a graph: a function's draw runs eagerly
    between graphs, and ``fullgraph=True`` fails with this message rather than
    with dynamo's own about a missing proxy or a lock. (The anydrop.torch layers
    draw from theirs in the graph, through custom operators.)
    """
    import torch

    if torch.compiler.is_compiling():
        kind = "an int seed (a torch.Generator)" if seeded else "a torch.Generator"
        torch._dynamo.graph_break(  # pyright: ignore[reportPrivateUsage, reportUnknownMemberType]
            msg=f"anydrop draws from {kind} between torch.compile's graphs: dynamo cannot put a "
            "generator in a graph. For one graph (fullgraph=True) pass rng=anydrop.PortableRNG(seed) "
            "(reproducible, the same masks on every rank) or rng=None (torch's global generator), "
            "or give the seed or generator to an anydrop.torch layer, which draws from it in the graph"
        )


class TorchGenerator(MaskSource):
    """A ``torch.Generator``, or None for the device's global generator (``torch.manual_seed``)."""

    __slots__ = ("gen",)
    #: bernoulli takes a 0-d tensor ``keep`` too, and draws with it as timm does.
    takes_tensor_keep = True

    def __init__(self, gen: Any) -> None:
        self.gen = gen

    def bernoulli(self, keep: float, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any) -> Any:
        # new_empty, as timm does: same device, one op. Keyword arguments cost a
        # few tenths of a microsecond per call in torch's binding: pass only those needed.
        # gen None: the device's global generator, exactly as timm draws, so
        # torch.manual_seed reproduces timm's masks.
        mask = x.new_empty(shape) if dtype is x.dtype else x.new_empty(shape, dtype=dtype)
        gen = self.gen
        if gen is None:
            return mask.bernoulli_(keep)
        break_for_generator(False)
        return mask.bernoulli_(keep, generator=gen)

    def uniform(self, shape: tuple[int, ...], x: Any, xp: Any) -> Any:
        import torch

        if self.gen is not None:
            break_for_generator(False)
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
            table = one_draw_table(keep, rounding, dtype, x.device)
        bounds, values, bucketize, float64 = table
        u = x.new_empty(shape, dtype=float64)
        gen = self.gen
        if gen is None:
            u = u.uniform_()
        else:
            break_for_generator(False)
            u = u.uniform_(generator=gen)
        return values.take(bucketize(u, bounds, right=True))


# (keep, dtype, device) -> (bounds, values, torch.bucketize, torch.float64) of TorchGenerator.unbiased.
_TABLES: dict[tuple[float, Any, Any], tuple[Any, Any, Any, Any]] = {}
_MAX_TABLES = 256


def one_draw_table(
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


def _counter(position: int) -> Any:
    """A PortableRNG's position as a 0-d int64 CPU tensor, for graphs to advance."""
    import torch

    if position >= 2**62:
        raise ValueError(
            f"a PortableRNG at position {position} cannot be drawn from under torch.compile, "
            "which counts positions in int64 tensors, below 2**62"
        )
    return torch.tensor(position, dtype=torch.int64)


class GraphOneDraw(MaskSource):
    """The 16-bit mask of a source drawing inside torch.compile's graphs, from one uniform per sample.

    As :meth:`TorchGenerator.unbiased` draws it (without its eager cache of
    tables); a subclass gives the float64 uniforms, :meth:`uniform64`.
    """

    __slots__ = ()

    def uniform64(self, shape: tuple[int, ...], x: Any) -> Any:
        """Uniform float64 values in [0, 1) of ``shape``, on x's device."""
        raise NotImplementedError

    def unbiased(  # noqa: PLR0917
        self,
        keep: float,
        rounding: tuple[float, float, float],
        shape: tuple[int, ...],
        dtype: Any,
        x: Any,
        xp: Any,
    ) -> Any:
        if x.device.type not in {"cpu", "cuda"}:
            return MaskSource.unbiased(self, keep, rounding, shape, dtype, x, xp)
        bounds, values, bucketize, _ = one_draw_table(keep, rounding, dtype, x.device)
        return values.take(bucketize(self.uniform64(shape, x), bounds, right=True))


class GraphPortableSource(GraphOneDraw, PortableSource):
    """PortableRNG's stream computed on x's device with torch's int64 ops, inside torch.compile's graphs.

    The host-side stream is Python and NumPy code on a Python int that each
    draw advances: dynamo cannot trace the NumPy code, and would compile a
    graph per value of the int. Here the position is a 0-d int64 tensor (the
    rng's counter, replaced at each draw) and SplitMix64 is computed in 16-bit
    limbs (``_limbs``), exact whether the compiled code wraps or not: the
    values, and so the masks, are the host stream's bit for bit. The graph
    does not take the rng's lock.
    """

    __slots__ = ()

    def _uniform_ints(self, n: Any, x: Any) -> Any:
        """The next ``n`` values of the stream as 53-bit ints ``k`` (u = k * 2**-53), on x's device."""
        torch = sys.modules["torch"]
        state, start = counted_stretch(self.rng, n, _counter)
        return stream_uniform_ints(torch, state, start.to(x.device), n, x.device)

    def masks(
        self, shape: tuple[int, ...], probs: tuple[float, ...], dtype: Any, x: Any, xp: Any
    ) -> list[Any]:
        torch = sys.modules["torch"]
        ints = self._uniform_ints(math.prod(shape), x).reshape(shape)
        masks: list[Any] = []
        for p in probs:
            # u < p is k < ceil(p * 2**53), as the host draw compares. Computed
            # as a CPU tensor: under torch.compile p may be a symbolic float,
            # and every device type takes a 0-d CPU tensor as an operand.
            limit = torch.ceil(torch.tensor(p, dtype=torch.float64) * 2.0**UNIFORM_BITS)
            masks.append((ints < limit.to(torch.int64)).to(dtype))
        return masks

    def uniform64(self, shape: tuple[int, ...], x: Any) -> Any:
        torch = sys.modules["torch"]
        return self._uniform_ints(math.prod(shape), x).reshape(shape).to(torch.float64) * 2.0**-UNIFORM_BITS

    def uniform(self, shape: tuple[int, ...], x: Any, xp: Any) -> Any:
        torch = sys.modules["torch"]
        ints = self._uniform_ints(math.prod(shape), x).reshape(shape)
        # The host draw gives the floats k * 2**-53, which torch stores in its
        # default dtype: k rounded to that dtype, then scaled by a power of two
        # (exact), is the same number, with no float64 on the device.
        return ints.to(torch.get_default_dtype()) * 2.0**-UNIFORM_BITS


_EAGER_PORTABLE: list[type[PortableSource]] = []
_FIRST_DRAW = (
    "anydrop.PortableRNG draws its first masks between graphs, until it has drawn once on torch: "
    "call the model once without torch.compile, or build the anydrop.torch layers with the "
    "PortableRNG (they prepare it), for one graph"
)


def eager_portable_source() -> type[PortableSource]:
    """PortableSource whose draws run eagerly, between torch.compile's graphs (made once dynamo is loaded).

    For a PortableRNG whose position is not yet in a tensor: a graph would make
    the position a constant, and inductor, reading the limb arithmetic on
    constants as index arithmetic, takes minutes to simplify it. The eager
    draw moves the position into a tensor, so the next compiled call draws in
    the graph.
    """
    if not _EAGER_PORTABLE:
        import torch

        def eager(fn: Any) -> Any:
            def draw(self: PortableSource, *args: Any) -> Any:
                attach_counter(self.rng, _counter)
                return fn(self, *args)

            reason = _FIRST_DRAW
            disable: Any = torch.compiler.disable  # pyright: ignore[reportUnknownVariableType, reportUnknownMemberType]
            try:
                return disable(draw, reason=reason)
            except TypeError:  # older torch takes no reason
                return disable(draw)

        class EagerPortableSource(PortableSource):
            __slots__ = ()
            bernoulli = eager(PortableSource.bernoulli)
            bernoulli_pair = eager(PortableSource.bernoulli_pair)
            uniform = eager(PortableSource.uniform)

        _EAGER_PORTABLE.append(EagerPortableSource)
    return _EAGER_PORTABLE[0]


def prepare_portable(rng: PortableRNG) -> None:
    """Ready ``rng`` for compiled draws, eagerly: its position in a tensor.

    Once dynamo is loaded, also the class for the draws of a PortableRNG not
    prepared so: dynamo cannot trace a class definition.
    """
    attach_counter(rng, _counter)
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
        if isinstance(drop_prob, torch.Tensor) and getattr(source, "takes_tensor_keep", False):
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

        break_for_generator(True)
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
            if rng._counter is None:  # pyright: ignore[reportPrivateUsage]
                if not _EAGER_PORTABLE:
                    # Making the class below is a graph break too, with dynamo's message.
                    torch._dynamo.graph_break(msg=_FIRST_DRAW)  # pyright: ignore[reportPrivateUsage, reportUnknownMemberType]
                return eager_portable_source()(rng)
            return GraphPortableSource(rng)
        prepare_portable(rng)
        return PortableSource(rng)

    def add_product(self, x: Any, branch: Any, mask: Any) -> Any:
        import torch

        # One fused pass: reads x and branch once and writes the output once.
        return torch.addcmul(x, branch, mask)

"""A torch layer's own generator (an int seed's stream, a ``torch.Generator``) inside torch.compile's graphs.

Part of ``anydrop.torch``; importing it imports torch.

Dynamo cannot put a ``torch.Generator`` in a graph. A layer's draws therefore
go through two custom operators that name the layer by a number: the graph
holds the operator, and the operator, when the compiled code runs, draws from
the layer's generator exactly as an eager call does (the same ``bernoulli_``
and ``uniform_`` calls, so the same masks). Running eagerly, the operator also
takes part in the layer's checkpointing record: a compiled forward records
the generator's state, and a recomputation in the backward pass (activation
checkpointing inside a compiled model) draws from the recorded state.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from typing import Any

import torch

from ._core.backends import backend_for
from ._core.backends.torch import GraphOneDraw, TorchGenerator

__all__ = ["GRAPH_DRAWS", "GraphLayerSource", "register_layer"]

#: Every torch layer with its own rng, by the number its graphs name it with.
_LAYERS: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
_NUMBERS = itertools.count(1)
#: The source of the call being drawn, per thread: a call may draw more than once.
_CALLS = threading.local()


def register_layer(layer: object) -> int:
    """A new number for ``layer``, which compiled graphs pass to the operators below."""
    number = next(_NUMBERS)
    _LAYERS[number] = layer
    return number


def _source_for(x: torch.Tensor, layer: int, first: bool) -> TorchGenerator:
    calls: dict[int, TorchGenerator] = _CALLS.__dict__.setdefault("sources", {})
    if not first:
        return calls[layer]
    module = _LAYERS.get(layer)
    if module is None:
        raise RuntimeError(
            f"a compiled graph draws for anydrop layer number {layer}, which no longer exists: "
            "compile the model again"
        )
    # The layer's eager path: the seed's stream made once, the state recorded
    # for a recomputation, or, inside a backward pass, the recorded state replayed.
    source = backend_for(x).source(module._rng_for(x), x)
    if type(source) is not TorchGenerator:  # pragma: no cover - the layer's rng changed kind
        raise RuntimeError(
            f"anydrop layer number {layer} no longer draws from a torch.Generator: compile the model again"
        )
    calls[layer] = source
    return source


#: Whether this torch has custom operators (torch 2.4 and later); without them
#: a layer's generator draws between graphs, as a function's does.
GRAPH_DRAWS = hasattr(torch.library, "custom_op")

if GRAPH_DRAWS:

    @torch.library.custom_op("anydrop::layer_bernoulli", mutates_args=())
    def _layer_bernoulli(  # noqa: PLR0917
        x: torch.Tensor,
        layer: int,
        first: bool,
        shape: list[int],
        dtype: torch.dtype,
        keep: float,
        keep_tensor: torch.Tensor | None,
        after: torch.Tensor | None,
    ) -> torch.Tensor:
        source = _source_for(x, layer, first)
        # A 0-d tensor keep draws as timm's tensor drop_prob does (TorchGenerator.takes_tensor_keep).
        probability: Any = keep if keep_tensor is None else keep_tensor
        mask: torch.Tensor = source.bernoulli(probability, tuple(shape), dtype, x, None)
        return mask

    @torch.library.custom_op("anydrop::layer_uniform", mutates_args=())
    def _layer_uniform(  # noqa: PLR0917
        x: torch.Tensor,
        layer: int,
        first: bool,
        shape: list[int],
        dtype: torch.dtype,
        after: torch.Tensor | None,
    ) -> torch.Tensor:
        source = _source_for(x, layer, first)
        return x.new_empty(shape, dtype=dtype).uniform_(0.0, 1.0, generator=source.gen)

    def _fake(
        x: torch.Tensor, layer: int, first: bool, shape: list[int], dtype: torch.dtype, *rest: Any
    ) -> torch.Tensor:
        # What both operators return, for tracing: a new tensor of the draw's shape and dtype.
        return x.new_empty(shape, dtype=dtype)

    _layer_bernoulli.register_fake(_fake)  # pyright: ignore[reportUnknownMemberType]
    _layer_uniform.register_fake(_fake)  # pyright: ignore[reportUnknownMemberType]


class GraphLayerSource(GraphOneDraw):
    """The draws of one call of a layer with its own generator, as operators of a compiled graph.

    Each draw but the first takes the previous draw as an input, so the graph
    keeps them in the eager order. The first takes a fresh empty tensor, which
    no graph pass merges with another: two calls on the same input stay two
    draws.
    """

    __slots__ = ("last", "layer")
    takes_tensor_keep = True

    def __init__(self, layer: int) -> None:
        self.layer = layer
        self.last: Any = None

    def _after(self, x: torch.Tensor) -> tuple[torch.Tensor, bool, torch.Tensor]:
        first = self.last is None
        return x.detach(), first, x.new_empty(0) if first else self.last

    def bernoulli(self, keep: Any, shape: tuple[int, ...], dtype: Any, x: Any, xp: Any) -> Any:
        x, first, after = self._after(x)
        tensor = isinstance(keep, torch.Tensor)
        mask = _layer_bernoulli(
            x, self.layer, first, list(shape), dtype, 0.0 if tensor else keep, keep if tensor else None, after
        )
        self.last = mask
        return mask

    def uniform64(self, shape: tuple[int, ...], x: Any) -> Any:
        return self._uniform(shape, torch.float64, x)

    def _uniform(self, shape: tuple[int, ...], dtype: Any, x: Any) -> Any:
        x, first, after = self._after(x)
        u = _layer_uniform(x, self.layer, first, list(shape), dtype, after)
        self.last = u
        return u

    def uniform(self, shape: tuple[int, ...], x: Any, xp: Any) -> Any:
        return self._uniform(shape, torch.float32, x)

"""PyTorch module wrapper: ``anydrop.torch.DropPath`` is a ``torch.nn.Module``.

Importing this module imports torch; ``import anydrop`` alone does not.
"""

from __future__ import annotations

import copy
import sys
from typing import Any, cast

import torch

from ._core._checks import check_seed, is_integer
from ._core._portable import PortableRNG, stream_value
from ._core._sources import MaskSource
from ._core.backends import backend_for, check_layer_rng, lookup
from ._core.backends.torch import (
    TorchGenerator,
    break_for_generator,
    eager_portable_source,
    in_backward,
    prepare_portable,
)
from ._layers import DropPathConfig, ResidualConfig
from ._torch_graph import GRAPH_DRAWS, GraphLayerSource, register_layer
from ._torch_ranks import shared_seed, synchronized_rng

__all__ = ["DropPath", "DropPathResidual", "convert", "shared_seed", "synchronized_rng"]

# What a compiled function must not have to make, made now: torch.Tensor's
# entry in the backend registry, and, where torch.compile is loaded, the class
# whose PortableRNG draws run between graphs.
lookup(torch.empty(0))
if "torch._dynamo" in sys.modules:
    eager_portable_source()


#: The saved-tensor hooks installed, if any: a non-reentrant ``torch.utils.checkpoint``
#: may be recording this forward to recompute it. None where torch lacks the query.
_saved_tensor_hooks: Any = getattr(
    torch._C._autograd,  # pyright: ignore[reportPrivateUsage, reportUnknownMemberType, reportAttributeAccessIssue, reportUnknownArgumentType]
    "_top_saved_tensors_default_hooks",
    None,
)
#: How many recorded draws a layer keeps for a recomputation that may come.
_MAX_RECORDED = 16


class _TorchLayer:
    """What the torch layers add to the shared configuration: checkpointing and TorchScript.

    Activation checkpointing: ``torch.utils.checkpoint`` recomputes a forward
    during the backward pass and restores only torch's global generators
    first. A layer that draws
    from its own generator (an int seed's stream, a ``torch.Generator``, a
    ``PortableRNG``) would draw a new mask in the recomputation, and the
    gradient would belong to a mask the forward never used. So a forward that
    a checkpoint may recompute (grad disabled, as in reentrant checkpointing,
    or saved-tensor hooks installed, as in non-reentrant checkpointing)
    records the generator's state and x's shape; a call made inside the
    backward pass is a recomputation, and draws from a copy at the recorded
    state, leaving the layer's generator where the forward left it.
    ``rng=None`` needs none of this: checkpoint restores the global generators.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "rng":
            if isinstance(value, PortableRNG):
                # Its position moves into a tensor now, so that a compiled model draws in its graph.
                prepare_portable(value)
            if "_graph_number" not in self.__dict__:
                # The number compiled graphs draw from this layer's generator by.
                super().__setattr__("_graph_number", register_layer(self))
        super().__setattr__(name, value)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A copy or an unpickled layer draws from its own generator, not from the original's.
        cast(Any, super()).__setstate__(state)
        self.__dict__["_graph_number"] = register_layer(self)

    def __prepare_scriptable__(self) -> torch.nn.Module:
        # torch.jit.script calls this on every submodule before compiling it.
        raise RuntimeError(
            f"anydrop.torch.{type(self).__name__} does not support TorchScript (torch.jit.script), "
            "which cannot compile the array-API code it runs. Use torch.compile, or torch.export "
            "to deploy the model"
        )

    rng: Any
    _graph_number: int
    _recorded: list[tuple[tuple[int, ...], Any]]
    _evicted: set[tuple[int, ...]]
    _replayed: bool

    def _rng_for(self, x: Any) -> Any:
        if (
            GRAPH_DRAWS
            and torch.compiler.is_compiling()
            and type(x) is torch.Tensor
            and (is_integer(self.rng) or isinstance(self.rng, torch.Generator))
        ):
            # In the graph: operators that draw from the generator when the graph runs.
            return GraphLayerSource(self._graph_number)
        if is_integer(self.rng) and not self.__dict__.get("_streams"):
            # The first call makes the seed's generator under a lock, which dynamo cannot enter.
            break_for_generator(True)
        rng: Any = cast(Any, super())._rng_for(x)
        if rng is None or not isinstance(x, torch.Tensor) or torch.compiler.is_compiling():
            return rng
        if x.device.type == "meta":
            return rng  # no data and no generator: nothing to record or replay
        if in_backward():
            return self._replay(rng, x)
        if torch.is_grad_enabled() and _saved_tensor_hooks is not None and _saved_tensor_hooks(False) is None:
            return rng  # an ordinary forward: nothing will recompute it
        state = self.__dict__
        if state.get("_replayed") or "_recorded" not in state:
            # The first forward after a backward that replayed: start afresh.
            self._recorded, self._evicted, self._replayed = [], set(), False
        self._recorded.append((tuple(x.shape), _state_of(rng)))
        if len(self._recorded) > _MAX_RECORDED:
            self._evicted.add(self._recorded.pop(0)[0])
        return rng

    def _replay(self, rng: Any, x: Any) -> Any:
        shape = tuple(x.shape)
        matches = [state for s, state in self.__dict__.get("_recorded", ()) if s == shape]
        if len(matches) > 1 or shape in self.__dict__.get("_evicted", ()):
            count = "more than one mask" if len(matches) <= 1 else f"{len(matches)} masks"
            raise RuntimeError(
                f"{type(self).__name__} with its own rng is being recomputed by activation "
                f"checkpointing, but it drew {count} for inputs of shape {shape} in forward passes "
                "that may be recomputed, and cannot tell which one this recomputation repeats: the "
                "gradient would belong to another mask. Use one layer per call, run backward after "
                "each forward, or pass rng=None (torch's global generator, which "
                "torch.utils.checkpoint restores)"
            )
        if not matches:
            # Called inside a backward pass, but not recomputing a recorded forward.
            return _source_at(rng, _state_of(rng), x, advance=True)
        self._replayed = True
        return _source_at(rng, matches[0], x)


def _state_of(rng: Any) -> Any:
    """A copy of the state a layer's rng will draw from next."""
    if isinstance(rng, PortableRNG):
        return (rng.seed, rng.position)
    gen = rng.gen if isinstance(rng, TorchGenerator) else rng
    return gen.get_state()


def _source_at(rng: Any, state: Any, x: Any, *, advance: bool = False) -> MaskSource:
    """A source drawing what ``rng`` draws from ``state``: from ``rng`` itself if ``advance``, else a copy."""
    if isinstance(rng, PortableRNG):
        seed, position = state
        return backend_for(x).portable_source(rng if advance else PortableRNG(seed, position=position), x)
    gen = rng.gen if isinstance(rng, TorchGenerator) else rng
    if advance:
        backend_for(x).check_generator(gen, x)
    else:
        gen = torch.Generator(device=gen.device)
        gen.set_state(state)
    return TorchGenerator(gen)


class DropPath(_TorchLayer, DropPathConfig, torch.nn.Module):
    """Drop path (stochastic depth) as a ``torch.nn.Module``.

    A drop-in for ``timm.layers.DropPath``: it has no parameters or buffers, so
    state dicts are interchangeable, and follows ``module.train()`` /
    ``module.eval()``. Arguments are those of :class:`anydrop.DropPath`; note
    that the default ``drop_prob`` is 0.1 where timm's is 0.0.

    Examples
    --------
    >>> import torch
    >>> from anydrop.torch import DropPath
    >>> block = torch.nn.Sequential(torch.nn.Linear(8, 8), DropPath(0.1))
    >>> block[1]
    DropPath(drop_prob=0.100)
    >>> block.eval()(torch.ones(2, 8)).shape
    torch.Size([2, 8])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(x) is not torch.Tensor and _is_proxy(x):
            return _traced_call(self, "forward", x)
        return self._drop(x)

    def add(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        """Return ``x + self(branch)`` in one fused pass (:func:`anydrop.drop_path_add`)."""
        if type(branch) is not torch.Tensor and _is_proxy(branch):
            return _traced_call(self, "add", x, branch)
        return self._drop_add(x, branch)

    def extra_repr(self) -> str:
        return self._describe()


class DropPathResidual(_TorchLayer, ResidualConfig, torch.nn.Module):
    """A residual block ``x + drop_path(branch(x))`` that runs ``branch`` on the kept samples only.

    The branch module is a registered submodule (its parameters are this
    module's, under ``branch.``). In training mode only the kept samples go
    through it (:func:`anydrop.drop_path_residual`), so at ``drop_prob=0.5``
    the branch costs about half, forward and backward; in eval mode it is
    ``x + branch(x)``. The branch must treat samples independently (no
    BatchNorm-style batch statistics).

    For ``torch.compile`` and CUDA graphs pass ``fixed_size=True``: exactly
    ``round(n * (1 - drop_prob))`` samples are kept per call, so shapes are
    static and nothing waits on the device. The default draws each sample
    independently, which needs a host sync to size the kept batch.

    Examples
    --------
    >>> import torch
    >>> from anydrop.torch import DropPathResidual
    >>> mlp = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
    >>> block = DropPathResidual(mlp, 0.2)
    >>> block(torch.ones(4, 3, 8)).shape
    torch.Size([4, 3, 8])
    >>> sorted(block.state_dict())[:2]
    ['branch.0.bias', 'branch.0.weight']
    """

    branch: Any

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(x) is not torch.Tensor and _is_proxy(x):
            return _traced_call(self, "forward", x)
        return self._residual(x)

    def extra_repr(self) -> str:
        return self._describe()


# --- Converting an existing model ---


def _settings(module: torch.nn.Module) -> tuple[Any, bool, Any] | None:
    """``(drop_prob, scale_by_keep, axis)`` of a drop-path module of another library, or None.

    Recognised by class name and attributes, so that no library is imported:
    torchvision's ``StochasticDepth`` (``p``, ``mode``), and any class named
    ``DropPath`` or ``*DropPath`` with a ``drop_prob`` attribute (timm's, and
    the per-model copies in transformers and elsewhere).
    """
    if isinstance(module, DropPath):
        return None
    name = type(module).__name__
    if name == "StochasticDepth" and hasattr(module, "p") and hasattr(module, "mode"):
        if module.mode not in ("row", "batch"):
            raise ValueError(f"StochasticDepth mode must be 'row' or 'batch', got {module.mode!r}")
        return module.p, True, 0 if module.mode == "row" else ()
    if name.endswith("DropPath") and hasattr(module, "drop_prob"):
        return module.drop_prob, bool(getattr(module, "scale_by_keep", True)), 0
    return None


def convert(module: torch.nn.Module, *, rng: Any = None, inplace: bool = True) -> torch.nn.Module:
    """Replace every drop-path module of a model with :class:`DropPath`, keeping its settings.

    In the spirit of ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``. Each
    replacement keeps the original's drop probability, scaling, per-sample or
    whole-batch mode and training flag; drop-path modules hold no parameters
    or buffers, so the model's ``state_dict`` keys are unchanged. With
    ``rng=None`` the masks are drawn as timm and torchvision draw them
    (``bernoulli_`` on the global generator), so a converted timm or
    torchvision model gives the original's outputs and gradients bit for bit
    under the same ``torch.manual_seed`` (in 16-bit floats anydrop's scale is
    unbiased where theirs is not). Classes that draw with ``torch.rand``
    instead, such as transformers' copies, give masks of the same distribution
    from other random numbers. Hooks registered on the replaced modules are
    not carried over.

    Recognised: torchvision's ``StochasticDepth`` (``mode="row"`` is
    ``axis=0``, ``mode="batch"`` is ``axis=()``), and any module whose class
    is named ``DropPath`` or ends in ``DropPath`` and has a ``drop_prob``
    attribute (timm's ``DropPath``, with its ``scale_by_keep``; transformers'
    per-model classes such as ``BeitDropPath``). timm's ``nn.Identity``
    placeholders for a zero rate are left alone.

    Parameters
    ----------
    module
        The model, or a single drop-path module.
    rng
        The ``rng`` of every new layer: None (the global generator), a
        ``torch.Generator`` or an :class:`anydrop.PortableRNG` shared by all,
        or an int seed, from which each layer gets a distinct seed of its own
        (value ``i`` of ``PortableRNG(seed)``'s stream for the i-th layer
        replaced), so that layers do not drop the same samples.
    inplace
        Modify ``module``; otherwise convert a deep copy and leave ``module`` as it was.

    Returns
    -------
    The converted model: ``module`` itself (or its copy), or the new layer if
    ``module`` was a drop-path module.

    Raises
    ------
    TypeError
        ``module`` is not a ``torch.nn.Module``, or ``rng`` is of a wrong type.
    ValueError
        A recognised module's probability is not in [0, 1], or ``rng`` is a negative seed.

    Examples
    --------
    >>> import torch
    >>> from anydrop.torch import convert
    >>> class DropPath(torch.nn.Module):          # a drop-path class of another library
    ...     def __init__(self, drop_prob):
    ...         super().__init__()
    ...         self.drop_prob = drop_prob
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), DropPath(0.2))
    >>> convert(model)
    Sequential(
      (0): Linear(in_features=4, out_features=4, bias=True)
      (1): DropPath(drop_prob=0.200)
    )
    """
    # Checked at run time: the annotations bind type-checked callers only.
    if not isinstance(module, torch.nn.Module):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(f"module must be a torch.nn.Module, got an object of type {type(module).__name__}")
    seed = check_seed(rng) if is_integer(rng) else None
    if seed is None:
        check_layer_rng(rng)
    if not inplace:
        module = copy.deepcopy(module)
    count = 0

    def replace(old: torch.nn.Module) -> torch.nn.Module | None:
        nonlocal count
        settings = _settings(old)
        if settings is None:
            return None
        drop_prob, scale_by_keep, axis = settings
        layer_rng = rng if seed is None else stream_value(seed, count)
        count += 1
        try:
            new = DropPath(drop_prob, scale_by_keep, axis=axis, rng=layer_rng)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"cannot convert {type(old).__name__}: {exc}") from None
        return new.train(old.training)

    top = replace(module)
    if top is not None:
        return top
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            new = replace(child)
            if new is not None:
                setattr(parent, name, new)
    return module


def _is_proxy(x: object) -> bool:
    """Whether ``x`` is a ``torch.fx`` proxy (``symbolic_trace`` is tracing the caller)."""
    return isinstance(x, torch.fx.Proxy)


def _traced_call(module: torch.nn.Module, method: str, *args: Any) -> torch.Tensor:
    """Record a call of ``module`` in a ``torch.fx`` trace as one node, a leaf, instead of tracing into it.

    The traced graph then calls the module itself, so it follows ``train()``
    and ``eval()`` and draws from the module's own rng, as the module does.
    """
    tracer: Any = next(a for a in args if _is_proxy(a)).tracer
    path = tracer.path_of_module(module)
    result: torch.Tensor
    if method == "forward":
        result = tracer.create_proxy("call_module", path, args, {})
    else:
        owner = tracer.create_proxy("get_attr", path, (), {})
        result = tracer.create_proxy("call_method", method, (owner, *args), {})
    return result

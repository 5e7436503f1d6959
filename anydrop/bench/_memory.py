"""Peak memory of a PyTorch training step: drop_path beside a copy, drop_path_residual beside the block."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anydrop

from ._measure import VIT, VIT_QUICK
from ._torch_cases import mlp_block

#: The memory case's reference for ``drop_path``: ``x.clone()``, the least any out-of-place
#: function of ``x`` allocates in a training step (its output, and the gradient of ``x``).
COPY = "copy (x.clone())"


@dataclass
class MemoryCase:
    """One training step (forward and backward) and the implementations whose peak memory is compared."""

    group: str
    backend: str
    dtype: str
    shape: tuple[int, ...]
    candidates: dict[str, Callable[[], Any]]
    reference: str  # the ratio column divides by this candidate's peak
    #: Called before each candidate: drops the gradients of the last one, so each step allocates its own.
    reset: Callable[[], None]
    peak_bytes: dict[str, int] = field(default_factory=dict)


def peak_bytes(fn: Callable[[], Any]) -> int:
    """The most bytes that the tensors ``fn`` allocates hold at once, checked after every operator.

    A ``TorchDispatchMode`` sees each operator that runs, the backward pass's
    included, and the storages it returns; a storage counts from the operator
    that creates it until it is freed. Tensors that exist before the call
    (inputs, parameters) do not count, and neither do the caching allocator's
    reserve and the scratch memory inside one kernel: it counts tensors, not
    the allocator's blocks, so it does not depend on what ran before.
    """
    import torch
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    seen: set[Any] = set()  # every storage met, as input or output
    live: dict[Any, int] = {}  # those created inside fn, with their sizes
    peak = 0

    def storages(tree: Any) -> list[Any]:
        return [t.untyped_storage() for t in tree_leaves(tree) if isinstance(t, torch.Tensor)]

    weak_ref: Any = StorageWeakRef  # untyped in torch

    class Tracker(TorchDispatchMode):  # type: ignore[no-untyped-call]
        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: dict[str, Any] | None = None
        ) -> Any:
            nonlocal peak
            # An input met for the first time existed before fn (or is a view of such):
            # an in-place write into it allocates nothing.
            seen.update(weak_ref(s) for s in storages((args, kwargs)))
            out = func(*args, **(kwargs or {}))
            for storage in storages(out):
                ref = weak_ref(storage)
                if ref not in seen:
                    seen.add(ref)
                    live[ref] = storage.nbytes()
            for ref in [ref for ref in live if ref.expired()]:
                del live[ref]
            peak = max(peak, sum(live.values()))
            return out

    with Tracker():  # type: ignore[no-untyped-call]
        fn()
    return peak


def memory_cases(torch: Any, device: str, timm: Any, quick: bool) -> list[MemoryCase]:
    """``drop_path`` against a copy, and the MLP residual block at p = 0.5, in float32."""
    shape = VIT_QUICK if quick else VIT
    mlp, x, grad = mlp_block(torch, device, shape)

    def reset() -> None:
        for tensor in (x, *mlp.parameters()):
            tensor.grad = None

    backend = f"torch {device}"
    single: dict[str, Callable[[], Any]] = {COPY: lambda: x.clone().backward(grad)}
    if timm is not None:
        single["timm"] = lambda: timm.drop_path(x, 0.1, True).backward(grad)
    single["anydrop"] = lambda: anydrop.drop_path(x, 0.1, True).backward(grad)

    from anydrop.torch import DropPathResidual

    p = 0.5
    block, fixed = DropPathResidual(mlp, p), DropPathResidual(mlp, p, fixed_size=True)
    residual: dict[str, Callable[[], Any]] = {}
    if timm is not None:
        residual["x + timm(mlp(x))"] = lambda: (x + timm.drop_path(mlp(x), p, True)).backward(grad)
    residual["x + anydrop(mlp(x))"] = lambda: (x + anydrop.drop_path(mlp(x), p, True)).backward(grad)
    residual["drop_path_residual"] = lambda: block(x).backward(grad)
    residual["drop_path_residual fixed_size"] = lambda: fixed(x).backward(grad)
    return [
        MemoryCase("drop_path fwd+bwd, ViT", backend, "float32", shape, single, COPY, reset),
        MemoryCase(
            "MLP residual p=0.5 fwd+bwd, ViT",
            backend,
            "float32",
            shape,
            residual,
            "x + timm(mlp(x))" if timm is not None else "x + anydrop(mlp(x))",
            reset,
        ),
    ]


def measure_memory(case: MemoryCase) -> None:
    """Fill ``case.peak_bytes``: each candidate's step after one untracked warm-up step.

    The global generator is seeded before each tracked step, so candidates that
    draw alike drop the same samples (timm's ``drop_path`` and anydrop's do).
    The variable-size residual block's figure depends on how many samples that
    one draw keeps; ``fixed_size=True`` keeps ``round(keep * B)`` every time.
    """
    import torch

    for name, fn in case.candidates.items():
        case.reset()
        fn()
        case.reset()
        torch.manual_seed(0)
        case.peak_bytes[name] = peak_bytes(fn)

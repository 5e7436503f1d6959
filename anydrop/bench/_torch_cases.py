"""The PyTorch cases: anydrop beside timm, torchvision, the classic two-pass version and the limit."""

from __future__ import annotations

import functools
import importlib.util
import pathlib
from collections.abc import Callable
from typing import Any

import anydrop

from ._measure import CLASSIC, CNN, CNN_QUICK, LIMIT, PER_SAMPLE, TINY, VIT, VIT_QUICK, Case


def timm_drop() -> Any:
    """timm's ``timm/layers/drop.py``, loaded from its file; None without timm.

    ``import timm`` imports torchvision; ``drop.py`` needs only torch, so this is
    timm's real code without the package import.
    """
    spec = importlib.util.find_spec("timm")
    if spec is None or spec.origin is None:
        return None
    path = pathlib.Path(spec.origin).parent / "layers" / "drop.py"
    module_spec = importlib.util.spec_from_file_location("timm_layers_drop", path)
    if module_spec is None or module_spec.loader is None:
        return None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _torchvision_stochastic_depth() -> Any:
    try:
        from torchvision.ops import stochastic_depth
    except Exception:  # any failure (PyPI's torchvision beside another torch build) means "not here"
        return None
    return stochastic_depth


def _forward_backward(fn: Callable[[Any], Any], x: Any, grad: Any) -> None:
    fn(x).backward(grad)


def _add_after(drop: Callable[..., Any], x: Any, branch: Any, p: float) -> Any:
    return x + drop(branch, p, True)


def torch_cases(torch: Any, device: str, quick: bool) -> list[Case]:
    """Every PyTorch case on ``device``: drop_path alone, the residual add, and the MLP residual."""
    timm = timm_drop()
    tv = _torchvision_stochastic_depth()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    backend = f"torch {device}"
    reference = "timm" if timm else CLASSIC
    cases: list[Case] = []
    p = 0.1

    def peers(x: Any, fwd_bwd: bool, grad: Any) -> dict[str, Callable[[], Any]]:
        keep = 1.0 - p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)

        def classic_two_pass(x: Any) -> Any:
            random_tensor = keep + torch.rand(mask.shape, dtype=x.dtype, device=x.device)
            random_tensor.floor_()
            return x.div(keep) * random_tensor

        fns: dict[str, Callable[[Any], Any]] = {}
        if timm is not None:
            fns["timm"] = lambda x: timm.drop_path(x, p, True)
        if tv is not None:
            fns["torchvision"] = lambda x: tv(x, p, "row", True)
        fns[CLASSIC] = classic_two_pass
        fns[LIMIT] = lambda x: x * mask
        fns["anydrop"] = lambda x: anydrop.drop_path(x, p, True)
        if not fwd_bwd:
            return {name: functools.partial(f, x) for name, f in fns.items()}
        return {name: functools.partial(_forward_backward, f, x, grad) for name, f in fns.items()}

    shapes = [("ViT", VIT_QUICK if quick else VIT), ("CNN", CNN_QUICK if quick else CNN)]
    tiny = torch.randn(TINY, device=device)
    cases.append(
        Case(
            "drop_path fwd, tiny",
            backend,
            "float32",
            TINY,
            peers(tiny, False, None),
            reference,
            number=200 if quick else 2000,
            sync=sync,
        )
    )
    # In 16-bit floats the scale takes the unbiased rounding's extra draw: its per-call cost.
    tiny16 = torch.randn(PER_SAMPLE, device=device, dtype=torch.bfloat16)
    cases.append(
        Case(
            "drop_path fwd, tiny",
            backend,
            "bfloat16",
            PER_SAMPLE,
            peers(tiny16, False, None),
            reference,
            number=200 if quick else 2000,
            sync=sync,
        )
    )
    for dtype_name in ("float32", "bfloat16"):
        dtype = getattr(torch, dtype_name)
        for label, shape in shapes:
            x = torch.randn(shape, device=device, dtype=dtype)
            cases.append(
                Case(
                    f"drop_path fwd, {label}",
                    backend,
                    dtype_name,
                    shape,
                    peers(x, False, None),
                    reference,
                    limit=LIMIT,
                    bytes_moved=2 * x.numel() * x.element_size(),
                    sync=sync,
                )
            )
        x = torch.randn(shapes[0][1], device=device, dtype=dtype, requires_grad=True)
        grad = torch.randn_like(x)
        cases.append(
            Case(
                "drop_path fwd+bwd, ViT",
                backend,
                dtype_name,
                tuple(x.shape),
                peers(x, True, grad),
                reference,
                limit=LIMIT,
                bytes_moved=5 * x.numel() * x.element_size(),  # fwd: read+write; bwd: 2 reads + write
                sync=sync,
            )
        )
        cases.append(_residual_add_case(torch, device, dtype_name, shapes[0][1], timm=timm, sync=sync))
    cases.append(_mlp_residual_case(torch, device, timm, sync, quick))
    return cases


def _residual_add_case(
    torch: Any, device: str, dtype_name: str, shape: tuple[int, ...], *, timm: Any, sync: Callable[[], None]
) -> Case:
    """The residual add ``x + drop_path(branch)``, beside ``drop_path_add`` doing it in one pass."""
    p = 0.1
    xa = torch.randn(shape, device=device, dtype=getattr(torch, dtype_name))
    branch = torch.randn_like(xa)
    add: dict[str, Callable[[], Any]] = {}
    if timm is not None:
        add["x + timm"] = functools.partial(_add_after, timm.drop_path, xa, branch, p)
    add["x + anydrop.drop_path"] = functools.partial(_add_after, anydrop.drop_path, xa, branch, p)
    add["anydrop.drop_path_add"] = functools.partial(anydrop.drop_path_add, xa, branch, p, True)
    return Case(
        "residual add fwd, ViT",
        f"torch {device}",
        dtype_name,
        tuple(xa.shape),
        add,
        "x + timm" if timm else "x + anydrop.drop_path",
        bytes_moved=3 * xa.numel() * xa.element_size(),
        sync=sync,
    )


def mlp_block(torch: Any, device: str, shape: tuple[int, ...]) -> tuple[Any, Any, Any]:
    """A ViT MLP branch (768 -> 3072 -> 768), an input that requires grad, and the output's gradient."""
    gen = torch.Generator().manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(768, 3072), torch.nn.GELU(), torch.nn.Linear(3072, 768))
    x = torch.randn(shape, generator=gen).to(device).requires_grad_()
    return mlp.to(device), x, torch.randn(shape, generator=gen).to(device)


def _mlp_residual_case(torch: Any, device: str, timm: Any, sync: Callable[[], None], quick: bool) -> Case:
    """An MLP branch (768 -> 3072 -> 768) at p = 0.5, forward and backward."""
    from anydrop.torch import DropPathResidual

    shape = VIT_QUICK if quick else VIT
    p = 0.5
    mlp, x, grad = mlp_block(torch, device, shape)
    block = DropPathResidual(mlp, p)
    fixed = DropPathResidual(mlp, p, fixed_size=True)
    candidates: dict[str, Callable[[], Any]] = {}
    if timm is not None:
        candidates["x + timm(mlp(x))"] = lambda: (x + timm.drop_path(mlp(x), p, True)).backward(grad)
    candidates["x + anydrop(mlp(x))"] = lambda: (x + anydrop.drop_path(mlp(x), p, True)).backward(grad)
    candidates["drop_path_residual"] = lambda: block(x).backward(grad)
    candidates["drop_path_residual fixed_size"] = lambda: fixed(x).backward(grad)
    return Case(
        "MLP residual p=0.5 fwd+bwd, ViT",
        f"torch {device}",
        "float32",
        shape,
        candidates,
        "x + timm(mlp(x))" if timm else "x + anydrop(mlp(x))",
        sync=sync,
    )


def bias_table(torch: Any, device: str, n: int = 2_000_000) -> list[dict[str, Any]]:
    """Relative mean bias of the scale applied to kept samples, timm vs anydrop, per dtype and p.

    With ``x = 1`` the output of a kept sample is its scale, so the bias is
    ``mean(scale) * keep - 1``, free of the noise of which samples are kept.
    """
    timm = timm_drop()
    rows = []
    for dtype_name in ("bfloat16", "float16"):
        ones = torch.ones(n, 1, device=device, dtype=getattr(torch, dtype_name))
        for p in (0.1, 0.2, 0.3):
            keep = 1.0 - p
            row: dict[str, Any] = {"dtype": dtype_name, "drop_prob": p, "n": n}
            impls = {"anydrop": functools.partial(anydrop.drop_path, ones, p, True)}
            if timm is not None:
                impls["timm"] = functools.partial(timm.drop_path, ones, p, True)
            for name, fn in impls.items():
                out = fn().double()
                row[name] = float(out[out != 0].mean()) * keep - 1.0
            rows.append(row)
    return rows

"""One rank of the four-process DTensor and FSDP2 test in ``test_dtensor.py``.

Run as ``python -m tests.dtensor_worker RANK WORLD_SIZE PORT`` (WORLD_SIZE 4).
Each rank seeds its global generator apart (``1000 + rank``), as data-parallel
scripts do, and runs every entry point with every kind of ``rng`` on DTensors
of several placements; then trains a small transformer with anydrop layers
under FSDP2 and under DDP; then draws tensor-parallel masks by the documented
recipe. Rank 0 prints what every rank saw as JSON, for the test to check.
"""

from __future__ import annotations

import json
import math
import sys
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.debug import CommDebugMode

from anydrop import PortableRNG, drop_path, drop_path_add, drop_path_residual
from anydrop.torch import DropPath, DropPathResidual, shared_seed, synchronized_rng

SHAPE = (10, 4, 6)  # uneven shards: 10 samples over 4 ranks, 6 features over 4
P = 0.5

#: name: (mesh shape, x's placements).
PLACEMENTS = {
    "shard0": ((4,), [Shard(0)]),
    "replicate": ((4,), [Replicate()]),
    "shard2": ((4,), [Shard(2)]),
    "dp_tp": ((2, 2), [Shard(0), Shard(2)]),
    "dp_replicate": ((2, 2), [Shard(0), Replicate()]),
    "shard1": ((4,), [Shard(1)]),  # a shard of the samples for drop_path_axis1, of a feature axis else
}

RNGS: dict[str, Any] = {
    "none": lambda: None,
    "int": lambda: 5,
    "generator": lambda: synchronized_rng(7, 3),
    "portable": lambda: PortableRNG(5),
}


def _branch(a: torch.Tensor) -> torch.Tensor:
    return 2 * a


def _entries() -> dict[str, Any]:
    """name: fn(x, rng) -> output, for a DTensor or a plain tensor x alike."""

    def layer(kind: str, rng: Any) -> Any:
        # A fresh layer per call: its own stream starts where a fresh one starts.
        if kind == "drop":
            return DropPath(P, rng=rng)
        return DropPathResidual(_branch, P, rng=rng, fixed_size=True)

    return {
        "drop_path": lambda x, r: drop_path(x, P, True, rng=r),
        "drop_path_axis1": lambda x, r: drop_path(x, P, True, axis=1, rng=r),
        "drop_path_bf16": lambda x, r: drop_path(x.to(torch.bfloat16), 0.3, True, rng=r),
        "drop_path_add": lambda x, r: drop_path_add(x, x, P, True, rng=r),
        "residual_fixed": lambda x, r: drop_path_residual(x, _branch, P, True, rng=r, fixed_size=True),
        "residual": lambda x, r: drop_path_residual(x, _branch, P, True, rng=r),
        "layer": lambda x, r: layer("drop", r)(x),
        "residual_layer": lambda x, r: layer("residual", r)(x),
    }


def _gather(obj: Any) -> list[Any]:
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _reference(name: str, entry: Any, x: torch.Tensor, rng: Any, like: DTensor) -> torch.Tensor:
    """What ``entry`` gives on the unsharded ``x``; for the fixed-size residual, with like's sample shards.

    The residual draws its subset per shard of the sample axis: on one
    device, ``shards=`` draws the same subsets.
    """
    if not name.startswith("residual"):
        return entry(x, rng)
    shards = math.prod(
        like.device_mesh.size(i) for i, p in enumerate(like.placements) if isinstance(p, Shard) and p.dim == 0
    )
    return drop_path_residual(x, _branch, P, True, rng=rng, fixed_size=True, shards=shards)


def _rank0_part(full: torch.Tensor, like: DTensor) -> torch.Tensor:
    """This rank's part of ``like``'s layout, cut from rank 0's ``full`` (scattered from rank 0)."""
    return distribute_tensor(full, like.device_mesh, like.placements).to_local()


def _dtensor_cases(rank: int) -> dict[str, Any]:
    x = torch.arange(1, 1 + torch.Size(SHAPE).numel(), dtype=torch.float32).reshape(SHAPE)
    results: dict[str, Any] = {}
    for pname, (mesh_shape, placements) in PLACEMENTS.items():
        mesh = init_device_mesh("cpu", mesh_shape)
        dx = distribute_tensor(x, mesh, placements)
        for rname, make_rng in RNGS.items():
            for ename, entry in _entries().items():
                torch.manual_seed(1000 + rank)
                case: dict[str, Any] = {}
                try:
                    with CommDebugMode() as comms:
                        first = entry(dx, make_rng())
                    draws = [first, *(entry(dx, make_rng()) for _ in range(2))]
                except (TypeError, ValueError) as exc:
                    case["error"] = f"{type(exc).__name__}: {exc}"
                else:
                    out = draws[0]
                    case["is_dtensor"] = isinstance(out, DTensor)
                    case["collectives"] = {str(k): v for k, v in comms.get_comm_counts().items()}
                    case["placements"] = repr(tuple(out.placements))
                    full = [d.full_tensor() for d in draws]
                    case["full"] = [f.float().tolist() for f in full]
                    # Rank 0's copy of each part, scattered: does every rank hold the same as rank 0?
                    case["parts_agree"] = _gather(
                        [
                            torch.equal(_rank0_part(f, d), d.to_local())
                            for f, d in zip(full, draws, strict=True)
                        ]
                    )
                    case["local_shapes"] = _gather(list(draws[0].to_local().shape))
                    if rname != "none":
                        case["reference"] = _reference(ename, entry, x, make_rng(), dx).float().tolist()
                results[f"{pname}/{rname}/{ename}"] = case
    results["x"] = x.tolist()
    results["gradients"] = _gradients()
    return results


def _gradients() -> dict[str, bool]:
    """Per placement: is the gradient of a sharded drop_path_add the unsharded one (int seed)?"""
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    weight = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    ref_x, ref_b = x.clone().requires_grad_(), (2 * x).requires_grad_()
    (drop_path_add(ref_x, ref_b, P, True, rng=5) * weight).sum().backward()
    agree = {}
    for pname, (mesh_shape, placements) in PLACEMENTS.items():
        mesh = init_device_mesh("cpu", mesh_shape)
        dx = distribute_tensor(x, mesh, placements).requires_grad_()
        db = distribute_tensor(2 * x, mesh, placements).requires_grad_()
        (drop_path_add(dx, db, P, True, rng=5) * distribute_tensor(weight, mesh, placements)).sum().backward()
        assert dx.grad is not None
        assert db.grad is not None
        agree[pname] = torch.equal(dx.grad.full_tensor(), ref_x.grad) and torch.allclose(
            db.grad.full_tensor(), ref_b.grad
        )
    return agree


class _Block(torch.nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(dim)
        self.attn = torch.nn.MultiheadAttention(dim, 2, batch_first=True)
        self.drop = DropPath(0.4)
        hidden = torch.nn.Linear(dim, 2 * dim)
        mlp = torch.nn.Sequential(hidden, torch.nn.GELU(), torch.nn.Linear(2 * dim, dim))
        self.mlp = DropPathResidual(mlp, 0.4, fixed_size=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        x = x + self.drop(self.attn(h, h, h, need_weights=False)[0])
        return self.mlp(x)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)  # the same weights on every rank, in both runs
    return torch.nn.Sequential(torch.nn.Linear(8, 16), _Block(16), _Block(16), torch.nn.Linear(16, 1))


def _train(model: torch.nn.Module, rank: int, params: Any) -> tuple[list[float], int]:
    data = torch.Generator().manual_seed(rank)
    opt = torch.optim.SGD(params, lr=0.05)
    dropped = [0]

    def count(module: Any, inputs: Any, output: torch.Tensor) -> None:
        dropped[0] += int((output.flatten(1) == 0).all(1).sum())

    for m in model.modules():
        if isinstance(m, DropPath):
            m.register_forward_hook(count)
    torch.manual_seed(1000 + rank)  # the drop path masks: per-rank seeds
    losses = []
    for _ in range(4):
        x = torch.randn(6, 5, 8, generator=data)
        y = torch.randn(6, 5, 1, generator=data)
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, dropped[0]


def _fsdp_and_ddp(rank: int) -> dict[str, Any]:
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    ddp_model = _model()
    ddp = DistributedDataParallel(ddp_model)
    ddp_losses, ddp_dropped = _train(ddp, rank, ddp.parameters())
    ddp_weights = {k: v.tolist() for k, v in ddp_model.state_dict().items()}

    fsdp_model = _model()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for block in (fsdp_model[1], fsdp_model[2]):
        fully_shard(block, mesh=mesh)
    fully_shard(fsdp_model, mesh=mesh)
    fsdp_losses, fsdp_dropped = _train(fsdp_model, rank, fsdp_model.parameters())
    fsdp_weights = {
        k: (v.full_tensor() if isinstance(v, DTensor) else v).tolist()
        for k, v in fsdp_model.state_dict().items()
    }
    return {
        "initial_weights": {k: v.tolist() for k, v in _model().state_dict().items()},
        "ddp_losses": _gather(ddp_losses),
        "fsdp_losses": _gather(fsdp_losses),
        "dropped": _gather((ddp_dropped, fsdp_dropped)),
        "ddp_weights": ddp_weights,
        "fsdp_weights": fsdp_weights,
        "fsdp_sharded": all(isinstance(p, DTensor) for p in fsdp_model.parameters()),
    }


def _tensor_parallel(rank: int, seed: int) -> dict[str, Any]:
    """The recipe for plain tensors split over a tensor-parallel group: fold the data-parallel rank in."""
    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    dp_rank, dp_size = mesh.get_local_rank("dp"), mesh.size(0)
    gen = torch.Generator()
    layer = DropPath(P, rng=gen)
    masks = []
    for step in range(4):
        synchronized_rng(seed, step * dp_size + dp_rank, generator=gen)
        x = torch.ones(8, 3)  # this rank's slice of the features of its data-parallel group's batch
        masks.append((layer(x)[:, 0] != 0).int().tolist())
    tp_rank = mesh.get_local_rank("tp")
    return {"masks": _gather(masks), "dp_ranks": _gather(dp_rank), "tp_ranks": _gather(tp_rank)}


def _compiled_shared_seed() -> list[str]:
    compiled = torch.compile(lambda x: x + shared_seed(), fullgraph=True, backend="eager")
    try:
        compiled(torch.ones(1))
    except Exception as exc:  # dynamo wraps the error; its text carries ours
        message = str(exc)
    else:
        message = "no error"
    dist.barrier()  # every rank gets here: nothing hangs in a half-made collective
    return _gather("inside a torch.compile'd region" in message)


def main(rank: int, world_size: int, port: int) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=120),
    )
    try:
        result = {
            "cases": _dtensor_cases(rank),
            "training": _fsdp_and_ddp(rank),
            "tensor_parallel": _tensor_parallel(rank, shared_seed()),
            "compiled_shared_seed": _compiled_shared_seed(),
        }
        if rank == 0:
            print(json.dumps(result))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))

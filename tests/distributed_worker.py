"""One rank of the two-process ``torch.distributed`` test in ``test_distributed.py``.

Run as ``python -m tests.distributed_worker RANK WORLD_SIZE PORT``. Each rank
draws masks with the rank-synchronised generator, with the default generator
(seeded differently per rank, as data-parallel scripts do) and with a
PortableRNG, gathers every rank's masks, and rank 0 prints them as JSON for
the test to compare.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from anydrop import PortableRNG
from anydrop.torch import DropPath, shared_seed, synchronized_rng

STEPS = 5
LAYERS = 4
BATCH = 16


def _gather(masks: list[list[torch.Tensor]]) -> list[list]:
    """All ranks' (steps, layers, samples) 0/1 masks, as nested lists, rank by rank."""
    local = torch.stack([torch.stack(step) for step in masks]).to(torch.uint8)
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local)
    return [p.tolist() for p in parts]


def main(rank: int, world_size: int, port: int) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),
    )
    try:
        seed = shared_seed()
        torch.manual_seed(1000 + rank)  # per-rank seeds for everything else, as usual
        rng = torch.Generator()
        per_sample = [DropPath(0.5, rng=rng) for _ in range(LAYERS)]
        # Whole-batch drops (axis=()) on uneven per-rank batches: the case of
        # torchvision issue 7722, where ranks must skip the same blocks.
        whole_batch = [DropPath(0.5, axis=(), rng=rng) for _ in range(LAYERS)]
        default = [DropPath(0.5) for _ in range(LAYERS)]
        portable_rng = PortableRNG(seed)
        portable = [DropPath(0.5, rng=portable_rng) for _ in range(LAYERS)]
        seeded = [DropPath(0.5, rng=7 + i) for i in range(LAYERS)]
        synced, blocks, unsynced, host, fixed = [], [], [], [], []
        for step in range(STEPS):
            synchronized_rng(seed, step, generator=rng)
            x = torch.ones(BATCH, 3)
            uneven = torch.ones(8 + 3 * rank, 3)
            synced.append([layer(x)[:, 0] != 0 for layer in per_sample])
            blocks.append([(layer(uneven) != 0).any().reshape(1) for layer in whole_batch])
            unsynced.append([layer(x)[:, 0] != 0 for layer in default])
            host.append([layer(x)[:, 0] != 0 for layer in portable])
            fixed.append([layer(x)[:, 0] != 0 for layer in seeded])
        seeds: list = [None] * world_size
        dist.all_gather_object(seeds, seed)
        result = {
            "seeds": seeds,
            "synced": _gather(synced),
            "blocks": _gather(blocks),
            "default": _gather(unsynced),
            "portable": _gather(host),
            "seeded": _gather(fixed),
        }
        if rank == 0:
            print(json.dumps(result))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))

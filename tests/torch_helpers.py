"""What the PyTorch test files share: timm's own drop-path code, and a bit-for-bit comparison."""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Any

import pytest


def load_timm_drop() -> Any:
    """timm's own ``timm/layers/drop.py``, loaded from its file (the ``timm_drop`` fixture).

    Importing the ``timm`` package would import torchvision; ``drop.py`` itself
    needs only torch, so the reference is the real timm code, not a copy.
    """
    spec = importlib.util.find_spec("timm")
    if spec is None or spec.origin is None:
        pytest.skip("timm is not installed (the nox torch session installs it)")
    path = pathlib.Path(spec.origin).parent / "layers" / "drop.py"
    module_spec = importlib.util.spec_from_file_location("timm_layers_drop", path)
    assert module_spec is not None
    assert module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def assert_same(a: list[Any], b: list[Any]) -> None:
    """Two lists of tensors (or Nones, for missing gradients) are equal bit for bit, item by item."""
    import torch

    assert len(a) == len(b)
    for i, (u, v) in enumerate(zip(a, b, strict=True)):
        assert (u is None) == (v is None), f"item {i}: one is None"
        if u is not None:
            assert torch.equal(u, v), f"tensor {i} differs"


def run_ranks(module: str, world_size: int, timeout: float = 240) -> Any:
    """Run ``python -m MODULE RANK WORLD_SIZE PORT`` once per rank (gloo on loopback); rank 0's JSON output.

    Skips where this torch build has no gloo backend; fails with a rank's
    stderr if any rank fails, and kills every rank if one outlives ``timeout``.
    """
    import json
    import os
    import socket
    import subprocess
    import sys

    import torch

    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch build has no torch.distributed gloo backend")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
    env.pop("PYTHONWARNINGS", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", module, str(rank), str(world_size), str(port)],
            cwd=pathlib.Path(__file__).resolve().parents[1],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(world_size)
    ]
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=timeout))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
    for rank, (proc, (_, err)) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0, f"rank {rank} failed:\n{err}"
    return json.loads(outputs[0][0])

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

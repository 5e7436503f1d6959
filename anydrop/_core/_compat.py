# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""The array-api-compat names the core uses, in one place.

A project that vendors this folder and its own copy of array-api-compat points
the two ``from array_api_compat import`` lines below at that copy (for example
``from ..._lib.array_api_compat import ...``); nothing else in the folder needs
editing.
"""

from collections.abc import Callable
from typing import Any

from array_api_compat import (
    array_namespace,
    is_cupy_array,
    is_dask_array,
    is_jax_array,
    is_numpy_array,
    is_torch_array,
)
from array_api_compat import device as _device  # pyright: ignore[reportUnknownVariableType]
from array_api_compat import is_array_api_obj as _is_array_api_obj  # pyright: ignore[reportUnknownVariableType]

# array-api-compat types these two with the union of every library's array
# type, in which the types of libraries it cannot import are unknown to a type
# checker. The core passes arrays as Any; so do they.
device: Callable[[Any], Any] = _device  # pyright: ignore[reportUnknownVariableType]
is_array_api_obj: Callable[[object], bool] = _is_array_api_obj  # pyright: ignore[reportUnknownVariableType]


def torch_namespace() -> object:
    """array-api-compat's namespace for torch tensors (what ``array_namespace`` returns for them)."""
    # Here, not above: importing it imports torch.
    from array_api_compat import torch

    return torch


__all__ = [
    "array_namespace",
    "device",
    "is_array_api_obj",
    "is_cupy_array",
    "is_dask_array",
    "is_jax_array",
    "is_numpy_array",
    "is_torch_array",
    "torch_namespace",
]

# SPDX-License-Identifier: BSD-3-Clause
# Copyright (c) 2026, the anydrop developers. Part of anydrop; see its LICENSE.
"""The array-api-compat names the core uses, in one place.

A project that vendors this folder and its own copy of array-api-compat points
the two ``from array_api_compat import`` lines below at that copy (for example
``from ..._lib.array_api_compat import ...``); nothing else in the folder needs
editing.
"""

from array_api_compat import (
    array_namespace,
    device,
    is_array_api_obj,
    is_cupy_array,
    is_dask_array,
    is_jax_array,
    is_numpy_array,
    is_torch_array,
)


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

"""PyTorch module wrapper: ``anydrop.torch.DropPath`` is a ``torch.nn.Module``.

Importing this module imports torch; ``import anydrop`` alone does not.
"""

from __future__ import annotations

import torch

from ._modules import DropPathConfig

__all__ = ["DropPath"]


class DropPath(DropPathConfig, torch.nn.Module):
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
        return self._drop(x)

    def extra_repr(self) -> str:
        return self._describe()

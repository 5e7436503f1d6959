"""PyTorch module wrapper: ``anydrop.torch.DropPath`` is a ``torch.nn.Module``.

Importing this module imports torch; ``import anydrop`` alone does not.
"""

from __future__ import annotations

from typing import Any

import torch

from ._core import _backend
from ._modules import DropPathConfig, ResidualConfig

__all__ = ["DropPath", "DropPathResidual"]

# Look up torch.Tensor's namespace now, eagerly: if the first call came inside
# torch.compile, dynamo would trace array-api-compat's cached type checks.
_backend(torch.empty(0))


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

    def add(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        """Return ``x + self(branch)`` in one fused pass (:func:`anydrop.drop_path_add`)."""
        return self._drop_add(x, branch)

    def extra_repr(self) -> str:
        return self._describe()


class DropPathResidual(ResidualConfig, torch.nn.Module):
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
        return self._residual(x)

    def extra_repr(self) -> str:
        return self._describe()

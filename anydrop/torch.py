"""PyTorch module wrapper: ``anydrop.torch.DropPath`` is a ``torch.nn.Module``.

Importing this module imports torch; ``import anydrop`` alone does not.
"""

from __future__ import annotations

import secrets
from typing import Any

import torch

from ._core._checks import MAX_SEED, check_count
from ._core._portable import stream_value
from ._core.backends import lookup
from ._core.backends.torch import devices_match
from ._layers import DropPathConfig, ResidualConfig

__all__ = ["DropPath", "DropPathResidual", "shared_seed", "synchronized_rng"]

# Look up torch.Tensor's namespace now, eagerly: if the first call came inside
# torch.compile, dynamo would trace array-api-compat's cached type checks.
lookup(torch.empty(0))


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


# --- Rank-synchronised masks for data parallelism ---


def shared_seed(group: Any = None) -> int:
    """Return a fresh random seed that is the same on every rank of ``group``.

    A collective call: every rank of the process group must make it. Rank 0 of
    ``group`` draws 63 bits from the operating system's entropy and broadcasts
    them. Pass the result to :func:`synchronized_rng` at every step. Ranks that
    already share an int seed (from a config file, say) do not need this.

    Parameters
    ----------
    group
        The ``torch.distributed`` process group, by default the whole world.

    Raises
    ------
    RuntimeError
        ``torch.distributed`` is not initialised.

    Examples
    --------
    >>> import torch.distributed as dist                  # doctest: +SKIP
    >>> dist.init_process_group("nccl")                   # doctest: +SKIP
    >>> seed = shared_seed()                              # doctest: +SKIP
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "shared_seed needs an initialised torch.distributed process group "
            "(call torch.distributed.init_process_group first), or give every rank the same int seed"
        )
    src = 0 if group is None else dist.get_global_rank(group, 0)
    box: list[Any] = [secrets.randbits(63) if dist.get_rank(group) == 0 else None]
    dist.broadcast_object_list(box, src=src, group=group)
    return int(box[0])


def synchronized_rng(
    seed: int, step: int = 0, *, device: Any = None, generator: torch.Generator | None = None
) -> torch.Generator:
    """Return a ``torch.Generator`` whose state depends only on ``seed`` and ``step``.

    Every data-parallel rank that passes the same two numbers gets the same
    generator, so drop path layers using it drop the same samples (and, with
    ``axis=()``, the same whole blocks) on every rank: no communication, no
    host-device transfer. Reseeding at each step keeps ranks in step even when
    one of them makes an extra draw, and makes a resumed run draw the masks of
    the original. The generator's seed is value ``step`` of the stream of
    ``anydrop.PortableRNG(seed)``, so distinct steps get distinct seeds.

    Parameters
    ----------
    seed
        The run's shared seed, an int in [0, 2**64) (see :func:`shared_seed`).
    step
        The training step, a non-negative int.
    device
        Device of a new generator (default: CPU); it must be the device of the
        arrays it draws for.
    generator
        Reseed this ``torch.Generator`` in place instead of making a new one,
        so that layers holding it follow.

    Raises
    ------
    TypeError
        ``seed`` or ``step`` is not an int, or ``generator`` is not a ``torch.Generator``.
    ValueError
        ``seed`` or ``step`` is out of range, or ``device`` is not ``generator``'s device.

    Examples
    --------
    >>> import torch
    >>> from anydrop.torch import DropPath, synchronized_rng
    >>> rng = torch.Generator()
    >>> layer = DropPath(0.5, axis=(), rng=rng)     # drops the whole batch or keeps it
    >>> for step in range(3):
    ...     _ = synchronized_rng(1234, step, generator=rng)   # at the start of every step
    ...     kept = bool(layer(torch.ones(4, 2)).any())
    >>> a = synchronized_rng(1234, 7)
    >>> b = synchronized_rng(1234, 7)
    >>> torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))
    True
    """
    seed = check_count(seed, "seed", MAX_SEED)
    step = check_count(step, "step")
    if generator is None:
        generator = torch.Generator(device=device if device is not None else "cpu")
    elif not isinstance(generator, torch.Generator):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(
            f"generator must be a torch.Generator, got an object of type {type(generator).__name__}"
        )
    elif device is not None and not devices_match(torch.device(device), generator.device):
        raise ValueError(f"device is {torch.device(device)}, but generator is on device {generator.device}")
    return generator.manual_seed(stream_value(seed, step))

"""Rank-synchronised masks for data parallelism: ``shared_seed`` and ``synchronized_rng``.

Part of ``anydrop.torch``, which re-exports both; importing it imports torch.
"""

from __future__ import annotations

import secrets
from typing import Any

import torch

from ._core._checks import MAX_SEED, check_count
from ._core._portable import stream_value
from ._core.backends.torch import devices_match

__all__ = ["shared_seed", "synchronized_rng"]


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
        ``torch.distributed`` is not initialised, or the call is inside a
        ``torch.compile``'d function (where a collective would hang the job).

    Examples
    --------
    >>> import torch.distributed as dist                  # doctest: +SKIP
    >>> dist.init_process_group("nccl")                   # doctest: +SKIP
    >>> seed = shared_seed()                              # doctest: +SKIP
    """
    import torch.distributed as dist

    if torch.compiler.is_compiling():
        # A collective traced into a graph runs on some ranks and not others: the job hangs.
        raise RuntimeError(
            "shared_seed was called inside a torch.compile'd region; it is a collective call "
            "that every rank must make eagerly: call it once before training, outside the "
            "compiled function, and pass the seed in"
        )
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

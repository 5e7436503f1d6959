"""PyTorch DataLoader workers: what each rng draws in forked worker processes."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.backends("torch")

torch = pytest.importorskip("torch")

from anydrop.torch import DropPath  # noqa: E402


class Masks(torch.utils.data.Dataset):
    """Each item is a mask drawn in the worker that loads it."""

    def __init__(self, rng):
        self.layer = DropPath(0.5, rng=rng)

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return self.layer(torch.ones(64, 1)).ravel()


def worker_masks(rng):
    """The first item loaded by each of two forked workers."""
    loader = torch.utils.data.DataLoader(
        Masks(rng), batch_size=None, num_workers=2, multiprocessing_context="fork"
    )
    items = list(loader)
    return items[0], items[1]  # DataLoader hands out items to the workers in turn


def test_int_seed_gives_every_worker_the_same_stream():
    first, second = worker_masks(5)
    assert torch.equal(first, second)
    assert torch.equal(first, DropPath(0.5, rng=5)(torch.ones(64, 1)).ravel())


def test_global_generator_differs_between_workers():
    # torch seeds each worker's global generator with its own seed.
    first, second = worker_masks(None)
    assert not torch.equal(first, second)

"""Failures inside a call: a branch that raises, an allocation that cannot succeed.

The contract (docs/reproducibility.md, "When a call fails"): the caller's
arrays are never modified, and the source is left as a successful call would
have left it when the failure comes after the draw: a raising branch or a
failed allocation of the output has used exactly the values of the mask's
draw, no more, and the next call draws fresh values as usual.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from anydrop import DropPath, DropPathResidual, PortableRNG, drop_path, drop_path_residual
from tests.backends import NO_ADVANCING_RNG, RESIDUAL_GATHERS, make_generator
from tests.helpers import random_batch

pytestmark = pytest.mark.skip_backends(**RESIDUAL_GATHERS)


class Boom(Exception):
    pass


def _boom(a: Any) -> Any:
    raise Boom


def _double(a: Any) -> Any:
    return a * 2


def _sources(backend: Any, kind: str) -> tuple[Any, Any]:
    """Two sources in the same state: one for the failing call, one for the reference."""
    if kind == "portable":
        return PortableRNG(5), PortableRNG(5)
    if backend.name in NO_ADVANCING_RNG:
        pytest.skip(f"{backend.name}: {NO_ADVANCING_RNG[backend.name]}")
    return make_generator(backend, 5), make_generator(backend, 5)


@pytest.mark.parametrize("fixed_size", [False, True], ids=["bernoulli", "fixed_size"])
@pytest.mark.parametrize("kind", ["generator", "portable"])
def test_raising_branch_leaves_x_unchanged_and_the_source_advanced_by_the_draw(backend, kind, fixed_size):
    x = random_batch(backend, (64, 3))
    before = backend.to_numpy(x).copy()
    rng, reference = _sources(backend, kind)
    with pytest.raises(Boom):
        drop_path_residual(x, _boom, 0.5, True, rng=rng, fixed_size=fixed_size)
    np.testing.assert_array_equal(backend.to_numpy(x), before)
    # The reference makes the same call with a branch that returns: both sources are now in one state.
    drop_path_residual(x, _double, 0.5, True, rng=reference, fixed_size=fixed_size)
    if kind == "portable":
        assert rng.position == reference.position > 0
    np.testing.assert_array_equal(
        backend.to_numpy(drop_path(x, 0.5, True, rng=rng)),
        backend.to_numpy(drop_path(x, 0.5, True, rng=reference)),
    )


@pytest.mark.parametrize("rng", [7, "portable"], ids=["int seed", "portable"])
def test_raising_branch_in_a_layer_leaves_its_stream_as_a_call_does(backend, rng):
    make = (lambda: PortableRNG(7)) if rng == "portable" else (lambda: rng)
    x = random_batch(backend, (64, 3))
    before = backend.to_numpy(x).copy()
    failing, reference = DropPathResidual(_boom, 0.5, rng=make()), DropPathResidual(_double, 0.5, rng=make())
    with pytest.raises(Boom):
        failing(x)
    np.testing.assert_array_equal(backend.to_numpy(x), before)
    reference(x)
    failing.branch = _double
    np.testing.assert_array_equal(backend.to_numpy(failing(x)), backend.to_numpy(reference(x)))


@pytest.mark.backends("torch")
def test_raising_branch_in_a_torch_module_leaves_its_stream_as_a_call_does(backend):
    import torch

    from anydrop.torch import DropPathResidual as TorchResidual

    class Raises(torch.nn.Module):
        def forward(self, a: torch.Tensor) -> torch.Tensor:
            raise Boom

    x = random_batch(backend, (64, 3)).requires_grad_()
    before = x.detach().clone()
    failing = TorchResidual(Raises(), 0.5, rng=8)
    reference = TorchResidual(torch.nn.Identity(), 0.5, rng=8)
    with pytest.raises(Boom):
        failing(x)
    assert torch.equal(x.detach(), before)
    reference(x)
    failing.branch = torch.nn.Identity()
    assert torch.equal(failing(x), reference(x))


def _impossible(backend: Any) -> Any:
    """A view whose drop path output would need petabytes: it costs nothing until then."""
    if backend.name == "numpy":
        return np.broadcast_to(np.ones((1, 1), dtype=np.float32), (64, 2**48))
    import torch

    return torch.ones(1, 1).expand(64, 2**48)


@pytest.mark.backends("numpy", "torch")
@pytest.mark.parametrize("kind", ["generator", "portable"])
def test_impossible_allocation_raises_the_backends_error_and_leaves_the_source_usable(backend, kind):
    error = MemoryError if backend.name == "numpy" else RuntimeError
    rng, reference = _sources(backend, kind)
    big = _impossible(backend)
    with pytest.raises(error):
        drop_path(big, 0.5, True, rng=rng)
    # The mask (one value per sample) was drawn before the output's allocation failed.
    small = random_batch(backend, (64, 3))
    drop_path(small, 0.5, True, rng=reference)
    np.testing.assert_array_equal(
        backend.to_numpy(drop_path(small, 0.5, True, rng=rng)),
        backend.to_numpy(drop_path(small, 0.5, True, rng=reference)),
    )
    # A seeded call still reproduces, and the process-wide state the backends cache is intact.
    np.testing.assert_array_equal(
        backend.to_numpy(drop_path(small, 0.5, True, rng=3)),
        backend.to_numpy(drop_path(small, 0.5, True, rng=3)),
    )
    layer = DropPath(0.5, rng=4)
    with pytest.raises(error):
        layer(big)
    assert backend.to_numpy(layer(small)).shape == (64, 3)

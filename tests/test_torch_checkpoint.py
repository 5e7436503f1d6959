"""PyTorch activation checkpointing: the recomputed forward uses the forward's masks, for every rng kind.

``torch.utils.checkpoint`` reruns a forward during backward and restores only
torch's global generators. These tests compare, bit for bit, the outputs,
gradients and generator states of a model run with and without checkpointing.
"""

from __future__ import annotations

import pytest

import anydrop

pytestmark = pytest.mark.backends("torch")

torch = pytest.importorskip("torch")

from tests.torch_helpers import assert_same  # noqa: E402

checkpoint = pytest.importorskip("torch.utils.checkpoint")

from anydrop.torch import DropPath, DropPathResidual, synchronized_rng  # noqa: E402

RNG_KINDS = ["none", "int", "generator", "portable", "synchronized"]
#: (use_reentrant, early_stop): torch's two implementations, and the non-reentrant one recomputing whole.
MODES = [(False, True), (False, False), (True, True)]


def make_rng(kind, dev):
    if kind == "none":
        return None
    if kind == "int":
        return 7
    if kind == "generator":
        return torch.Generator(device=dev).manual_seed(7)
    if kind == "portable":
        return anydrop.PortableRNG(7)
    return synchronized_rng(7, 3, device=dev)


class Block(torch.nn.Module):
    """A pre-norm transformer-style block with the three drop-path layers anydrop has."""

    def __init__(self, dim, p, rng):
        super().__init__()
        self.norm = torch.nn.LayerNorm(dim)
        self.fc = torch.nn.Linear(dim, dim)
        self.drop = DropPath(p, rng=rng)
        hidden = 2 * dim
        mlp = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, dim))
        self.residual = DropPathResidual(mlp, p, rng=rng)
        self.add = DropPath(p, rng=rng)
        self.out = torch.nn.Linear(dim, dim)

    def forward(self, x):
        x = x + self.drop(self.fc(self.norm(x)))
        x = self.residual(x)
        return self.add.add(x, torch.tanh(self.out(x)))


class Model(torch.nn.Module):
    def __init__(self, rng_kind, dev, *, depth=3, dim=16, p=0.4, shared=True):
        super().__init__()
        shared_rng = make_rng(rng_kind, dev)
        self.blocks = torch.nn.ModuleList(
            Block(dim, p, shared_rng if shared else make_rng(rng_kind, dev)) for _ in range(depth)
        )

    def forward(self, x, use_checkpoint=None):
        for block in self.blocks:
            if use_checkpoint is None:
                x = block(x)
            else:
                x = checkpoint.checkpoint(block, x, use_reentrant=use_checkpoint)
        return x


def run(model, x, use_checkpoint, steps=2):
    """Train-mode forward and backward ``steps`` times; return every output, gradient and the next draws."""
    out = []
    for _ in range(steps):
        model.zero_grad()
        xi = x.clone().requires_grad_(True)
        y = model(xi, use_checkpoint)
        (y * torch.arange(y.numel(), dtype=y.dtype, device=y.device).reshape(y.shape)).sum().backward()
        out += [y.detach(), xi.grad] + [p.grad for p in model.parameters()]
    # The layers' generators are where an uncheckpointed run leaves them.
    out += [model.blocks[0].drop(torch.ones(64, 1, device=x.device)), torch.rand(4, device=x.device)]
    return out


@pytest.mark.parametrize("rng_kind", RNG_KINDS)
@pytest.mark.parametrize("shared", [True, False], ids=["one-rng-for-all-layers", "rng-per-layer"])
@pytest.mark.parametrize(("reentrant", "early_stop"), MODES)
def test_checkpointing_changes_no_output_gradient_or_generator_state(rng_kind, shared, reentrant, early_stop):
    dev = torch.device("cpu")
    x = torch.randn(32, 5, 16, device=dev)
    results = []
    for use_checkpoint in (None, reentrant):
        torch.manual_seed(0)
        model = Model(rng_kind, dev, shared=shared)
        torch.manual_seed(1)
        with checkpoint.set_checkpoint_early_stop(early_stop):
            results.append(run(model, x, use_checkpoint))
    assert_same(*results)


@pytest.mark.parametrize("rng_kind", ["int", "generator", "portable"])
def test_the_masks_differ_from_step_to_step(rng_kind, backend):
    # The replay must not freeze the layer's stream: each training step draws anew, on x's device.
    dev = torch.device(backend.device or "cpu")
    layer = DropPath(0.5, rng=make_rng(rng_kind, dev))
    masks = []
    for _ in range(3):
        x = torch.ones(64, 1, device=dev, requires_grad=True)
        y = checkpoint.checkpoint(layer, x, use_reentrant=False)
        y.sum().backward()
        masks.append(y.detach())
        assert torch.equal(x.grad, y.detach())  # d(sum y)/dx is the mask the forward used
    assert not torch.equal(masks[0], masks[1])
    assert not torch.equal(masks[1], masks[2])


@pytest.mark.parametrize("rng_kind", ["int", "generator", "portable"])
def test_one_layer_called_twice_on_one_shape_under_checkpointing_is_a_clear_error(rng_kind):
    layer = DropPath(0.5, rng=make_rng(rng_kind, "cpu"))
    a, b = torch.ones(8, 1, requires_grad=True), torch.ones(8, 1, requires_grad=True)
    ya = checkpoint.checkpoint(layer, a, use_reentrant=False)
    yb = checkpoint.checkpoint(layer, b, use_reentrant=False)
    with pytest.raises(RuntimeError) as excinfo:
        (ya + yb).sum().backward()
    assert_explains_the_ambiguous_recomputation(str(excinfo.value), "2 masks", (8, 1))


def assert_explains_the_ambiguous_recomputation(message, count, shape):
    """The refusal names the layer, the draws and the shape, and says what to do instead."""
    for part in (
        f"DropPath with its own rng is being recomputed by activation checkpointing, but it drew {count} "
        f"for inputs of shape {shape} in forward passes that may be recomputed",
        "cannot tell which one this recomputation repeats: the gradient would belong to another mask",
        "Use one layer per call, run backward after each forward, or pass rng=None",
    ):
        assert part in message
    assert message.endswith("(torch's global generator, which torch.utils.checkpoint restores)")


@pytest.mark.parametrize("rng_kind", ["int", "generator", "portable"])
def test_a_shape_whose_record_was_dropped_is_a_clear_error(rng_kind):
    # A layer keeps the draws of its last 16 checkpointed calls: the 17th call drops the first
    # record, after which the recomputation of (8, 1) cannot tell its draw from the dropped one.
    layer = DropPath(0.5, rng=make_rng(rng_kind, "cpu"))
    shapes = [(8, 1)] + [(n, 1) for n in range(9, 24)] + [(8, 1)]
    xs = [torch.ones(s, requires_grad=True) for s in shapes]
    ys = [checkpoint.checkpoint(layer, x, use_reentrant=False) for x in xs]
    with pytest.raises(RuntimeError) as excinfo:
        sum(y.sum() for y in ys).backward()
    assert_explains_the_ambiguous_recomputation(str(excinfo.value), "more than one mask", (8, 1))


def test_sixteen_checkpointed_shapes_are_all_replayed():
    results = []
    for use_checkpoint in (False, True):
        layer = DropPath(0.5, rng=11)
        xs = [torch.ones(n, 2, requires_grad=True) for n in range(8, 24)]
        if use_checkpoint:
            ys = [checkpoint.checkpoint(layer, x * 2, use_reentrant=False) for x in xs]
        else:
            ys = [layer(x * 2) for x in xs]
        sum((k + 1) * y.sum() for k, y in enumerate(ys)).backward()
        results.append([*ys, *(x.grad for x in xs)])
    assert_same(*results)


@pytest.mark.parametrize("rng_kind", ["int", "generator", "portable"])
def test_a_layer_called_inside_a_backward_pass_draws_as_an_ordinary_call(rng_kind):
    # From a tensor hook, say: not a recomputation, so it draws from its rng and advances it.
    reference = DropPath(0.5, rng=make_rng(rng_kind, "cpu"))
    expected = [reference(torch.ones(64, 1)) for _ in range(2)]
    layer = DropPath(0.5, rng=make_rng(rng_kind, "cpu"))
    drawn = []
    x = torch.ones(3, requires_grad=True)
    x.register_hook(lambda grad: drawn.append(layer(torch.ones(64, 1))))
    (x * 2).sum().backward()
    assert len(drawn) == 1
    drawn.append(layer(torch.ones(64, 1)))
    assert_same(drawn, expected)


def test_one_layer_called_on_two_shapes_replays_each():
    # Multi-crop training: one layer, two input shapes, one backward.
    results = []
    for use_checkpoint in (False, True):
        layer = DropPath(0.5, rng=11)
        a, b = torch.ones(16, 3, requires_grad=True), torch.ones(12, 3, requires_grad=True)
        if use_checkpoint:
            ya = checkpoint.checkpoint(layer, a * 2, use_reentrant=False)
            yb = checkpoint.checkpoint(layer, b * 3, use_reentrant=False)
        else:
            ya, yb = layer(a * 2), layer(b * 3)
        (ya.sum() + 2 * yb.sum()).backward()
        results.append([ya, yb, a.grad, b.grad])
    assert_same(*results)


def test_ordinary_training_records_nothing():
    layer = DropPath(0.5, rng=3)
    x = torch.ones(8, 4, requires_grad=True)
    layer(x).sum().backward()
    assert "_recorded" not in vars(layer)


@pytest.mark.parametrize("rng_kind", ["generator", "portable"])
def test_the_function_with_an_advancing_rng_refuses_to_be_recomputed(rng_kind):
    rng = make_rng(rng_kind, "cpu")
    x = torch.ones(8, 1, requires_grad=True)
    y = checkpoint.checkpoint(lambda t: anydrop.drop_path(t * 2, 0.5, True, rng=rng), x, use_reentrant=False)
    with pytest.raises(RuntimeError, match=r"inside a backward pass.*torch\.utils\.checkpoint"):
        y.sum().backward()


@pytest.mark.parametrize("rng", [None, 5], ids=["none", "int"])
@pytest.mark.parametrize("reentrant", [False, True])
def test_the_function_with_a_seed_or_the_global_generator_is_exact(rng, reentrant):
    grads = []
    for use_checkpoint in (False, True):
        torch.manual_seed(0)
        x = torch.arange(1.0, 9.0).reshape(8, 1).requires_grad_(True)

        def f(t):
            return anydrop.drop_path(t * t, 0.5, True, rng=rng)

        y = checkpoint.checkpoint(f, x, use_reentrant=reentrant) if use_checkpoint else f(x)
        y.sum().backward()
        grads.append((y.detach(), x.grad))
    assert_same(*grads)

"""PyTorch specifics: exact parity with timm, autograd, generators and devices."""

from __future__ import annotations

import math

import pytest

from anydrop import drop_path

pytestmark = pytest.mark.backends("torch")

torch = pytest.importorskip("torch")


@pytest.fixture
def dev(backend):
    return torch.device(backend.device or "cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("scale_by_keep", [True, False])
def test_global_seed_reproduces_timm_bit_for_bit(timm_drop, dev, dtype, p, scale_by_keep):
    if dtype in (torch.float16, torch.bfloat16) and scale_by_keep and p == 0.1:
        pytest.skip("1/0.9 is inexact in 16-bit floats: anydrop rounds it without bias, timm does not")
    x = torch.randn(64, 3, 5, generator=torch.Generator().manual_seed(0)).to(dev, dtype)
    torch.manual_seed(1234)
    expected = timm_drop.drop_path(x, p, True, scale_by_keep)
    after_timm = torch.rand(4, device=dev)
    torch.manual_seed(1234)
    actual = drop_path(x, p, True, scale_by_keep)
    after_anydrop = torch.rand(4, device=dev)
    assert torch.equal(actual, expected)
    # Same random numbers consumed: later draws in a training loop stay in step.
    assert torch.equal(after_anydrop, after_timm)


def test_module_matches_timm_module(timm_drop, dev):
    from anydrop.torch import DropPath

    x = torch.randn(32, 4, device=dev)
    ours, theirs = DropPath(0.3), timm_drop.DropPath(0.3)
    assert ours.state_dict() == theirs.state_dict() == {}
    assert ours.extra_repr() == theirs.extra_repr()
    for _ in range(3):
        torch.manual_seed(7)
        expected = theirs(x)
        torch.manual_seed(7)
        assert torch.equal(ours(x), expected)


@pytest.mark.parametrize("scale_by_keep", [True, False])
def test_gradient_is_mask_over_keep(dev, scale_by_keep):
    x = torch.randn(128, 6, device=dev, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(128, 6, device=dev, dtype=torch.float64)
    out = drop_path(x, 0.4, True, scale_by_keep, rng=3)
    out.backward(upstream)
    kept = (out != 0).all(dim=1)
    assert 0 < int(kept.sum()) < 128
    scale = 1 / 0.6 if scale_by_keep else 1.0
    expected = upstream * kept[:, None] * scale
    torch.testing.assert_close(x.grad, expected, rtol=1e-15, atol=0)


def test_gradcheck(dev):
    x = torch.randn(8, 3, device=dev, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: drop_path(t, 0.5, True, rng=0), (x,))


def test_drop_prob_one_has_zero_finite_gradient(dev):
    x = torch.tensor([[1.0, float("inf")], [float("nan"), -2.0]], device=dev, requires_grad=True)
    out = drop_path(x, 1.0, True)
    out.sum().backward()
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_identity_keeps_the_graph(dev):
    x = torch.randn(4, 2, device=dev, requires_grad=True)
    assert drop_path(x, 0.5, False) is x


def test_output_and_seeded_generator_on_x_device(dev):
    x = torch.ones(16, 2, device=dev)
    assert drop_path(x, 0.5, True, rng=0).device == x.device
    gen = torch.Generator(device=dev).manual_seed(0)
    assert drop_path(x, 0.5, True, rng=gen).device == x.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host-device syncs only exist with a CUDA device")
@pytest.mark.parametrize("p", [0.3, 1.0])
def test_no_host_device_sync_on_cuda(p):
    x = torch.randn(64, 8, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    drop_path(x, p, True, rng=gen)  # warm up lazy initialisation
    torch.cuda.set_sync_debug_mode("error")
    try:
        for rng in (None, 1, gen):
            drop_path(x, p, True, rng=rng)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_float8_is_a_type_error(dtype):
    x = torch.ones(4, 2).to(dtype)
    with pytest.raises(TypeError, match="16 bits or more"):
        drop_path(x, 0.5, True)


@pytest.mark.parametrize("rng", [None, 0])
def test_meta_tensors_work_for_shape_inference(rng):
    x = torch.empty(8, 3, device="meta")
    out = drop_path(x, 0.5, True, rng=rng)
    assert out.device.type == "meta"
    assert out.shape == (8, 3)


@pytest.mark.parametrize("rng", [None, 0])
def test_meta_tensors_through_a_layer_with_grad_disabled(rng):
    from anydrop.torch import DropPath

    # Without grad a layer records its draw for activation checkpointing: a meta
    # tensor has no generator whose state could be recorded.
    layer = DropPath(0.5, rng=rng)
    x = torch.empty(8, 3, device="meta")
    with torch.no_grad():
        assert layer(x).shape == (8, 3)
    assert layer(x).device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for a second device type")
def test_generator_on_another_device_is_a_value_error():
    x = torch.ones(4, 2, device="cuda")
    with pytest.raises(ValueError, match=r"rng is a torch\.Generator on device cpu, but x is on device cuda"):
        drop_path(x, 0.5, True, rng=torch.Generator())
    with pytest.raises(ValueError, match=r"rng is a torch\.Generator on device cuda"):
        drop_path(torch.ones(4, 2), 0.5, True, rng=torch.Generator(device="cuda"))


def test_parameter_input_and_requires_grad_input_are_not_modified(dev):
    weight = torch.nn.Parameter(torch.ones(8, 3, device=dev))
    out = drop_path(weight, 0.5, True, rng=1)
    assert torch.equal(weight.detach(), torch.ones(8, 3, device=dev))
    assert out.requires_grad


# --- drop_path_add, drop_path_residual, the residual module and torch.compile ---


def _mlp(dev, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.GELU(), torch.nn.Linear(12, 6)).to(dev)


def test_global_seed_gives_timm_masks_in_the_fused_paths(timm_drop, dev):
    from anydrop import drop_path_add, drop_path_residual

    x = torch.randn(64, 3, 6, device=dev)
    branch = torch.randn(64, 3, 6, device=dev)
    torch.manual_seed(5)
    expected = x + timm_drop.drop_path(branch, 0.3, True)
    torch.manual_seed(5)
    torch.testing.assert_close(drop_path_add(x, branch, 0.3, True), expected, rtol=0, atol=1e-6)
    mlp = _mlp(dev)
    with torch.no_grad():
        torch.manual_seed(5)
        expected = x + timm_drop.drop_path(mlp(x), 0.3, True)
        torch.manual_seed(5)
        torch.testing.assert_close(drop_path_residual(x, mlp, 0.3, True), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fixed_size", [False, True])
def test_residual_gradients_match_the_dense_computation(dev, fixed_size):
    from anydrop import drop_path_residual

    x = torch.randn(32, 4, 6, device=dev, dtype=torch.float64, requires_grad=True)
    mlp = _mlp(dev).double()
    out = drop_path_residual(x, mlp, 0.5, True, rng=3, fixed_size=fixed_size)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    # The dense reference: the same kept samples and scales, recovered from the output.
    with torch.no_grad():
        diff = (out - x).reshape(32, -1)
        branch = mlp(x).reshape(32, -1)
        scale = (diff * branch).sum(1) / (branch * branch).sum(1)  # 0 or the sample's scale
    x2 = x.detach().clone().requires_grad_()
    mlp2 = _mlp(dev).double()
    ref = x2 + scale.reshape(32, 1, 1) * mlp2(x2)
    torch.testing.assert_close(out, ref)
    ref.backward(grad_out)
    torch.testing.assert_close(x.grad, x2.grad)
    for p, p2 in zip(mlp.parameters(), mlp2.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p2.grad)
    assert 0 < int((scale != 0).sum()) < 32


def test_add_gradients(dev):
    from anydrop import drop_path_add

    x = torch.randn(16, 5, device=dev, requires_grad=True)
    branch = torch.randn(16, 5, device=dev, requires_grad=True)
    out = drop_path_add(x, branch, 0.5, True, rng=2)
    mask = drop_path(torch.ones(16, 5, device=dev), 0.5, True, rng=2)
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))
    torch.testing.assert_close(branch.grad, mask)


def test_p_one_gives_finite_zero_gradients_for_inf_branch(dev):
    from anydrop import drop_path_add

    x = torch.ones(4, 3, device=dev, requires_grad=True)
    branch = torch.full((4, 3), float("inf"), device=dev, requires_grad=True)
    out = drop_path_add(x, branch, 1.0, True)
    out.sum().backward()
    assert torch.equal(out.detach(), torch.ones(4, 3, device=dev))
    assert torch.equal(branch.grad, torch.zeros(4, 3, device=dev))


def test_residual_module_registers_the_branch_and_follows_train_eval(dev):
    from anydrop.torch import DropPathResidual

    mlp = _mlp(dev)
    block = DropPathResidual(mlp, 0.5, rng=1)
    assert set(block.state_dict()) == {f"branch.{k}" for k in mlp.state_dict()}
    assert list(block.parameters()) == list(mlp.parameters())
    assert repr(block).startswith("DropPathResidual(\n  drop_prob=0.500, rng=1")
    x = torch.randn(16, 3, 6, device=dev)
    with torch.no_grad():
        torch.testing.assert_close(block.eval()(x), x + mlp(x))
        out = block.train()(x)
    rows = (out - x).abs().reshape(16, -1).sum(1)
    assert 0 < int((rows == 0).sum()) < 16


def test_the_modules_take_tensor_subclasses_and_other_libraries_arrays(dev):
    # A Parameter is a Tensor subclass, not a torch.fx proxy: it runs as the plain tensor does.
    import numpy as np

    import anydrop
    from anydrop.torch import DropPath, DropPathResidual

    x = torch.randn(16, 3, device=dev)
    weight = torch.nn.Parameter(x.clone())
    assert torch.equal(DropPath(0.5, rng=4)(weight), DropPath(0.5, rng=4)(x))
    assert torch.equal(DropPath(0.5, rng=4).add(x, weight), DropPath(0.5, rng=4).add(x, x))
    branch = torch.nn.Linear(3, 3).to(dev)
    torch.testing.assert_close(
        DropPathResidual(branch, 0.5, rng=4)(weight), DropPathResidual(branch, 0.5, rng=4)(x)
    )
    # A NumPy array through the torch module draws from the module's own stream, as anydrop.DropPath does.
    a = np.ones((16, 2))
    assert np.array_equal(DropPath(0.5, rng=3)(a), anydrop.DropPath(0.5, rng=3)(a))


def test_synchronized_rng_defaults_and_refusals(dev):
    from anydrop.torch import synchronized_rng
    from tests.internals import stream_value

    gen = synchronized_rng(7)  # step 0, a CPU generator
    assert (gen.device.type, gen.initial_seed()) == ("cpu", stream_value(7, 0))
    assert synchronized_rng(7, generator=torch.Generator()).initial_seed() == stream_value(7, 0)
    assert synchronized_rng(7, 2, device=dev).device.type == dev.type
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator, got an object of type int"):
        synchronized_rng(7, generator=3)


@pytest.fixture
def compile_fullgraph():
    """torch.compile with fullgraph=True: any graph break is an error.

    The aot_eager backend traces through dynamo and AOTAutograd (forward and
    backward graphs) without generating code, so the test checks traceability
    in seconds. Importing anydrop.torch registers torch.Tensor eagerly, as it
    does for users of the modules.
    """
    import anydrop.torch  # noqa: F401

    torch._dynamo.reset()
    yield lambda fn: torch.compile(fn, fullgraph=True, backend="aot_eager")
    torch._dynamo.reset()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compile_fullgraph_functions(compile_fullgraph, dev, dtype):
    from anydrop import drop_path_add, drop_path_residual

    x = torch.randn(8, 5, 6, device=dev, dtype=dtype, requires_grad=True)
    branch = torch.randn(8, 5, 6, device=dev, dtype=dtype)
    mlp = _mlp(dev).to(dtype)
    fns = [
        lambda x: drop_path(x, 0.3, True),
        lambda x: drop_path(x, 0.3, True, axis=1),
        lambda x: drop_path_add(x, branch, 0.3, True),
        lambda x: drop_path_residual(x, mlp, 0.3, True, fixed_size=True),
        lambda x: drop_path_residual(x, mlp, 0.3, True),
    ]
    for fn in fns:
        out = compile_fullgraph(fn)(x)
        out.float().sum().backward()
        assert out.shape == x.shape
        assert out.dtype == dtype


def test_compiled_function_matches_eager_for_the_same_seed(compile_fullgraph, dev):
    from anydrop import drop_path_add

    x = torch.randn(64, 4, device=dev)
    branch = torch.randn(64, 4, device=dev)
    compiled = compile_fullgraph(lambda x, b: drop_path_add(x, b, 0.5, True))
    torch.manual_seed(3)
    eager = drop_path_add(x, branch, 0.5, True)
    torch.manual_seed(3)
    assert torch.equal(compiled(x, branch), eager)


@pytest.mark.parametrize("fixed_size", [False, True])
def test_compile_fullgraph_modules(compile_fullgraph, dev, fixed_size):
    from anydrop.torch import DropPath, DropPathResidual

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = _mlp(dev)
            self.drop_path = DropPath(0.2)
            self.residual = DropPathResidual(_mlp(dev, 1), 0.2, fixed_size=fixed_size)

        def forward(self, x):
            x = x + self.drop_path(self.mlp(x))
            x = self.drop_path.add(x, self.mlp(x))
            return self.residual(x)

    block = Block().to(dev).train()
    x = torch.randn(8, 3, 6, device=dev, requires_grad=True)
    out = compile_fullgraph(block)(x)
    out.sum().backward()
    assert x.grad is not None
    assert block.residual.branch[0].weight.grad is not None
    # Eval mode compiles too, and is deterministic.
    block.eval()
    compiled = compile_fullgraph(block)
    torch.testing.assert_close(compiled(x), compiled(x))


# timm's own TestDropPath and TestDropPathModule (tests/test_layers_drop.py), run on anydrop.


def test_timm_no_drop_when_prob_zero():
    x = torch.ones((4, 8, 16, 16))
    assert torch.allclose(drop_path(x, drop_prob=0.0, training=True), x)


def test_timm_no_drop_when_not_training():
    x = torch.ones((4, 8, 16, 16))
    assert torch.allclose(drop_path(x, drop_prob=0.5, training=False), x)


@pytest.mark.parametrize("scale_by_keep", [True, False])
def test_timm_drop_path_scaling(scale_by_keep):
    torch.manual_seed(42)
    x = torch.ones((100, 8, 4, 4))
    keep_prob = 0.8
    result = drop_path(x, drop_prob=1 - keep_prob, training=True, scale_by_keep=scale_by_keep)
    kept_mask = result[:, 0, 0, 0] != 0
    assert kept_mask.any()
    kept_vals = result[kept_mask, 0, 0, 0]
    expected = 1.0 / keep_prob if scale_by_keep else 1.0
    assert torch.allclose(kept_vals, torch.full_like(kept_vals, expected), atol=1e-5)


def test_timm_module_training_mode_and_extra_repr():
    from anydrop.torch import DropPath

    module = DropPath(drop_prob=0.5)
    x = torch.ones((32, 8, 4, 4))
    module.eval()
    assert torch.allclose(module(x), x)
    module.train()
    torch.manual_seed(42)
    assert (module(x) == 0).any()
    assert "0.123" in DropPath(drop_prob=0.123).extra_repr()


def test_int_seeds_that_differ_above_32_bits_draw_different_masks(dev):
    # A CPU torch.Generator keeps only the low 32 bits of a seed.
    x = torch.ones(256, 1, device=dev)
    low = drop_path(x, 0.5, True, rng=5)
    assert torch.equal(low, drop_path(x, 0.5, True, rng=torch.Generator(device=dev).manual_seed(5)))
    assert not torch.equal(low, drop_path(x, 0.5, True, rng=2**32 + 5))
    assert not torch.equal(drop_path(x, 0.5, True, rng=2**40), drop_path(x, 0.5, True, rng=2**41))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.3])
@pytest.mark.parametrize("seeded", [True, False])
def test_16_bit_scale_is_one_float64_uniform_per_sample(dev, dtype, p, seeded):
    """One u per sample: ``lo + spacing`` if u < keep * frac, ``lo`` if u < keep, else 0, exactly."""
    keep = 1.0 - p
    # lo and lo + spacing: the neighbours of 1 / keep in the dtype, frac the upper one's share.
    _, exponent = math.frexp(1.0 / keep)
    spacing = torch.finfo(dtype).eps * 2.0 ** (exponent - 1)
    lo = math.floor(1.0 / keep / spacing) * spacing
    frac = (1.0 / keep - lo) / spacing
    x = torch.ones(4096, 3, device=dev, dtype=dtype)
    if seeded:
        out = drop_path(x, p, True, rng=torch.Generator(device=dev).manual_seed(11))
        gen = torch.Generator(device=dev).manual_seed(11)
    else:
        torch.manual_seed(11)
        out = drop_path(x, p, True)
        torch.manual_seed(11)
        gen = None
    u = torch.empty(4096, 1, device=dev, dtype=torch.float64).uniform_(generator=gen)
    scale = torch.where(u < keep * frac, lo + spacing, torch.where(u < keep, lo, 0.0))
    assert torch.equal(out, scale.to(dtype).expand(4096, 3))
    assert {float(v) for v in out.unique()} == {0.0, lo, lo + spacing}

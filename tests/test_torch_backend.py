"""The torch backend's own pieces (``anydrop/_core/backends/torch.py``), eagerly, without torch.compile.

Covers the unbiased 16-bit scale that ``TorchGenerator.unbiased`` draws (one
float64 uniform per sample, bucketed into ``lo + spacing``, ``lo`` or 0: exact
values from a known stream, the ``u < keep`` boundary, the frequencies with
exact binomial bounds, the fallback on devices other than cpu/cuda and the
bounded table cache), ``TorchGenerator.uniform``, ``devices_match``, the error
for a generator used inside a backward pass, ``keep_for`` with a tensor
``drop_prob`` and a PortableRNG, ``namespace_for`` and ``device_name``.
Written against the mutants that a mutmut run over that module left alive.
"""

from __future__ import annotations

import math

import pytest

from anydrop import PortableRNG, drop_path
from tests.stats import binomial_acceptance

pytestmark = pytest.mark.backends("torch")

torch = pytest.importorskip("torch")

from anydrop._core.backends import torch as backend_module  # noqa: E402

ALPHA = 1e-6

DTYPES = ["bfloat16", "float16"]


@pytest.fixture(autouse=True)
def _empty_tables():
    """Start each test with the table cache empty, so that the table builder runs here."""
    backend_module._TABLES.clear()
    yield
    backend_module._TABLES.clear()


def _neighbours(keep: float, dtype) -> tuple[float, float]:
    """The two values of ``dtype`` around ``1 / keep``: (below, above), found with torch.nextafter."""
    scale = torch.tensor(1.0 / keep, dtype=torch.float64)
    near = scale.to(dtype)
    if near.double() > scale:
        return float(torch.nextafter(near, torch.zeros((), dtype=dtype))), float(near)
    return float(near), float(torch.nextafter(near, torch.full((), math.inf, dtype=dtype)))


def _reference(u, keep: float, dtype):
    """The documented mask: ``lo + spacing`` where u < keep * frac, ``lo`` where u < keep, else 0."""
    lo, hi = _neighbours(keep, dtype)
    frac = (1.0 / keep - lo) / (hi - lo)
    out = torch.where(u < keep * frac, hi, torch.where(u < keep, lo, 0.0))
    return out.to(dtype), lo, hi, frac


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("keep", [0.9, 0.7, 0.33])
def test_unbiased_mask_is_one_float64_uniform_per_sample(dtype_name, keep):
    dtype = getattr(torch, dtype_name)
    n = 4096
    x = torch.ones(n, 3, dtype=dtype)
    out = drop_path(x, 1.0 - keep, training=True, rng=torch.Generator().manual_seed(7))
    u = torch.empty(n, dtype=torch.float64).uniform_(generator=torch.Generator().manual_seed(7))
    expected, lo, hi, _ = _reference(u, keep, dtype)
    assert out.dtype == dtype
    assert torch.equal(out, expected[:, None].expand(n, 3))
    assert {float(v) for v in out.unique()} == {0.0, lo, hi}


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_unbiased_mask_with_the_global_generator(dtype_name):
    dtype = getattr(torch, dtype_name)
    keep = 0.8
    n = 2048
    x = torch.ones(n, dtype=dtype)
    torch.manual_seed(11)
    out = drop_path(x, 1.0 - keep, training=True)
    torch.manual_seed(11)
    u = torch.empty(n, dtype=torch.float64).uniform_()
    assert torch.equal(out, _reference(u, keep, dtype)[0])


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_unbiased_frequencies_and_mean(dtype_name):
    dtype = getattr(torch, dtype_name)
    keep = 0.9
    n = 200_000
    lo, hi = _neighbours(keep, dtype)
    frac = (1.0 / keep - lo) / (hi - lo)
    assert 0.0 < frac < 1.0
    out = drop_path(
        torch.ones(n, dtype=dtype), 1.0 - keep, training=True, rng=torch.Generator().manual_seed(3)
    )
    n_hi = int((out == hi).sum())
    n_lo = int((out == lo).sum())
    n_zero = int((out == 0).sum())
    assert n_hi + n_lo + n_zero == n
    assert n_zero in binomial_acceptance(n, 1.0 - keep, ALPHA)
    assert n_hi in binomial_acceptance(n, keep * frac, ALPHA)
    # The expected scale of a sample is exactly 1 / keep: keep * (lo + frac * spacing).
    assert keep * (lo + frac * (hi - lo)) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_unbiased_draw_at_exactly_keep_is_dropped(dtype_name):
    # A Bernoulli draw keeps a sample when u < keep: a u equal to keep drops it
    # (bucketize's right=True). keep is one of the stream's own values, in
    # [0.5, 1) so that 1 - (1 - keep) == keep exactly; one that float32 rounds
    # up, so that bounds kept in float32 would keep the sample too.
    dtype = getattr(torch, dtype_name)
    n = 64
    u = torch.empty(n, dtype=torch.float64).uniform_(generator=torch.Generator().manual_seed(5))
    i = next(
        i
        for i, v in enumerate(u.tolist())
        if 0.5 <= v < 0.99 and torch.tensor(v, dtype=torch.float32).double() > v and 1.0 - (1.0 - v) == v
    )
    keep = float(u[i])
    out = drop_path(
        torch.ones(n, dtype=dtype), 1.0 - keep, training=True, rng=torch.Generator().manual_seed(5)
    )
    assert float(out[i]) == 0.0
    assert torch.equal(out, _reference(u, keep, dtype)[0])


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_unbiased_on_meta_falls_back_to_two_draws(dtype_name):
    # Devices other than cpu and cuda (meta holds no data) take MaskSource's two Bernoulli draws.
    dtype = getattr(torch, dtype_name)
    x = torch.empty(8, 3, dtype=dtype, device="meta")
    out = drop_path(x, 0.1, training=True)
    assert out.device.type == "meta"
    assert out.shape == (8, 3)
    assert out.dtype == dtype
    assert not backend_module._TABLES


def test_unbiased_table_is_cached_and_reused():
    x = torch.ones(16, dtype=torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    drop_path(x, 0.1, training=True, rng=gen)
    key = (0.9, torch.bfloat16, x.device)
    table = backend_module._TABLES[key]
    bounds, values, *_ = table
    lo, hi = _neighbours(0.9, torch.bfloat16)
    frac = (1.0 / 0.9 - lo) / (hi - lo)
    assert bounds.tolist() == [0.9 * frac, 0.9]
    assert bounds.dtype == torch.float64
    assert values.tolist() == [hi, lo, 0.0]
    assert values.dtype == torch.bfloat16
    drop_path(x, 0.1, training=True, rng=gen)
    assert backend_module._TABLES[key] is table


def test_unbiased_table_cache_stays_bounded():
    x = torch.ones(4, dtype=torch.float16)
    gen = torch.Generator().manual_seed(0)
    most = 0
    for i in range(backend_module._MAX_TABLES + 20):
        drop_path(x, 0.01 + i * 1e-4, training=True, rng=gen)
        most = max(most, len(backend_module._TABLES))
    assert most == backend_module._MAX_TABLES


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16", "float64"])
def test_uniform_is_float32_on_every_dtype(dtype_name):
    x = torch.ones(3, dtype=getattr(torch, dtype_name))
    draw = backend_module.TorchGenerator(torch.Generator().manual_seed(9)).uniform((1000,), x, None)
    assert draw.dtype == torch.float32
    assert torch.equal(draw, torch.rand(1000, generator=torch.Generator().manual_seed(9)))


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("cpu", "cpu", True),
        ("cuda", "cuda", True),
        ("cuda:0", "cuda", True),
        ("cuda", "cuda:1", True),
        ("cuda:1", "cuda:1", True),
        ("cuda:0", "cuda:1", False),
        ("cuda:1", "cuda:0", False),
        ("cpu", "cuda", False),
        ("cuda:0", "cpu", False),
    ],
)
def test_devices_match(a, b, same):
    assert backend_module.devices_match(torch.device(a), torch.device(b)) is same


class _DropInBackward(torch.autograd.Function):
    """Calls drop_path with a given rng from its backward, as checkpointing's recomputation does."""

    @staticmethod
    def forward(ctx, x, rng):
        ctx.rng = rng
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return drop_path(grad, 0.5, training=True, rng=ctx.rng), None


@pytest.mark.parametrize(
    ("make_rng", "name"),
    [(lambda: torch.Generator().manual_seed(0), "Generator"), (lambda: PortableRNG(0), "PortableRNG")],
)
def test_generator_inside_backward_is_refused(make_rng, name):
    x = torch.ones(4, 2, requires_grad=True)
    y = _DropInBackward.apply(x, make_rng())
    with pytest.raises(RuntimeError) as info:
        y.sum().backward()
    assert str(info.value) == (
        f"drop path was called with rng={name} inside a backward pass, as "
        "torch.utils.checkpoint does when it recomputes a forward: the generator has "
        "advanced since the forward, so the recomputed mask, and the gradient, would "
        "belong to another draw. Use anydrop.torch.DropPath (it replays its draw under "
        "checkpointing), an int seed (the same mask on every call), or rng=None "
        "(torch's global generator, which checkpointing restores)"
    )


def test_int_seed_and_none_inside_backward_are_allowed():
    for rng in (3, None):
        x = torch.ones(4, 2, requires_grad=True)
        _DropInBackward.apply(x, rng).sum().backward()
        assert x.grad is not None


def test_tensor_drop_prob_with_portable_rng_uses_the_float_keep():
    # keep_for turns a tensor drop_prob into a tensor keep only for torch's own
    # generators (timm's draw); a PortableRNG draws and scales with the float.
    p = torch.tensor(0.1)  # float32: 1 - p in float32 is not 1 - float(p)
    x = torch.ones(64, 2, dtype=torch.float64)
    out = drop_path(x, p, training=True, rng=PortableRNG(1))
    ref = drop_path(x, float(p), training=True, rng=PortableRNG(1))
    assert torch.equal(out, ref)


def test_namespace_for_and_device_name():
    b = backend_module.TorchBackend()
    x = torch.ones(2)
    xp = b.namespace_for(x)
    assert xp is not None
    assert xp.asarray is not None
    assert b.namespace_for([1.0]) is None
    assert b.device_name(x) == "cpu"
    assert b.device_name(torch.empty(1, device="meta")) == "meta"


@pytest.fixture
def _no_eager_portable():
    """Empty the made-once EagerPortableSource list for a test, and put back what was there."""
    saved = list(backend_module._EAGER_PORTABLE)
    backend_module._EAGER_PORTABLE.clear()
    yield
    backend_module._EAGER_PORTABLE[:] = saved


@pytest.mark.usefixtures("_no_eager_portable")
def test_eager_portable_source_draws_as_portable_source():
    # Made eagerly once dynamo is loaded (prepare_for_compile, on an eager PortableRNG draw);
    # called eagerly, its disabled draws are PortableSource's bit for bit.
    import torch._dynamo

    from anydrop._core._sources import PortableSource

    x = torch.ones(32, 2, dtype=torch.bfloat16)
    drop_path(x, 0.3, training=True, rng=PortableRNG(4))
    assert len(backend_module._EAGER_PORTABLE) == 1
    cls = backend_module.eager_portable_source()
    assert cls is backend_module._EAGER_PORTABLE[0]
    assert issubclass(cls, PortableSource)
    assert backend_module.eager_portable_source() is cls
    xp = backend_module.TorchBackend().namespace_for(x)
    eager, plain = cls(PortableRNG(4)), PortableSource(PortableRNG(4))
    for _ in range(2):
        assert torch.equal(
            eager.bernoulli(0.7, (32, 1), torch.float32, x, xp),
            plain.bernoulli(0.7, (32, 1), torch.float32, x, xp),
        )
        pair_e = eager.bernoulli_pair(0.7, 0.4, (32, 1), torch.float32, x, xp)
        pair_p = plain.bernoulli_pair(0.7, 0.4, (32, 1), torch.float32, x, xp)
        assert all(torch.equal(a, b) for a, b in zip(pair_e, pair_p, strict=True))
        assert torch.equal(eager.uniform((32,), x, xp), plain.uniform((32,), x, xp))


def test_portable_draw_without_dynamo_leaves_it_unloaded():
    # prepare_for_compile makes nothing, and imports no dynamo (seconds), before torch.compile loads it.
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from anydrop import PortableRNG, drop_path\n"
        "from anydrop._core.backends import torch as b\n"
        "drop_path(torch.ones(8, 2), 0.5, training=True, rng=PortableRNG(1))\n"
        "print(len(b._EAGER_PORTABLE), 'torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.split() == ["0", "False"]

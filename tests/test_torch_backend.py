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


def _graph_and_host(seed, position=0):
    from anydrop._core._sources import PortableSource

    host = PortableSource(PortableRNG(seed, position=position))
    graph = backend_module.GraphPortableSource(PortableRNG(seed, position=position))
    return graph, host


@pytest.mark.parametrize("position", [0, 7, 2**61 + 12345, 2**62 - 100])
def test_graph_portable_stream_is_the_host_stream(position):
    # The int64 SplitMix64 that compiled graphs run, called eagerly: the host
    # stream's values bit for bit, at any position (products wrap as uint64's).
    from anydrop._core._portable import UNIFORM_BITS, splitmix64_python

    x = torch.ones(3)
    graph, _ = _graph_and_host(99, position)
    ints = graph._uniform_ints(40, x)
    assert ints.dtype == torch.int64
    rng = PortableRNG(99)
    expected = [v >> (64 - UNIFORM_BITS) for v in splitmix64_python(rng._state, position, 40)]
    assert ints.tolist() == expected
    assert graph.rng.position == position + 40  # advanced in its counter
    assert graph.rng._counter is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_graph_portable_draws_are_the_host_draws(dtype):
    x = torch.ones(64, 3, dtype=dtype)
    xp = backend_module.TorchBackend().namespace_for(x)
    graph, host = _graph_and_host(4, 3)
    for _ in range(2):
        a, b = graph.bernoulli(0.7, (64, 1), dtype, x, xp), host.bernoulli(0.7, (64, 1), dtype, x, xp)
        assert a.dtype == b.dtype == dtype
        assert torch.equal(a, b)
        pair_g = graph.bernoulli_pair(0.7, 0.4, (64, 1), dtype, x, xp)
        pair_h = host.bernoulli_pair(0.7, 0.4, (64, 1), dtype, x, xp)
        assert all(torch.equal(g, h) for g, h in zip(pair_g, pair_h, strict=True))
        rounding = (1.3984375, 0.0078125, 0.7)
        ug = graph.unbiased(0.7, rounding, (64, 1), dtype, x, xp)
        uh = host.unbiased(0.7, rounding, (64, 1), dtype, x, xp)
        assert ug.dtype == uh.dtype == dtype
        assert torch.equal(ug, uh)
        a, b = graph.uniform((8, 8), x, xp), host.uniform((8, 8), x, xp)
        assert a.dtype == b.dtype == torch.get_default_dtype()
        assert a.shape == b.shape == (8, 8)
        assert torch.equal(a, b)
    assert graph.rng.position == host.rng.position == 3 + 2 * (64 + 64 + 64 + 64)


def test_graph_portable_unbiased_falls_back_off_cpu_and_cuda():
    x = torch.empty(16, 1, device="meta")
    graph, _ = _graph_and_host(4)
    out = graph.unbiased(0.7, (1.3984375, 0.0078125, 0.7), (16, 1), torch.bfloat16, x, None)
    assert out.device.type == "meta"
    assert out.shape == (16, 1)


def test_graph_portable_threshold_is_exact_at_the_boundary():
    # u < p with u = k * 2**-53: a p just above a drawn u keeps it, p equal to it drops it.
    x = torch.ones(1)
    graph, _ = _graph_and_host(11)
    (k,) = graph._uniform_ints(1, x).tolist()
    u = k * 2.0**-53
    for p, kept in [(u, 0.0), (math.nextafter(u, 1.0), 1.0)]:
        graph, _ = _graph_and_host(11)
        assert graph.bernoulli(p, (1,), torch.float32, x, None).item() == kept


def test_graph_portable_refuses_positions_past_int64_range():
    graph, _ = _graph_and_host(1, 2**62)
    message = (
        r"^a PortableRNG at position 4611686018427387904 cannot be drawn from under torch.compile, "
        r"which counts positions in int64 tensors, below 2\*\*62$"
    )
    with pytest.raises(ValueError, match=message):
        graph.bernoulli(0.5, (4,), torch.float32, torch.ones(4), None)
    assert graph.rng.position == 2**62  # nothing drawn


def test_counter_moves_the_position_for_every_later_draw():
    # After a graph draw the position lives in the counter: host draws, pickling,
    # copies and the repr all read and advance it.
    import copy
    import pickle

    from anydrop._core._sources import PortableSource

    rng = PortableRNG(8)
    x = torch.ones(5)
    xp = backend_module.TorchBackend().namespace_for(x)
    backend_module.GraphPortableSource(rng).bernoulli(0.5, (5,), torch.float32, x, xp)
    assert repr(rng) == "PortableRNG(seed=8, position=5)"
    PortableSource(rng).bernoulli(0.5, (3,), torch.float32, x, xp)
    assert rng.position == 8
    assert int(rng._counter) == 8
    unpickled = pickle.loads(pickle.dumps(rng))
    assert (unpickled.seed, unpickled.position) == (8, 8)
    assert unpickled._counter is None  # pickles hold ints only
    for clone in (copy.deepcopy(rng), copy.copy(rng)):
        assert (clone.seed, clone.position) == (8, 8)
        assert clone._counter is not rng._counter  # a counter of its own
        clone._counter = clone._counter + 1
        assert rng.position == 8
    reference = PortableRNG(8, position=8)
    x = torch.ones(16, 2)
    assert torch.equal(drop_path(x, 0.5, True, rng=rng), drop_path(x, 0.5, True, rng=reference))


def test_portable_draw_leaves_dynamo_unloaded():
    # An eager PortableRNG draw imports no torch._dynamo (seconds); it moves the position into a counter.
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from anydrop import PortableRNG, drop_path\n"
        "rng = PortableRNG(1)\n"
        "drop_path(torch.ones(8, 2), 0.5, training=True, rng=rng)\n"
        "print(int(rng._counter), rng.position, 'torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.split() == ["8", "8", "False"]


@pytest.mark.parametrize("above", [False, True], ids=["u-equals-keep", "keep-just-above-u"])
def test_graph_portable_unbiased_compares_exactly_at_the_boundary(above):
    # u < keep in float64: u == keep drops the sample, keep one step above u keeps
    # it (at lo), even where u rounded to float32 would reach keep.
    x = torch.ones(1)
    for seed in range(100):
        graph, _ = _graph_and_host(seed)
        (k,) = graph._uniform_ints(1, x).tolist()
        u = k * 2.0**-53
        if float(torch.tensor(u, dtype=torch.float32)) > u:
            break
    keep = math.nextafter(u, 1.0) if above else u
    graph, _ = _graph_and_host(seed)
    rounding = (1.25, 0.0078125, 0.5)  # lo + spacing below keep * frac, which u is above
    out = graph.unbiased(keep, rounding, (1,), torch.float32, x, None)
    assert out.item() == (1.25 if above else 0.0)


def test_prepare_portable_moves_the_position_into_a_counter_once():
    rng = PortableRNG(4, position=9)
    backend_module.prepare_portable(rng)
    counter = rng._counter
    assert counter.dtype == torch.int64
    assert int(counter) == 9
    backend_module.prepare_portable(rng)
    assert rng._counter is counter  # kept: a compiled graph may be reading it


def test_a_copy_without_a_counter_keeps_the_position():
    import copy

    rng = PortableRNG(4, position=9)
    for clone in (copy.copy(rng), copy.deepcopy(rng)):
        assert (clone.seed, clone.position) == (4, 9)
        assert clone._counter is None

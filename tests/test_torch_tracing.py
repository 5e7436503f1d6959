"""PyTorch tracing: torch.fx, TorchScript, torch.export, torch.compile with each rng, a tensor drop_prob."""

from __future__ import annotations

import pytest

import anydrop

pytestmark = pytest.mark.backends("torch")

torch = pytest.importorskip("torch")

from anydrop.torch import DropPath, DropPathResidual  # noqa: E402


class Block(torch.nn.Module):
    """Every torch layer of anydrop, and the functions, in one residual block."""

    def __init__(self, rng=None, dim=8):
        super().__init__()
        self.fc = torch.nn.Linear(dim, dim)
        self.drop = DropPath(0.5, rng=rng)
        self.residual = DropPathResidual(torch.nn.Linear(dim, dim), 0.5, rng=rng)
        self.fused = DropPath(0.25, rng=rng)

    def forward(self, x):
        x = x + self.drop(self.fc(x))
        x = self.residual(x)
        return self.fused.add(x, torch.tanh(self.fc(x)))


class Functions(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.branch = torch.nn.Linear(5, 5)

    def forward(self, x):
        y = anydrop.drop_path(x, 0.3, self.training)
        y = anydrop.drop_path_add(x, y, 0.2, self.training, axis=(0, 1))
        return anydrop.drop_path_residual(y, self.branch, 0.5, self.training, fixed_size=True)


def same_run(a, b, x, seed=0):
    torch.manual_seed(seed)
    first = a(x)
    torch.manual_seed(seed)
    return torch.equal(first, b(x))


@pytest.mark.parametrize("rng", [None, 3, "generator", "portable"])
def test_fx_traced_modules_compute_as_eager_and_follow_train_eval(rng):
    def make():
        torch.manual_seed(0)
        r = {"generator": torch.Generator().manual_seed(3), "portable": anydrop.PortableRNG(3)}.get(rng, rng)
        return Block(r)

    eager, traced = make(), make()
    graph = torch.fx.symbolic_trace(traced)
    # The layers are leaves of the graph, called as modules: they keep their mode and rng.
    called = {n.target for n in graph.graph.nodes if n.op in ("call_module", "call_method")}
    assert {"drop", "residual", "add"} <= called
    x = torch.randn(16, 4, 8)
    for mode in (True, False, True):
        eager.train(mode)
        graph.train(mode)
        assert same_run(eager, graph, x)


@pytest.mark.parametrize("training", [True, False])
def test_fx_records_the_functions_as_single_calls(training):
    module = Functions().train(training)
    graph = torch.fx.symbolic_trace(module)
    targets = [n.target for n in graph.graph.nodes if n.op == "call_function"]
    assert targets == [anydrop.drop_path, anydrop.drop_path_add, anydrop.drop_path_residual]
    assert same_run(module, graph, torch.randn(8, 3, 5))


def test_fx_graph_keeps_the_generator_the_function_was_given():
    gen = torch.Generator().manual_seed(5)
    reference = torch.Generator().manual_seed(5)
    graph = torch.fx.symbolic_trace(lambda x: anydrop.drop_path(x, 0.5, True, rng=gen))
    x = torch.ones(32, 1)
    for _ in range(2):  # the graph draws from gen itself, which advances
        assert torch.equal(graph(x), anydrop.drop_path(x, 0.5, True, rng=reference))


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*is deprecated")
def test_torchscript_is_refused_with_a_message_naming_the_alternatives():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), DropPath(0.1)).eval()
    with pytest.raises(RuntimeError) as excinfo:
        torch.jit.script(model)
    message = str(excinfo.value)
    assert (
        "DropPath does not support TorchScript (torch.jit.script), which cannot compile the array-API"
        in message
    )
    assert message.endswith("Use torch.compile, or torch.export to deploy the model")


@pytest.mark.parametrize("rng", [None, 3, "generator", "portable"])
def test_torch_export_in_eval_mode_runs_without_anydrop_in_the_graph(rng):
    rng = {"generator": torch.Generator().manual_seed(3), "portable": anydrop.PortableRNG(3)}.get(rng, rng)
    model = Block(rng).eval()
    x = torch.randn(4, 3, 8)
    exported = torch.export.export(model, (x,))
    assert torch.allclose(exported.module()(x), model(x))
    names = " ".join(str(n.target) for n in exported.graph.nodes)
    assert "anydrop" not in names
    assert "bernoulli" not in names


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p_dtype", [torch.float32, torch.float64])
def test_tensor_drop_prob_draws_timm_masks_and_consumes_timm_randomness(timm_drop, dtype, p_dtype):
    # timm's models pass schedule values taken from torch.linspace.
    p = torch.linspace(0, 0.3, 12, dtype=p_dtype)[5]
    x = torch.randn(64, 3, dtype=dtype)
    results = []
    for fn in (timm_drop.drop_path, anydrop.drop_path):
        torch.manual_seed(1)
        results.append((fn(x, p, True), torch.rand(3)))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
    torch.manual_seed(1)
    fused = anydrop.drop_path_add(x, x, p, True)  # one fused multiply-add: the same mask, other rounding
    torch.testing.assert_close(fused, x + results[0][0], rtol=1e-6, atol=0)
    assert torch.equal(fused == x, results[0][0] == 0)


@pytest.fixture
def compile_counter():
    """torch.compile with a backend that counts the graphs it is given (no code generation)."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    yield CompileCounter
    torch._dynamo.reset()


@pytest.mark.parametrize("rng", ["int", "generator", "portable"])
def test_compiled_layer_with_its_own_rng_matches_eager_without_recompiling(compile_counter, rng):
    # Each of these rngs leaves the graph for its draw (one graph break per
    # layer); the draws, and so the masks, are the eager ones.
    def make():
        r = {"int": 5, "generator": torch.Generator().manual_seed(5), "portable": anydrop.PortableRNG(5)}[rng]
        return DropPath(0.5, rng=r)

    eager, layer, counter = make(), make(), compile_counter()
    compiled = torch.compile(layer, backend=counter)
    x = torch.randn(32, 3)
    for _ in range(4):
        assert torch.equal(compiled(x), eager(x))
    frames = counter.frame_count
    compiled(x)
    assert counter.frame_count == frames  # no recompilation from step to step


def test_portable_rng_under_fullgraph_names_the_way_out(compile_counter):
    layer = DropPath(0.5, rng=anydrop.PortableRNG(5))
    layer(torch.ones(2, 1))  # an eager draw once torch.compile is loaded prepares the compiled one
    compiled = torch.compile(layer, fullgraph=True, backend=compile_counter())
    with pytest.raises(Exception, match=r"PortableRNG draws its masks on the host.*fullgraph=False"):
        compiled(torch.randn(8, 3))


def test_a_first_call_inside_torch_compile_warns_nothing():
    # A fresh process: no tensor type is known to anydrop before dynamo traces the call.
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import warnings, torch, anydrop
        warnings.simplefilter("error")
        f = torch.compile(lambda x: anydrop.drop_path(x, 0.5, True), fullgraph=True, backend="aot_eager")
        torch.manual_seed(0)
        y = f(torch.ones(8, 2))
        torch.manual_seed(0)
        assert torch.equal(y, anydrop.drop_path(torch.ones(8, 2), 0.5, True))
        """
    )
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]

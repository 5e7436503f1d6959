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


class Tower(torch.nn.Module):
    """A small pre-norm transformer-like tower: every anydrop torch layer, drop_prob rising with depth."""

    def __init__(self, rng, depth=3, dim=8):
        super().__init__()
        probs = [0.5 * (i + 1) / depth for i in range(depth)]
        self.mix = torch.nn.ModuleList(torch.nn.Linear(dim, dim) for _ in range(depth))
        self.drops = torch.nn.ModuleList(DropPath(p, rng=rng) for p in probs)
        self.mlps = torch.nn.ModuleList(
            DropPathResidual(
                torch.nn.Sequential(torch.nn.Linear(dim, 16), torch.nn.GELU(), torch.nn.Linear(16, dim)),
                p,
                rng=rng,
                fixed_size=i % 2 == 0,
            )
            for i, p in enumerate(probs)
        )
        self.fused = DropPath(0.25, rng=rng)

    def forward(self, x):
        for mix, drop, mlp in zip(self.mix, self.drops, self.mlps, strict=True):
            x = x + drop(torch.tanh(mix(x)))
            x = mlp(x)
        return self.fused.add(x, torch.tanh(self.mix[0](x)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shared", [True, False], ids=["one-rng", "rng-per-layer"])
def test_portable_rng_trains_in_one_graph_bit_identical_to_eager(compile_counter, dtype, shared):
    # fullgraph=True: a graph break would be an error. The draws are the eager
    # ones bit for bit (forward, every gradient, the rng's position after each
    # step), and steps after the second compile nothing.
    import copy

    def layers(model):
        return [m for m in model.modules() if isinstance(m, (DropPath, DropPathResidual))]

    torch.manual_seed(0)
    eager = Tower(anydrop.PortableRNG(21) if shared else None).to(dtype)
    if not shared:
        for i, layer in enumerate(layers(eager)):
            layer.rng = anydrop.PortableRNG(i)
    model = copy.deepcopy(eager)  # the copy's rngs are copies too, at the same positions

    def rngs(model):
        return [layer.rng for layer in layers(model)]

    counter = compile_counter()
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    x = torch.randn(16, 5, 8, dtype=dtype)
    for step in range(4):
        if step == 2:
            frames = counter.frame_count
        out_e, out_c = eager(x), compiled(x)
        assert torch.equal(out_c, out_e)
        out_e.float().square().sum().backward()
        out_c.float().square().sum().backward()
        for (name, a), b in zip(eager.named_parameters(), model.parameters(), strict=True):
            assert torch.equal(a.grad, b.grad), name
        assert [r.position for r in rngs(model)] == [r.position for r in rngs(eager)]
    assert counter.frame_count == frames  # no recompilation from step to step
    assert rngs(model)[0].position > 0


def test_portable_rng_functions_under_fullgraph_match_eager(compile_counter):
    branch = torch.nn.Linear(6, 6)

    def fn(x, b, rng):
        y = anydrop.drop_path(x, 0.3, True, rng=rng)
        y = anydrop.drop_path_add(y, b, 0.2, True, axis=(0, 1), rng=rng)
        y = anydrop.drop_path_residual(y, branch, 0.5, True, fixed_size=True, rng=rng)
        return anydrop.drop_path(y.to(torch.float16), 0.4, True, rng=rng)

    x, b = torch.randn(12, 4, 6), torch.randn(12, 4, 6)
    compiled = torch.compile(fn, fullgraph=True, backend=compile_counter())
    mine, reference = anydrop.PortableRNG(3), anydrop.PortableRNG(3)
    fn(x, b, mine)  # one eager call readies a PortableRNG for one graph
    fn(x, b, reference)
    for _ in range(3):
        assert torch.equal(compiled(x, b, mine), fn(x, b, reference))
        assert mine.position == reference.position


def test_layers_ready_their_portable_rng_for_the_graph():
    # Built with a PortableRNG, or given one later, a layer moves its position
    # into a tensor, so that the first compiled call already draws in the graph.
    rng, other = anydrop.PortableRNG(1, position=5), anydrop.PortableRNG(2)
    layer = DropPath(0.5, rng=rng)
    assert int(rng._counter) == 5
    layer.rng = other
    assert int(other._counter) == 0
    assert rng.position == 5


def test_a_fresh_portable_rng_draws_between_graphs_first(compile_counter):
    # A PortableRNG that never drew on torch has its position in a Python int:
    # its first compiled draw runs eagerly between graphs (and moves the
    # position into a tensor), the next ones in the graph; the masks are the
    # eager ones throughout.
    def fn(x, rng):
        return anydrop.drop_path(x, 0.5, True, rng=rng)

    counter = compile_counter()
    compiled = torch.compile(fn, backend=counter)
    mine, reference = anydrop.PortableRNG(9), anydrop.PortableRNG(9)
    x = torch.randn(32, 2)
    for _ in range(4):
        assert torch.equal(compiled(x, mine), fn(x, reference))
    assert mine.position == reference.position == 4 * 32


def test_a_fresh_portable_rng_under_fullgraph_names_the_way_out(compile_counter):
    compiled = torch.compile(
        lambda x, rng: anydrop.drop_path(x, 0.5, True, rng=rng), fullgraph=True, backend=compile_counter()
    )
    anydrop.drop_path(torch.ones(2), 0.5, True, rng=anydrop.PortableRNG(0))  # dynamo is loaded: class made
    rng = anydrop.PortableRNG(3)
    rng.__setstate__(rng.__getstate__())  # as fresh as a new one
    with pytest.raises(Exception, match=r"PortableRNG draws its first masks between graphs.*anydrop.torch"):
        compiled(torch.randn(8, 3), rng)


# inductor's code generation calls the deprecated torch.jit.script_method itself.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_inductor_draws_the_eager_portable_masks():
    # The default backend generates code: the limb arithmetic gives the host
    # stream there too, for the per-sample mask and the 16-bit scale.
    torch._dynamo.reset()
    try:
        for dtype in (torch.float32, torch.bfloat16):
            layer, reference = (
                DropPath(0.3, rng=anydrop.PortableRNG(5)),
                DropPath(0.3, rng=anydrop.PortableRNG(5)),
            )
            compiled = torch.compile(layer, fullgraph=True)
            for n in (1000, 17):
                x = torch.randn(n, 3, dtype=dtype)
                assert torch.equal(compiled(x), reference(x))
            assert layer.rng.position == reference.rng.position == 1017
    finally:
        torch._dynamo.reset()


def test_torch_dynamo_explain_finds_no_graph_break_with_portable_rng():
    rng = anydrop.PortableRNG(1)
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU())
    model = torch.nn.Sequential(DropPath(0.3, rng=rng), DropPathResidual(mlp, 0.5, rng=rng, fixed_size=True))
    for _ in range(2):  # the second call is the steady state: the rng's position is in its counter
        explanation = torch._dynamo.explain(model)(torch.randn(4, 3, 8))
        assert explanation.graph_break_count == 0
        assert explanation.graph_count == 1
    torch._dynamo.reset()


def test_eager_and_compiled_draws_share_one_stream(compile_counter):
    # Calls alternate between the compiled and the eager layer: one stream, no value drawn twice.
    layer, reference = DropPath(0.5, rng=anydrop.PortableRNG(9)), DropPath(0.5, rng=anydrop.PortableRNG(9))
    compiled = torch.compile(layer, fullgraph=True, backend=compile_counter())
    x = torch.randn(32, 2)
    for step in range(6):
        out = compiled(x) if step % 2 else layer(x)
        assert torch.equal(out, reference(x))
    assert layer.rng.position == reference.rng.position == 6 * 32


class Checkpointed(torch.nn.Module):
    def __init__(self, rng, checkpointed):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.drop = DropPath(0.5, rng=rng)
        self.checkpointed = checkpointed

    def block(self, x):
        return x + self.drop(torch.tanh(self.fc(x)))

    def forward(self, x):
        if not self.checkpointed:
            return self.block(x)
        from torch.utils.checkpoint import checkpoint

        return checkpoint(self.block, x, use_reentrant=False)


@pytest.mark.parametrize("mode", ["graph-break", "fullgraph"])
def test_compiled_checkpointing_with_portable_rng_gives_the_eager_gradients(compile_counter, mode):
    # Inside a checkpointed region the draw's update of the rng is a side effect
    # that dynamo will not replay: without fullgraph the region runs eagerly
    # (the layer replays its draw); with fullgraph, dynamo's option to apply it
    # once gives one graph, whose backward recomputes the mask from the counter
    # the forward drew from.
    import copy

    torch.manual_seed(0)
    reference = Checkpointed(anydrop.PortableRNG(3), checkpointed=False)
    model = copy.deepcopy(reference)
    model.checkpointed = True
    fullgraph = mode == "fullgraph"
    compiled = torch.compile(model, fullgraph=fullgraph, backend=compile_counter())
    x = torch.randn(16, 4)
    with torch._dynamo.config.patch(skip_fwd_side_effects_in_bwd_under_checkpoint=fullgraph):
        for _ in range(3):
            a, b = reference(x), compiled(x)
            a.square().sum().backward()
            b.square().sum().backward()
            assert torch.equal(a, b)
            assert torch.equal(reference.fc.weight.grad, model.fc.weight.grad)
            assert reference.drop.rng.position == model.drop.rng.position


def test_compiled_checkpointing_with_portable_rng_under_fullgraph_refuses_by_default(compile_counter):
    model = Checkpointed(anydrop.PortableRNG(3), checkpointed=True)
    compiled = torch.compile(model, fullgraph=True, backend=compile_counter())
    with pytest.raises(Exception, match=r"(?s)side effect.*skip_fwd_side_effects_in_bwd_under_checkpoint"):
        compiled(torch.randn(16, 4))


@pytest.mark.parametrize("rng", ["int", "generator"])
@pytest.mark.parametrize("call", ["layer", "function"])
def test_generators_under_fullgraph_name_the_way_out(compile_counter, rng, call):
    r = {"int": 5, "generator": torch.Generator().manual_seed(5)}[rng]
    fn = DropPath(0.5, rng=r) if call == "layer" else (lambda x: anydrop.drop_path(x, 0.5, True, rng=r))
    if call == "layer" and rng == "int":
        fn(torch.ones(8, 3))  # its generator made: the draw itself is refused too
    compiled = torch.compile(fn, fullgraph=True, backend=compile_counter())
    kind = (
        r"an int seed \(a torch.Generator\)" if rng == "int" and call == "function" else "a torch.Generator"
    )
    with pytest.raises(
        Exception, match=rf"anydrop draws from {kind} between .*PortableRNG\(seed\).*rng=None"
    ):
        compiled(torch.randn(8, 3))


def test_int_seed_layer_first_compiled_call_names_the_way_out(compile_counter):
    compiled = torch.compile(DropPath(0.5, rng=5), fullgraph=True, backend=compile_counter())
    with pytest.raises(Exception, match=r"anydrop draws from an int seed \(a torch.Generator\) between"):
        compiled(torch.randn(8, 3))


def test_a_fresh_portable_rng_in_a_fresh_process_under_torch_compile():
    # torch.compile loads dynamo after anydrop.torch was imported, and the first
    # PortableRNG draw ever is compiled: eager masks without fullgraph, and
    # anydrop's message with it.
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import sys, torch, anydrop, anydrop.torch
        assert "torch._dynamo" not in sys.modules
        fn = lambda x, r: anydrop.drop_path(x, 0.5, True, rng=r)
        x = torch.randn(16, 2)
        strict = torch.compile(fn, backend="aot_eager", fullgraph=True)
        try:
            strict(x, anydrop.PortableRNG(4))
        except Exception as exc:
            assert "PortableRNG draws its first masks between graphs" in str(exc), exc
        else:
            raise AssertionError("fullgraph accepted a first draw between graphs")
        compiled = torch.compile(fn, backend="aot_eager")
        mine, reference = anydrop.PortableRNG(4), anydrop.PortableRNG(4)
        for _ in range(3):
            assert torch.equal(compiled(x, mine), fn(x, reference))
        assert mine.position == reference.position == 48
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]


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

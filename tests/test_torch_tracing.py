"""PyTorch tracing: torch.fx, TorchScript, torch.export, torch.compile with each rng, a tensor drop_prob."""

from __future__ import annotations

import pytest

import anydrop

pytestmark = pytest.mark.backends("torch")

torch = pytest.importorskip("torch")

from anydrop.torch import DropPath, DropPathResidual, synchronized_rng  # noqa: E402


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


def make_rng(kind, seed):
    """An rng of ``kind`` ("int", "generator", "synchronized" or "portable") made from ``seed``."""
    if kind == "int":
        return seed
    if kind == "generator":
        return torch.Generator().manual_seed(seed)
    if kind == "synchronized":
        return synchronized_rng(seed, 0)
    return anydrop.PortableRNG(seed)


def rng_state(layer):
    """Where a layer's own rng stands: a PortableRNG's position, or its generators' states."""
    rng = layer.rng
    if isinstance(rng, anydrop.PortableRNG):
        return rng.position
    gens = [stream.gen for stream in layer._streams.values()] if isinstance(rng, int) else [rng]
    return [gen.get_state().tolist() for gen in gens]


RNG_KINDS = ["int", "generator", "synchronized", "portable"]


@pytest.mark.parametrize("rng", RNG_KINDS)
def test_compiled_layer_with_its_own_rng_matches_eager_without_recompiling(compile_counter, rng):
    # fullgraph: every rng kind draws in the graph (a generator through
    # anydrop's operators), and the masks are the eager ones, from the first
    # compiled call on.
    def make():
        return DropPath(0.5, rng=make_rng(rng, 5))

    eager, layer, counter = make(), make(), compile_counter()
    compiled = torch.compile(layer, fullgraph=True, backend=counter)
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


def drop_layers(model):
    return [m for m in model.modules() if isinstance(m, (DropPath, DropPathResidual))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shared", [True, False], ids=["one-rng", "rng-per-layer"])
@pytest.mark.parametrize("kind", RNG_KINDS)
def test_every_rng_trains_in_one_graph_bit_identical_to_eager(compile_counter, dtype, shared, kind):
    # fullgraph=True: a graph break would be an error. The draws are the eager
    # ones bit for bit (forward, every gradient, the rngs' states after each
    # step), and steps after the second compile nothing. synchronized_rng
    # reseeds the shared generator in place at every step, as its docs say.
    import copy

    if kind == "int" and shared:
        pytest.skip("an int seed gives each layer a stream of its own: there is no shared int rng")
    if kind == "synchronized" and not shared:
        pytest.skip("synchronized_rng is one generator for the whole model")
    torch.manual_seed(0)
    eager = Tower(make_rng(kind, 21) if shared else None).to(dtype)
    if not shared:
        for i, layer in enumerate(drop_layers(eager)):
            layer.rng = make_rng(kind, i)
    model = copy.deepcopy(eager)  # the copy's rngs are copies too, in the same states

    initial = [rng_state(m) for m in drop_layers(model)]
    counter = compile_counter()
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    x = torch.randn(16, 5, 8, dtype=dtype)
    for step in range(4):
        if kind == "synchronized":
            synchronized_rng(21, step, generator=drop_layers(eager)[0].rng)
            synchronized_rng(21, step, generator=drop_layers(model)[0].rng)
        if step == 2:
            frames = counter.frame_count
        out_e, out_c = eager(x), compiled(x)
        assert torch.equal(out_c, out_e)
        out_e.float().square().sum().backward()
        out_c.float().square().sum().backward()
        for (name, a), b in zip(eager.named_parameters(), model.parameters(), strict=True):
            assert torch.equal(a.grad, b.grad), name
        assert [rng_state(m) for m in drop_layers(model)] == [rng_state(m) for m in drop_layers(eager)]
    assert counter.frame_count == frames  # no recompilation from step to step
    # The compiled copy drew from rngs of its own, in the eager draws' order.
    if kind != "int":
        assert drop_layers(model)[0].rng is not drop_layers(eager)[0].rng
    assert [rng_state(m) for m in drop_layers(model)] != initial


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
def test_inductor_draws_the_eager_generator_masks_under_checkpointing():
    # Generated code around anydrop's operators: the eager masks, and the
    # recomputation of a checkpointed region replays its forward's draw.
    import copy

    from torch.utils.checkpoint import checkpoint

    torch._dynamo.reset()
    try:
        torch.manual_seed(0)
        reference = Checkpointed(torch.Generator().manual_seed(8), checkpointed=False)
        model = copy.deepcopy(reference)
        compiled = torch.compile(lambda x: checkpoint(model.block, x, use_reentrant=False), fullgraph=True)
        x = torch.randn(64, 4)
        for _ in range(2):
            a, b = reference(x), compiled(x)
            assert torch.equal(a == x, b == x)  # the same samples dropped
            torch.testing.assert_close(a, b)
            a.square().sum().backward()
            b.square().sum().backward()
            torch.testing.assert_close(reference.fc.weight.grad, model.fc.weight.grad)
            assert torch.equal(reference.drop.rng.get_state(), model.drop.rng.get_state())
    finally:
        torch._dynamo.reset()


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


def train_alongside(reference, model, compiled, x, steps=3):
    """Train ``reference`` eagerly, ``model`` through ``compiled``: outputs, gradients, rng states agree."""
    for _ in range(steps):
        a, b = reference(x), compiled(x)
        a.square().sum().backward()
        b.square().sum().backward()
        assert torch.equal(a, b)
        assert torch.equal(reference.fc.weight.grad, model.fc.weight.grad)
        assert rng_state(reference.drop) == rng_state(model.drop)


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


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
@pytest.mark.parametrize("kind", ["int", "generator", "synchronized"])
def test_compiled_checkpointing_with_a_generator_gives_the_eager_gradients(compile_counter, kind, reentrant):
    # The backward recomputes the checkpointed region, the operator's draw with
    # it: the operator replays the state its forward recorded. One graph, no
    # option needed: the draw changes no Python state in the graph.
    import copy

    from torch.utils.checkpoint import checkpoint

    torch.manual_seed(0)
    reference = Checkpointed(make_rng(kind, 3), checkpointed=False)
    model = copy.deepcopy(reference)

    def forward(x):
        return checkpoint(model.block, x, use_reentrant=reentrant)

    compiled = torch.compile(forward, fullgraph=not reentrant, backend=compile_counter())
    train_alongside(reference, model, compiled, torch.randn(16, 4, requires_grad=reentrant))


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
    with torch._dynamo.config.patch(skip_fwd_side_effects_in_bwd_under_checkpoint=fullgraph):
        train_alongside(reference, model, compiled, torch.randn(16, 4))


def test_compiled_checkpointing_with_portable_rng_under_fullgraph_refuses_by_default(compile_counter):
    model = Checkpointed(anydrop.PortableRNG(3), checkpointed=True)
    compiled = torch.compile(model, fullgraph=True, backend=compile_counter())
    with pytest.raises(Exception, match=r"(?s)side effect.*skip_fwd_side_effects_in_bwd_under_checkpoint"):
        compiled(torch.randn(16, 4))


@pytest.mark.parametrize("rng", ["int", "generator"])
def test_functions_with_a_generator_under_fullgraph_name_the_way_out(compile_counter, rng):
    # A function has no layer to name its generator by: its draw runs between graphs.
    r = {"int": 5, "generator": torch.Generator().manual_seed(5)}[rng]
    compiled = torch.compile(
        lambda x: anydrop.drop_path(x, 0.5, True, rng=r), fullgraph=True, backend=compile_counter()
    )
    kind = r"an int seed \(a torch.Generator\)" if rng == "int" else "a torch.Generator"
    with pytest.raises(
        Exception,
        match=rf"anydrop draws from {kind} between .*PortableRNG\(seed\).*rng=None.*anydrop.torch layer",
    ):
        compiled(torch.randn(8, 3))


@pytest.mark.parametrize("kind", ["int", "generator"])
def test_a_layer_with_a_generator_draws_with_anydrops_operators_in_one_graph(compile_counter, kind):
    from torch._dynamo.testing import EagerAndRecordGraphs

    model = torch.nn.Sequential(
        DropPath(0.3, rng=make_rng(kind, 1)),
        DropPathResidual(torch.nn.Linear(8, 8), 0.5, rng=make_rng(kind, 2), fixed_size=True),
    )
    x = torch.randn(4, 3, 8)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1
    torch._dynamo.reset()
    recorder = EagerAndRecordGraphs()
    torch.compile(model, fullgraph=True, backend=recorder)(x)
    (graph,) = recorder.graphs
    targets = [node.target for node in graph.graph.nodes if node.op == "call_function"]
    # DropPath's Bernoulli mask, and the fixed-size residual's uniforms for its subset.
    assert targets.count(torch.ops.anydrop.layer_bernoulli.default) == 1
    assert targets.count(torch.ops.anydrop.layer_uniform.default) == 1


def test_one_layer_called_twice_on_one_input_in_a_graph_draws_two_masks(compile_counter):
    # Two calls with the same arguments stay two draws: no graph pass merges them.
    def twice(layer):
        return lambda x: (layer(x), layer(x))

    x = torch.randn(64, 3)
    first, second = torch.compile(
        twice(DropPath(0.5, rng=torch.Generator().manual_seed(2))), fullgraph=True, backend="aot_eager"
    )(x)
    reference = twice(DropPath(0.5, rng=torch.Generator().manual_seed(2)))(x)
    assert torch.equal(first, reference[0])
    assert torch.equal(second, reference[1])
    assert not torch.equal(first, second)


def test_a_new_generator_at_every_step_does_not_recompile_every_step(compile_counter):
    # synchronized_rng(seed, step) without generator= makes a new generator per step.
    layer, reference = DropPath(0.5), DropPath(0.5)
    counter = compile_counter()
    compiled = torch.compile(layer, fullgraph=True, backend=counter)
    x = torch.randn(32, 3)
    for step in range(6):
        layer.rng, reference.rng = synchronized_rng(1, step), synchronized_rng(1, step)
        assert torch.equal(compiled(x), reference(x))
        if step == 2:
            frames = counter.frame_count
    assert counter.frame_count == frames


def test_copies_of_a_compiled_layer_draw_from_their_own_generators(compile_counter):
    import copy
    import pickle

    # A deep copy or an unpickled layer holds a copy of the generator, and its
    # compiled draws must advance that copy, never the original.
    layer = DropPath(0.5, rng=torch.Generator().manual_seed(4))
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert clone._graph_number != layer._graph_number
        original, copied = layer.rng.get_state(), clone.rng.get_state()
        torch.compile(clone, fullgraph=True, backend=compile_counter())(torch.randn(16, 2))
        assert torch.equal(layer.rng.get_state(), original)
        assert not torch.equal(clone.rng.get_state(), copied)
        torch._dynamo.reset()
    # A shallow copy shares the generator, as copy.copy says, under a number of its own.
    assert copy.copy(layer)._graph_number != layer._graph_number


def test_a_compiled_graph_of_a_deleted_layer_says_so(compile_counter):
    layer = DropPath(0.5, rng=5)
    number = layer._graph_number
    import anydrop._torch_graph as graph

    del layer
    import gc

    gc.collect()
    assert number not in graph._LAYERS
    with pytest.raises(RuntimeError, match=rf"anydrop layer number {number}, which no longer exists"):
        graph._layer_bernoulli(torch.ones(2), number, True, [2], torch.float32, 0.5, None, None)


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

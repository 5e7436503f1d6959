"""Real timm and torchvision models with every drop-path module swapped for anydrop's.

Run by the nox session ``timm``, which installs timm with torchvision (timm
imports torchvision); skipped elsewhere. Models are built at small sizes with
``drop_path_rate > 0`` and compared with the originals bit for bit in float32.
"""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.backends("torch")

if importlib.util.find_spec("torchvision") is None:
    pytest.skip("needs timm with torchvision: the nox session 'timm' installs them", allow_module_level=True)

torch = pytest.importorskip("torch")

from tests.torch_helpers import assert_same  # noqa: E402

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

from anydrop.torch import DropPath, convert  # noqa: E402

#: timm families at small sizes: (name, create_model keyword arguments, input shape).
TIMM_MODELS = {
    "vit": ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 4}, (4, 3, 32, 32)),
    "convnext": ("convnext_atto", {}, (4, 3, 32, 32)),
    "swin": (
        "swin_tiny_patch4_window7_224",
        {
            "img_size": 64,
            "window_size": 4,
            "embed_dim": 24,
            "depths": (1, 1, 2, 1),
            "num_heads": (1, 2, 2, 4),
        },
        (4, 3, 64, 64),
    ),
    "efficientnet": ("efficientnet_b0", {}, (4, 3, 32, 32)),
}


def timm_model(family):
    name, kwargs, shape = TIMM_MODELS[family]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10, drop_path_rate=0.3, **kwargs)
    return model, torch.randn(shape)


def train_step(model, x, seed=1):
    """One training step's forward, loss, every gradient, and the global generator's next draw."""
    torch.manual_seed(seed)
    model.zero_grad()
    y = model(x)
    torch.nn.functional.cross_entropy(y, torch.arange(y.shape[0]) % y.shape[1]).backward()
    return [y.detach(), *(p.grad for p in model.parameters()), torch.rand(3)]


def drop_path_modules(model):
    return [m for m in model.modules() if type(m).__name__.endswith("DropPath") or isinstance(m, DropPath)]


@pytest.mark.parametrize("family", sorted(TIMM_MODELS))
def test_converted_timm_model_trains_bit_for_bit_as_timm(family):
    original, x = timm_model(family)
    converted = convert(original, inplace=False)
    swapped = drop_path_modules(converted)
    assert swapped
    assert all(isinstance(m, DropPath) for m in swapped)
    converted.load_state_dict(original.state_dict())  # state dicts are interchangeable
    original.load_state_dict(converted.state_dict())
    for seed in (1, 2):
        assert_same(train_step(original, x, seed), train_step(converted, x, seed))


@pytest.mark.parametrize("family", ["vit", "convnext"])
@pytest.mark.parametrize("rng", [None, 7, "generator", "portable"])
def test_timm_gradient_checkpointing_changes_nothing_for_any_rng(family, rng):
    import anydrop

    def make():
        model, x = timm_model(family)
        r = {"generator": torch.Generator().manual_seed(7), "portable": anydrop.PortableRNG(7)}.get(rng, rng)
        return convert(model, rng=r), x

    plain, x = make()
    checkpointed, _ = make()
    checkpointed.set_grad_checkpointing(True)
    assert_same(train_step(plain, x), train_step(checkpointed, x))
    assert_same(train_step(plain, x, 2), train_step(checkpointed, x, 2))


def test_timm_vit_with_checkpointing_matches_timm_with_checkpointing():
    original, x = timm_model("vit")
    converted = convert(original, inplace=False)
    original.set_grad_checkpointing(True)
    converted.set_grad_checkpointing(True)
    assert_same(train_step(original, x), train_step(converted, x))


@pytest.mark.parametrize("training", [True, False])
def test_torchvision_feature_extraction_on_a_converted_vit(training):
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    model, x = timm_model("vit")
    convert(model).train(training)
    train_nodes, eval_nodes = get_graph_node_names(model)
    assert "blocks.3.drop_path1" in train_nodes
    assert "blocks.3.drop_path1" in eval_nodes
    extractor = create_feature_extractor(model, return_nodes={"norm": "features"})
    extractor.train(training)
    torch.manual_seed(3)
    features = extractor(x)["features"]
    torch.manual_seed(3)
    assert torch.equal(features, model.forward_features(x))


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("convnext_tiny", {"stochastic_depth_prob": 0.3}), ("efficientnet_b0", {"stochastic_depth_prob": 0.3})],
)
def test_converted_torchvision_model_trains_bit_for_bit(name, kwargs):
    torch.manual_seed(0)
    original = getattr(torchvision.models, name)(num_classes=10, **kwargs)
    converted = convert(original, inplace=False)
    assert not any(isinstance(m, torchvision.ops.StochasticDepth) for m in converted.modules())
    assert any(isinstance(m, DropPath) for m in converted.modules())
    x = torch.randn(2, 3, 32, 32)
    assert_same(train_step(original, x), train_step(converted, x))


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_torchvision_stochastic_depth_function_and_module_agree(mode):
    x = torch.randn(64, 3, 4, 4, requires_grad=True)
    layer = convert(torchvision.ops.StochasticDepth(0.4, mode))
    torch.manual_seed(5)
    expected = torchvision.ops.stochastic_depth(x, 0.4, mode, True)
    torch.manual_seed(5)
    assert torch.equal(layer(x), expected)


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*is deprecated")
def test_torchscript_of_a_converted_timm_model_is_refused_clearly():
    model, _ = timm_model("vit")
    with pytest.raises(RuntimeError, match="does not support TorchScript"):
        torch.jit.script(convert(model).eval())


def test_torch_export_of_a_converted_timm_model_in_eval_mode():
    model, x = timm_model("vit")
    model = convert(model).eval()
    exported = torch.export.export(model, (x,))
    assert torch.allclose(exported.module()(x), model(x))


def test_onnx_export_of_a_converted_timm_model_in_eval_mode():
    onnx = pytest.importorskip("onnx", reason="the nox session 'timm' installs onnx and onnxscript")
    pytest.importorskip("onnxscript", reason="the nox session 'timm' installs onnx and onnxscript")
    model, x = timm_model("vit")
    program = torch.onnx.export(convert(model).eval(), (x,), dynamo=True)
    onnx.checker.check_model(program.model_proto)
    # Eval mode is the identity: no random operator reaches the exported graph.
    assert not [
        n.op_type for n in program.model_proto.graph.node if "Random" in n.op_type or "Bernoulli" in n.op_type
    ]


# torchvision's own TestStochasticDepth (test/test_ops.py), run on converted layers: the same
# inputs and checks, with its SciPy binomial test replaced by the exact one in tests/stats.py.


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("mode", ["batch", "row"])
def test_torchvision_stochastic_depth_random(seed, mode, p):
    from tests.stats import binomial_acceptance

    torch.manual_seed(seed)
    batch_size = 5
    x = torch.ones(size=(batch_size, 3, 4, 4))
    layer = convert(torchvision.ops.StochasticDepth(p=p, mode=mode))
    repr(layer)
    trials, num_samples, counts = 250, 0, 0
    for _ in range(trials):
        non_zero_count = layer(x).sum(dim=(1, 2, 3)).nonzero().size(0)
        if mode == "batch":
            counts += non_zero_count == 0
            num_samples += 1
        else:
            counts += batch_size - non_zero_count
            num_samples += batch_size
    assert counts in binomial_acceptance(num_samples, p, 0.01)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("p", [0, 1])
@pytest.mark.parametrize("mode", ["batch", "row"])
def test_torchvision_stochastic_depth_extremes(seed, mode, p):
    torch.manual_seed(seed)
    x = torch.ones(size=(5, 3, 4, 4))
    out = convert(torchvision.ops.StochasticDepth(p=p, mode=mode))(x)
    assert out.equal(x if p == 0 else torch.zeros_like(x))


class _Wrapper(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.n_inputs = 1

    def forward(self, a):
        self.layer(a)


@pytest.mark.parametrize("p", [0, 1])
@pytest.mark.parametrize("mode", ["batch", "row"])
def test_torchvision_stochastic_depth_is_leaf_node(p, mode):
    from torchvision.models.feature_extraction import get_graph_node_names

    wrapped = _Wrapper(convert(torchvision.ops.StochasticDepth(p, mode)))
    train_nodes, eval_nodes = get_graph_node_names(wrapped)
    assert len(train_nodes) == len(eval_nodes) == 1 + wrapped.n_inputs

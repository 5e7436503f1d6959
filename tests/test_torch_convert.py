"""anydrop.torch.convert: swapping the drop-path modules of an existing model, against timm's own module."""

from __future__ import annotations

import copy

import pytest

import anydrop

pytestmark = pytest.mark.backends("torch")

torch = pytest.importorskip("torch")

from anydrop.torch import DropPath, convert  # noqa: E402
from tests.internals import stream_value  # noqa: E402


class Block(torch.nn.Module):
    def __init__(self, drop_path, dim=8):
        super().__init__()
        self.fc = torch.nn.Linear(dim, dim)
        self.drop_path = drop_path

    def forward(self, x):
        return x + self.drop_path(torch.tanh(self.fc(x)))


def timm_model(timm_drop, rates=(0.1, 0.3, 0.5), scale_by_keep=True):
    torch.manual_seed(0)
    return torch.nn.Sequential(*(Block(timm_drop.DropPath(p, scale_by_keep)) for p in rates))


def train_step(model, x, seed):
    torch.manual_seed(seed)
    model.zero_grad()
    y = model(x)
    y.square().sum().backward()
    return [y.detach(), *(p.grad for p in model.parameters()), torch.rand(3)]


@pytest.mark.parametrize("scale_by_keep", [True, False])
def test_converted_timm_model_trains_bit_for_bit_as_the_original(timm_drop, scale_by_keep):
    original = timm_model(timm_drop, scale_by_keep=scale_by_keep)
    converted = convert(original, inplace=False)
    assert not any(isinstance(b.drop_path, DropPath) for b in original)  # left as it was
    assert all(isinstance(b.drop_path, DropPath) for b in converted)
    assert [b.drop_path.drop_prob for b in converted] == [0.1, 0.3, 0.5]
    assert all(b.drop_path.scale_by_keep is scale_by_keep for b in converted)
    assert list(converted.state_dict()) == list(original.state_dict())
    x = torch.randn(16, 4, 8)
    for seed in (1, 2):
        for a, b in zip(train_step(original, x, seed), train_step(converted, x, seed), strict=True):
            assert torch.equal(a, b)


def test_convert_keeps_the_training_flag_and_works_in_place(timm_drop):
    model = timm_model(timm_drop)
    model[1].eval()
    assert convert(model) is model
    assert [b.drop_path.training for b in model] == [True, False, True]
    # A drop-path module on its own is replaced by its conversion.
    layer = convert(timm_drop.DropPath(0.2))
    assert isinstance(layer, DropPath)
    assert layer.drop_prob == 0.2


def test_int_rng_gives_every_layer_a_seed_of_its_own(timm_drop):
    a, b = (convert(timm_model(timm_drop, rates=(0.5,) * 3), rng=42) for _ in range(2))
    seeds = [blk.drop_path.rng for blk in a]
    assert seeds == [stream_value(42, i) for i in range(3)]  # values 0, 1, 2 of PortableRNG(42)'s stream
    assert seeds == [blk.drop_path.rng for blk in b]
    masks = [blk.drop_path(torch.ones(64, 1)) for blk in a]
    assert not torch.equal(masks[0], masks[1])


def test_a_shared_generator_or_portable_rng_is_given_to_every_layer(timm_drop):
    for rng in (torch.Generator().manual_seed(0), anydrop.PortableRNG(0)):
        model = convert(timm_model(timm_drop), rng=rng)
        assert all(blk.drop_path.rng is rng for blk in model)


def test_other_libraries_classes_are_recognised_by_name_and_attributes():
    class StochasticDepth(torch.nn.Module):  # torchvision's attributes
        def __init__(self, p, mode):
            super().__init__()
            self.p, self.mode = p, mode

    class BeitDropPath(torch.nn.Module):  # transformers' per-model copies
        def __init__(self, drop_prob=None):
            super().__init__()
            self.drop_prob = drop_prob

    layers = {"row": StochasticDepth(0.2, "row"), "batch": StochasticDepth(0.3, "batch")}
    model = torch.nn.ModuleDict({**layers, "beit": BeitDropPath(0.1)})
    convert(model)
    assert (model["row"].drop_prob, model["row"].axis) == (0.2, 0)
    assert (model["batch"].drop_prob, model["batch"].axis) == (0.3, ())
    assert (model["beit"].drop_prob, model["beit"].scale_by_keep) == (0.1, True)
    assert model["row"].scale_by_keep is model["batch"].scale_by_keep is True  # torchvision scales
    with pytest.raises(ValueError, match="mode must be 'row' or 'batch', got 'col'"):
        convert(StochasticDepth(0.2, "col"))
    with pytest.raises(TypeError, match="cannot convert BeitDropPath: drop_prob"):
        convert(torch.nn.Sequential(BeitDropPath(None)))


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match=r"module must be a torch\.nn\.Module, got an object of type list"):
        convert([torch.nn.Identity()])
    with pytest.raises(TypeError, match="rng must be"):
        convert(torch.nn.Identity(), rng="seed")
    with pytest.raises(ValueError, match="seed"):
        convert(torch.nn.Identity(), rng=-1)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    before = copy.deepcopy(model.state_dict())
    assert convert(model) is model
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_modules_of_other_names_are_left_alone_whatever_their_attributes():
    class Resample(torch.nn.Module):  # torchvision's attribute names, another class name
        def __init__(self):
            super().__init__()
            self.p, self.mode = 0.2, "row"

    class Attention(torch.nn.Module):  # a drop_prob attribute, another class name
        def __init__(self):
            super().__init__()
            self.drop_prob = 0.1

    model = torch.nn.Sequential(
        Resample(), Attention(), torch.nn.Upsample(scale_factor=2), torch.nn.Dropout(0.1)
    )
    before = [type(m) for m in model]
    assert convert(model) is model
    assert [type(m) for m in model] == before

"""The framework-neutral anydrop.DropPath and the torch.nn.Module anydrop.torch.DropPath."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from anydrop import DropPath, DropPathResidual, drop_path, drop_path_add, drop_path_residual
from tests.backends import NO_ADVANCING_RNG, RESIDUAL_GATHERS, make_generator
from tests.helpers import kept_samples, random_batch, scaled


def test_defaults_and_attributes():
    layer = DropPath()
    assert layer.drop_prob == 0.1
    assert layer.scale_by_keep is True
    assert layer.training is True
    assert layer.axis == 0
    assert repr(layer) == "DropPath(drop_prob=0.100)"
    described = "DropPath(drop_prob=0.250, scale_by_keep=False, axis=(), rng=3)"
    assert repr(DropPath(0.25, False, axis=(), rng=3)) == described
    assert repr(DropPath(0.5, rng=np.random.default_rng(0))) == "DropPath(drop_prob=0.500, rng=<Generator>)"


def test_train_and_eval_return_self_and_switch_mode(backend):
    layer = DropPath(0.5, rng=0)
    x = random_batch(backend, (8, 3))
    assert layer.eval() is layer
    assert layer.training is False
    assert layer(x) is x
    assert layer.train() is layer
    assert layer.training is True
    assert layer.train(False) is layer
    assert layer.training is False
    assert layer.train(True)(x) is not x


def test_training_applies_drop_path(backend):
    x = random_batch(backend, (128, 4))
    out = DropPath(0.5, rng=1)(x)
    kept = kept_samples(backend.to_numpy(out), backend.to_numpy(scaled(backend.xp, x, 0.5)), (0,))
    assert 0 < kept.sum() < kept.size


def test_axis_and_scale_by_keep_are_forwarded(backend):
    x = random_batch(backend, (3, 64, 2))
    out = DropPath(0.5, scale_by_keep=False, axis=1, rng=2)(x)
    kept = kept_samples(backend.to_numpy(out), backend.to_numpy(x), (1,))
    assert 0 < kept.sum() < kept.size


def test_int_rng_seeds_one_stream_that_advances(backend):
    x = random_batch(backend, (64, 2))
    a, b = DropPath(0.5, rng=123), DropPath(0.5, rng=123)
    first = [backend.to_numpy(a(x)) for _ in range(3)]
    second = [backend.to_numpy(b(x)) for _ in range(3)]
    for u, v in zip(first, second, strict=True):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(first[0], first[1])
    # The first call matches drop_path with the same seed.
    np.testing.assert_array_equal(first[0], backend.to_numpy(drop_path(x, 0.5, True, rng=123)))


@pytest.mark.backends("array_api_strict")
def test_int_rng_seeds_one_stream_per_device(backend):
    xp = backend.xp
    host = np.random.default_rng(0).uniform(1.0, 2.0, (64, 2))
    on_default, on_other = xp.asarray(host), xp.asarray(host, device=xp.Device("device1"))
    layer = DropPath(0.5, rng=123)
    first = backend.to_numpy(layer(on_default))
    # A device met later starts its own stream from the seed, not the first device's second mask.
    np.testing.assert_array_equal(backend.to_numpy(layer(on_other)), first)
    assert not np.array_equal(backend.to_numpy(layer(on_default)), first)


@pytest.mark.skip_backends(**NO_ADVANCING_RNG)
def test_generator_rng_is_used_and_advanced(backend):
    x = random_batch(backend, (64, 2))
    layer = DropPath(0.5, rng=make_generator(backend, 5))
    reference = make_generator(backend, 5)
    for _ in range(2):
        np.testing.assert_array_equal(
            backend.to_numpy(layer(x)), backend.to_numpy(drop_path(x, 0.5, True, rng=reference))
        )


@pytest.mark.parametrize("bad", [-0.5, 1.5, float("nan"), float("inf")])
def test_bad_drop_prob_at_construction_is_a_value_error(bad):
    with pytest.raises(ValueError, match="drop_prob"):
        DropPath(bad)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"drop_prob": "0.1"}, "drop_prob"),
        ({"axis": 0.5}, "axis"),
        ({"axis": [0]}, "axis"),
        ({"rng": "seed"}, "rng"),
        ({"rng": 0.5}, "rng"),
    ],
)
def test_bad_types_at_construction_are_type_errors(kwargs, match):
    with pytest.raises(TypeError, match=match):
        DropPath(**kwargs)


def test_negative_seed_at_construction_is_a_value_error():
    with pytest.raises(ValueError, match="rng"):
        DropPath(0.1, rng=-1)


def test_eval_mode_still_validates_input():
    with pytest.raises(TypeError, match="x must be an array"):
        DropPath().eval()([1.0, 2.0])


@pytest.mark.backends("torch")
class TestTorchModule:
    @pytest.fixture
    def torch(self):
        return pytest.importorskip("torch")

    @pytest.fixture
    def tdrop(self):
        return pytest.importorskip("anydrop.torch")

    def test_is_a_module_without_state(self, torch, tdrop):
        layer = tdrop.DropPath(0.2)
        assert isinstance(layer, torch.nn.Module)
        assert list(layer.parameters()) == []
        assert list(layer.buffers()) == []
        assert layer.state_dict() == {}
        assert repr(layer) == "DropPath(drop_prob=0.200)"
        assert (layer.drop_prob, layer.scale_by_keep, layer.axis) == (0.2, True, 0)

    def test_default_drop_prob_and_extra_repr(self, tdrop):
        assert tdrop.DropPath().extra_repr() == "drop_prob=0.100"
        assert tdrop.DropPath(0.3, axis=1).extra_repr() == "drop_prob=0.300, axis=1"

    def test_follows_train_and_eval(self, backend, torch, tdrop):
        model = torch.nn.Sequential(torch.nn.Identity(), tdrop.DropPath(0.5, rng=0))
        x = random_batch(backend, (64, 4))
        assert model.eval() is model
        assert model[1].training is False
        assert model(x) is x
        model.train()
        out = model(x)
        kept = kept_samples(backend.to_numpy(out), backend.to_numpy(scaled(backend.xp, x, 0.5)), (0,))
        assert 0 < kept.sum() < kept.size

    def test_state_dict_round_trips_with_timm_layout(self, torch, tdrop):
        layer = tdrop.DropPath(0.1)
        result = layer.load_state_dict({}, strict=True)
        assert list(result.missing_keys) == []
        assert list(result.unexpected_keys) == []
        block = torch.nn.Sequential(torch.nn.Linear(3, 3), tdrop.DropPath(0.1))
        # A block that used timm's parameter-free DropPath has the same keys.
        reference = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Identity())
        block.load_state_dict(reference.state_dict(), strict=True)

    def test_validates_at_construction(self, tdrop):
        with pytest.raises(ValueError, match="drop_prob"):
            tdrop.DropPath(1.5)
        with pytest.raises(TypeError, match="rng"):
            tdrop.DropPath(0.1, rng="x")

    def test_gradient_flows_through_the_module(self, torch, tdrop):
        x = torch.ones(32, 3, requires_grad=True)
        tdrop.DropPath(0.5, rng=4)(x).sum().backward()
        grads = set(x.grad[:, 0].tolist())
        assert grads == {0.0, 2.0}

    def test_to_and_dtype_casts_still_work(self, torch, tdrop):
        # nn.Module.to/.double/.half go through Module._apply, which the mixin must not shadow.
        model = torch.nn.Sequential(torch.nn.Linear(3, 3), tdrop.DropPath(0.5, rng=0))
        assert model.double() is model
        assert model[0].weight.dtype == torch.float64
        model.to("cpu", torch.float32)
        out = model(torch.ones(16, 3))
        assert out.dtype == torch.float32

    def test_deepcopy_after_use_keeps_the_stream(self, torch, tdrop):
        layer = tdrop.DropPath(0.5, rng=8)
        x = torch.ones(64, 2)
        layer(x)
        twin = copy.deepcopy(layer)
        assert torch.equal(layer(x), twin(x))


def _tenfold(a):
    return 10 * a


def test_test_time_scaling_in_eval_mode(backend):
    x = random_batch(backend, (8, 3))
    layer = DropPath(0.5, False, rng=0, scale_at_test=True).eval()
    assert repr(layer) == "DropPath(drop_prob=0.500, scale_by_keep=False, scale_at_test=True, rng=0)"
    np.testing.assert_allclose(backend.to_numpy(layer(x)), 0.5 * backend.to_numpy(x), rtol=1e-6)
    zeros = backend.xp.zeros_like(x)
    np.testing.assert_allclose(backend.to_numpy(layer.add(zeros, x)), 0.5 * backend.to_numpy(x), rtol=1e-6)
    block = DropPathResidual(_tenfold, 0.5, False, rng=0, scale_at_test=True).eval()
    assert block.scale_at_test is True
    np.testing.assert_allclose(backend.to_numpy(block(x)), 6 * backend.to_numpy(x), rtol=1e-6)


def test_both_scalings_are_refused_at_construction():
    with pytest.raises(ValueError, match="scale twice"):
        DropPath(0.5, scale_at_test=True)
    with pytest.raises(ValueError, match="scale twice"):
        DropPathResidual(_tenfold, 0.5, scale_at_test=True)


def test_eval_mode_still_checks_the_axis(backend):
    with pytest.raises(ValueError, match="out of range"):
        DropPath(0.5, axis=5).eval()(random_batch(backend, (4, 3)))


def test_add_forwards_scale_by_keep_and_axis(backend):
    x, branch = random_batch(backend, (4, 32), seed=1), random_batch(backend, (4, 32), seed=2)
    for kwargs in ({"scale_by_keep": False}, {"axis": 1}):
        out = DropPath(0.5, rng=3, **kwargs).add(x, branch)
        expected = drop_path_add(x, branch, 0.5, True, rng=3, **kwargs)
        np.testing.assert_array_equal(backend.to_numpy(out), backend.to_numpy(expected))


def test_residual_defaults_and_branch_check():
    block = DropPathResidual(_tenfold)
    assert (block.drop_prob, block.scale_by_keep, block.axis, block.fixed_size) == (0.1, True, 0, False)
    with pytest.raises(TypeError, match=r"^branch must be callable"):
        DropPathResidual(5)


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"scale_by_keep": False}, {"axis": 1}, {"fixed_size": True}, {"fixed_size": True, "axis": 1}],
)
def test_residual_forwards_its_arguments(backend, kwargs):
    x = random_batch(backend, (32, 32))
    out = DropPathResidual(_tenfold, 0.5, rng=4, **kwargs)(x)
    expected = drop_path_residual(x, _tenfold, 0.5, True, rng=4, **kwargs)
    np.testing.assert_array_equal(backend.to_numpy(out), backend.to_numpy(expected))
    # Kept samples are x + branch(x) / keep with the default scaling, x + branch(x) without it.
    factor = 11 if kwargs.get("scale_by_keep") is False else 21
    xs, outs = backend.to_numpy(x), backend.to_numpy(out)
    kept = np.isclose(outs, factor * xs, rtol=1e-5)
    assert kept.any()
    assert (kept | np.isclose(outs, xs)).all()


@pytest.mark.skip_backends(**RESIDUAL_GATHERS)
def test_fixed_size_keeps_exactly_that_many_samples(backend):
    block = DropPathResidual(_tenfold, 0.25, rng=5, fixed_size=True)
    x = backend.xp.ones((16, 1))
    for _ in range(4):
        assert int(np.isclose(backend.to_numpy(block(x)), 1 + 10 / 0.75).sum()) == 12


def test_repr_rounds_drop_prob_to_three_places():
    assert repr(DropPath(0.0004999)) == "DropPath(drop_prob=0.000)"

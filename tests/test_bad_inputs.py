"""The bad-input catalogue: every wrong call, its exception type, message fragments, and x unchanged.

Each entry of ``CATALOGUE`` is one bad call. It runs through drop_path and
through drop_path_add (x as both inputs, which must be checked alike), on x in every form the
backend has (an ordinary array, a read-only one, a non-contiguous view), in
training and in eval mode where the error does not depend on the mode, and
must raise the stated exception with the fragments (which name the argument
and, where there is one, the value) in its message, leaving x's bytes and
flags as they were. The tests after it check the few awkward inputs that are
not errors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from anydrop import DropPath, PortableRNG, drop_path, drop_path_add
from tests.backends import NO_STRIDED_VIEWS, foreign_generator
from tests.helpers import random_batch


def _drop_path_add(x: Any, *args: Any, **kwargs: Any) -> Any:
    # x as both inputs: drop_path_add must check its branch exactly as drop_path checks x.
    return drop_path_add(x, x, *args, **kwargs)


#: The entry point the catalogue's calls go through; the test runs every call through each.
_ENTRY: Callable[..., Any] = drop_path
ENTRY_POINTS = {"drop_path": drop_path, "drop_path_add": _drop_path_add}


@dataclass(frozen=True)
class Bad:
    name: str
    #: (x, backend, training) -> the bad call's result (it must raise)
    call: Callable[[Any, Any, bool], Any]
    error: type[Exception]
    #: What the message must contain: one fragment, or several.
    fragment: str | tuple[str, ...]
    backends: tuple[str, ...] | None = None
    #: False where only training reaches the check (nothing else is).
    eval_too: bool = True
    #: The dtype x is made in, for the calls that take x as it is.
    dtype: str = "float32"


def _dp(**kwargs: Any) -> Callable[[Any, Any, bool], Any]:
    """A drop_path call on x with these arguments changed (drop_prob 0.5 otherwise)."""
    p = kwargs.pop("p", 0.5)
    return lambda x, backend, training: _ENTRY(x, p, training, **kwargs)


def _on(value: Any) -> Callable[[Any, Any, bool], Any]:
    """A drop_path call on ``value`` instead of x."""
    return lambda x, backend, training: _ENTRY(value, 0.5, training)


def _other_library_generator(x: Any, backend: Any, training: bool) -> Any:
    return _ENTRY(x, 0.5, training, rng=foreign_generator(backend))


def _meta_input_cpu_generator(x: Any, backend: Any, training: bool) -> Any:
    import torch

    # Without a GPU the meta device is the other device at hand: the check is the same.
    return _ENTRY(torch.empty(4, 2, device="meta"), 0.5, training, rng=torch.Generator())


def _float8(x: Any, backend: Any, training: bool) -> Any:
    import torch

    return _ENTRY(torch.ones(4, 2).to(torch.float8_e4m3fn), 0.5, training)


def _array_p(values: Any, dtype: str) -> Callable[[Any, Any, bool], Any]:
    return lambda x, backend, training: _ENTRY(x, backend.asarray(np.asarray(values), dtype), training)


def _zero_d(**kwargs: Any) -> Callable[[Any, Any, bool], Any]:
    """A drop_path call on a 0-d array with these arguments."""
    return lambda x, backend, training: _ENTRY(backend.asarray(np.float32(1.0)), 0.5, training, **kwargs)


def _sync(*args: Any, **kwargs: Any) -> Callable[[Any, Any, bool], Any]:
    def call(x: Any, backend: Any, training: bool) -> Any:
        from anydrop.torch import synchronized_rng

        return synchronized_rng(*args, **kwargs)

    call.no_entry_point = True  # type: ignore[attr-defined]
    return call


def _sync_on_cpu_generator(device: str) -> Any:
    import torch

    from anydrop.torch import synchronized_rng

    return synchronized_rng(0, 0, device=device, generator=torch.Generator())


def _jax_rng(make: Callable[[Any], Any]) -> Callable[[Any, Any, bool], Any]:
    """A drop_path call on x with ``rng=make(jax)``."""

    def call(x: Any, backend: Any, training: bool) -> Any:
        import jax

        return _ENTRY(x, 0.5, training, rng=make(jax))

    return call


def _jax_traced_p(x: Any, backend: Any, training: bool) -> Any:
    import jax

    return jax.jit(lambda x, p: _ENTRY(x, p, training, rng=jax.random.key(0)))(x, 0.5)


def _jax_layer_key(x: Any, backend: Any, training: bool) -> Any:
    import jax

    return DropPath(0.5, rng=jax.random.key(0))


_jax_layer_key.no_entry_point = True  # type: ignore[attr-defined]


def _just(make: Callable[[], Any]) -> Callable[[Any, Any, bool], Any]:
    def call(x: Any, backend: Any, training: bool) -> Any:
        return make()

    call.no_entry_point = True  # type: ignore[attr-defined]
    return call


_NOT_AN_ARRAY = (
    "x must be an array of a supported array library (NumPy, PyTorch, CuPy or another array API namespace), "
)

CATALOGUE = [
    # x: not an array, or not a floating-point one
    Bad("x list", _on([1.0, 2.0]), TypeError, (_NOT_AN_ARRAY, "got an object of type list")),
    Bad("x tuple", _on((1.0, 2.0)), TypeError, (_NOT_AN_ARRAY, "got an object of type tuple")),
    Bad("x str", _on("abc"), TypeError, (_NOT_AN_ARRAY, "got an object of type str")),
    Bad("x float", _on(1.5), TypeError, (_NOT_AN_ARRAY, "got an object of type float")),
    Bad("x None", _on(None), TypeError, (_NOT_AN_ARRAY, "got an object of type NoneType")),
    Bad("x int32 array", _dp(), TypeError, "x must have a floating-point dtype, got", dtype="int32"),
    Bad("x int64 array", _dp(), TypeError, "x must have a floating-point dtype, got", dtype="int64"),
    Bad("x bool array", _dp(), TypeError, "x must have a floating-point dtype, got", dtype="bool"),
    Bad("x float8", _float8, TypeError, "16 bits or more", backends=("torch",)),
    # drop_prob: values
    Bad("p negative", _dp(p=-0.1), ValueError, "drop_prob must be in [0, 1], got -0.1"),
    Bad("p above one", _dp(p=1.0000001), ValueError, "drop_prob must be in [0, 1], got 1.0000001"),
    Bad("p two", _dp(p=2), ValueError, "drop_prob must be in [0, 1], got 2"),
    Bad("p nan", _dp(p=math.nan), ValueError, "drop_prob must be in [0, 1], got nan"),
    Bad("p inf", _dp(p=math.inf), ValueError, "drop_prob must be in [0, 1], got inf"),
    Bad("p -inf", _dp(p=-math.inf), ValueError, "drop_prob must be in [0, 1], got -inf"),
    Bad("p 0-d array 2", _array_p(2.0, "float32"), ValueError, "drop_prob must be in [0, 1]"),
    # drop_prob: types
    Bad("p str", _dp(p="0.5"), TypeError, "drop_prob must be a real number in [0, 1], got '0.5' of type str"),
    Bad("p None", _dp(p=None), TypeError, "drop_prob must be a real number in [0, 1], got None"),
    Bad("p bool", _dp(p=True), TypeError, "got True of type bool"),
    Bad("p complex", _dp(p=0.5j), TypeError, "got 0.5j of type complex"),
    Bad("p list", _dp(p=[0.5]), TypeError, "got [0.5] of type list"),
    Bad("p 1-d array", _array_p([0.5], "float32"), TypeError, "drop_prob must be a real number"),
    Bad("p bool array", _array_p(True, "bool"), TypeError, "drop_prob must be a real number"),
    # axis: values
    Bad("axis 2 of 2-d", _dp(axis=2), ValueError, "axis 2 is out of range for x with 2 dimension(s)"),
    Bad("axis -3 of 2-d", _dp(axis=-3), ValueError, "axis -3 is out of range for x with 2 dimension(s)"),
    Bad("axis (0, 2)", _dp(axis=(0, 2)), ValueError, "axis 2 is out of range for x with 2 dimension(s)"),
    Bad("axis (0, 5)", _dp(axis=(0, 5)), ValueError, "axis 5 is out of range for x with 2 dimension(s)"),
    Bad("axis (5,)", _dp(axis=(5,)), ValueError, "axis 5 is out of range for x with 2 dimension(s)"),
    Bad("axis repeated", _dp(axis=(0, 0)), ValueError, "axis must not repeat an axis, got (0, 0)"),
    Bad("axis repeated negative", _dp(axis=(1, -1)), ValueError, "axis must not repeat an axis, got (1, -1)"),
    Bad("axis 0 of 0-d", _zero_d(axis=0), ValueError, "axis 0 is out of range for x with 0 dimension(s)"),
    Bad("default axis of 0-d", _zero_d(), ValueError, "axis 0 is out of range for x with 0 dimension(s)"),
    # axis: types
    Bad("axis float", _dp(axis=0.0), TypeError, "axis must be an int or a tuple of ints, got 0.0"),
    Bad("axis str", _dp(axis="0"), TypeError, "axis must be an int or a tuple of ints, got '0'"),
    Bad("axis list", _dp(axis=[0]), TypeError, "axis must be an int or a tuple of ints, got [0]"),
    Bad("axis None", _dp(axis=None), TypeError, "axis must be an int or a tuple of ints, got None"),
    Bad("axis bool", _dp(axis=True), TypeError, "axis must be an int or a tuple of ints, got True"),
    Bad(
        "axis tuple with float",
        _dp(axis=(0, 1.0)),
        TypeError,
        "axis must be an int or a tuple of ints, got (0, 1.0)",
    ),
    # rng
    Bad(
        "rng str",
        _dp(rng="seed"),
        TypeError,
        ("rng must be None, a non-negative int seed", "got an object of type builtins.str"),
    ),
    Bad("rng float", _dp(rng=1.5), TypeError, "got an object of type builtins.float"),
    Bad("rng bool", _dp(rng=True), TypeError, "got an object of type builtins.bool"),
    Bad("rng list", _dp(rng=[0]), TypeError, "got an object of type builtins.list"),
    Bad("rng object", _dp(rng=object()), TypeError, "got an object of type builtins.object"),
    Bad(
        "rng RandomState",
        _dp(rng=np.random.RandomState(0)),
        TypeError,
        "got an object of type numpy.random.mtrand.RandomState",
    ),
    Bad(
        "rng negative seed",
        _dp(rng=-1),
        ValueError,
        "rng must be a seed in [0, 2**64) when it is an int, got -1",
    ),
    Bad(
        "rng seed 2**64",
        _dp(rng=2**64),
        ValueError,
        f"rng must be a seed in [0, 2**64) when it is an int, got {2**64}",
    ),
    Bad("rng of another library", _other_library_generator, TypeError, "arrays, got an object of type"),
    Bad(
        "rng on another device",
        _meta_input_cpu_generator,
        ValueError,
        "rng is a torch.Generator on device cpu, but x is on device meta",
        backends=("torch",),
    ),
    # JAX keys
    Bad(
        "rng array of JAX keys",
        _jax_rng(lambda jax: jax.random.split(jax.random.key(0), 3)),
        ValueError,
        "rng must be a single JAX key, got an array of keys of shape (3,)",
        ("jax",),
    ),
    Bad(
        "rng uint32 array, no key",
        _jax_rng(lambda jax: jax.numpy.zeros(3, dtype="uint32")),
        ValueError,
        "rng is a uint32 JAX array of shape (3,), not a legacy key",
        ("jax",),
    ),
    Bad(
        "rng float JAX array",
        _jax_rng(lambda jax: jax.numpy.zeros(2)),
        TypeError,
        "JAX PRNG key",
        ("jax",),
    ),
    Bad("JAX without a key", _dp(), TypeError, "rng is required for JAX arrays", ("jax",), eval_too=False),
    Bad("JAX traced drop_prob", _jax_traced_p, TypeError, "drop_prob must be a concrete number", ("jax",)),
    Bad(
        "DropPath JAX key",
        _jax_layer_key,
        TypeError,
        "rng must not be a JAX key for a DropPath layer: the layer would draw the same mask on every call. "
        "Use anydrop.flax.DropPath with nnx.Rngs, or an int seed outside jax.jit",
        ("jax",),
    ),
    Bad(
        "DropPath rng str",
        _just(lambda: DropPath(0.5, rng="seed")),
        TypeError,
        "rng must be None, a non-negative int seed, an anydrop.PortableRNG, or a numpy.random.Generator, "
        "torch.Generator or cupy.random.Generator, got an object of type builtins.str",
    ),
    # PortableRNG
    Bad(
        "PortableRNG negative",
        _just(lambda: PortableRNG(-1)),
        ValueError,
        "seed must be an int in [0, 2**64), got -1",
    ),
    Bad(
        "PortableRNG 2**64",
        _just(lambda: PortableRNG(2**64)),
        ValueError,
        "seed must be an int in [0, 2**64)",
    ),
    Bad(
        "PortableRNG str",
        _just(lambda: PortableRNG("0")),
        TypeError,
        "seed must be a non-negative int, got '0'",
    ),
    Bad("PortableRNG float", _just(lambda: PortableRNG(1.0)), TypeError, "got 1.0 of type float"),
    Bad("PortableRNG bool", _just(lambda: PortableRNG(True)), TypeError, "got True of type bool"),
    Bad(
        "PortableRNG position",
        _just(lambda: PortableRNG(0, position=-5)),
        ValueError,
        "position must be a non-negative int, got -5",
    ),
    # DropPath layers check at construction
    Bad("DropPath p", _just(lambda: DropPath(1.5)), ValueError, "drop_prob must be in [0, 1], got 1.5"),
    Bad("DropPath axis", _just(lambda: DropPath(0.1, axis=[0])), TypeError, "axis must be an int or a tuple"),
    Bad(
        "DropPath rng", _just(lambda: DropPath(0.1, rng="x")), TypeError, "got an object of type builtins.str"
    ),
    # synchronized_rng
    Bad("sync seed negative", _sync(-1), ValueError, "seed must be an int in [0, 2**64), got -1", ("torch",)),
    Bad(
        "sync step negative",
        _sync(0, -2),
        ValueError,
        "step must be a non-negative int, got -2",
        ("torch",),
    ),
    Bad("sync step float", _sync(0, 1.5), TypeError, "step must be a non-negative int, got 1.5", ("torch",)),
    Bad(
        "sync generator of numpy",
        _sync(0, 0, generator=np.random.default_rng(0)),
        TypeError,
        "generator must be a torch.Generator",
        ("torch",),
    ),
    Bad(
        "sync device mismatch",
        lambda x, backend, training: _sync_on_cpu_generator("meta"),
        ValueError,
        "device is meta, but generator is on device cpu",
        ("torch",),
    ),
]


def _forms(backend) -> list[str]:
    forms = ["plain"]
    if backend.name == "numpy":  # the one library here whose arrays have a writeable flag
        forms.append("read-only")
    if backend.name not in NO_STRIDED_VIEWS:
        forms.append("non-contiguous")
    return forms


def _make(backend, form: str, dtype: str = "float32") -> Any:
    if form == "plain":
        return random_batch(backend, (6, 3), dtype)
    if form == "read-only":
        x = random_batch(backend, (6, 3), dtype)
        x.flags.writeable = False
        return x
    # Every other row of a transposed array: strided, not contiguous.
    big = random_batch(backend, (3, 12), dtype)
    return backend.xp.permute_dims(big, (1, 0))[::2]


def _snapshot(backend, x) -> tuple[bytes, Any]:
    flags = x.flags.writeable if isinstance(x, np.ndarray) else None
    return backend.to_numpy(x).tobytes(), flags


def _cases() -> list[Any]:
    return [
        pytest.param(c, id=c.name, marks=() if c.backends is None else pytest.mark.backends(*c.backends))
        for c in CATALOGUE
    ]


def test_the_catalogue_has_at_least_25_bad_calls():
    assert len(CATALOGUE) >= 25
    assert len({c.name for c in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
@pytest.mark.parametrize("case", _cases())
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_bad_call_raises_and_leaves_x_unchanged(backend, case, training, entry, monkeypatch):
    if not training and not case.eval_too:
        pytest.skip("checked in training only")
    if entry != "drop_path" and getattr(case.call, "no_entry_point", False):
        pytest.skip("calls no entry point: checked once, with drop_path")
    monkeypatch.setattr(f"{__name__}._ENTRY", ENTRY_POINTS[entry])
    fragments = (case.fragment,) if isinstance(case.fragment, str) else case.fragment
    for form in _forms(backend):
        x = _make(backend, form, case.dtype)
        before = _snapshot(backend, x)
        with pytest.raises(case.error) as info:
            case.call(x, backend, training)
        for fragment in fragments:
            assert fragment in str(info.value), f"{form} x: {info.value}"
        assert _snapshot(backend, x) == before, f"{form} x was modified"


# --- awkward inputs that are not errors ---


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_awkward_inputs_are_accepted_and_left_unchanged(backend, p):
    for form in _forms(backend):
        x = _make(backend, form)
        before = _snapshot(backend, x)
        for rng in (0, PortableRNG(1)):
            out = drop_path(x, p, True, rng=rng)
            assert out.shape == x.shape
        assert _snapshot(backend, x) == before, f"{form} x was modified"


def test_numpy_scalar_drop_prob_is_accepted(backend):
    x = random_batch(backend, (6, 3))
    before = _snapshot(backend, x)
    assert drop_path(x, np.float32(0.0), True) is x
    assert drop_path(x, np.float64(0.5), True, rng=0).shape == x.shape
    assert _snapshot(backend, x) == before


def test_zero_dimensional_array_drop_prob_is_accepted(backend):
    # e.g. torch.linspace(0, rate, depth)[i], which timm accepts too
    x = random_batch(backend, (6, 3))
    before = _snapshot(backend, x)
    p = backend.asarray(np.float64(0.5), "float32")
    out, host = backend.to_numpy(drop_path(x, p, True, rng=0)), backend.to_numpy(x)
    kept = (out == 2 * host).all(axis=1)
    assert (kept | (out == 0).all(axis=1)).all()
    assert drop_path(x, backend.asarray(np.float64(0.0), "float32"), True) is x
    assert _snapshot(backend, x) == before


@pytest.mark.skip_backends(
    torch="a tensor drop_prob draws as timm draws it, with bernoulli_'s tensor-probability kernel "
    "(tests/test_torch_tracing.py checks that against timm)"
)
def test_zero_dimensional_array_drop_prob_draws_the_float_masks(backend):
    x = random_batch(backend, (6, 3))
    p = backend.asarray(np.float64(0.5), "float32")
    expected = backend.to_numpy(drop_path(x, 0.5, True, rng=0))
    np.testing.assert_array_equal(backend.to_numpy(drop_path(x, p, True, rng=0)), expected)


@pytest.mark.parametrize("training", [True, False])
def test_generator_of_another_library_names_the_library_and_the_type(backend, training):
    x = random_batch(backend, (6, 3))
    other = foreign_generator(backend)
    name = re.escape(f"got an object of type {type(other).__module__}.{type(other).__qualname__}")
    with pytest.raises(TypeError, match=rf"for {backend.name} arrays, {name}"):
        drop_path(x, 0.5, training, rng=other)

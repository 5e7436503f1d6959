"""Every entry point called from 8 threads at once: what each ``rng`` promises must still hold.

The promises (docs/reproducibility.md, "Threads"): threads sharing a generator,
a ``PortableRNG``, a layer's seeded stream or ``rng=None`` never reuse a
value, so every call draws its own mask; an int seed passed per call draws
the same mask on every call. "Never reuse" is checked as strictly as the
source allows: for a seeded shared source the masks the threads drew are,
as a multiset, exactly the masks the same number of calls draws in one
thread (each call took its own stretch of the stream, none twice, none
skipped); for ``rng=None``, whose seed is unknown, no two of the calls'
masks are equal (on 64 samples at ``drop_prob=0.5``, two equal by chance with
probability below 2**-52).

The calls run in ``THREADS`` threads released together by a barrier. The
file also runs under pytest-run-parallel (``--parallel-threads=8``), which
calls each test from 8 threads at once: every test builds its own sources,
so those runs check the same promises with more threads (and fewer calls each, see ``load``).
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

import anydrop
from anydrop import PortableRNG, drop_path, drop_path_add, drop_path_residual
from tests.backends import NO_ADVANCING_RNG, NO_DEFAULT_RNG, RESIDUAL_GATHERS, make_generator

THREADS = 8
CALLS = 6  # per thread
# Dask builds a graph of a few dozen tasks per call (~20 ms): fewer calls keep the file quick.
DASK_CALLS = 2
N = 64  # samples per mask
P = 0.5


_SWITCH_LOCK = threading.Lock()
_SWITCH_USERS = [0, sys.getswitchinterval()]


@contextmanager
def frequent_switches() -> Iterator[None]:
    """Let the interpreter switch threads every microsecond rather than every 5 ms.

    With the default interval a thread mostly runs a whole call before the next
    one gets the GIL, and a race between two lines of Python would rarely show.
    Counted, so that tests running in parallel restore the interval only when
    the last of them leaves.
    """
    with _SWITCH_LOCK:
        if _SWITCH_USERS[0] == 0:
            _SWITCH_USERS[1] = sys.getswitchinterval()
            sys.setswitchinterval(1e-6)
        _SWITCH_USERS[0] += 1
    try:
        yield
    finally:
        with _SWITCH_LOCK:
            _SWITCH_USERS[0] -= 1
            if _SWITCH_USERS[0] == 0:
                sys.setswitchinterval(_SWITCH_USERS[1])


def in_threads(call: Callable[[], Any], threads: int = THREADS, calls: int = CALLS) -> list[Any]:
    """``call()`` made ``calls`` times in each of ``threads`` threads started together; all results.

    An exception in any thread is re-raised here.
    """
    barrier = threading.Barrier(threads)
    results: list[list[Any]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(calls):
                results[i].append(call())
        except BaseException as exc:  # re-raised in the test's thread below
            errors.append(exc)
            barrier.abort()

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    with frequent_switches():
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    if errors:
        raise errors[0]
    return [r for rs in results for r in rs]


def _double(a: Any) -> Any:
    return a * 2


def _fixed(x: Any) -> bool:
    """fixed_size for the residual entry points: True on JAX, False elsewhere.

    Eager JAX compiles each operation once per shape, and a Bernoulli mask
    gives the kept batch a new size on most calls: tens of seconds for this
    file. A fixed size draws from the same sources (a uniform per sample), so
    it checks the same sharing.
    """
    return type(x).__module__.startswith("jax")


def _layer(x: Any, rng: Any, layer: Any = None) -> Callable[[], Any]:
    layer = anydrop.DropPath(P, rng=rng) if layer is None else layer
    return lambda: layer(x)


def _layer_add(layer: Any, x: Any) -> Callable[[], Any]:
    return lambda: layer.add(x * 0, x)


# Each entry point as (make a call from rng, the kept samples of its output). A
# call is a function of nothing, so one object (a generator, a layer) is shared
# by every thread that makes it. The input is ones((N, 3)); a layer is built
# once per call factory, so that threads share it.
Entry = tuple[Callable[[Any, Any], Callable[[], Any]], Callable[[np.ndarray], np.ndarray]]
ENTRIES: dict[str, Entry] = {
    "drop_path": (
        lambda x, rng: lambda: drop_path(x, P, True, rng=rng),
        lambda out: out[:, 0] != 0,
    ),
    "drop_path_add": (
        lambda x, rng: lambda: drop_path_add(x * 0, x, P, True, rng=rng),
        lambda out: out[:, 0] != 0,
    ),
    "drop_path_residual": (
        lambda x, rng: lambda: drop_path_residual(x, _double, P, True, rng=rng, fixed_size=_fixed(x)),
        lambda out: out[:, 0] != 1,
    ),
    "DropPath": (
        _layer,
        lambda out: out[:, 0] != 0,
    ),
    "DropPath.add": (
        lambda x, rng: _layer_add(anydrop.DropPath(P, rng=rng), x),
        lambda out: out[:, 0] != 0,
    ),
    "DropPathResidual": (
        lambda x, rng: _layer(x, rng, anydrop.DropPathResidual(_double, P, rng=rng, fixed_size=_fixed(x))),
        lambda out: out[:, 0] != 1,
    ),
}
TORCH_ENTRIES = {
    "torch.DropPath": ("DropPath", "drop_path"),
    "torch.DropPath.add": ("DropPath", "drop_path_add"),
    "torch.DropPathResidual": ("DropPathResidual", "drop_path_residual"),
}
RESIDUAL = {"drop_path_residual", "DropPathResidual", "torch.DropPathResidual"}
LAYERS = {"DropPath", "DropPath.add", "DropPathResidual", *TORCH_ENTRIES}


def _factory(
    entry: str,
) -> tuple[Callable[[Any, Any], Callable[[], Any]], Callable[[np.ndarray], np.ndarray]]:
    if entry not in TORCH_ENTRIES:
        return ENTRIES[entry]
    import anydrop.torch as adt

    cls, like = TORCH_ENTRIES[entry]
    kept = ENTRIES[like][1]
    if cls == "DropPathResidual":
        return (lambda x, rng: _layer(x, rng, adt.DropPathResidual(_double, P, rng=rng))), kept
    if entry.endswith(".add"):
        return (lambda x, rng: _layer_add(adt.DropPath(P, rng=rng), x)), kept
    return (lambda x, rng: _layer(x, rng, adt.DropPath(P, rng=rng))), kept


ALL_ENTRIES = list(ENTRIES) + list(TORCH_ENTRIES)


@pytest.fixture
def entry(request: pytest.FixtureRequest, backend: Any) -> str:
    name: str = request.param
    if name in TORCH_ENTRIES and backend.name != "torch":
        pytest.skip("anydrop.torch's modules take torch tensors")
    if name in RESIDUAL and backend.name in RESIDUAL_GATHERS:
        pytest.skip(f"{backend.name}: {RESIDUAL_GATHERS[backend.name]}")
    return name


def _masks(backend: Any, entry: str, outputs: list[Any]) -> list[bytes]:
    kept = _factory(entry)[1]
    return [np.packbits(kept(out)).tobytes() for out in _to_numpy(backend, outputs)]


def _to_numpy(backend: Any, outputs: list[Any]) -> list[np.ndarray]:
    if backend.name == "dask":
        import dask

        # One computation for all: a compute per mask costs tens of milliseconds each.
        return [np.asarray(a) for a in dask.compute(*outputs)]
    return [backend.to_numpy(out) for out in outputs]


def _ones(backend: Any) -> Any:
    return backend.asarray(np.ones((N, 3)), "float32")


@pytest.fixture
def load(request: pytest.FixtureRequest, backend: Any) -> tuple[int, int]:
    """(threads, calls per thread) of one test.

    Under pytest-run-parallel the test itself already runs in several threads
    at once, each with sources of its own, and only the process-wide ones
    (``rng=None``, the caches) are shared between them: 2 threads making 2
    calls each then keep the run short while still sharing every source.
    """
    parallel = int(getattr(request.config.option, "parallel_threads", 1) or 1) > 1
    if parallel:
        return 2, 1 if backend.name == "dask" else 2
    return THREADS, DASK_CALLS if backend.name == "dask" else CALLS


def _run(backend: Any, entry: str, rng: Any, load: tuple[int, int]) -> list[bytes]:
    """The masks of the calls of ``entry`` sharing ``rng`` (and one layer), from ``load``'s threads."""
    make, _ = _factory(entry)
    threads, calls = load
    return _masks(backend, entry, in_threads(make(_ones(backend), rng), threads, calls))


def _sequential(backend: Any, entry: str, rng: Any, load: tuple[int, int]) -> list[bytes]:
    """The same number of calls, made one after the other in this thread."""
    make, _ = _factory(entry)
    call = make(_ones(backend), rng)
    return _masks(backend, entry, [call() for _ in range(load[0] * load[1])])


def _assert_fresh_and_complete(threaded: list[bytes], sequential: list[bytes]) -> None:
    assert len(set(sequential)) == len(sequential), "the reference itself repeats a mask"
    repeated = [m for m, c in Counter(threaded).items() if c > 1]
    assert not repeated, f"{len(repeated)} mask(s) drawn by more than one call"
    assert Counter(threaded) == Counter(sequential), "the threads drew other masks than the stream holds"


@pytest.mark.parametrize("entry", ALL_ENTRIES, indirect=True)
@pytest.mark.skip_backends(**NO_ADVANCING_RNG)
def test_shared_generator_gives_every_call_its_own_draw(backend, entry, load):
    threaded = _run(backend, entry, make_generator(backend, 11), load)
    _assert_fresh_and_complete(threaded, _sequential(backend, entry, make_generator(backend, 11), load))


@pytest.mark.parametrize("entry", ALL_ENTRIES, indirect=True)
def test_shared_portable_rng_uses_each_stream_value_once(backend, entry, load):
    rng = PortableRNG(12)
    threaded = _run(backend, entry, rng, load)
    # Every value of the stream up to the position is used exactly once.
    assert rng.position == load[0] * load[1] * N
    _assert_fresh_and_complete(threaded, _sequential(backend, entry, PortableRNG(12), load))


@pytest.mark.parametrize("entry", ALL_ENTRIES, indirect=True)
@pytest.mark.skip_backends(**NO_DEFAULT_RNG)
def test_default_source_gives_every_call_its_own_draw(backend, entry, load):
    threaded = _run(backend, entry, None, load)
    assert len(threaded) == load[0] * load[1]
    repeated = [m for m, c in Counter(threaded).items() if c > 1]
    assert not repeated, f"{len(repeated)} mask(s) drawn by more than one call"


@pytest.mark.parametrize("entry", [e for e in ALL_ENTRIES if e not in LAYERS], indirect=True)
def test_int_seed_per_call_gives_the_same_mask_every_call(backend, entry, load):
    threaded = _run(backend, entry, 13, load)
    (alone,) = _masks(backend, entry, [_factory(entry)[0](_ones(backend), 13)()])
    assert set(threaded) == {alone}


@pytest.mark.parametrize("entry", [e for e in ALL_ENTRIES if e in LAYERS], indirect=True)
def test_layer_with_int_seed_draws_its_stream_once_per_call(backend, entry, load):
    # The layer keeps one stream per library and device, made on the first call: threads making
    # that first call together must still share one stream, not each seed its own.
    _assert_fresh_and_complete(_run(backend, entry, 14, load), _sequential(backend, entry, 14, load))


@pytest.mark.backends("jax")
@pytest.mark.parametrize("entry", ["drop_path", "drop_path_add", "drop_path_residual"], indirect=True)
def test_jax_key_shared_by_threads_gives_the_same_mask_every_call(backend, entry, load):
    import jax

    threaded = _run(backend, entry, jax.random.key(15), load)
    (alone,) = _masks(backend, entry, [_factory(entry)[0](_ones(backend), jax.random.key(15))()])
    assert set(threaded) == {alone}


@pytest.mark.backends("jax")
@pytest.mark.parametrize("residual", [False, True], ids=["DropPath", "DropPathResidual"])
def test_flax_module_with_shared_rngs_draws_fresh_keys(backend, residual, load):
    from flax import nnx

    import anydrop.flax as adf

    def make() -> Any:
        rngs = nnx.Rngs(dropout=16)
        if residual:
            return adf.DropPathResidual(_double, P, rngs=rngs)  # fixed_size, as _fixed says why
        return adf.DropPath(P, rngs=rngs)

    x = _ones(backend)
    layer, alone = make(), make()
    kept = ENTRIES["drop_path_residual" if residual else "drop_path"][1]

    def masks(outputs: list[Any]) -> list[bytes]:
        return [np.packbits(kept(backend.to_numpy(o))).tobytes() for o in outputs]

    threaded = masks(in_threads(lambda: layer(x), *load))
    _assert_fresh_and_complete(threaded, masks([alone(x) for _ in range(load[0] * load[1])]))


@pytest.mark.backends("jax")
def test_flax_module_with_a_key_per_call_gives_that_keys_mask(backend, load):
    import jax

    import anydrop.flax as adf

    layer = adf.DropPath(P)
    x = _ones(backend)
    threaded = in_threads(lambda: layer(x, rngs=jax.random.key(17)), *load)
    expected = backend.to_numpy(drop_path(x, P, True, rng=jax.random.key(17)))
    for out in threaded:
        np.testing.assert_array_equal(backend.to_numpy(out), expected)

"""Backend selection for the test suite.

The same test files run once per array library: ``pytest --backend torch``
(``numpy`` by default, or ``cupy``, ``array_api_strict``, ``dask``, ``jax``). Tests
that only make sense for some libraries carry ``@pytest.mark.backends("torch", ...)``
and are skipped, with that reason, on the others. Tests that rely on an RNG
behaviour some libraries lack carry ``@pytest.mark.rng_needs("default_rng")``
(or ``"advancing_rng"``), skipped on those libraries with the reason in
``RNG_NEEDS``; ``require_rng(backend, need)`` does the same inside a test.
``@pytest.mark.skip_backends(name=reason)`` skips a test on the libraries named.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

BACKENDS = ("numpy", "torch", "cupy", "array_api_strict", "dask", "jax")

_NAMESPACES = {
    "numpy": "array_api_compat.numpy",
    "torch": "array_api_compat.torch",
    "cupy": "array_api_compat.cupy",
    "array_api_strict": "array_api_strict",
    "dask": "array_api_compat.dask.array",
    "jax": "jax.numpy",
}
_FLOAT_DTYPES = {
    "numpy": ("float16", "float32", "float64", "complex64", "complex128"),
    "torch": ("float16", "bfloat16", "float32", "float64", "complex64", "complex128"),
    "cupy": ("float16", "float32", "float64", "complex64", "complex128"),
    "array_api_strict": ("float32", "float64", "complex64", "complex128"),
    # float16 is not in the standard, so array-api-compat's Dask namespace does
    # not name it, but Dask arrays hold NumPy's: Backend.dtype finds it there.
    "dask": ("float16", "float32", "float64", "complex64", "complex128"),
    "jax": ("float16", "bfloat16", "float32", "float64", "complex64", "complex128"),
}
#: RNG behaviours some shared tests rely on: the backends without them, and why.
RNG_NEEDS = {
    "default_rng": (
        ("jax",),
        "JAX has no global random state: rng=None when training is an error there (tests/test_jax.py)",
    ),
    "advancing_rng": (
        ("jax",),
        "JAX keys are values, not generators: the same key draws the same mask every call",
    ),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("anydrop")
    group.addoption(
        "--backend",
        choices=BACKENDS,
        default="numpy",
        help="array library the shared tests run on (default: numpy)",
    )
    group.addoption(
        "--device",
        default=None,
        help="device test arrays are made on, e.g. 'cuda' for torch (default: the library's default)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "backends(*names): run only on these --backend values")
    config.addinivalue_line("markers", "rng_needs(*needs): skip on backends without these RNG_NEEDS")
    config.addinivalue_line(
        "markers", "skip_backends(**reasons): skip on the --backend values named, each with its reason"
    )


#: Why a shared test cannot apply to some backends, per backend: pass one to
#: ``@pytest.mark.skip_backends(**REASON)``, or to ``skip_unsupported`` in a fixture.
RESIDUAL_GATHERS = {
    "dask": "drop_path_residual refuses Dask arrays: it gathers the kept samples, whose number "
    "is known only once the lazy mask is computed",
}


def skip_unsupported(backend: Backend, reasons: dict[str, str]) -> None:
    """Skip the running test when ``reasons`` names ``backend``, with that reason."""
    if backend.name in reasons:
        pytest.skip(reasons[backend.name])


def pytest_report_header(config: pytest.Config) -> str:
    return f"anydrop backend: {config.getoption('--backend')}, device: {config.getoption('--device')}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    backend = config.getoption("--backend")
    for item in items:
        marker = item.get_closest_marker("backends")
        if marker is not None and backend not in marker.args:
            names = ", ".join(marker.args)
            item.add_marker(pytest.mark.skip(reason=f"needs backend {names}; this run uses {backend}"))
        for marker in item.iter_markers("skip_backends"):
            if backend in marker.kwargs:
                item.add_marker(pytest.mark.skip(reason=f"{backend}: {marker.kwargs[backend]}"))
        for marker in item.iter_markers("rng_needs"):
            for need in marker.args:
                lacking, reason = RNG_NEEDS[need]
                if backend in lacking:
                    item.add_marker(pytest.mark.skip(reason=reason))


def has_rng(backend: Backend, need: str) -> bool:
    """Whether ``backend`` has the RNG behaviour ``need`` (a key of RNG_NEEDS)."""
    return backend.name not in RNG_NEEDS[need][0]


def require_rng(backend: Backend, need: str) -> None:
    """Skip the running test if ``backend`` lacks the RNG behaviour ``need`` (a key of RNG_NEEDS)."""
    if not has_rng(backend, need):
        pytest.skip(RNG_NEEDS[need][1])


@dataclass(frozen=True)
class Backend:
    """One array library under test, with helpers to move data in and out."""

    name: str
    xp: Any
    device: Any
    float_dtypes: tuple[str, ...]

    def dtype(self, name: str) -> Any:
        if self.name == "dask" and not hasattr(self.xp, name):
            return np.dtype(name)
        return getattr(self.xp, name)

    def asarray(self, values: Any, dtype: str = "float32") -> Any:
        """An array of this backend on the test device, from NumPy data."""
        host = np.asarray(values)
        if host.dtype == np.float16 and dtype == "bfloat16":
            host = host.astype(np.float32)
        if self.name == "dask":
            import dask.array as da

            # Two blocks along the first axis where it allows, so that every
            # shared test also checks that masks line up with x's blocks.
            chunks = tuple((n + 1) // 2 if i == 0 and n > 1 else max(n, 1) for i, n in enumerate(host.shape))
            return da.from_array(host, chunks=chunks).astype(self.dtype(dtype))
        kwargs = {} if self.device is None else {"device": self.device}
        return self.xp.astype(self.xp.asarray(host, **kwargs), self.dtype(dtype))

    def to_numpy(self, a: Any) -> np.ndarray:
        """Copy ``a`` to a NumPy array (bfloat16 widened to float32, exactly)."""
        if self.name == "torch":
            import torch

            a = a.detach().cpu()
            if a.dtype == torch.bfloat16:
                a = a.float()
            return a.numpy()
        if self.name == "cupy":
            return a.get()
        if self.name == "dask":
            return np.asarray(a.compute())
        if self.name == "array_api_strict":
            return np.from_dlpack(a.to_device(self.xp.Device("CPU_DEVICE")))
        if self.name == "jax" and a.dtype == self.xp.bfloat16:
            a = a.astype(self.xp.float32)
        return np.asarray(a)


def _cupy_skip_reason() -> str | None:
    try:
        import cupy
    except ImportError as exc:
        return f"cupy is not installed ({exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, no runtime: the GPU is unusable
        return f"no usable CUDA device ({exc})"
    return None if count > 0 else "no CUDA device"


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> Backend:
    name = request.config.getoption("--backend")
    if name == "cupy":
        reason = _cupy_skip_reason()
        if reason is not None:
            pytest.skip(f"CuPy tests need a CUDA GPU: {reason}")
    try:
        xp = importlib.import_module(_NAMESPACES[name])
    except ImportError as exc:
        raise pytest.UsageError(f"--backend {name} needs {name} installed: {exc}") from exc
    device = request.config.getoption("--device")
    if device is not None and name == "array_api_strict":
        device = xp.Device(device)
    if name == "jax":
        import jax

        # JAX computes in 32 bits unless told otherwise; the shared tests use float64 as on the other
        # libraries.
        jax.config.update("jax_enable_x64", True)
        if device is not None:
            device = jax.devices(device)[0]
    return Backend(name, xp, device, _FLOAT_DTYPES[name])


@pytest.fixture(scope="session")
def xp(backend: Backend) -> Any:
    """The array namespace of the backend under test."""
    return backend.xp


def make_generator(backend: Backend, seed: int) -> Any:
    """A fresh generator object of ``backend``'s library, seeded with ``seed``."""
    if backend.name == "torch":
        import torch

        device = backend.device if backend.device is not None else "cpu"
        return torch.Generator(device=device).manual_seed(seed)
    if backend.name == "cupy":
        import cupy

        return cupy.random.default_rng(seed)
    if backend.name == "jax":
        import jax

        # What an int seed makes: a key, which does not advance (RNG_NEEDS["advancing_rng"]).
        return jax.random.key(seed)
    return np.random.default_rng(seed)

"""The array libraries under test: what each one has, and helpers that hide their differences.

``conftest.py`` builds one ``Backend`` per run (``pytest --backend NAME``) and
hands it to the tests as the ``backend`` fixture. The reason tables here
(``NO_DEFAULT_RNG``, ``NO_ADVANCING_RNG``, ``RESIDUAL_GATHERS``,
``NO_STRIDED_VIEWS``) map a backend's name to why a shared test cannot apply
to it: pass one to ``@pytest.mark.skip_backends(**TABLE)``, or to
``skip_unsupported(backend, TABLE)`` inside a test or fixture.
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

#: rng=None when training: the library's default source of randomness.
NO_DEFAULT_RNG = {
    "jax": "JAX has no global random state: rng=None when training is an error there (tests/test_jax.py)",
}
#: A generator object that advances, so that successive calls draw fresh masks.
NO_ADVANCING_RNG = {
    "jax": "JAX keys are values, not generators: the same key draws the same mask every call",
}
#: drop_path_residual itself.
RESIDUAL_GATHERS = {
    "dask": "drop_path_residual refuses Dask arrays: it gathers the kept samples, whose number "
    "is known only once the lazy mask is computed",
}
#: Strided (non-contiguous) views of an array.
NO_STRIDED_VIEWS = {
    "array_api_strict": "array-api-strict has no strided views",
}


def skip_unsupported(backend: Backend, reasons: dict[str, str]) -> None:
    """Skip the running test when ``reasons`` names ``backend``, with that reason."""
    if backend.name in reasons:
        pytest.skip(f"{backend.name}: {reasons[backend.name]}")


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

    def seed_default_rng(self, seed: int) -> None:
        """Seed the source that rng=None draws from; skip the test where no seed fixes it."""
        skip_unsupported(self, NO_DEFAULT_RNG)
        if self.name == "torch":
            import torch

            torch.manual_seed(seed)
        elif self.name == "cupy":
            import cupy

            cupy.random.seed(seed)
        else:
            pytest.skip(f"{self.name}'s default source is OS entropy, which no seed fixes")


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


def load_backend(name: str, device: str | None) -> Backend:
    """The Backend for ``pytest --backend name --device device``; skips CuPy without a GPU."""
    if name == "cupy":
        reason = _cupy_skip_reason()
        if reason is not None:
            pytest.skip(f"CuPy tests need a CUDA GPU: {reason}")
    try:
        xp = importlib.import_module(_NAMESPACES[name])
    except ImportError as exc:
        raise pytest.UsageError(f"--backend {name} needs {name} installed: {exc}") from exc
    dev: Any = device
    if device is not None and name == "array_api_strict":
        dev = xp.Device(device)
    if name == "jax":
        import jax

        # JAX computes in 32 bits unless told otherwise; the shared tests use float64 as on the other
        # libraries.
        jax.config.update("jax_enable_x64", True)
        if device is not None:
            dev = jax.devices(device)[0]
    return Backend(name, xp, dev, _FLOAT_DTYPES[name])


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

        # What an int seed makes: a key, which does not advance (NO_ADVANCING_RNG).
        return jax.random.key(seed)
    return np.random.default_rng(seed)


def foreign_generator(backend: Backend) -> Any:
    """A generator of another array library than ``backend``'s; skips when torch is missing."""
    if backend.name == "torch":
        return np.random.default_rng(0)
    torch = pytest.importorskip("torch", reason="needs torch for a generator of another library")
    return torch.Generator()

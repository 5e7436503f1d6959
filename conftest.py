"""Backend selection for the test suite: options, markers and fixtures.

The same test files run once per array library: ``pytest --backend torch``
(``numpy`` by default, or ``cupy``, ``array_api_strict``, ``dask``, ``jax``);
``tests/backends.py`` says what each library has. Two markers say where a
test applies, and every skip they make gives its reason:

``@pytest.mark.backends("torch", ...)``
    Run only on these backends (what only those libraries have).
``@pytest.mark.skip_backends(name=reason, ...)``
    Skip on the backends named, each with its reason. The reasons a shared
    test cannot apply to a library live in ``tests/backends.py``, e.g.
    ``@pytest.mark.skip_backends(**NO_DEFAULT_RNG)``.

Fixtures: ``backend`` (the ``tests.backends.Backend`` of the run) and
``dtype``, a dtype name that tests parametrize indirectly
(``@pytest.mark.parametrize("dtype", [...], indirect=True)``): it skips, with
the reason, where the backend has no such dtype.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.backends import BACKENDS, Backend, load_backend


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
    config.addinivalue_line(
        "markers", "skip_backends(**reasons): skip on the --backend values named, each with its reason"
    )
    # pytest-xdist's own, named here too so that --strict-markers accepts it where xdist is not installed.
    config.addinivalue_line(
        "markers", "xdist_group(name): run on one xdist worker with the rest of its group"
    )
    if config.getoption("--backend") == "jax":
        # tests/test_jax_sharding.py needs 8 devices; on the CPU, XLA makes them if asked
        # before JAX starts its backend (set before any test module imports jax).
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_force_host_platform_device_count" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=8".strip()
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers is not None:
        # The workers share the CPUs: torch's OpenMP threads, one per CPU in each worker, would
        # compete with the other workers' (set before any test module imports torch).
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(workers))))


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


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> Backend:
    return load_backend(request.config.getoption("--backend"), request.config.getoption("--device"))


@pytest.fixture
def dtype(request: pytest.FixtureRequest, backend: Backend) -> str:
    """The dtype name the test is parametrized with (indirectly); skips where the backend lacks it."""
    name: str = request.param
    if name not in backend.float_dtypes:
        pytest.skip(f"{backend.name} has no {name}")
    return name


@pytest.fixture(scope="session")
def timm_drop() -> Any:
    """timm's own ``timm/layers/drop.py``, the PyTorch tests' reference; skips where timm is not installed."""
    from tests.torch_helpers import load_timm_drop

    return load_timm_drop()

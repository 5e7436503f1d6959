"""Test matrix: ``nox`` runs the tests once per array library, then lint and the type check.

Sessions
--------
tests(numpy), tests(torch), tests(cupy), tests(array_api_strict)
    The same test files, with ``--backend`` set. Extra pytest arguments go
    after ``--``: ``nox -s "tests(torch)" -- --device cuda -x``. The numpy
    session also installs JAX, whose arrays are checked with PortableRNG
    there; the torch session also runs a two-process torch.distributed test.
lint
    ruff check and ruff format --check.
typecheck
    mypy --strict over ``anydrop/``.

Environment variables
---------------------
ANYDROP_TORCH_REQUIREMENT
    What the torch session installs (default ``torch==2.13.0``, the CPU build
    the project's development machines carry; set e.g. ``torch>=2.1``).
ANYDROP_CUPY_REQUIREMENT
    What the cupy session installs (default: the cupy wheel matching the
    CUDA driver found).
ANYDROP_JAX_REQUIREMENT
    What the numpy session installs for the JAX checks (default ``jax[cpu]``;
    set it to an empty string to skip them).
"""

from __future__ import annotations

import ctypes
import os

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.error_on_external_run = True

BACKENDS = ["numpy", "torch", "cupy", "array_api_strict"]
TORCH = os.environ.get("ANYDROP_TORCH_REQUIREMENT", "torch==2.13.0")
# timm's drop.py is the reference the torch tests compare against bit for bit.
# --no-deps: timm's own dependencies (torchvision among them) are not needed to
# load that one file, and a torchvision wheel would pull in another torch.
TIMM = "timm==1.0.31"
JAX = os.environ.get("ANYDROP_JAX_REQUIREMENT", "jax[cpu]")


def _cuda_driver_version() -> int | None:
    """The CUDA driver's version if a CUDA device is present, else None, without cupy."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count, version = ctypes.c_int(0), ctypes.c_int(0)
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
            return None
        lib.cuDriverGetVersion(ctypes.byref(version))
        return version.value
    return None


def _cupy_requirement(driver: int) -> str:
    # [ctk] brings the CUDA libraries (NVRTC, cuRAND) as wheels, so a machine
    # with only the driver works.
    if driver >= 13000:
        return "cupy-cuda13x[ctk]"
    if driver >= 12000:
        return "cupy-cuda12x[ctk]"
    return "cupy-cuda11x"


@nox.session
@nox.parametrize("backend", [nox.param(b, id=b) for b in BACKENDS])
def tests(session: nox.Session, backend: str) -> None:
    """Run the test suite on one array library."""
    extra: list[str] = []
    if backend == "cupy":
        # Decide before installing: a CUDA wheel of cupy is large and useless without a GPU.
        driver = _cuda_driver_version()
        if driver is None:
            session.skip("no CUDA device found (libcuda could not be loaded or reports no device)")
        session.install(os.environ.get("ANYDROP_CUPY_REQUIREMENT", _cupy_requirement(driver)))
    elif backend == "torch":
        session.install(TORCH)
        session.install("--no-deps", TIMM)
        # Doctests need numpy and torch together: run the package's and the README's here.
        extra = ["--doctest-modules", "--doctest-glob=README.md", "anydrop", "tests", "README.md"]
    elif backend == "numpy" and JAX:
        # PortableRNG is the one way drop_path accepts JAX arrays; no JAX test backend exists.
        session.install(JAX)
    elif backend == "array_api_strict":
        session.install("array-api-strict")
    session.install("-e", ".[test]")
    session.run("pytest", f"--backend={backend}", *extra, *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install("mypy", "-e", ".")
    session.run("mypy")

"""Test matrix: ``nox`` runs the tests once per library, then lint, the build, the lowest versions, the docs.

``nox --list`` lists the sessions with their one-line descriptions.

Sessions
--------
tests(numpy), tests(torch), tests(cupy), tests(array_api_strict), tests(dask), tests(jax)
    The same test files, with ``--backend`` set, spread over one pytest-xdist
    worker per CPU (``-n auto``); then, on NumPy, PyTorch, JAX and Dask, the
    thread tests (and on NumPy the core's) again under pytest-run-parallel,
    each test called from 8 threads at once. Extra pytest arguments go after ``--``
    (and skip that second run):
    ``nox -s "tests(torch)" -- --device cuda -x``, or ``-- -n 0`` for one
    process. The torch session also runs a two-process torch.distributed
    test, the dask session a two-worker dask.distributed cluster on loopback,
    and the jax session installs flax and equinox too (tests/test_jax.py,
    tests/test_equinox.py) and runs JAX on 8 CPU devices
    (``XLA_FLAGS=--xla_force_host_platform_device_count=8``) for the sharded
    meshes of tests/test_jax_sharding.py.
tests(keras)
    anydrop.keras's tests (tests/test_keras.py) on each Keras backend it
    supports, in turn: jax, torch and numpy, each in its own pytest process
    with ``KERAS_BACKEND`` set, since Keras fixes its backend on import.
    ``ANYDROP_KERAS_BACKENDS=torch`` (comma-separated) runs a subset.
timm
    Real timm and torchvision models (ViT, ConvNeXt, Swin, EfficientNet) built
    with ``drop_path_rate > 0``, converted with ``anydrop.torch.convert`` and
    compared with the originals bit for bit, with and without gradient
    checkpointing, torchvision's feature extraction on a converted model, and
    ONNX export (``torch.onnx.export(..., dynamo=True)``) in eval mode.
    Installs torch 2.14.1 with torchvision 0.29.1 (a CUDA build of several GB).
lint
    ruff check, ruff format --check, and mypy --strict and pyright's strict
    mode (basedpyright) over ``anydrop/`` and over ``tests/typing_public_api.py``,
    the public API's types as users see them, with NumPy, PyTorch, JAX and Flax
    installed so that their own types apply.
build
    Build the sdist and wheel, ``twine check`` them, install the wheel into a
    fresh virtual environment and run it from there, and check what the
    distributions contain (``tests/test_dist.py``). They are left in ``dist/``.
mindeps
    The NumPy tests with anydrop's dependencies at the lowest versions
    ``pyproject.toml`` allows.
docs
    Build the documentation (Sphinx, ``docs/``) into ``docs/_build/html`` with
    warnings as errors, then run every example: the doctests of ``docs/*.md``,
    ``README.md`` and the package's docstrings, and the scripts in ``docs/examples/``.
mutation(numpy), mutation(torch), mutation(jax), mutation(array_api_strict), mutation(dask), mutation(keras)
    mutmut over the core (entry points, scale, residual, checks, PortableRNG,
    the mask sources, the backend lookup and base class), the NumPy backend and
    the framework-neutral layers with the NumPy tests (``[tool.mutmut]`` in
    pyproject.toml); over anydrop.torch, its rank helpers and the torch backend
    with the torch tests; over anydrop.flax, anydrop.equinox and the JAX backend
    with the JAX tests; over the generic backend with the array-api-strict tests,
    the Dask backend with the Dask tests, and anydrop.keras with the Keras tests
    on Keras's JAX backend (``MUTATION`` below; each in its own
    ``.mutation-BACKEND/`` folder). Long, and not in the default run.
    ``nox -s "mutation(numpy)" -- "anydrop._core._scale*"`` mutates one module.
bench
    ``python -m anydrop.bench``: anydrop, timm, the classic two-pass version and
    the one-pass memory limit side by side (minutes; not in the default run).
    Its arguments go after ``--``: ``nox -s bench -- --quick``.

Environment variables
---------------------
ANYDROP_TORCH_REQUIREMENT
    What the torch and docs sessions install (default ``torch==2.13.0``, a CPU
    build; set e.g. ``torch>=2.1``).
ANYDROP_CUPY_REQUIREMENT
    What the cupy session installs (default: the cupy wheel matching the
    CUDA driver found).
ANYDROP_JAX_REQUIREMENT
    What the jax and docs sessions install (default ``jax[cpu]``; e.g. ``jax[cuda12]``
    for a GPU).
ANYDROP_DISCARD_VENVS
    Set to 1 to remove each session's virtual environment when the session ends,
    passed or failed, so that the disk holds one at a time (the timm session's
    alone is several GB). ``.ci/run`` sets it; the next ``nox`` then installs
    everything again.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nox

nox.options.sessions = ["tests", "timm", "lint", "build", "mindeps", "docs"]
nox.options.error_on_external_run = True

BACKENDS = ["numpy", "torch", "cupy", "array_api_strict", "dask", "jax"]
# The Keras backends whose tensors anydrop takes (anydrop.keras.SUPPORTED_BACKENDS).
KERAS_BACKENDS = os.environ.get("ANYDROP_KERAS_BACKENDS", "jax,torch,numpy").split(",")
TORCH = os.environ.get("ANYDROP_TORCH_REQUIREMENT", "torch==2.13.0")
# timm's drop.py is the reference the torch tests compare against bit for bit.
# --no-deps: timm's own dependencies (torchvision among them) are not needed to
# load that one file, and a torchvision wheel would pull in another torch.
TIMM = "timm==1.0.31"
JAX = os.environ.get("ANYDROP_JAX_REQUIREMENT", "jax[cpu]")
# The timm session: timm imports torchvision, whose wheels are built against one
# torch release; PyPI's torch 2.14.1 is a CUDA build, and runs on the CPU too.
TIMM_STACK = ["torch==2.14.1", "torchvision==0.29.1", "timm==1.0.31", "onnx", "onnxscript"]
#: The torch test files that compare with timm's or torchvision's models and tracers.
TIMM_TESTS = [
    "tests/test_timm_models.py",
    "tests/test_torch_checkpoint.py",
    "tests/test_torch_convert.py",
    "tests/test_torch_tracing.py",
]
# One pytest-xdist worker per CPU; loadgroup: the tests of one xdist_group (those
# reading one two-rank process group) share a worker. `-- -n 0` runs one process.
XDIST = ["-n", "auto", "--dist", "loadgroup"]
# The test files each tests session runs a second time under pytest-run-parallel
# (8 threads per test): the thread tests everywhere, and on NumPy, the fastest,
# the core's tests too. Shared state these rely on (torch.manual_seed, JAX's
# compilation caches) keeps the others single-threaded.
PARALLEL = {
    "numpy": [
        "tests/test_threads.py",
        "tests/test_drop_path.py",
        "tests/test_portable_rng.py",
        "tests/test_modules.py",
        "tests/test_fused.py",
    ],
    "torch": ["tests/test_threads.py"],
    "jax": ["tests/test_threads.py"],
    "dask": ["tests/test_threads.py"],
}


def _discard_venv(func: Callable[..., None]) -> Callable[..., None]:
    """Remove the session's virtual environment after it runs, where ANYDROP_DISCARD_VENVS=1."""

    @functools.wraps(func)
    def run(session: nox.Session, *args: Any, **kwargs: Any) -> None:
        try:
            func(session, *args, **kwargs)
        finally:
            location = getattr(session.virtualenv, "location", None)
            if os.environ.get("ANYDROP_DISCARD_VENVS") == "1" and location:
                session.log(f"removing {location} (ANYDROP_DISCARD_VENVS=1)")
                shutil.rmtree(location, ignore_errors=True)

    return run


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
@nox.parametrize("backend", [nox.param(b, id=b) for b in [*BACKENDS, "keras"]])
@_discard_venv
def tests(session: nox.Session, backend: str) -> None:
    """Run the test suite on one array library, or the Keras layers' tests on each Keras backend."""
    if backend == "keras":
        _keras_tests(session)
        return
    if backend == "cupy":
        # Decide before installing: a CUDA wheel of cupy is large and useless without a GPU.
        driver = _cuda_driver_version()
        if driver is None:
            session.skip("no CUDA device found (libcuda could not be loaded or reports no device)")
        session.install(os.environ.get("ANYDROP_CUPY_REQUIREMENT", _cupy_requirement(driver)))
    elif backend == "torch":
        session.install(TORCH)
        session.install("--no-deps", TIMM)
    elif backend == "jax":
        # flax and equinox for the tests of anydrop.flax (tests/test_jax.py) and anydrop.equinox.
        session.install(JAX, "flax", "equinox")
        # 8 CPU devices for the meshes of tests/test_jax_sharding.py (read when JAX starts).
        session.env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    elif backend == "array_api_strict":
        session.install("array-api-strict")
    elif backend == "dask":
        # distributed for the LocalCluster test; anydrop's dask extra needs only dask.array.
        session.install("-e", ".[dask]", "distributed")
    session.install("-e", ".[test]")
    session.run("pytest", f"--backend={backend}", *XDIST, *session.posargs)
    if backend in PARALLEL and not session.posargs:
        # Again with pytest-run-parallel, which calls each test from 8 threads at once.
        session.run("pytest", f"--backend={backend}", "--parallel-threads=8", *PARALLEL[backend])


def _keras_tests(session: nox.Session) -> None:
    session.install("keras", JAX, TORCH, "numpy")
    session.install("-e", ".[test]")
    for name in KERAS_BACKENDS:
        # One process per backend: Keras reads KERAS_BACKEND once, on import.
        session.run(
            "pytest",
            f"--backend={name}",
            "tests/test_keras.py",
            *session.posargs,
            env={"KERAS_BACKEND": name},
        )


@nox.session
@_discard_venv
def timm(session: nox.Session) -> None:
    """Real timm and torchvision models with their drop-path modules swapped for anydrop's."""
    session.install(*TIMM_STACK)
    session.install("-e", ".[test]")
    session.run("pytest", "--backend=torch", *TIMM_TESTS, *XDIST, *session.posargs)


@nox.session
@_discard_venv
def lint(session: nox.Session) -> None:
    """ruff check and format check, and the strict type check."""
    # The libraries whose types the code is checked against: NumPy, PyTorch, JAX, Flax and Equinox
    # ship their own. CuPy (a CUDA wheel), Dask and Keras (no type information) are typed as Any
    # (pyproject.toml, typings/). basedpyright is pyright with Node bundled as a wheel: nothing
    # is downloaded at run time.
    session.install("ruff", "mypy", "basedpyright", "numpy", TORCH, JAX, "flax", "equinox", "-e", ".")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    session.run("mypy", "tests/typing_public_api.py")
    # pyright's strict mode over the same files ([tool.pyright] in pyproject.toml).
    session.run("basedpyright")


@nox.session
@_discard_venv
def build(session: nox.Session) -> None:
    """Build, check, install into a fresh environment and inspect the sdist and wheel."""
    session.install("build", "twine>=6.1", "pytest>=8", "numpy")
    dist = Path("dist")
    shutil.rmtree(dist, ignore_errors=True)
    # The wheel is built from the sdist, so a file missing from the sdist breaks it.
    session.run("python", "-m", "build", "--outdir", str(dist))
    (sdist,) = dist.glob("anydrop-*.tar.gz")
    (wheel,) = dist.glob("anydrop-*.whl")
    session.run("twine", "check", "--strict", str(sdist), str(wheel))

    env_dir = Path(session.create_tmp()).resolve() / "fresh"
    shutil.rmtree(env_dir, ignore_errors=True)
    session.run("python", "-m", "venv", str(env_dir))
    python = str(env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
    session.run(python, "-m", "pip", "install", "--quiet", str(wheel.resolve()), external=True)
    # -I and a directory outside the checkout: the installed copy is what runs.
    with session.chdir(env_dir):
        session.run(python, "-I", "-c", _IMPORT_CHECK, external=True)
        session.run(python, "-m", "pip", "install", "--quiet", "numpy", external=True)
        session.run(python, "-I", "-m", "anydrop", external=True)
    session.run(
        "pytest",
        "tests/test_dist.py",
        env={"ANYDROP_WHEEL": str(wheel.resolve()), "ANYDROP_SDIST": str(sdist.resolve())},
    )


_IMPORT_CHECK = """
import sys, sysconfig
from pathlib import Path
import anydrop
where = Path(anydrop.__file__).resolve()
assert where.is_relative_to(Path(sysconfig.get_paths()["purelib"]).resolve()), where
assert (where.parent / "py.typed").is_file()
print("anydrop", anydrop.__version__, "imports from", where.parent)
"""


@nox.session
@_discard_venv
def mindeps(session: nox.Session) -> None:
    """The NumPy tests with anydrop's dependencies pinned to their lowest allowed versions."""
    requirements = nox.project.load_toml("pyproject.toml")["project"]["dependencies"]
    floors = [r.replace(">=", "==") for r in requirements]
    if any("==" not in f for f in floors):
        session.error(f"every dependency needs a >= floor to be tested here, got {requirements}")
    session.install("-e", ".[test]", *floors)
    session.run(
        "python",
        "-c",
        "import array_api_compat as c; print('array-api-compat', c.__version__)",
    )
    session.run("pytest", "--backend=numpy", *XDIST, *session.posargs)


@nox.session
@_discard_venv
def docs(session: nox.Session) -> None:
    """Build the documentation with warnings as errors and run every example in it."""
    # Every library an example imports: the pages, README.md and the docstrings cover them all.
    session.install(TORCH, JAX, "flax", "equinox", "keras", "dask[array]", "array-api-strict", "numpy")
    session.install("-e", ".[docs,test]")
    # The Keras examples (docs/keras.md, anydrop.keras's docstrings) run on JAX.
    session.env["KERAS_BACKEND"] = "jax"
    # -E: read every page afresh, so that warnings of unchanged pages are not skipped.
    session.run("sphinx-build", "-W", "--keep-going", "-n", "-E", "-b", "html", "docs", "docs/_build/html")
    session.run(
        "pytest",
        "--doctest-glob=*.md",
        "--doctest-modules",
        "docs",
        "README.md",
        "anydrop",
        *session.posargs,
    )
    for script in sorted(Path("docs/examples").glob("*.py")):
        session.run("python", "-W", "error", str(script))


#: The files that only one library's tests reach, mutated by ``nox -s "mutation(BACKEND)"``, the
#: tests run against their mutants, more pytest arguments and more [tool.mutmut] settings.
#: ``mutation(numpy)`` uses ``[tool.mutmut]`` in pyproject.toml.
MUTATION = {
    "torch": (
        [
            "anydrop/torch.py",
            "anydrop/_torch_ranks.py",
            "anydrop/_core/backends/torch.py",
            "anydrop/_core/_limbs.py",
        ],
        [
            "tests/test_torch.py",
            "tests/test_torch_backend.py",
            "tests/test_torch_checkpoint.py",
            "tests/test_torch_convert.py",
            "tests/test_torch_tracing.py",
            "tests/test_torch_dataloader.py",
            "tests/test_modules.py",
            "tests/test_layer_arguments.py",
            "tests/test_drop_path.py",
            "tests/test_fused.py",
            "tests/test_bad_inputs.py",
            "tests/test_nonfinite.py",
            "tests/test_scale_at_test.py",
            "tests/test_faults.py",
            "tests/test_threads.py",
        ],
        # mutmut's trampolines read a ContextVar, which dynamo cannot trace: the
        # torch.compile and torch.export tests fail on every mutant, so they are left out. (The
        # process-group tests start processes of their own, which import the
        # package unmutated.)
        ["-k", "not compile and not fullgraph and not export"],
        [],
    ),
    "jax": (
        ["anydrop/flax.py", "anydrop/equinox.py", "anydrop/_core/backends/jax.py"],
        [
            "tests/test_jax.py",
            "tests/test_equinox.py",
            "tests/test_jax_sharding.py",
            "tests/test_modules.py",
            "tests/test_layer_arguments.py",
            "tests/test_drop_path.py",
            "tests/test_fused.py",
            "tests/test_bad_inputs.py",
        ],
        # The copy holds no docs/: the test that runs docs/examples/jax_sharding.py cannot run there.
        ["-k", "not test_the_docs_show_what_the_sharding_example_prints"],
        # JAX's threads do not survive a fork: each mutant's tests run in a
        # process forked from a server that has not started them.
        ['process_isolation = "forkserver"'],
    ),
    "array_api_strict": (
        ["anydrop/_core/backends/generic.py"],
        [
            "tests/test_drop_path.py",
            "tests/test_fused.py",
            "tests/test_bad_inputs.py",
            "tests/test_portable_rng.py",
            "tests/test_nonfinite.py",
            "tests/test_modules.py",
            "tests/test_layer_arguments.py",
        ],
        [],
        [],
    ),
    "dask": (
        ["anydrop/_core/backends/dask.py"],
        [
            "tests/test_dask.py",
            "tests/test_drop_path.py",
            "tests/test_fused.py",
            "tests/test_bad_inputs.py",
            "tests/test_portable_rng.py",
            "tests/test_nonfinite.py",
            "tests/test_modules.py",
            "tests/test_layer_arguments.py",
        ],
        # The cluster test's workers import the package unmutated, and it computes 1.5 GiB.
        ["-k", "not cluster"],
        # Dask's thread pool does not survive a fork either: a forked test that computes hangs.
        ['process_isolation = "forkserver"'],
    ),
    "keras": (
        ["anydrop/keras.py"],
        ["tests/test_keras.py"],
        [],
        ['process_isolation = "forkserver"'],
    ),
}


@nox.session(default=False)
@nox.parametrize("backend", [nox.param(b, id=b) for b in ["numpy", *MUTATION]])
@_discard_venv
def mutation(session: nox.Session, backend: str) -> None:
    """Mutation testing with mutmut: the core and layers on NumPy, the wrappers on their library (long)."""
    # [tool.mutmut] in pyproject.toml says which files mutmut(numpy) mutates and which tests
    # run. Niced: it keeps every CPU busy for a long while. Arguments after -- go
    # to `mutmut run`: mutant names or patterns, e.g. "anydrop._core._scale*".
    session.install("mutmut>=3", "-e", ".[test]")
    workdir = Path()
    if backend == "torch":
        session.install(TORCH)
        session.install("--no-deps", TIMM)  # the reference of the conversion and checkpoint tests
        # OpenMP's thread pool does not survive mutmut's fork: a forked test
        # that computes in parallel hangs until it times out.
        session.env["OMP_NUM_THREADS"] = "1"
    elif backend == "jax":
        session.install(JAX, "flax", "equinox")
        # 8 CPU devices for the meshes of tests/test_jax_sharding.py, as in the tests session.
        session.env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    elif backend == "array_api_strict":
        session.install("array-api-strict")
    elif backend == "dask":
        session.install("-e", ".[dask]")
    elif backend == "keras":
        session.install("keras", JAX)
        # Read once, when Keras is first imported; JAX is the Keras backend whose tests run fastest.
        session.env["KERAS_BACKEND"] = "jax"
    if backend != "numpy":
        workdir = _mutation_copy(backend, *MUTATION[backend])
    with session.chdir(workdir):
        session.run(
            "nice", "-n", "10", "mutmut", "run", "--max-children", "2", *session.posargs, external=True
        )
        session.run("mutmut", "results")


def _mutation_copy(
    backend: str, files: list[str], tests: list[str], pytest_args: list[str], settings: list[str]
) -> Path:
    """A copy of the package and tests in ``.mutation-BACKEND/`` whose [tool.mutmut] mutates ``files``.

    mutmut reads its settings from pyproject.toml in the folder it runs in and
    keeps its mutants and results there (``mutants/``), so each library's run
    has a folder of its own.
    """
    workdir = Path(f".mutation-{backend}")
    workdir.mkdir(exist_ok=True)
    # The Keras layers' tests take the array library of the Keras backend they run on.
    library = "jax" if backend == "keras" else backend
    args = [f"--backend={library}", "-p", "no:cacheprovider", *pytest_args]
    for name in ("anydrop", "tests"):
        shutil.rmtree(workdir / name, ignore_errors=True)
        shutil.copytree(name, workdir / name)
    shutil.copy("conftest.py", workdir)
    table = "\n".join(
        [
            "[tool.mutmut]",
            *settings,
            'source_paths = ["anydrop/"]',
            f"only_mutate = {json.dumps(files)}",
            'also_copy = ["conftest.py"]',
            f"pytest_add_cli_args = {json.dumps(args)}",
            f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
            "",
        ]
    )
    text = Path("pyproject.toml").read_text(encoding="utf-8")
    text = re.sub(
        r"\[tool\.mutmut\]\n.*?(?=^\[)", lambda _: table + "\n", text, flags=re.DOTALL | re.MULTILINE
    )
    (workdir / "pyproject.toml").write_text(text, encoding="utf-8")
    return workdir


@nox.session
@_discard_venv
def bench(session: nox.Session) -> None:
    """The side-by-side benchmark; writes bench-results/results.{md,json,png}."""
    session.install(TORCH, "numpy", "matplotlib")
    session.install("--no-deps", TIMM)
    session.install("-e", ".")
    session.run("python", "-m", "anydrop.bench", *session.posargs)

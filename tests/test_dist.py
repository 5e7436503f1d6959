"""What the built distributions contain.

``nox -s build`` builds the sdist and wheel and runs this file with their paths in
``ANYDROP_WHEEL`` and ``ANYDROP_SDIST``; elsewhere these tests are skipped. The
files are read as archives, never installed or imported.
"""

from __future__ import annotations

import email.parser
import os
import re
import tarfile
import zipfile
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRED_EXTRAS = {"torch", "cupy", "jax", "dask", "test", "bench"}


def _source_version() -> str:
    text = (ROOT / "anydrop" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, flags=re.MULTILINE)
    assert match is not None, "anydrop/__init__.py sets no __version__"
    return match.group(1)


def _path_from(variable: str) -> Path:
    value = os.environ.get(variable)
    if not value:
        pytest.skip(f"{variable} is not set: `nox -s build` builds the distributions and sets it")
    path = Path(value)
    assert path.is_file(), f"{variable}={value} is not a file"
    return path


@pytest.fixture(scope="module")
def wheel() -> Iterator[zipfile.ZipFile]:
    with zipfile.ZipFile(_path_from("ANYDROP_WHEEL")) as archive:
        yield archive


@pytest.fixture(scope="module")
def wheel_metadata(wheel: zipfile.ZipFile) -> Message:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.parser.Parser().parsestr(wheel.read(name).decode("utf-8"))


def test_wheel_ships_the_package_typed_and_nothing_else(wheel):
    names = wheel.namelist()
    assert "anydrop/py.typed" in names
    modules = [
        "__init__",
        "__main__",
        "_layers",
        "_modules",
        "_schedule",
        "torch",
        "flax",
        "equinox",
        "keras",
    ]
    modules += ["bench/__init__"]
    modules += [f"_core/{m}" for m in ("__init__", "_compat", "_api", "_residual", "_checks", "_scale")]
    modules += [f"_core/backends/{m}" for m in ("__init__", "_base", "numpy", "torch", "jax", "dask")]
    missing = [m for m in modules if f"anydrop/{m}.py" not in names]
    assert missing == []
    top_level = {n.split("/", 1)[0] for n in names}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"anydrop"}
    assert [n for n in names if n.startswith("tests/") or "/tests/" in n] == []
    for stray in ("conftest.py", "noxfile.py"):
        assert [n for n in names if n.rsplit("/", 1)[-1] == stray] == []
    assert [n for n in names if "__pycache__" in n or n.endswith(".pyc")] == []


def test_wheel_metadata(wheel, wheel_metadata):
    assert wheel_metadata["Name"] == "anydrop"
    assert wheel_metadata["Version"] == _source_version()
    assert wheel_metadata["Requires-Python"] == ">=3.10"
    assert wheel_metadata["License-Expression"] == "BSD-3-Clause"
    assert "Typing :: Typed" in wheel_metadata.get_all("Classifier")
    runtime = sorted(r for r in wheel_metadata.get_all("Requires-Dist") if "extra ==" not in r)
    assert [re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0] for r in runtime] == [
        "array-api-compat",
    ]
    assert set(wheel_metadata.get_all("Provides-Extra")) >= REQUIRED_EXTRAS
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in wheel.namelist())


def test_sdist_carries_sources_tests_docs_and_licence():
    path = _path_from("ANYDROP_SDIST")
    with tarfile.open(path) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    expected = {
        "pyproject.toml",
        "README.md",
        "CHANGELOG.md",
        "LICENSE",
        "noxfile.py",
        "conftest.py",
        "anydrop/py.typed",
        "anydrop/_core/__init__.py",
        "anydrop/_core/_compat.py",
        "tests/test_vendoring.py",
        "tests/vendored_core_checks.py",
        "docs/conf.py",
        "docs/index.md",
        "docs/benchmarks/results.json",
    }
    assert expected <= names, sorted(expected - names)
    assert [n for n in names if n.startswith(("docs/_build/", "docs/generated/"))] == []

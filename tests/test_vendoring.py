"""The core can be vendored: one folder, copied into another package, works without anydrop.

The vendoring guide tells a library author to copy the folder ``anydrop/_core/``
(under any name) into their package and, when they vendor array-api-compat
too, to point the ``from array_api_compat import`` lines of its
``_compat.py`` at their copy. These tests hold the core to that contract (by
reading its imports) and follow the guide: they vendor the core into a
temporary package ``mylib`` and run ``tests/vendored_core_checks.py`` against
the copy in a fresh interpreter where ``anydrop`` cannot be imported.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "anydrop" / "_core"
COMPAT = CORE / "_compat.py"
CHECKS = Path(__file__).resolve().parent / "vendored_core_checks.py"

# What a vendoring project is expected to have: the core may import these only
# through the _compat shim, which imports nothing else.
DEPENDENCIES = ("array_api_compat", "array_api_extra")
# The backends import a framework lazily, only once an array of it is seen.
FRAMEWORKS = ("numpy", "torch", "cupy", "jax", "dask")


def _core_files() -> list[Path]:
    files = sorted(CORE.rglob("*.py"))
    assert COMPAT in files
    return files


def _imports(path: Path) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in ``path``, at any depth (lazy imports in functions too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]


def _top_level_names(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name.partition(".")[0] for alias in node.names]
    return [(node.module or "").partition(".")[0]]


def _compat_all() -> list[str]:
    tree = ast.parse(COMPAT.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise AssertionError("_compat.py has no __all__")


def test_core_folder_imports_only_itself_the_standard_library_and_frameworks():
    for path in _core_files():
        if path == COMPAT:
            continue
        depth = len(path.relative_to(CORE).parts) - 1  # 0 for the folder's own files
        for node in _imports(path):
            where = f"{path.relative_to(ROOT)} line {node.lineno}"
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                assert node.level <= depth + 1, f"{where}: a relative import that leaves the core folder"
                continue
            for name in _top_level_names(node):
                assert name != "anydrop", f"{where}: the core must not import the rest of anydrop"
                assert name not in DEPENDENCIES, (
                    f"{where}: import {name} through _compat.py, so a vendoring project can redirect it"
                )
                assert name in sys.stdlib_module_names or name in FRAMEWORKS, (
                    f"{where}: {name} would be a new dependency for every project that vendors the core"
                )


def test_compat_shim_only_re_exports_the_dependencies():
    for node in _imports(COMPAT):
        where = f"_compat.py line {node.lineno}"
        # The guide edits exactly these `from array_api_compat import` lines.
        assert isinstance(node, ast.ImportFrom), f"{where}: use `from <dependency> import ...`"
        assert node.level == 0, f"{where}: the shim must not import from anydrop"
        name = (node.module or "").partition(".")[0]
        # The standard library's typing names, for annotations, edit nothing a vendoring project needs.
        stdlib = ("__future__", "typing", "collections")
        assert name in (*DEPENDENCIES, *stdlib), f"{where}: the shim imports only {DEPENDENCIES}"
    exported = set(_compat_all())
    for path in _core_files():
        used = {
            alias.name
            for node in _imports(path)
            if isinstance(node, ast.ImportFrom) and node.level > 0 and (node.module or "").endswith("_compat")
            for alias in node.names
        }
        assert used <= exported, f"{path.name} imports {sorted(used - exported)} from _compat, not exported"


def _vendor(site: Path, own_dependencies: bool) -> list[str]:
    """Follow the guide into ``site/mylib``; return the top-level modules that must stay unused.

    With ``own_dependencies`` the project vendors array-api-compat (and
    array-api-extra, if the shim uses it) as scipy does, under ``mylib/_lib``,
    and the shim's imports are pointed there.
    """
    vendored = site / "mylib" / "_vendored"
    vendored.mkdir(parents=True)
    (site / "mylib" / "__init__.py").write_text('"""A library that vendors anydrop\'s core."""\n')
    (vendored / "__init__.py").write_text("")
    shutil.copytree(CORE, vendored / "drop_path", ignore=shutil.ignore_patterns("__pycache__"))
    if not own_dependencies:
        return ["anydrop"]

    used = sorted({n for node in _imports(COMPAT) for n in _top_level_names(node)} & set(DEPENDENCIES))
    lib = site / "mylib" / "_lib"
    lib.mkdir()
    (lib / "__init__.py").write_text("")
    for name in used:
        spec = importlib.util.find_spec(name)
        assert spec is not None, f"{name} must be installed to be vendored"
        assert spec.origin is not None, f"{name} must be a regular package to be vendored"
        skip = shutil.ignore_patterns("__pycache__", "tests", "vendor_tests")
        shutil.copytree(Path(spec.origin).parent, lib / name, ignore=skip)
    if "array_api_extra" in used:
        # array-api-extra's own vendoring hook: it imports array-api-compat from here.
        (lib / "_array_api_compat_vendor.py").write_text("from .array_api_compat import *  # noqa: F403\n")
    # The one edit the guide asks for: mylib/_vendored/drop_path/_compat.py -> mylib/_lib.
    shim = vendored / "drop_path" / "_compat.py"
    text, edits = re.subn(
        r"^(\s*)from (array_api_compat|array_api_extra)\b",
        r"\1from ..._lib.\2",
        shim.read_text(encoding="utf-8"),
        flags=re.MULTILINE,
    )
    assert edits >= 1
    shim.write_text(text, encoding="utf-8")
    return ["anydrop", *used]


# Installed into the fresh interpreter before the checks import anything: an
# import of a blocked module fails loudly instead of quietly finding anydrop (an
# editable install puts the source tree on every interpreter's path).
_CONFTEST = """
import os
import sys


class _Blocked:
    def __init__(self, names):
        self.names = frozenset(names)

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"{name} must not be imported by the vendored core", name=name)
        return None


_ABSENT = os.environ["VENDORED_ABSENT"].split(",")
assert [name for name in _ABSENT if name in sys.modules] == []
sys.meta_path.insert(0, _Blocked(_ABSENT))
"""


@pytest.mark.backends("numpy", "torch")
@pytest.mark.parametrize("own_dependencies", [False, True], ids=["installed-deps", "vendored-deps"])
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_vendored_core_runs_without_anydrop(tmp_path, library, own_dependencies):
    if importlib.util.find_spec(library) is None:
        pytest.skip(f"{library} is not installed here (the tests(torch) session runs this with torch)")
    site = tmp_path / "site"
    absent = _vendor(site, own_dependencies)
    shutil.copyfile(CHECKS, site / "test_vendored_core.py")
    (site / "conftest.py").write_text(_CONFTEST)
    (site / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
    env = {
        **os.environ,
        "VENDORED_CORE": "mylib._vendored.drop_path",
        "VENDORED_LIBRARY": library,
        "VENDORED_ABSENT": ",".join(absent),
    }
    # -I: no PYTHONPATH, no user site, and not the current directory on sys.path.
    command = [sys.executable, "-I", "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs"]
    result = subprocess.run(
        [*command, "--rootdir", str(site), "-c", str(site / "pytest.ini"), "test_vendored_core.py"],
        cwd=site,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout, result.stdout

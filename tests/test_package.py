"""Package-level promises: a light import, the demo, the public names."""

from __future__ import annotations

import json
import subprocess
import sys

import anydrop

FRAMEWORKS = ("torch", "cupy", "jax", "dask", "numpy")


def test_import_anydrop_loads_no_array_framework():
    code = (
        "import json, sys; import anydrop; "
        f"print(json.dumps([m for m in {FRAMEWORKS!r} if m in sys.modules]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == []


def test_public_names():
    assert sorted(anydrop.__all__) == [
        "DropPath",
        "DropPathResidual",
        "PortableRNG",
        "__version__",
        "drop_path",
        "drop_path_add",
        "drop_path_rates",
        "drop_path_residual",
    ]
    assert isinstance(anydrop.__version__, str)
    assert anydrop.__version__.count(".") == 2


def test_demo_runs_on_the_backend_under_test(backend):
    result = subprocess.run(
        [sys.executable, "-m", "anydrop"], capture_output=True, text=True, check=True, timeout=120
    )
    lines = result.stdout.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith(backend.name + " "))
    # "<name>  <version>: <array type> (8, 3)", then one word per sample.
    assert lines[at].endswith("(8, 3)"), lines[at]
    words = lines[at + 1].split()
    assert len(words) == 8
    assert set(words) <= {"dropped", "x2"}

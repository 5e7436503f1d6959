"""``python -m anydrop``: apply drop_path on every installed array library.

Shows, for each library found, which samples of a small batch were kept and
how they were scaled, so a new install can be checked at a glance.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import anydrop

SHAPE = (8, 3)
DROP_PROB = 0.5
SEED = 0

# (library module, its array API namespace)
_BACKENDS = (
    ("numpy", "array_api_compat.numpy"),
    ("torch", "array_api_compat.torch"),
    ("cupy", "array_api_compat.cupy"),
    ("array_api_strict", "array_api_strict"),
    ("dask", "array_api_compat.dask.array"),
    ("jax", "jax.numpy"),
)


def _load(library: str, namespace: str) -> tuple[Any, str]:
    """Return (namespace, library version), or (None, why not)."""
    if importlib.util.find_spec(library) is None:
        return None, "not installed"
    try:
        lib = importlib.import_module(library)
        xp = importlib.import_module(namespace)
        if library == "cupy" and lib.cuda.runtime.getDeviceCount() == 0:
            return None, "installed, but no CUDA device"
    except Exception as exc:  # a broken install is reported, not fatal
        return None, f"cannot be used here ({type(exc).__name__}: {exc})"
    # The module's own version: cupy's distribution is named cupy-cuda12x etc.
    return xp, str(lib.__version__)


def _row_summary(out: Any) -> str:
    if hasattr(out, "compute"):  # Dask: drop_path stays lazy until asked
        out = out.compute()
    values = [float(out[i, 0]) for i in range(out.shape[0])]
    return " ".join("dropped" if v == 0.0 else f"x{v:g}" for v in values)


def main() -> int:
    print(
        f"anydrop {anydrop.__version__}: drop_path(ones{SHAPE}, drop_prob={DROP_PROB}, "
        f"training=True, rng={SEED}) on each installed array library"
    )
    print("each sample of the batch is either dropped (all zeros) or kept and scaled by 1/keep\n")
    ran = 0
    for label, namespace in _BACKENDS:
        xp, version = _load(label, namespace)
        if xp is None:
            print(f"{label:17} {version}")
            continue
        x = xp.ones(SHAPE, dtype=xp.float32)
        out = anydrop.drop_path(x, DROP_PROB, training=True, rng=SEED)
        print(f"{label:17} {version}: {type(out).__module__}.{type(out).__name__} {tuple(out.shape)}")
        print(f"{'':17} {_row_summary(out)}")
        assert anydrop.drop_path(x, DROP_PROB, training=False) is x
        ran += 1
    print(f"\n{ran} backend(s) ran; in eval mode (training=False) each returned its input unchanged.")
    if ran == 0:
        print("install one, e.g. `pip install numpy`, and run again")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

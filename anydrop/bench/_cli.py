"""``run`` measures every case; ``main`` is ``python -m anydrop.bench`` and writes the results."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import pathlib
import shlex
import sys
from collections.abc import Sequence
from typing import Any

import anydrop

from ._array_cases import array_cases
from ._dask_cases import dask_cases
from ._jax_cases import jax_cases
from ._measure import Case, machine, measure, reuse_freed_memory
from ._memory import MemoryCase, measure_memory, memory_cases
from ._report import headline, markdown, memory_records, plot, records
from ._torch_cases import bias_table, timm_drop, torch_cases

_BACKENDS = "numpy,torch,dask,jax"
#: The module each backend's cases need.
_MODULES = {"numpy": "numpy", "torch": "torch", "cupy": "cupy", "dask": "dask.array", "jax": "jax"}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package of a dotted name is missing
        return False


def run(
    backends: Sequence[str] = ("numpy", "torch", "dask", "jax"),
    *,
    quick: bool = False,
    repeats: int = 15,
    warmup: int = 3,
    device: str = "cpu",
) -> tuple[list[Case], list[dict[str, Any]], list[MemoryCase]]:
    """Measure every case for ``backends``.

    Returns the timed cases (with their medians), the bias rows of the 16-bit
    scale, and the peak-memory cases (PyTorch's), in that order. A backend
    whose library is not installed is skipped, with a line on stderr saying so.
    """
    cases: list[Case] = []
    bias: list[dict[str, Any]] = []
    memory: list[MemoryCase] = []
    missing = [name for name in backends if not _installed(_MODULES[name])]
    for name in missing:
        print(f"{name} is not installed: its cases are skipped", file=sys.stderr, flush=True)
    backends = [name for name in backends if name not in missing]
    if "torch" in backends:
        import torch

        torch.manual_seed(0)
        cases += torch_cases(torch, device, quick)
        bias = bias_table(torch, device, n=200_000 if quick else 2_000_000)
        memory = memory_cases(torch, device, timm_drop(), quick)
    for name in ("numpy", "cupy"):
        if name in backends:
            cases += array_cases(name, quick)
    if "dask" in backends:
        cases += dask_cases(quick)
    if "jax" in backends:
        cases += jax_cases(quick)
    for case in cases:
        reps = _mlp_repeats(repeats) if case.group.startswith("MLP") else repeats
        measure(case, reps, warmup if not case.group.startswith("MLP") else 1, 0.002 if quick else 0.02)
        print(f"measured: {case.group} [{case.backend} {case.dtype}]", file=sys.stderr, flush=True)
    for mem in memory:
        measure_memory(mem)
        print(f"measured peak memory: {mem.group} [{mem.backend} {mem.dtype}]", file=sys.stderr, flush=True)
    return cases, bias, memory


def _mlp_repeats(repeats: int) -> int:
    # The MLP case takes seconds per call: fewer repeats keep the run short.
    return max(3, repeats // 3)


def _command(args: argparse.Namespace, backends: Sequence[str]) -> str:
    """The command line of this run, without ``--out``: the options that shape the measurements.

    Options left at their defaults are left out, and the rest come in the
    order ``--help`` lists them, so one run has one name however it was typed.
    """
    words = ["python", "-m", "anydrop.bench"]
    if ",".join(backends) != _BACKENDS:
        words += ["--backends", ",".join(backends)]
    if args.device != "cpu":
        words += ["--device", args.device]
    if args.quick:
        words.append("--quick")
    if args.repeats is not None:
        words += ["--repeats", str(args.repeats)]
    if args.malloc != "default":
        words += ["--malloc", args.malloc]
    return shlex.join(words)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m anydrop.bench", description="Side-by-side benchmark: ``python -m anydrop.bench``."
    )
    parser.add_argument("--backends", default=_BACKENDS, help="comma-separated: numpy,torch,dask,jax,cupy")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--quick", action="store_true", help="small shapes and few repeats (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="timed samples per implementation")
    parser.add_argument(
        "--out", default="bench-results", help="folder for results.md, .json, .png and headline.md"
    )
    parser.add_argument(
        "--malloc",
        choices=("default", "reuse"),
        default="default",
        help="'reuse' keeps freed large buffers in the heap (glibc), so large outputs do not page-fault",
    )
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - set(_MODULES)
    if unknown:
        parser.error(f"--backends: unknown backend(s) {sorted(unknown)}")
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 15)
    if repeats < 1:
        parser.error(f"--repeats must be at least 1, got {repeats}")
    malloc = "glibc default"
    if args.malloc == "reuse":
        if not reuse_freed_memory():
            parser.error("--malloc reuse needs glibc (Linux)")
        malloc = "freed buffers reused (mallopt)"
    cases, bias, memory = run(backends, quick=args.quick, repeats=repeats, device=args.device)
    header = (
        f"anydrop {anydrop.__version__} benchmark{' (quick)' if args.quick else ''}: "
        f"{machine(args.device)}; malloc: {malloc}; medians of {repeats} or more interleaved "
        f"repeats ({_mlp_repeats(repeats)} or more for the MLP case), drop_prob 0.1 unless stated"
    )
    text = markdown(cases, bias, header, memory)
    print(text)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text, encoding="utf-8")
    summary = {
        "machine": header,
        "command": _command(args, backends),
        "cases": records(cases),
        "bias": bias,
        "memory": memory_records(memory),
    }
    summary_json = json.dumps(summary, indent=1)
    (out / "results.json").write_text(summary_json, encoding="utf-8")
    # From the JSON text, not the dict: what headline.md says is what results.json re-renders to.
    (out / "headline.md").write_text(headline(json.loads(summary_json)), encoding="utf-8")
    if plot(cases, out / "results.png", memory):
        print(f"wrote {out / 'results.png'}", file=sys.stderr)
    else:
        print("matplotlib is not installed: no plot written", file=sys.stderr)
    return 0 if all(math.isfinite(t) for c in cases for t in c.results.values()) else 1

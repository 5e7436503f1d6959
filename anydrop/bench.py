"""Side-by-side benchmark: ``python -m anydrop.bench``.

Runs, in one process, anydrop against timm's ``drop_path`` (timm's own
``timm/layers/drop.py``), torchvision's ``stochastic_depth`` where it imports,
the two-pass version of the seed document (``x.div(keep) * mask``) and the
one-pass memory limit (``x * mask`` with the mask already drawn), on NumPy and
PyTorch (and CuPy on a CUDA device when installed). Every figure is the median
of interleaved repeats after a warm-up; ratios compare implementations timed in
the same run. It prints a markdown table and writes it, a JSON file and (with
matplotlib) a PNG plot to ``--out``.

Nothing here is imported by ``import anydrop``.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import importlib
import importlib.util
import json
import math
import operator
import pathlib
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anydrop

__all__ = ["Case", "main", "run"]

VIT = (64, 197, 768)
CNN = (64, 256, 28, 28)
TINY = (2, 4)


def _no_sync() -> None:
    pass


@dataclass
class Case:
    """One measured situation and the implementations compared in it."""

    group: str  # what the row measures, e.g. "drop_path fwd"
    backend: str
    dtype: str
    shape: tuple[int, ...]
    candidates: dict[str, Callable[[], Any]]
    reference: str  # the ratio column divides by this candidate's time
    limit: str | None = None  # the one-pass memory limit, if measured
    bytes_moved: int = 0  # what an ideal implementation reads and writes
    number: int = 1  # calls per timed sample
    sync: Callable[[], None] = _no_sync
    results: dict[str, float] = field(default_factory=dict)
    rounds: int = 0  # timed samples per candidate, set by measure()


def _timm_drop() -> Any:
    """timm's ``timm/layers/drop.py``, loaded from its file.

    ``import timm`` imports torchvision; ``drop.py`` needs only torch, so this is
    timm's real code without the package import.
    """
    spec = importlib.util.find_spec("timm")
    if spec is None or spec.origin is None:
        return None
    path = pathlib.Path(spec.origin).parent / "layers" / "drop.py"
    module_spec = importlib.util.spec_from_file_location("timm_layers_drop", path)
    if module_spec is None or module_spec.loader is None:
        return None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _torchvision_stochastic_depth() -> Any:
    try:
        from torchvision.ops import stochastic_depth
    except Exception:  # any failure (PyPI's torchvision beside another torch build) means "not here"
        return None
    return stochastic_depth


def _forward_backward(fn: Callable[[Any], Any], x: Any, grad: Any) -> None:
    fn(x).backward(grad)


def _add_after(drop: Callable[..., Any], x: Any, branch: Any, p: float) -> Any:
    return x + drop(branch, p, True)


def measure(case: Case, repeats: int, warmup: int, min_sample: float = 0.02) -> None:
    """Fill ``case.results`` with the median seconds per call of each candidate.

    Each timed sample runs a candidate enough times to last ``min_sample``
    seconds (at least ``case.number`` calls), and the candidates take turns,
    starting from a different one each round: drift in clock speed, and the
    heap state one candidate leaves for the next, fall on all of them alike.
    ``repeats`` is rounded up to a multiple of the number of candidates, so
    that each takes every place in the order equally often.
    """
    names = list(case.candidates)
    calls = dict.fromkeys(names, case.number)
    for name, fn in case.candidates.items():
        for _ in range(warmup):
            fn()
        case.sync()
        start = time.perf_counter()
        fn()
        case.sync()
        once = time.perf_counter() - start
        calls[name] = max(case.number, min(1000, math.ceil(min_sample / max(once, 1e-9))))
    samples: dict[str, list[float]] = {name: [] for name in names}
    # With few rounds (the MLP case has 5) an unbalanced rotation showed: two
    # candidates doing the same work differed by 15-20%.
    rounds = -(-repeats // len(names)) * len(names)
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            fn, n = case.candidates[name], calls[name]
            case.sync()
            start = time.perf_counter()
            for _ in range(n):
                fn()
            case.sync()
            samples[name].append((time.perf_counter() - start) / n)
    case.results = {name: statistics.median(values) for name, values in samples.items()}
    case.rounds = rounds


def _torch_cases(torch: Any, device: str, quick: bool) -> list[Case]:
    timm = _timm_drop()
    tv = _torchvision_stochastic_depth()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    cases: list[Case] = []
    p = 0.1

    def peers(x: Any, fwd_bwd: bool, grad: Any) -> dict[str, Callable[[], Any]]:
        keep = 1.0 - p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)

        def seed_two_pass(x: Any) -> Any:
            random_tensor = keep + torch.rand(mask.shape, dtype=x.dtype, device=x.device)
            random_tensor.floor_()
            return x.div(keep) * random_tensor

        fns: dict[str, Callable[[Any], Any]] = {}
        if timm is not None:
            fns["timm"] = lambda x: timm.drop_path(x, p, True)
        if tv is not None:
            fns["torchvision"] = lambda x: tv(x, p, "row", True)
        fns["seed two-pass"] = seed_two_pass
        fns["one-pass limit"] = lambda x: x * mask
        fns["anydrop"] = lambda x: anydrop.drop_path(x, p, True)
        if not fwd_bwd:
            return {name: functools.partial(f, x) for name, f in fns.items()}
        return {name: functools.partial(_forward_backward, f, x, grad) for name, f in fns.items()}

    shapes = [("ViT", (8, 197, 768) if quick else VIT), ("CNN", (8, 256, 28, 28) if quick else CNN)]
    number_tiny = 200 if quick else 2000
    tiny = torch.randn(TINY, device=device)
    cases.append(
        Case(
            "drop_path fwd, tiny",
            f"torch {device}",
            "float32",
            TINY,
            peers(tiny, False, None),
            "timm" if timm else "seed two-pass",
            number=number_tiny,
            sync=sync,
        )
    )
    for dtype_name in ("float32", "bfloat16"):
        dtype = getattr(torch, dtype_name)
        for label, shape in shapes:
            x = torch.randn(shape, device=device, dtype=dtype)
            nbytes = x.numel() * x.element_size()
            cases.append(
                Case(
                    f"drop_path fwd, {label}",
                    f"torch {device}",
                    dtype_name,
                    shape,
                    peers(x, False, None),
                    "timm" if timm else "seed two-pass",
                    limit="one-pass limit",
                    bytes_moved=2 * nbytes,
                    sync=sync,
                )
            )
        x = torch.randn(shapes[0][1], device=device, dtype=dtype, requires_grad=True)
        grad = torch.randn_like(x)
        cases.append(
            Case(
                "drop_path fwd+bwd, ViT",
                f"torch {device}",
                dtype_name,
                tuple(x.shape),
                peers(x, True, grad),
                "timm" if timm else "seed two-pass",
                limit="one-pass limit",
                bytes_moved=5 * x.numel() * x.element_size(),  # fwd: read+write; bwd: 2 reads + write
                sync=sync,
            )
        )
        # The residual add: x + drop_path(branch).
        xa = torch.randn(shapes[0][1], device=device, dtype=dtype)
        branch = torch.randn_like(xa)
        add: dict[str, Callable[[], Any]] = {}
        if timm is not None:
            add["x + timm"] = functools.partial(_add_after, timm.drop_path, xa, branch, p)
        add["x + anydrop.drop_path"] = functools.partial(_add_after, anydrop.drop_path, xa, branch, p)
        add["anydrop.drop_path_add"] = functools.partial(anydrop.drop_path_add, xa, branch, p, True)
        cases.append(
            Case(
                "residual add fwd, ViT",
                f"torch {device}",
                dtype_name,
                tuple(xa.shape),
                add,
                "x + timm" if timm else "x + anydrop.drop_path",
                bytes_moved=3 * xa.numel() * xa.element_size(),
                sync=sync,
            )
        )
    cases.append(_residual_case(torch, device, timm, sync, quick))
    return cases


def _residual_case(torch: Any, device: str, timm: Any, sync: Callable[[], None], quick: bool) -> Case:
    """An MLP branch (768 -> 3072 -> 768) at p = 0.5, forward and backward."""
    from anydrop.torch import DropPathResidual

    shape = (8, 197, 768) if quick else VIT
    p = 0.5
    gen = torch.Generator().manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(768, 3072), torch.nn.GELU(), torch.nn.Linear(3072, 768))
    mlp = mlp.to(device)
    x = torch.randn(shape, generator=gen).to(device).requires_grad_()
    grad = torch.randn(shape, generator=gen).to(device)
    block = DropPathResidual(mlp, p)
    fixed = DropPathResidual(mlp, p, fixed_size=True)
    candidates: dict[str, Callable[[], Any]] = {}
    if timm is not None:
        candidates["x + timm(mlp(x))"] = lambda: (x + timm.drop_path(mlp(x), p, True)).backward(grad)
    candidates["x + anydrop(mlp(x))"] = lambda: (x + anydrop.drop_path(mlp(x), p, True)).backward(grad)
    candidates["drop_path_residual"] = lambda: block(x).backward(grad)
    candidates["drop_path_residual fixed_size"] = lambda: fixed(x).backward(grad)
    return Case(
        "MLP residual p=0.5 fwd+bwd, ViT",
        f"torch {device}",
        "float32",
        shape,
        candidates,
        "x + timm(mlp(x))" if timm else "x + anydrop(mlp(x))",
        sync=sync,
    )


def _array_cases(xp_name: str, quick: bool) -> list[Case]:
    """NumPy, or CuPy with the same code: anydrop vs the seed's two-pass and the one-pass limit."""
    xp: Any = importlib.import_module(xp_name)
    sync: Callable[[], None] = xp.cuda.Device().synchronize if xp_name == "cupy" else _no_sync
    rng = xp.random.default_rng(0)
    p = 0.1
    keep = 1.0 - p
    cases: list[Case] = []
    for label, shape, number in (
        ("tiny", TINY, 200 if quick else 2000),
        ("ViT", (8, 197, 768) if quick else VIT, 1),
    ):
        x = rng.standard_normal(shape, dtype=xp.float32)
        mask_shape = (shape[0],) + (1,) * (len(shape) - 1)
        mask = (rng.random(mask_shape) < keep).astype(xp.float32) / xp.float32(keep)

        def seed_two_pass(x: Any = x, mask_shape: tuple[int, ...] = mask_shape) -> Any:
            random_tensor = xp.floor(keep + rng.random(mask_shape, dtype=xp.float32))
            return (x / xp.float32(keep)) * random_tensor

        nbytes = x.size * x.itemsize
        cases.append(
            Case(
                f"drop_path fwd, {label}",
                xp_name,
                "float32",
                shape,
                {
                    "seed two-pass": seed_two_pass,
                    "one-pass limit": functools.partial(operator.mul, x, mask),
                    "anydrop": functools.partial(anydrop.drop_path, x, p, True, rng=rng),
                },
                "seed two-pass",
                limit=None if label == "tiny" else "one-pass limit",
                bytes_moved=0 if label == "tiny" else 2 * nbytes,
                number=number,
                sync=sync,
            )
        )
    x = rng.standard_normal((8, 197, 768) if quick else VIT, dtype=xp.float32)
    branch = rng.standard_normal(x.shape, dtype=xp.float32)
    cases.append(
        Case(
            "residual add fwd, ViT",
            xp_name,
            "float32",
            tuple(x.shape),
            {
                "x + anydrop.drop_path": lambda: x + anydrop.drop_path(branch, p, True, rng=rng),
                "anydrop.drop_path_add": lambda: anydrop.drop_path_add(x, branch, p, True, rng=rng),
            },
            "x + anydrop.drop_path",
            bytes_moved=3 * x.size * x.itemsize,
            sync=sync,
        )
    )
    return cases


def bias_table(torch: Any, device: str, n: int = 2_000_000) -> list[dict[str, Any]]:
    """Relative mean bias of the scale applied to kept samples, timm vs anydrop, per dtype and p.

    With ``x = 1`` the output of a kept sample is its scale, so the bias is
    ``mean(scale) * keep - 1``, free of the noise of which samples are kept.
    """
    timm = _timm_drop()
    rows = []
    for dtype_name in ("bfloat16", "float16"):
        ones = torch.ones(n, 1, device=device, dtype=getattr(torch, dtype_name))
        for p in (0.1, 0.2, 0.3):
            keep = 1.0 - p
            row: dict[str, Any] = {"dtype": dtype_name, "drop_prob": p, "n": n}
            impls = {"anydrop": functools.partial(anydrop.drop_path, ones, p, True)}
            if timm is not None:
                impls["timm"] = functools.partial(timm.drop_path, ones, p, True)
            for name, fn in impls.items():
                out = fn().double()
                row[name] = float(out[out != 0].mean()) * keep - 1.0
            rows.append(row)
    return rows


def _fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def markdown(cases: Sequence[Case], bias: Sequence[dict[str, Any]], header: str) -> str:
    """The results as markdown: one row per case and implementation."""
    lines = [
        header,
        "",
        "| case | backend | dtype | shape | implementation | median | GB/s | vs reference "
        "| of one-pass limit |",
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for case in cases:
        ref = case.results[case.reference]
        limit = case.results.get(case.limit) if case.limit else None
        for name, t in case.results.items():
            gbs = f"{case.bytes_moved / t / 1e9:.1f}" if case.bytes_moved else ""
            ratio = "1 (ref)" if name == case.reference else f"{t / ref:.2f}x"
            of_limit = f"{limit / t:.2f}" if limit and name != case.limit else ""
            shape = "x".join(map(str, case.shape))
            lines.append(
                f"| {case.group} | {case.backend} | {case.dtype} | {shape} | {name} | {_fmt_time(t)} "
                f"| {gbs} | {ratio} | {of_limit} |"
            )
    if bias:
        lines += [
            "",
            "Relative mean bias of the scale of kept samples (`mean(scale) * keep - 1`, x = 1, "
            f"{bias[0]['n']:,} samples):",
            "",
            "| dtype | drop_prob | timm | anydrop |",
            "| --- | ---: | ---: | ---: |",
        ]
        for row in bias:
            lines.append(
                f"| {row['dtype']} | {row['drop_prob']} | {row.get('timm', float('nan')):+.1e} "
                f"| {row['anydrop']:+.1e} |"
            )
    return "\n".join(lines) + "\n"


def plot(cases: Sequence[Case], path: pathlib.Path) -> bool:
    """Write a bar chart of time relative to each case's reference; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels, ratios, colors = [], [], []
    palette = {"anydrop": "tab:blue", "drop_path_add": "tab:blue", "drop_path_residual": "tab:blue"}
    for case in cases:
        ref = case.results[case.reference]
        for name, t in case.results.items():
            labels.append(f"{case.group} [{case.backend} {case.dtype}]: {name}")
            ratios.append(t / ref)
            colors.append(next((c for k, c in palette.items() if k in name), "tab:gray"))
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(labels) + 1.5))
    ax.barh(range(len(labels)), ratios, color=colors)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("median time relative to the case's reference (lower is faster; anydrop in blue)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def run(
    backends: Sequence[str] = ("numpy", "torch"),
    *,
    quick: bool = False,
    repeats: int = 15,
    warmup: int = 3,
    device: str = "cpu",
) -> tuple[list[Case], list[dict[str, Any]]]:
    """Measure every case for ``backends``; return the cases (with results) and the bias rows."""
    cases: list[Case] = []
    bias: list[dict[str, Any]] = []
    if "torch" in backends:
        import torch

        torch.manual_seed(0)
        cases += _torch_cases(torch, device, quick)
        bias = bias_table(torch, device, n=200_000 if quick else 2_000_000)
    for name in ("numpy", "cupy"):
        if name in backends:
            cases += _array_cases(name, quick)
    for case in cases:
        reps = _mlp_repeats(repeats) if case.group.startswith("MLP") else repeats
        measure(case, reps, warmup if not case.group.startswith("MLP") else 1, 0.002 if quick else 0.02)
        print(f"measured: {case.group} [{case.backend} {case.dtype}]", file=sys.stderr, flush=True)
    return cases, bias


def _mlp_repeats(repeats: int) -> int:
    # The MLP case takes seconds per call: fewer repeats keep the run short.
    return max(3, repeats // 3)


def reuse_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed large buffers for reuse; False where that is not possible.

    By default glibc returns buffers of more than 32 MiB to the operating
    system when they are freed, so every new output of that size page-faults
    on first touch, which can cost more than the arithmetic (float32 ViT
    activations run at ~7 GB/s here, for every implementation alike). Raising
    the mmap and trim thresholds keeps such buffers in the heap, as PyTorch's
    CUDA caching allocator does on a GPU, so the timings compare the kernels.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 2**30)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def _machine(device: str) -> str:
    import os

    text = f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
    try:
        import torch

        text += f", torch {torch.__version__}"
        if device.startswith("cuda"):
            text += f", {torch.cuda.get_device_name(device)}"
        else:
            text += f", {torch.get_num_threads()} torch threads"
    except ImportError:
        pass
    try:
        import numpy

        text += f", NumPy {numpy.__version__}"
    except ImportError:
        pass
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m anydrop.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="numpy,torch", help="comma-separated: numpy,torch,cupy")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--quick", action="store_true", help="small shapes and few repeats (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="timed samples per implementation")
    parser.add_argument("--out", default="bench-results", help="folder for results.md, .json and .png")
    parser.add_argument(
        "--malloc",
        choices=("default", "reuse"),
        default="default",
        help="'reuse' keeps freed large buffers in the heap (glibc), so large outputs do not page-fault",
    )
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"numpy", "torch", "cupy"}
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
    cases, bias = run(backends, quick=args.quick, repeats=repeats, device=args.device)
    header = (
        f"anydrop {anydrop.__version__} benchmark{' (quick)' if args.quick else ''}: "
        f"{_machine(args.device)}; malloc: {malloc}; medians of {repeats} or more interleaved "
        f"repeats ({_mlp_repeats(repeats)} or more for the MLP case), drop_prob 0.1 unless stated"
    )
    text = markdown(cases, bias, header)
    print(text)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text, encoding="utf-8")
    records = [
        {
            "group": c.group,
            "backend": c.backend,
            "dtype": c.dtype,
            "shape": list(c.shape),
            "reference": c.reference,
            "limit": c.limit,
            "bytes_moved": c.bytes_moved,
            "median_seconds": c.results,
            "rounds": c.rounds,
        }
        for c in cases
    ]
    summary = {"machine": header, "cases": records, "bias": bias}
    (out / "results.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    if plot(cases, out / "results.png"):
        print(f"wrote {out / 'results.png'}", file=sys.stderr)
    else:
        print("matplotlib is not installed: no plot written", file=sys.stderr)
    return 0 if all(math.isfinite(t) for c in cases for t in c.results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""What a benchmark case is, how it is timed, and the machine it runs on."""

from __future__ import annotations

import ctypes
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: The shapes measured: ViT-B/16 activations, a ResNet stage, and a tensor so
#: small that the time is the per-call overhead.
VIT = (64, 197, 768)
CNN = (64, 256, 28, 28)
TINY = (2, 4)
#: A per-sample mask's shape on ViT activations: a tensor that small times the per-call cost.
PER_SAMPLE = (64, 1, 1)
#: ``VIT`` and ``CNN`` with a batch of 8, for ``--quick``.
VIT_QUICK = (8, 197, 768)
CNN_QUICK = (8, 256, 28, 28)

#: The candidate ``x.div(keep) * floor(keep + rand)``, the drop path timm popularised.
CLASSIC = "classic two-pass"
#: The candidate ``x * mask`` with the mask already drawn: one read and one write of ``x``.
LIMIT = "one-pass limit"
#: The candidate ``x * (rng.binomial(1, keep, mask_shape).astype(x.dtype) / keep)``: the
#: plain, unchecked NumPy function anydrop started from.
SEED = "seed function"


def no_sync() -> None:
    """The ``Case.sync`` of a backend that runs synchronously."""


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
    sync: Callable[[], None] = no_sync
    results: dict[str, float] = field(default_factory=dict)
    #: Tasks in each candidate's unoptimised graph, for a lazy library (Dask); else empty.
    graph_tasks: dict[str, int] = field(default_factory=dict)
    rounds: int = 0  # timed samples per candidate, set by measure()


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
    # A whole number of rotations: with fewer, some candidate would take the
    # first place (after another's frees, or on a fresher clock) more often than
    # the rest, and the cases with few rounds would compare places, not code.
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


def reuse_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed large buffers for reuse; False where that is not possible.

    By default glibc returns buffers of more than 32 MiB to the operating
    system when they are freed, so every new output of that size page-faults
    on first touch, which can cost more than the arithmetic, and every
    implementation alike then runs at the speed of the page-fault handler.
    Raising the mmap and trim thresholds keeps such buffers in the heap, as
    PyTorch's CUDA caching allocator does on a GPU, so the timings compare the
    kernels.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 2**30)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def machine(device: str) -> str:
    """The processor, core count and library versions, for the header of the results."""
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
    for name, module in (("Dask", "dask"), ("JAX", "jax"), ("Flax", "flax")):
        # Versions of the libraries that are loaded: those whose cases ran.
        version = getattr(sys.modules.get(module), "__version__", None)
        if version is not None:
            text += f", {name} {version}"
    return text

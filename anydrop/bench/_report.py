"""The results as a markdown table, JSON records, a PNG plot and a headline of the main ratios."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

from ._measure import CLASSIC, Case
from ._memory import COPY, MemoryCase


def _fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _fmt_bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def markdown(
    cases: Sequence[Case], bias: Sequence[dict[str, Any]], header: str, memory: Sequence[MemoryCase] = ()
) -> str:
    """The results as markdown: one row per case and implementation, then the bias and peak-memory tables."""
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
    graphs = [case for case in cases if case.graph_tasks]
    if graphs:
        lines += ["", "Tasks in each graph (unoptimised, x's own blocks included):", ""]
        for case in graphs:
            sizes = ", ".join(f"{name} {n}" for name, n in case.graph_tasks.items())
            lines.append(f"- {case.group} [{case.backend} {case.dtype}]: {sizes}")
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
    if memory:
        lines += [
            "",
            "Peak memory of one training step (forward and backward): the most bytes that the tensors "
            "the step allocates hold at once, inputs and parameters not included:",
            "",
            "| case | backend | dtype | shape | implementation | peak | vs reference |",
            "| --- | --- | --- | --- | --- | ---: | ---: |",
        ]
        for mem in memory:
            ref = mem.peak_bytes[mem.reference]
            shape = "x".join(map(str, mem.shape))
            for name, n in mem.peak_bytes.items():
                ratio = "1 (ref)" if name == mem.reference else f"{n / ref:.2f}x"
                lines.append(
                    f"| {mem.group} | {mem.backend} | {mem.dtype} | {shape} | {name} | {_fmt_bytes(n)} "
                    f"| {ratio} |"
                )
    return "\n".join(lines) + "\n"


def records(cases: Sequence[Case]) -> list[dict[str, Any]]:
    """The cases as the JSON records of ``results.json``."""
    return [
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
            "graph_tasks": c.graph_tasks,
        }
        for c in cases
    ]


def memory_records(memory: Sequence[MemoryCase]) -> list[dict[str, Any]]:
    """The peak-memory cases as the JSON records of ``results.json``."""
    return [
        {
            "group": m.group,
            "backend": m.backend,
            "dtype": m.dtype,
            "shape": list(m.shape),
            "reference": m.reference,
            "peak_bytes": m.peak_bytes,
        }
        for m in memory
    ]


def plot(cases: Sequence[Case], path: pathlib.Path, memory: Sequence[MemoryCase] = ()) -> bool:
    """Bar charts of time and of peak memory, relative to each case's reference; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    palette = {"anydrop": "tab:blue", "drop_path_add": "tab:blue", "drop_path_residual": "tab:blue"}

    def bars(rows: Sequence[tuple[str, dict[str, Any], str]]) -> tuple[list[str], list[float], list[str]]:
        labels, ratios, colors = [], [], []
        for label, values, reference in rows:
            for name, value in values.items():
                labels.append(f"{label}: {name}")
                ratios.append(value / values[reference])
                colors.append(next((c for k, c in palette.items() if k in name), "tab:gray"))
        return labels, ratios, colors

    panels = [
        (
            bars([(f"{c.group} [{c.backend} {c.dtype}]", c.results, c.reference) for c in cases]),
            "median time relative to the case's reference (lower is faster; anydrop in blue)",
        )
    ]
    if memory:
        rows = [(f"{m.group} [{m.backend} {m.dtype}]", m.peak_bytes, m.reference) for m in memory]
        panels.append((bars(rows), "peak memory of a training step relative to the case's reference"))
    heights = [len(labels) + 4 for (labels, _, _), _ in panels]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(10, 0.28 * sum(heights)), height_ratios=heights, squeeze=False
    )
    for ax, ((labels, ratios, colors), xlabel) in zip(axes[:, 0], panels, strict=True):
        ax.barh(range(len(labels)), ratios, color=colors)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# The headline reads only the JSON summary, so that it renders again, to the
# same text, from the results.json kept beside the document that quotes it.

_Record = dict[str, Any]


def _case(cases: Sequence[_Record], library: str, group: str, dtype: str, *names: str) -> _Record | None:
    """The record of ``library``'s case ``group`` in ``dtype``, if it timed every one of ``names``."""
    for record in cases:
        if (record["backend"].split(" ")[0], record["group"], record["dtype"]) == (library, group, dtype):
            return record if all(name in record["median_seconds"] for name in names) else None
    return None


def _library(record: _Record) -> str:
    library, _, device = record["backend"].partition(" ")
    name = {"torch": "PyTorch", "numpy": "NumPy", "cupy": "CuPy"}.get(library, library)
    return f"{name} ({device})" if device else name


def _shape(record: _Record) -> str:
    return "`(" + ", ".join(map(str, record["shape"])) + ")`"


def _ratio(record: _Record, name: str, reference: str) -> str:
    """``name``'s time over ``reference``'s, as the table's "vs reference" column writes it."""
    times = record["median_seconds"]
    return f"{times[name] / times[reference]:.2f}x"


def _of_limit(record: _Record, name: str) -> str:
    """``, N of the one-pass limit`` as the table's last column has N; "" if the case has no limit."""
    times = record["median_seconds"]
    if record["limit"] not in times:
        return ""
    return f", {times[record['limit']] / times[name]:.2f} of the one-pass limit"


def _per_call(record: _Record, reference: str, against: str, noun: str) -> str:
    times = record["median_seconds"]
    return (
        f"per-call cost on a {_shape(record)} {record['dtype']} {noun}: "
        f"{_ratio(record, 'anydrop', reference)} {against} "
        f"({_fmt_time(times['anydrop'])} against {_fmt_time(times[reference])})"
    )


def _torch_tiny(cases: Sequence[_Record]) -> str:
    tiny = _case(cases, "torch", "drop_path fwd, tiny", "float32", "anydrop", "timm")
    if tiny is None:
        return ""
    return f"- {_library(tiny)}, " + _per_call(tiny, "timm", "timm's time", "tensor")


def _torch_dtype(cases: Sequence[_Record], dtype: str, bias: Sequence[dict[str, Any]]) -> str:
    """drop_path alone on the large shapes, and in 16-bit dtypes the bias of the scale."""
    parts: list[str] = []
    first = None
    for words, group in (
        ("", "drop_path fwd, ViT"),
        ("", "drop_path fwd, CNN"),
        ("forward and backward on ", "drop_path fwd+bwd, ViT"),
    ):
        record = _case(cases, "torch", group, dtype, "anydrop", "timm")
        if record is not None:
            against = "" if parts else " timm's time"
            ratio = _ratio(record, "anydrop", "timm")
            parts.append(f"{words}{_shape(record)}: {ratio}{against}{_of_limit(record, 'anydrop')}")
            first = first or record
    if first is None:
        return ""
    for row in bias:
        if row["dtype"] == dtype and row["drop_prob"] == 0.1 and "timm" in row:
            parts.append(
                f"mean scale bias at `drop_prob=0.1`: {row['anydrop']:+.1e} against timm's {row['timm']:+.1e}"
            )
    return f"- {_library(first)}, {dtype} " + "; ".join(parts)


def _torch_add(cases: Sequence[_Record]) -> str:
    """``drop_path_add`` against timm's drop_path followed by the add."""
    add, timm = "anydrop.drop_path_add", "x + timm"
    parts: list[str] = []
    first = None
    for dtype in ("float32", "bfloat16"):
        record = _case(cases, "torch", "residual add fwd, ViT", dtype, add, timm)
        if record is not None:
            against = "" if parts else " the time of `x + timm.drop_path(branch)`"
            parts.append(f"{_ratio(record, add, timm)}{against} ({dtype})")
            first = first or record
    if first is None:
        return ""
    return f"- {_library(first)}, `drop_path_add` on {_shape(first)}: " + ", ".join(parts)


def _torch_mlp(cases: Sequence[_Record]) -> str:
    """``drop_path_residual``, which skips the branch for dropped samples, against timm after the branch."""
    timm, residual = "x + timm(mlp(x))", "drop_path_residual"
    mlp = _case(cases, "torch", "MLP residual p=0.5 fwd+bwd, ViT", "float32", residual, timm)
    if mlp is None:
        return ""
    text = (
        f"- {_library(mlp)}, `drop_path_residual`, MLP 768 -> 3072 -> 768 on {_shape(mlp)} at "
        f"`drop_prob=0.5`, forward and backward: {_ratio(mlp, residual, timm)} the time of "
        "`x + timm.drop_path(mlp(x))`"
    )
    if f"{residual} fixed_size" in mlp["median_seconds"]:
        text += f", {_ratio(mlp, f'{residual} fixed_size', timm)} with `fixed_size=True`"
    return text


def _torch_memory(memory: Sequence[_Record]) -> str:
    """Peak memory of a training step: drop_path against a copy, drop_path_residual against the block."""
    residual = "drop_path_residual"
    blocks = {
        "x + timm(mlp(x))": "`x + timm.drop_path(mlp(x))`",
        "x + anydrop(mlp(x))": "`x + drop_path(mlp(x))`",
    }
    parts: list[str] = []
    first = None
    for record in memory:
        peaks, reference = record["peak_bytes"], record["reference"]
        if not record["backend"].startswith("torch") or record["dtype"] != "float32":
            continue
        if record["group"] == "drop_path fwd+bwd, ViT" and {"anydrop", COPY} <= peaks.keys():
            parts.append(f"`drop_path` {peaks['anydrop'] / peaks[COPY]:.2f}x a copy's (`x.clone()`)")
        elif record["group"] == "MLP residual p=0.5 fwd+bwd, ViT" and {residual, reference} <= peaks.keys():
            block = blocks.get(reference, f"`{reference}`")
            text = f"`drop_path_residual` {peaks[residual] / peaks[reference]:.2f}x {block}'s"
            text += " at `drop_prob=0.5`"
            if f"{residual} fixed_size" in peaks:
                text += f", {peaks[f'{residual} fixed_size'] / peaks[reference]:.2f}x with `fixed_size=True`"
            parts.append(text)
        else:
            continue
        first = first or record
    if first is None:
        return ""
    return (
        f"- {_library(first)}, peak memory of a float32 training step (forward and backward) on "
        f"{_shape(first)}: " + "; ".join(parts)
    )


def _array(cases: Sequence[_Record], library: str) -> str:
    """NumPy or CuPy: drop_path against the classic two-pass version, per call and on a large array."""
    against = "the classic two-pass version's time"
    tiny = _case(cases, library, "drop_path fwd, tiny", "float32", "anydrop", CLASSIC)
    vit = _case(cases, library, "drop_path fwd, ViT", "float32", "anydrop", CLASSIC)
    parts = [] if tiny is None else [_per_call(tiny, CLASSIC, against, "array")]
    if vit is not None:
        parts.append(
            f"float32 {_shape(vit)}: {_ratio(vit, 'anydrop', CLASSIC)}{'' if parts else f' {against}'}"
            f"{_of_limit(vit, 'anydrop')}"
        )
    first = tiny or vit
    return "" if first is None else f"- {_library(first)}, " + "; ".join(parts)


def headline(summary: dict[str, Any]) -> str:
    """The main ratios of one run, as a markdown bullet list, from its ``results.json`` data.

    The first line names the command and the machine; then comes one bullet
    per comparison whose cases the run measured (a NumPy-only run, or one
    without timm, has fewer). Every ratio divides one median time by another
    from the same case and is written as the table writes it. The text depends
    on ``summary`` alone.

    Parameters
    ----------
    summary : dict
        What ``python -m anydrop.bench`` writes to ``results.json``: the keys
        ``"command"``, ``"machine"``, ``"cases"`` and ``"bias"``, and
        ``"memory"`` (the peak-memory cases) where the run measured them.

    Returns
    -------
    str
        Markdown, ending with a newline.

    Examples
    --------
    >>> from anydrop.bench import headline
    >>> tiny = {"group": "drop_path fwd, tiny", "backend": "numpy", "dtype": "float32", "shape": [2, 4],
    ...         "limit": None, "median_seconds": {"classic two-pass": 5e-6, "anydrop": 8e-6}}
    >>> print(headline({"command": "python -m anydrop.bench", "machine": "x86_64",
    ...                 "cases": [tiny], "bias": []}), end="")
    From one run of `python -m anydrop.bench`: x86_64
    <BLANKLINE>
    - NumPy, per-call cost on a `(2, 4)` float32 array: 1.60x the classic two-pass version's time (8.0 us against 5.0 us).
    """  # noqa: E501
    cases: list[_Record] = summary["cases"]
    bullets = [
        _torch_tiny(cases),
        _torch_dtype(cases, "float32", summary["bias"]),
        _torch_add(cases),
        _torch_mlp(cases),
        _torch_memory(summary.get("memory", [])),
        _torch_dtype(cases, "bfloat16", summary["bias"]),
        _array(cases, "numpy"),
        _array(cases, "cupy"),
    ]
    bullets = [bullet for bullet in bullets if bullet]
    lines = [f"From one run of `{summary['command']}`: {summary['machine']}"]
    if bullets:
        lines += ["", *(f"{bullet};" for bullet in bullets[:-1]), f"{bullets[-1]}."]
    return "\n".join(lines) + "\n"

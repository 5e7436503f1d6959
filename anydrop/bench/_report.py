"""The results as a markdown table, JSON records and a PNG plot."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

from ._measure import Case


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
        }
        for c in cases
    ]


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

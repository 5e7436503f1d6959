"""The benchmark runs end to end and reports what it claims (no timing assertions)."""

from __future__ import annotations

import json
import math

import pytest

from anydrop import bench

pytestmark = pytest.mark.backends("numpy", "torch")


def test_quick_benchmark_writes_consistent_results(backend, tmp_path, capsys):
    status = bench.main(["--quick", "--repeats", "1", "--backends", backend.name, "--out", str(tmp_path)])
    assert status == 0
    table = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert table == capsys.readouterr().out.strip("\n") + "\n"
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["cases"]
    for case in data["cases"]:
        times = case["median_seconds"]
        assert case["reference"] in times
        assert all(math.isfinite(t) and t > 0 for t in times.values())
        # Every candidate takes every place in the rotating order equally often.
        assert case["rounds"] >= 1
        assert case["rounds"] % len(times) == 0
        # Every implementation measured appears as a row of the table.
        for name in times:
            assert f"| {name} |" in table
    groups = {c["group"] for c in data["cases"]}
    assert "residual add fwd, ViT" in groups
    if backend.name == "torch":
        assert "MLP residual p=0.5 fwd+bwd, ViT" in groups
        # The unbiased 16-bit scale, measured by the benchmark itself.
        assert data["bias"]
        for row in data["bias"]:
            assert abs(row["anydrop"]) <= 2e-4
    assert "| classic two-pass |" in table

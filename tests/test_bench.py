"""The benchmark runs end to end and reports what it claims (no timing assertions)."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import math
import re

import pytest

from anydrop import bench

pytestmark = pytest.mark.backends("numpy", "torch")

TINY, VIT, CNN, BWD = (
    "drop_path fwd, tiny",
    "drop_path fwd, ViT",
    "drop_path fwd, CNN",
    "drop_path fwd+bwd, ViT",
)
ADD, MLP = "residual add fwd, ViT", "MLP residual p=0.5 fwd+bwd, ViT"
CLASSIC, COPY = "classic two-pass", "copy (x.clone())"

TOPIC = re.compile(r"- ([^,]+), ([^\s,]+)")
RATIO = re.compile(r"(\d+\.\d\d)x")
OF_LIMIT = re.compile(r"(\d+\.\d\d) of the one-pass limit")
BIAS = re.compile(r"[+-]\d\.\de[+-]\d\d")


@pytest.fixture(scope="module")
def quick_run(backend, tmp_path_factory):
    """One quick run on the backend under test: its exit status, its output folder and what it printed."""
    out = tmp_path_factory.mktemp("bench")
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        status = bench.main(["--quick", "--repeats", "1", "--backends", backend.name, "--out", str(out)])
    return status, out, printed.getvalue()


def test_quick_benchmark_writes_consistent_results(backend, quick_run):
    status, tmp_path, printed = quick_run
    assert status == 0
    table = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert table == printed.strip("\n") + "\n"
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
    assert ADD in groups
    assert f"| {CLASSIC} |" in table
    if backend.name == "torch":
        assert MLP in groups
        # The unbiased 16-bit scale, measured by the benchmark itself.
        assert data["bias"]
        for row in data["bias"]:
            assert abs(row["anydrop"]) <= 2e-4
        _assert_memory_rows(data, table)
    else:
        assert data["memory"] == []

    # headline.md is the headline of results.json, and names the run.
    headline = (tmp_path / "headline.md").read_text(encoding="utf-8")
    assert headline == bench.headline(data)
    assert data["command"] == f"python -m anydrop.bench --backends {backend.name} --quick --repeats 1"
    first, blank, *bullets = headline.splitlines()
    assert first == f"From one run of `{data['command']}`: {data['machine']}"
    assert blank == ""
    _assert_figures_match(bullets, _expected_bullets(data))


def test_headline_leaves_out_what_the_run_did_not_measure(backend, quick_run):
    data = json.loads((quick_run[1] / "results.json").read_text())
    kept = copy.deepcopy(data)
    full = bench.headline(data)
    assert data == kept  # headline reads its argument and nothing else
    assert bench.headline(kept) == full

    trimmed = copy.deepcopy(data)
    gone = MLP if backend.name == "torch" else TINY
    trimmed["cases"] = [c for c in data["cases"] if c["group"] != gone]
    trimmed["memory"] = []
    expected = _expected_bullets(trimmed)
    _assert_figures_match(bench.headline(trimmed).splitlines()[2:], expected)
    if backend.name == "torch":
        assert "drop_path_residual" not in bench.headline(trimmed)
        assert "peak memory" not in bench.headline(trimmed)
        assert len(expected) == len(full.splitlines()[2:]) - 2
    else:
        assert "per-call" not in bench.headline(trimmed)

    nothing = {**data, "cases": [], "bias": [], "memory": []}
    assert bench.headline(nothing) == full.splitlines()[0] + "\n"


def _assert_memory_rows(data, table):
    """The peak-memory cases: every candidate measured and in the table, and what anydrop claims."""
    memory = {m["group"]: m for m in data["memory"]}
    assert set(memory) == {BWD, MLP}
    for case in memory.values():
        peaks = case["peak_bytes"]
        assert case["reference"] in peaks
        assert all(isinstance(n, int) and n > 0 for n in peaks.values())
        for name in peaks:
            assert f"| {case['group']} | torch cpu | float32 | 8x197x768 | {name} |" in table
    batch, *rest = memory[BWD]["shape"]
    x_bytes = 4 * batch * math.prod(rest)
    single = memory[BWD]["peak_bytes"]
    # A copy's step allocates its output and the gradient of x; drop_path's allocates that and its mask.
    assert single[COPY] == 2 * x_bytes
    assert single["anydrop"] == single[COPY] + 4 * batch
    block = memory[MLP]["peak_bytes"]
    assert block["x + anydrop(mlp(x))"] == block["x + timm(mlp(x))"]
    # Running the branch on the kept samples only keeps about that share of its activations.
    assert block["drop_path_residual fixed_size"] < 0.7 * block["x + timm(mlp(x))"]


def _assert_figures_match(bullets, expected):
    """The bullets are about what ``expected`` says, with its ratios, limits and biases, in order."""
    assert [_topic(b) for b in bullets] == [_topic(e) for e in expected]
    for bullet, want in zip(bullets, expected, strict=True):
        assert RATIO.findall(bullet) == RATIO.findall(want), bullet
        assert OF_LIMIT.findall(bullet) == OF_LIMIT.findall(want), bullet
        assert BIAS.findall(bullet) == BIAS.findall(want), bullet


def _topic(bullet):
    """The library and the first word after it: what a bullet is about."""
    match = TOPIC.match(bullet)
    assert match is not None, bullet
    return match.groups()


def _expected_bullets(data):
    """Each headline bullet's topic and figures, computed here from ``data``, for the cases it holds."""
    cases = {(c["backend"].split(" ")[0], c["group"], c["dtype"]): c["median_seconds"] for c in data["cases"]}

    def ratio(library, group, dtype, name, reference):
        times = cases[library, group, dtype]
        return f"{times[name] / times[reference]:.2f}x"

    def of_limit(library, group, dtype):
        times = cases[library, group, dtype]
        return f"{times['one-pass limit'] / times['anydrop']:.2f} of the one-pass limit"

    def drop_path(dtype):
        return " ".join(
            f"{ratio('torch', group, dtype, 'anydrop', 'timm')} {of_limit('torch', group, dtype)}"
            for group in (VIT, CNN, BWD)
        )

    bullets = []
    if ("torch", TINY, "float32") in cases:
        (bf16,) = [row for row in data["bias"] if row["dtype"] == "bfloat16" and row["drop_prob"] == 0.1]
        add = [
            ratio("torch", ADD, dtype, "anydrop.drop_path_add", "x + timm")
            for dtype in ("float32", "bfloat16")
        ]
        bullets += [
            f"- PyTorch (cpu), per-call {ratio('torch', TINY, 'float32', 'anydrop', 'timm')}",
            f"- PyTorch (cpu), float32 {drop_path('float32')}",
            f"- PyTorch (cpu), `drop_path_add` {' '.join(add)}",
        ]
        if ("torch", MLP, "float32") in cases:
            residual = ratio("torch", MLP, "float32", "drop_path_residual", "x + timm(mlp(x))")
            fixed = ratio("torch", MLP, "float32", "drop_path_residual fixed_size", "x + timm(mlp(x))")
            bullets.append(f"- PyTorch (cpu), `drop_path_residual` {residual} {fixed}")
        peaks = {m["group"]: m["peak_bytes"] for m in data.get("memory", [])}
        if {BWD, MLP} <= peaks.keys():
            single, block = peaks[BWD], peaks[MLP]
            timm, fixed = block["x + timm(mlp(x))"], block["drop_path_residual fixed_size"]
            bullets.append(
                f"- PyTorch (cpu), peak {single['anydrop'] / single[COPY]:.2f}x "
                f"{block['drop_path_residual'] / timm:.2f}x {fixed / timm:.2f}x"
            )
        bullets.append(
            f"- PyTorch (cpu), bfloat16 {drop_path('bfloat16')} {bf16['anydrop']:+.1e} {bf16['timm']:+.1e}"
        )
    if ("numpy", VIT, "float32") in cases:
        vit = f"{ratio('numpy', VIT, 'float32', 'anydrop', CLASSIC)} {of_limit('numpy', VIT, 'float32')}"
        if ("numpy", TINY, "float32") in cases:
            bullets.append(f"- NumPy, per-call {ratio('numpy', TINY, 'float32', 'anydrop', CLASSIC)} {vit}")
        else:
            bullets.append(f"- NumPy, float32 {vit}")
    return bullets


def _record(backend, group, dtype, shape, times, *, limit=None):
    return {
        "group": group,
        "backend": backend,
        "dtype": dtype,
        "shape": shape,
        "limit": limit,
        "median_seconds": times,
    }


@pytest.mark.backends("numpy")  # no array library runs: one run is enough
def test_headline_text_from_a_summary():
    t = {"timm": 2e-3, CLASSIC: 4e-3, "one-pass limit": 1.6e-3, "anydrop": 2.4e-3}
    summary = {
        "command": "python -m anydrop.bench --malloc reuse",
        "machine": "anydrop 0.1.0 benchmark: a machine",
        "cases": [
            _record("torch cpu", TINY, "float32", [2, 4], {"timm": 2e-5, CLASSIC: 4e-5, "anydrop": 2.2e-5}),
            _record("torch cpu", VIT, "float32", [64, 197, 768], t, limit="one-pass limit"),
            _record(
                "torch cpu", ADD, "float32", [64, 197, 768], {"x + timm": 4e-3, "anydrop.drop_path_add": 2e-3}
            ),
            _record("torch cpu", VIT, "bfloat16", [64, 197, 768], t, limit="one-pass limit"),
            _record(
                "torch cpu",
                ADD,
                "bfloat16",
                [64, 197, 768],
                {"x + timm": 4e-3, "anydrop.drop_path_add": 3e-3},
            ),
            _record(
                "torch cpu",
                MLP,
                "float32",
                [64, 197, 768],
                {"x + timm(mlp(x))": 2.0, "drop_path_residual": 1.0, "drop_path_residual fixed_size": 1.1},
            ),
            _record(
                "numpy", TINY, "float32", [2, 4], {CLASSIC: 5e-6, "one-pass limit": 1e-6, "anydrop": 8e-6}
            ),
            _record("numpy", VIT, "float32", [64, 197, 768], t, limit="one-pass limit"),
        ],
        "bias": [
            {"dtype": "bfloat16", "drop_prob": 0.1, "n": 100, "timm": -1.6e-3, "anydrop": 3.3e-6},
            {"dtype": "float16", "drop_prob": 0.1, "n": 100, "timm": 2e-4, "anydrop": 1e-7},
        ],
        "memory": [
            {
                "group": BWD,
                "backend": "torch cpu",
                "dtype": "float32",
                "shape": [64, 197, 768],
                "reference": COPY,
                "peak_bytes": {COPY: 1000, "timm": 1001, "anydrop": 1001},
            },
            {
                "group": MLP,
                "backend": "torch cpu",
                "dtype": "float32",
                "shape": [64, 197, 768],
                "reference": "x + timm(mlp(x))",
                "peak_bytes": {
                    "x + timm(mlp(x))": 1000,
                    "x + anydrop(mlp(x))": 1000,
                    "drop_path_residual": 560,
                    "drop_path_residual fixed_size": 580,
                },
            },
        ],
    }
    assert bench.headline(summary) == (
        "From one run of `python -m anydrop.bench --malloc reuse`: anydrop 0.1.0 benchmark: a machine\n"
        "\n"
        "- PyTorch (cpu), per-call cost on a `(2, 4)` float32 tensor: 1.10x timm's time"
        " (22.0 us against 20.0 us);\n"
        "- PyTorch (cpu), float32 `(64, 197, 768)`: 1.20x timm's time, 0.67 of the one-pass limit;\n"
        "- PyTorch (cpu), `drop_path_add` on `(64, 197, 768)`: 0.50x the time of"
        " `x + timm.drop_path(branch)` (float32), 0.75x (bfloat16);\n"
        "- PyTorch (cpu), `drop_path_residual`, MLP 768 -> 3072 -> 768 on `(64, 197, 768)` at"
        " `drop_prob=0.5`, forward and backward: 0.50x the time of `x + timm.drop_path(mlp(x))`,"
        " 0.55x with `fixed_size=True`;\n"
        "- PyTorch (cpu), peak memory of a float32 training step (forward and backward) on `(64, 197, 768)`:"
        " `drop_path` 1.00x a copy's (`x.clone()`); `drop_path_residual` 0.56x `x + timm.drop_path(mlp(x))`'s"
        " at `drop_prob=0.5`, 0.58x with `fixed_size=True`;\n"
        "- PyTorch (cpu), bfloat16 `(64, 197, 768)`: 1.20x timm's time, 0.67 of the one-pass limit;"
        " mean scale bias at `drop_prob=0.1`: +3.3e-06 against timm's -1.6e-03;\n"
        "- NumPy, per-call cost on a `(2, 4)` float32 array: 1.60x the classic two-pass version's time"
        " (8.0 us against 5.0 us); float32 `(64, 197, 768)`: 0.60x, 0.67 of the one-pass limit.\n"
    )
    # A run without timm: the PyTorch bullets, all against timm, are left out.
    for record in summary["cases"]:
        record["median_seconds"] = {
            name: t for name, t in record["median_seconds"].items() if "timm" not in name
        }
    for row in summary["bias"]:
        del row["timm"]
    single, block = summary["memory"]
    del single["peak_bytes"]["timm"], block["peak_bytes"]["x + timm(mlp(x))"]
    block["reference"] = "x + anydrop(mlp(x))"
    assert bench.headline(summary) == (
        "From one run of `python -m anydrop.bench --malloc reuse`: anydrop 0.1.0 benchmark: a machine\n"
        "\n"
        "- PyTorch (cpu), peak memory of a float32 training step (forward and backward) on `(64, 197, 768)`:"
        " `drop_path` 1.00x a copy's (`x.clone()`); `drop_path_residual` 0.56x `x + drop_path(mlp(x))`'s"
        " at `drop_prob=0.5`, 0.58x with `fixed_size=True`;\n"
        "- NumPy, per-call cost on a `(2, 4)` float32 array: 1.60x the classic two-pass version's time"
        " (8.0 us against 5.0 us); float32 `(64, 197, 768)`: 0.60x, 0.67 of the one-pass limit.\n"
    )


@pytest.mark.backends("dask")
def test_dask_case_compares_computes_and_graph_sizes(tmp_path, capsys):
    assert bench.main(["--quick", "--repeats", "1", "--backends", "dask", "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    data = json.loads((tmp_path / "results.json").read_text())
    (case,) = data["cases"]
    assert case["backend"] == "dask"
    tasks = case["graph_tasks"]
    assert set(tasks) == set(case["median_seconds"]) == {"dask mask reference", "anydrop"}
    # anydrop's lazy mask adds no more tasks than a hand-written Dask mask does.
    assert 0 < tasks["anydrop"] <= tasks["dask mask reference"]
    sizes = f"- {case['group']} [dask float32]: dask mask reference {tasks['dask mask reference']}"
    assert f"{sizes}, anydrop {tasks['anydrop']}" in table


@pytest.mark.backends("numpy")
def test_a_backend_that_is_not_installed_is_skipped_with_a_line(tmp_path, capsys):
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    args = ["--quick", "--repeats", "1", "--backends", "numpy,cupy", "--out", str(tmp_path)]
    assert bench.main(args) == 0
    printed = capsys.readouterr()
    assert "cupy is not installed: its cases are skipped" in printed.err
    data = json.loads((tmp_path / "results.json").read_text())
    assert {c["backend"] for c in data["cases"]} == {"numpy"}


@pytest.mark.backends("jax")
def test_jax_cases_compare_eager_and_jitted_calls_with_the_reference(tmp_path):
    assert bench.main(["--quick", "--repeats", "1", "--backends", "jax", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    cases = {case["group"]: case for case in data["cases"]}
    assert {case["backend"] for case in cases.values()} == {"jax"}
    assert set(cases["drop_path fwd, tiny"]["median_seconds"]) == {"jax reference", "anydrop"}
    jitted = set(cases["drop_path fwd (jit), ViT"]["median_seconds"])
    assert {"jax reference", "anydrop"} <= jitted
    if importlib.util.find_spec("flax") is not None:
        assert {"nnx.Dropout", "anydrop.flax.DropPath"} <= jitted
    for case in cases.values():
        assert all(t > 0 for t in case["median_seconds"].values())


@pytest.mark.backends("torch")
def test_peak_bytes_follows_allocations_and_frees_in_forward_and_backward():
    import torch

    from anydrop.bench._memory import peak_bytes

    before = torch.zeros(1000)

    def step():
        a = torch.ones(1000)  # 4,000 bytes
        b = a * 2  # 8,000 live
        del a, b
        torch.ones(500)  # 2,000, freed at once
        before.add_(1)  # in place, into a tensor from before the step: nothing new

    assert peak_bytes(step) == 8000
    w = torch.ones(1000, requires_grad=True)
    # The forward pass allocates a 4-byte sum; the backward pass the 4,000-byte gradient of w.
    assert peak_bytes(lambda: w.sum().backward()) >= 4000
    assert w.grad is not None

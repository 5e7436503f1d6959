"""The figures in README.md and the docs are the benchmark's own output, not retyped.

``docs/benchmarks/`` holds the files one run of ``python -m anydrop.bench``
wrote (``--out docs/benchmarks``). README.md carries the run's headline between
two marker lines; the performance page includes the files themselves.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from anydrop.bench import headline

pytestmark = pytest.mark.backends("numpy")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "benchmarks"


def _summary() -> dict:
    return json.loads((RESULTS / "results.json").read_text(encoding="utf-8"))


def test_headline_file_is_the_headline_of_the_recorded_run():
    assert (RESULTS / "headline.md").read_text(encoding="utf-8") == headline(_summary())


def test_readme_carries_the_headline_verbatim():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"\n<!-- headline:start -->\n(.*?)<!-- headline:end -->\n", text, flags=re.DOTALL)
    assert match is not None, "README.md has no <!-- headline:start --> ... <!-- headline:end --> block"
    assert match.group(1) == headline(_summary())


def test_table_file_is_the_table_of_the_recorded_run():
    table = (RESULTS / "results.md").read_text(encoding="utf-8")
    summary = _summary()
    assert table.startswith(summary["machine"] + "\n")
    for case in summary["cases"]:
        for name in case["median_seconds"]:
            assert f"| {case['group']} | {case['backend']} | {case['dtype']} |" in table
            assert f"| {name} |" in table


def test_performance_page_includes_the_files_instead_of_copying_them():
    page = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    for name in ("results.md", "headline.md", "results.png"):
        assert f"benchmarks/{name}" in page
    # A result typed into the page's prose would be a ratio such as 1.04x.
    prose = re.sub(r"```.*?```", "", page, flags=re.DOTALL)
    assert re.findall(r"\b\d+(?:\.\d+)?x\b", prose) == []

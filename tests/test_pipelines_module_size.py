"""Every module of ``pipelines/`` stays small enough to hold in mind at once (issue 31)."""

from __future__ import annotations

from tests.helpers import PROJECT_ROOT

MAX_LINES = 450


def test_no_module_in_pipelines_is_over_450_lines():
    sizes = {str(path.relative_to(PROJECT_ROOT)): len(path.read_text().splitlines())
             for path in (PROJECT_ROOT / "pipelines").rglob("*.py")}
    assert sizes, "no modules found"
    too_long = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert not too_long, f"over {MAX_LINES} lines: {too_long}"

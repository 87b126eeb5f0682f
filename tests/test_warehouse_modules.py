"""``warehouse/`` stays readable one database at a time, in modules held in mind at once (issue 31).

Only ``warehouse/dialects/`` (one module per database) and the frozen ``warehouse/migrations/``
may look at which database they run on; every other module asks ``warehouse.dialects``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import PROJECT_ROOT

MAX_LINES = 450
WAREHOUSE = PROJECT_ROOT / "warehouse"
MAY_READ_THE_DIALECT = (WAREHOUSE / "dialects", WAREHOUSE / "migrations")


def modules() -> list[Path]:
    found = sorted(WAREHOUSE.rglob("*.py"))
    assert found, "no modules found"
    return found


def dialect_name_reads(path: Path) -> list[int]:
    """Lines reading ``<...>.dialect.name`` or ``dialect.name`` (a SQLAlchemy dialect's name)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Attribute) and node.attr == "name"):
            continue
        owner = node.value
        if (isinstance(owner, ast.Name) and owner.id == "dialect") or (
                isinstance(owner, ast.Attribute) and owner.attr == "dialect"):
            lines.append(node.lineno)
    return lines


def test_no_module_in_warehouse_is_over_450_lines():
    sizes = {str(path.relative_to(PROJECT_ROOT)): len(path.read_text().splitlines())
             for path in modules()}
    too_long = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert not too_long, f"over {MAX_LINES} lines: {too_long}"


def test_only_the_dialects_and_the_migrations_read_the_dialect_name():
    readers = {str(path.relative_to(PROJECT_ROOT)): lines for path in modules()
               if not path.is_relative_to(MAY_READ_THE_DIALECT[0])
               and not path.is_relative_to(MAY_READ_THE_DIALECT[1])
               and (lines := dialect_name_reads(path))}
    assert not readers, f"ask warehouse.dialects instead: {readers}"


def test_the_scan_sees_a_dialect_name_read(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f(conn, dialect):\n    return conn.dialect.name, dialect.name\n")
    assert dialect_name_reads(sample) == [2, 2]
    assert dialect_name_reads(WAREHOUSE / "dialects" / "__init__.py"), "the scan misses reads"

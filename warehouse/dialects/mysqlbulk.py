"""MySQL/MariaDB through PyMySQL: a batch's rows as multi-row ``INSERT``, escaped a column at a time.

PyMySQL's ``executemany`` already folds an ``INSERT ... VALUES`` into multi-row statements, but
it builds them a value at a time in Python. Here each text column goes through PyMySQL's
escapes once, joined on a separator they leave alone and split again; integers become their
digits and missing values ``NULL``; the rows are the same statement text PyMySQL would have
sent, cut at the same statement size. Figures: benchmarks/results/design-notes.md ("One
module per database").

Whenever that could differ from what PyMySQL would send, the batch goes through plain
``executemany`` instead: the server runs with ``NO_BACKSLASH_ESCAPES`` (PyMySQL then quotes
differently), a text contains the separator, or a column holds anything but text, integers and
``None``. ``tests/warehouse/test_mysql_bulk.py`` compares the two paths value for value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from pymysql.constants import SERVER_STATUS
from pymysql.converters import escape_string
from pymysql.cursors import RE_INSERT_VALUES
from sqlalchemy.engine import Connection

# False: every MySQL/MariaDB batch goes through the driver's executemany (tests compare both).
COLUMN_ESCAPING = True
# Characters per statement: PyMySQL's own executemany cut (``Cursor.max_stmt_length``). Every
# character is at most 4 bytes in utf8mb4, so a statement stays under MariaDB's and MySQL's
# default max_allowed_packet (16 and 64 MiB) whatever the text.
MAX_STATEMENT_CHARS = 1_024_000
_SEPARATOR = "\x01"  # not in escape_string's table: it comes out of the escaping unchanged
_PLACEHOLDER = re.compile(r"%\(([^)]+)\)s")
_NO_PARAMETERS = {"no_parameters": True}


def _replacements() -> list[tuple[str, str]] | None:
    """PyMySQL's escapes (read off ``escape_string`` itself) as ``str.replace`` steps, the
    backslash first; None unless each is "a backslash, then characters no other step changes"."""
    pairs = [(c, escape_string(c)) for c in map(chr, range(256)) if escape_string(c) != c]
    specials = {c for c, _ in pairs}
    if dict(pairs).get("\\") != "\\\\" or _SEPARATOR in specials or any(
            c != "\\" and (not out.startswith("\\") or (specials - {c}) & set(out[1:]))
            for c, out in pairs):
        return None
    return sorted(pairs, key=lambda pair: pair[0] != "\\")


_REPLACEMENTS = _replacements()


def _escape(text: str) -> str:
    """``escape_string(text)``: one C-speed ``str.replace`` per special character instead of a
    ``translate`` through a Python table (6x faster on a batch's joined JSON links)."""
    if _REPLACEMENTS is None:
        return escape_string(text)
    for special, escaped in _REPLACEMENTS:
        if special in text:
            text = text.replace(special, escaped)
    return text


@lru_cache(maxsize=16)
def _split_insert(sql: str) -> tuple[str, tuple[str, ...], str]:
    """``INSERT ... VALUES`` / the placeholders of its one row, in order / what follows
    (``ON DUPLICATE KEY UPDATE ...``), as PyMySQL's executemany splits it."""
    match = RE_INSERT_VALUES.match(sql)
    if match is None:
        raise ValueError(f"not a one-row INSERT ... VALUES: {sql[:120]}")
    prefix, values, postfix = match.group(1), match.group(2), match.group(3).rstrip()
    names = tuple(_PLACEHOLDER.findall(values))
    if _PLACEHOLDER.sub("", values).strip("(), \n\t") or not names:
        raise ValueError(f"VALUES must hold only named placeholders: {values[:120]}")
    if "%" in prefix + postfix:
        # run without parameters, the driver would leave a compiled "%%" doubled
        raise ValueError("literal % outside VALUES: not supported by column escaping")
    return prefix, names, postfix


def _text_literals(values: list[Any]) -> list[str] | None:
    """``'escaped'`` for each text, ``NULL`` for None; None if the column is not all text."""
    present = [v for v in values if v is not None]
    if any(type(v) is not str for v in present):
        return None
    if not present:
        return ["NULL"] * len(values)
    joined = _SEPARATOR.join(present)
    if joined.count(_SEPARATOR) != len(present) - 1:
        return None  # a text holds the separator itself
    escaped = iter(_escape(joined).split(_SEPARATOR))
    return ["NULL" if v is None else f"'{next(escaped)}'" for v in values]


def _literals(values: list[Any]) -> list[str] | None:
    """The column's SQL literals as PyMySQL writes them, or None when this module does not
    write that column's types (the caller then lets the driver do the whole batch)."""
    kinds = {type(v) for v in values}
    if kinds <= {int, type(None)}:
        return ["NULL" if v is None else str(v) for v in values]
    return _text_literals(values)


def _backslash_escapes(conn: Connection) -> bool:
    dbapi = conn.connection.dbapi_connection
    return not (dbapi.server_status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES)  # type: ignore[union-attr]


def execute_insert(conn: Connection, sql: str, columns: Mapping[str, Sequence[Any]]) -> None:
    """Run the one-row ``INSERT`` ``sql`` (named pyformat placeholders, as SQLAlchemy compiles
    for PyMySQL) once for every row of ``columns`` (equal-length driver-ready lists, by
    placeholder name), in ``conn``'s transaction."""
    prefix, names, postfix = _split_insert(sql)
    if not columns[names[0]]:
        return
    literals = [_literals(list(columns[name])) for name in names] if _backslash_escapes(conn) else []
    if not literals or any(column is None for column in literals):
        rows = [dict(zip(names, row, strict=True))
                for row in zip(*(columns[name] for name in names), strict=True)]
        conn.exec_driver_sql(sql, rows)  # the driver's own executemany
        return
    tuples = ["(" + ",".join(row) + ")" for row in zip(*literals, strict=True)]  # type: ignore[arg-type]
    # greedy cuts of at most MAX_STATEMENT_CHARS (a row longer than that goes alone)
    ends = np.cumsum(np.fromiter(map(len, tuples), dtype=np.int64, count=len(tuples)) + 1)
    budget = MAX_STATEMENT_CHARS - len(prefix) - len(postfix)
    start = 0
    while start < len(tuples):
        before = int(ends[start - 1]) if start else 0
        end = max(int(np.searchsorted(ends, before + budget, side="right")), start + 1)
        # no_parameters: cursor.execute(sql) without an argument tuple, so PyMySQL does not
        # %-format the statement (a "%" in a text would break it, or worse)
        conn.exec_driver_sql(prefix + ",".join(tuples[start:end]) + postfix,
                             execution_options=_NO_PARAMETERS)
        start = end

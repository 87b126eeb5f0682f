"""SQL expressions that each database spells its own way, declared once and compiled per
dialect (``sqlalchemy.ext.compiler``), so callers never branch on the database.

``utc_text(column, form)``: a UTC timestamp column as text in one of ``FORMS``, computed by the
database (text costs the drivers less per row than a datetime, and callers compare it with
text they format the same way). Constants are rendered as literal SQL, never parameters: the
statements also go to the driver as text.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal

# form -> (PostgreSQL to_char pattern, MySQL DATE_FORMAT pattern, SQLite text of the column
# as stored, 'YYYY-MM-DD HH:MM:SS.ffffff', with {c} for the column)
FORMS: dict[str, tuple[str, str, str]] = {
    # SQLAlchemy's SQLite storage form, and warehouse.dialects.base.naive_utc_text's
    "microseconds": ("YYYY-MM-DD HH24:MI:SS.US", "%Y-%m-%d %H:%i:%s.%f", "{c}"),
    # the hour, 'YYYY-MM-DD HH'
    "hour": ("YYYY-MM-DD HH24", "%Y-%m-%d %H", "substr({c}, 1, 13)"),
    # TaskRouter's own form cut to the second, '2026-11-03T12:00:00Z'
    "iso_seconds": ('YYYY-MM-DD"T"HH24:MI:SS"Z"', "%Y-%m-%dT%H:%i:%sZ",
                    "substr({c}, 1, 10) || 'T' || substr({c}, 12, 8) || 'Z'"),
}


class utc_text(FunctionElement[str]):  # noqa: N801 - a SQL function, named like sa.func's
    """``utc_text(column, form)``: see the module docstring; ``form`` is a key of ``FORMS``."""

    type = sa.String()
    inherit_cache = True
    name = "utc_text"
    # the form is part of the statement cache key: two forms never share a compiled statement
    _traverse_internals = [*FunctionElement._traverse_internals,
                           ("form", InternalTraversal.dp_string)]

    def __init__(self, column: sa.ColumnElement[Any], form: str) -> None:
        if form not in FORMS:
            raise ValueError(f"unknown utc_text form {form!r}; one of {sorted(FORMS)}")
        self.form = form
        super().__init__(column)

    @property
    def column(self) -> sa.ColumnElement[Any]:
        return list(self.clauses)[0]  # type: ignore[return-value]


def _literal(text: str) -> sa.ColumnElement[str]:
    return sa.literal_column("'" + text.replace("'", "''") + "'", sa.String)


@compiles(utc_text, "postgresql")
def _postgresql(element: utc_text, compiler: SQLCompiler, **kw: Any) -> str:
    pattern = FORMS[element.form][0]
    return compiler.process(sa.func.to_char(
        sa.func.timezone(_literal("UTC"), element.column), _literal(pattern)), **kw)


@compiles(utc_text, "mysql")
@compiles(utc_text, "mariadb")
def _mysql(element: utc_text, compiler: SQLCompiler, **kw: Any) -> str:
    # DATETIME(6) holds naive UTC already
    return compiler.process(sa.func.date_format(element.column, _literal(FORMS[element.form][1])),
                            **kw)


@compiles(utc_text)
def _sqlite(element: utc_text, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite stores the text form itself: cut it
    column = compiler.process(element.column, **kw)
    return FORMS[element.form][2].format(c=column)

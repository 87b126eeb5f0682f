"""MySQL/MariaDB column escaping (warehouse.dialects.mysqlbulk) against PyMySQL's own executemany, on a
real MariaDB: the same texts come back, whatever characters they hold, on every path."""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa
from pymysql.converters import escape_string
from sqlalchemy.dialects import mysql

from warehouse.dialects import for_connection, mysqlbulk
from warehouse.engine import create_warehouse_engine

TRICKY = ["", "plain", "it's", 'say "hi"', "back\\slash", "\\0 and \\Z", "line\nbreak\r\n",
          "nul\x00byte", "ctrl-z\x1a", "100%", "%(sid)s", "%s", "é ü 日本 🎧", "'); DROP TABLE t; --",
          '{"k": "v\\"q", "u": "https://x/y?a=1&b=2"}', "tab\tsep", " trailing "]

metadata = sa.MetaData()
table = sa.Table("bulk_probe", metadata,
                 sa.Column("sid", sa.String(40), primary_key=True),
                 sa.Column("body", sa.Text),
                 sa.Column("n", sa.BigInteger))


def insert_sql(dialect: sa.Dialect) -> str:
    ins = mysql.insert(table)
    stmt = ins.on_duplicate_key_update(body=ins.inserted.body, n=ins.inserted.n)
    return str(stmt.compile(dialect=dialect, column_keys=["sid", "body", "n"]))


@pytest.fixture
def mariadb(mariadb_url: str):
    engine = create_warehouse_engine(mariadb_url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def rows_of(count: int, seed: int = 5) -> dict[str, list]:
    pick = random.Random(seed)
    bodies = [None if i % 7 == 3 else pick.choice(TRICKY) + pick.choice(TRICKY) for i in range(count)]
    numbers = [None if i % 5 == 1 else pick.randint(-2**62, 2**62) for i in range(count)]
    return {"sid": [f"WR{i:032d}" for i in range(count)], "body": bodies, "n": numbers}


def stored(engine: sa.Engine) -> dict[str, tuple]:
    with engine.connect() as conn:
        return {sid: (body, n) for sid, body, n in conn.execute(sa.select(table)).all()}


def load(engine: sa.Engine, columns: dict[str, list], escaping: bool, monkeypatch) -> None:
    monkeypatch.setattr(mysqlbulk, "COLUMN_ESCAPING", escaping)
    with engine.begin() as conn:
        conn.execute(table.delete())
        assert for_connection(conn).use_column_escaping(conn) is escaping
        mysqlbulk.execute_insert(conn, insert_sql(conn.dialect), columns)


def test_column_escaping_stores_what_the_drivers_executemany_stores(mariadb, monkeypatch):
    columns = rows_of(3000)
    load(mariadb, columns, escaping=False, monkeypatch=monkeypatch)
    by_driver = stored(mariadb)
    load(mariadb, columns, escaping=True, monkeypatch=monkeypatch)
    by_columns = stored(mariadb)
    expected = dict(zip(columns["sid"], zip(columns["body"], columns["n"], strict=True), strict=True))
    assert by_columns == by_driver == expected


def test_the_statements_are_cut_by_size_and_a_long_row_goes_alone(mariadb, monkeypatch):
    monkeypatch.setattr(mysqlbulk, "MAX_STATEMENT_CHARS", 2_000)
    statements: list[str] = []

    @sa.event.listens_for(mariadb, "before_cursor_execute")
    def count(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        if statement.startswith("INSERT INTO bulk_probe"):
            statements.append(statement)

    columns = rows_of(400)
    columns["body"][17] = "x" * 5_000  # longer than a whole statement's budget
    load(mariadb, columns, escaping=True, monkeypatch=monkeypatch)
    expected = dict(zip(columns["sid"], zip(columns["body"], columns["n"], strict=True), strict=True))
    assert stored(mariadb) == expected
    assert len(statements) > 10  # about 40 kB of rows in statements of at most 2 kB
    assert all(len(s) <= 2_000 for s in statements if "x" * 5_000 not in s)
    assert sum("x" * 5_000 in s for s in statements) == 1


@pytest.mark.parametrize("why", ["separator", "float", "no_backslash_escapes"])
def test_what_column_escaping_cannot_write_goes_through_the_driver(mariadb, monkeypatch, why):
    """A text holding the separator, a type it does not write, or a server that reads
    backslashes as plain characters: the batch goes through executemany, and round-trips."""
    columns = rows_of(300)
    if why == "separator":
        columns["body"][10] = "a\x01b"
    expected = dict(zip(columns["sid"], zip(columns["body"], columns["n"], strict=True), strict=True))
    if why == "float":
        columns["n"] = [None if v is None else float(v % 1000) for v in columns["n"]]
        expected = {k: (b, None if n is None else n % 1000) for k, (b, n) in expected.items()}
    monkeypatch.setattr(mysqlbulk, "COLUMN_ESCAPING", True)
    sent: list[bool] = []

    @sa.event.listens_for(mariadb, "before_cursor_execute")
    def watch(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        if statement.startswith("INSERT INTO bulk_probe"):
            sent.append(executemany)

    with mariadb.begin() as conn:
        if why == "no_backslash_escapes":
            conn.exec_driver_sql("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
            conn.exec_driver_sql("SELECT 1")  # the server reports the mode on its next reply
            assert not mysqlbulk._backslash_escapes(conn)
        mysqlbulk.execute_insert(conn, insert_sql(conn.dialect), columns)
        if why == "no_backslash_escapes":
            conn.exec_driver_sql("SET SESSION sql_mode = REPLACE(@@sql_mode, 'NO_BACKSLASH_ESCAPES', '')")
    assert sent == [True], "one executemany by the driver"
    assert stored(mariadb) == expected


def test_the_escaping_steps_are_pymysqls_escape_string():
    pick = random.Random(9)
    alphabet = ["\\", "'", '"', "\n", "\r", "\x00", "\x1a", "a", "é", "0", "Z", "%", "\t"]
    assert mysqlbulk._REPLACEMENTS is not None, "PyMySQL's escapes no longer fit str.replace steps"
    for _ in range(20_000):
        text = "".join(pick.choices(alphabet, k=pick.randint(0, 16)))
        assert mysqlbulk._escape(text) == escape_string(text), repr(text)


@pytest.mark.parametrize("sql", [
    "UPDATE t SET a = %(a)s",
    "INSERT INTO t (a, b) VALUES (%(a)s, NOW())",
    "INSERT INTO t (a) VALUES (%(a)s) ON DUPLICATE KEY UPDATE a = CONCAT(a, '%%')",
])
def test_statements_it_cannot_split_are_refused(sql):
    with pytest.raises(ValueError):
        mysqlbulk._split_insert(sql)

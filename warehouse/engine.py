"""Turning ``WAREHOUSE_URL`` into an engine: driver choice, SQLite paths, safe display."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, quote_plus, unquote

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from warehouse.dialects import for_backend

log = logging.getLogger(__name__)
T = TypeVar("T")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WAREHOUSE_URL = "sqlite:///data/warehouse.db"

# Bare dialects get the shipped drivers. ``mariadb+pymysql`` runs on SQLAlchemy's MySQL dialect
# (which detects MariaDB by itself): the ``mariadb`` dialect ignores the ``mysql_*`` table
# options, so its CREATE TABLEs would silently take the server's default charset (e.g. latin1)
# instead of utf8mb4.
_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "mariadb+pymysql": "mysql+pymysql",
}


# Query parameters whose values are secrets (psycopg: password, sslpassword; PyMySQL: passwd;
# ODBC-style pwd; and anything naming a password, secret or token): masked like the password.
_SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd", "sslpassword"})
_SECRET_QUERY_PARTS = ("password", "passwd", "secret", "token")
_PERCENT_ENCODING_HINT = (
    "percent-encode special characters in the user name and password: '@' as %40, ':' as %3A, "
    "'/' as %2F, '?' as %3F, '#' as %23, '%' as %25 (e.g. postgresql://user:p%40ss@host/db)"
)


class WarehouseUrlError(ValueError):
    """A ``WAREHOUSE_URL`` we cannot use; the message shows it with the password masked."""


def is_secret_query_key(key: str) -> bool:
    """True for a URL query parameter that carries a secret (``?password=...`` and the like)."""
    lowered = key.strip().lower()
    return lowered in _SECRET_QUERY_KEYS or any(part in lowered for part in _SECRET_QUERY_PARTS)


def _refuse_split_password(url: URL, text: str | None) -> None:
    """An unescaped ``@`` in the password makes the URL split at the wrong ``@``: part of the
    password becomes the host (or the database), and the driver's "cannot resolve host" error
    would print it. Refuse such a URL without showing any of it."""
    split = bool(url.host and "@" in url.host)
    if not split and text is not None and url.get_backend_name() != "sqlite":
        # 'user:pa@ss/word@host/db' parses as host 'ss', database 'word@host/db'
        split = text.count("@") >= 2 and "@" in (url.database or "")
    if split:
        raise WarehouseUrlError(
            "WAREHOUSE_URL has an '@' that is not percent-encoded, so it splits at the wrong "
            "place (part of the password would be taken for the host). Write each '@' in the "
            f"password as %40; in general, {_PERCENT_ENCODING_HINT}"
        )


def normalize_url(raw: str | URL | None, root: Path = PROJECT_ROOT) -> URL:
    """Pick the shipped driver for bare dialects and resolve relative SQLite paths against ``root``."""
    text = raw if isinstance(raw, URL) else (raw or "").strip() or DEFAULT_WAREHOUSE_URL
    try:
        url = make_url(text)
    except Exception:  # noqa: BLE001 - the raw text may hold a password: never echo it
        raise WarehouseUrlError(
            "WAREHOUSE_URL is not a SQLAlchemy URL (expected e.g. sqlite:///data/warehouse.db, "
            f"postgresql://user@host/db or mysql://user@host/db); {_PERCENT_ENCODING_HINT}"
        ) from None
    _refuse_split_password(url, None if isinstance(text, URL) else text)
    if url.drivername in _DRIVERS:
        url = url.set(drivername=_DRIVERS[url.drivername])
    dialect = for_backend(url.get_backend_name())
    if dialect is None:
        raise WarehouseUrlError(
            f"Unsupported warehouse database {url.get_backend_name()!r} in WAREHOUSE_URL "
            f"({mask_url(url)}); use SQLite, PostgreSQL or MySQL/MariaDB"
        )
    url = dialect.normalize_url(url, root)
    return url


def _query_values(values: str | tuple[str, ...]) -> tuple[str, ...]:
    """A URL query entry's values: a repeated key holds a tuple."""
    return values if isinstance(values, tuple) else (values,)


def mask_url(url: str | URL) -> str:
    """The URL for logs and metadata: the password, and query parameters that carry secrets
    (``?password=``, ``?sslpassword=``, ``?...token=`` ...), are shown as ``***``."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except Exception:  # noqa: BLE001
        return "<unparseable URL>"
    if parsed.host and "@" in parsed.host:  # a mis-split password: its tail is not the host
        parsed = parsed.set(password="***", host=parsed.host.rsplit("@", 1)[1])
    text = parsed.set(query={}).render_as_string(hide_password=True)
    if parsed.query:  # rendered like SQLAlchemy does (sorted keys), secrets as a literal ***
        text += "?" + "&".join(
            f"{quote_plus(key)}={'***' if is_secret_query_key(key) else quote_plus(value)}"
            for key in sorted(parsed.query)
            for value in _query_values(parsed.query[key])
        )
    return text


def url_secrets(raw: str | URL | None) -> list[str]:
    """Every secret a ``WAREHOUSE_URL`` holds, as the strings a message could show them (decoded
    and percent-encoded; with an unescaped '@', each piece of the password), longest first: for
    scrubbing text we print. Works on URLs that ``normalize_url`` refuses or cannot parse."""
    if isinstance(raw, URL):
        found = {raw.password or ""}
        found.update(value for key, values in raw.query.items() if is_secret_query_key(key)
                     for value in _query_values(values))
    else:
        text = (raw or "").strip()
        found = set()
        rest = text.split("://", 1)[1] if "://" in text else text
        if "@" in rest:  # the user info is everything before the last '@' (over-scrubs, if anything)
            userinfo = rest[: rest.rfind("@")]
            if ":" in userinfo:
                password = userinfo.split(":", 1)[1]
                found.update({password, unquote(password), *password.split("@"),
                              *unquote(password).split("@")})
        with contextlib.suppress(Exception):  # unparseable: the raw pieces above are all we have
            found.update(url_secrets(make_url(text)))
    variants = {form for value in found if value
                for form in (value, quote(value, safe=""), quote_plus(value))}
    return sorted(variants, key=lambda value: (-len(value), value))


def create_warehouse_engine(raw: str | URL | None = None, **kwargs: object) -> Engine:
    """An engine for the warehouse, with each database's options (SQLite: WAL and a generous
    busy timeout; ``WarehouseDialect.engine_options``)."""
    url = normalize_url(raw if raw is not None else os.environ.get("WAREHOUSE_URL"))
    dialect = for_backend(url.get_backend_name())
    assert dialect is not None  # normalize_url refuses the others
    # LIFO: the connection used last is reused, so one stays hot (SQLite keeps a page cache per
    # connection; FIFO alternated two and doubled the cache's share of a sync's memory)
    options: dict[str, object] = {"pool_pre_ping": True, "pool_use_lifo": True}
    options.update(dialect.engine_options(url))
    options.update(kwargs)
    engine = sa.create_engine(url, **options)
    listener = dialect.on_connect()
    if listener is not None:
        sa.event.listen(engine, "connect", listener)
    return engine


def describe(engine: Engine) -> str:
    return mask_url(engine.url)


# -- transactions that a deadlock may abort ---------------------------------------------------
# MySQL/MariaDB: 1213 deadlock, 1205 lock wait timeout, 1020 "record has changed since last
# read" (MariaDB 11.8+ snapshot isolation). PostgreSQL: 40P01 deadlock, 40001 serialization
# failure. SQLite waits on its busy timeout instead and is never retried here.
RETRYABLE_MYSQL_CODES = frozenset({1213, 1205, 1020})
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
DEFAULT_TRANSACTION_ATTEMPTS = 5


def is_retryable(error: BaseException) -> bool:
    """True when the database aborted the transaction because of another one (safe to replay)."""
    if not isinstance(error, sa.exc.DBAPIError) or error.orig is None:
        return False
    orig = error.orig
    sqlstate = getattr(orig, "sqlstate", None)  # psycopg 3
    if sqlstate in RETRYABLE_SQLSTATES:
        return True
    args = getattr(orig, "args", ())
    return bool(args) and isinstance(args[0], int) and args[0] in RETRYABLE_MYSQL_CODES


def run_in_transaction(
    engine: Engine,
    work: Callable[[Connection], T],
    *,
    attempts: int = DEFAULT_TRANSACTION_ATTEMPTS,
    what: str = "warehouse transaction",
) -> T:
    """Run ``work(conn)`` in one transaction; replay the whole of it on a deadlock/serialization abort.

    ``work`` must be safe to call again from scratch (everything it did was rolled back). The
    retries are few and bounded, with a short jittered backoff; the last error is raised as is.
    """
    for attempt in range(1, attempts + 1):
        try:
            with engine.begin() as conn:
                return work(conn)
        except sa.exc.DBAPIError as error:
            if attempt >= attempts or not is_retryable(error):
                raise
            delay = min(2.0, 0.05 * 2 ** (attempt - 1)) * (0.5 + random.random())
            log.warning("%s aborted by a concurrent writer (%s); retry %d/%d in %.2fs",
                        what, type(error.orig).__name__, attempt, attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


# -- SQLite files that cannot be written ---------------------------------------------------------
_SQLITE_TROUBLE = (
    (("database is locked", "database table is locked"),
     "is locked by another process: this one waited SQLite's busy timeout (60 s) for a write "
     "transaction that did not end (another sync or a migration on a large load, or a tool "
     "holding the file open in a transaction, e.g. a DB browser with unsaved changes). Close "
     "that tool or let the other run finish, then retry; SQLite takes one writer at a time."),
    (("readonly database",),
     "is read-only for this process: SQLite must write the file and, beside it, its -wal and "
     "-shm files. Make the file and its folder writable by this user (or leave out mode=ro / a "
     "read-only mount), or point WAREHOUSE_URL at a writable file."),
    (("unable to open database file",),
     "cannot be opened: its folder must exist and be writable by this user (SQLite creates "
     "the file and its -wal/-shm files there); fix the permissions or point WAREHOUSE_URL "
     "elsewhere."),
)


class WarehouseUnavailable(RuntimeError):
    """The warehouse cannot be used as it is (locked, read-only); the message says what to do."""


def sqlite_trouble(error: BaseException, url: str | URL | None) -> WarehouseUnavailable | None:
    """A clear error for SQLite's raw "database is locked" / "readonly database" / "unable to
    open database file", naming the file (never a password: SQLite URLs have none); else None."""
    if not isinstance(error, sa.exc.OperationalError):
        return None
    try:
        parsed = normalize_url(url if url is not None else os.environ.get("WAREHOUSE_URL"))
    except WarehouseUrlError:
        return None
    if parsed.get_backend_name() != "sqlite":
        return None
    text = str(error.orig or error).lower()
    for needles, explanation in _SQLITE_TROUBLE:
        if any(needle in text for needle in needles):
            return WarehouseUnavailable(f"The SQLite warehouse {parsed.database} {explanation}")
    return None

"""Apply the warehouse's Alembic revisions (version table ``warehouse_alembic_version``).

Usable from code (``upgrade(engine)``) and as ``python -m warehouse.migrate [upgrade|downgrade REV|current]``.
"""

from __future__ import annotations

import argparse
import logging
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from warehouse.dialects import for_connection
from warehouse.dialects.base import MigrationLockTimeout
from warehouse.engine import WarehouseUrlError, create_warehouse_engine, describe
from warehouse.initial_load import restore_deferred_indexes

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "warehouse_alembic_version"
log = logging.getLogger(__name__)


# Migrations hold this lock, so two first syncs on an empty warehouse take turns: the second
# finds the schema at head instead of failing on "table already exists". PostgreSQL: an
# advisory lock (per database); MySQL/MariaDB: GET_LOCK (server-wide, so the name carries the
# database); SQLite: the migration is one BEGIN EXCLUSIVE transaction.
LOCK_NAME = "taskrouter_warehouse_migrations"
PG_LOCK_KEY = zlib.crc32(LOCK_NAME.encode())
MYSQL_LOCK_TIMEOUT_S = 3600


class SchemaOutOfDate(RuntimeError):
    """The warehouse needs migrations and this run may not (or was told not to) migrate."""


class SchemaNewerThanCode(RuntimeError):
    """The warehouse was migrated by a newer version of this project."""


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()


@contextmanager
def migration_lock(conn: Connection) -> Iterator[None]:
    """Hold the warehouse's migration lock on ``conn`` (outside any transaction) meanwhile.

    SQLite takes its lock when the migration's transaction begins (``_begin``)."""
    with for_connection(conn).migration_lock(conn, LOCK_NAME, MYSQL_LOCK_TIMEOUT_S,
                                             describe(conn.engine)):
        yield


@contextmanager
def _begin(conn: Connection) -> Iterator[None]:
    """The migration's transaction; on SQLite an exclusive one (the lock, see above)."""
    with for_connection(conn).migration_transaction(conn):
        yield


def _run(engine: Engine, action: str, revision: str) -> None:
    config = _config()
    with engine.connect() as conn, migration_lock(conn), _begin(conn):
        config.attributes["connection"] = conn
        getattr(command, action)(config, revision)  # reads the revision after the lock


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade under the migration lock: a concurrent upgrade finishes first, then this one
    finds the schema it left (at head: nothing to do)."""
    _refuse_unknown_revision(engine)
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Go back to ``revision``, one revision per transaction, under the migration lock;
    indexes a failed first load left deferred are built first, so the revisions find the
    schema they expect (``warehouse.initial_load``).

    One step at a time because MySQL/MariaDB commit DDL implicitly: in one transaction, a
    revision that refuses would roll back the version table but not the DDL of the revisions
    before it. So a refusal always leaves the warehouse at the last revision fully undone."""
    _refuse_unknown_revision(engine)
    if current_revision(engine) == head_revision():
        restore_deferred_indexes(engine)
    current = current_revision(engine)
    if current is None:
        return
    script = ScriptDirectory.from_config(_config())
    steps = [step.down_revision for step in script.iterate_revisions(current, revision)
             if step.revision != revision]
    for target in steps:
        _run(engine, "downgrade", target or "base")


def known_revisions() -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}


def _refuse_unknown_revision(engine: Engine, current: str | None = None) -> None:
    current = current if current is not None else current_revision(engine)
    if current is not None and current not in known_revisions():
        raise SchemaNewerThanCode(
            f"The warehouse at {describe(engine)} is at schema revision {current!r}, which this "
            f"version of the code does not know (it knows up to {head_revision()}): a newer "
            "version of this project migrated it. Run that newer version (update this checkout "
            "and `pip install -e .`), or downgrade the warehouse with the newer version "
            f"(`python -m warehouse.migrate downgrade {head_revision()}`) before using this one."
        )


def ensure_schema(engine: Engine, auto_upgrade: bool = True, why_not: str | None = None) -> str:
    """Bring the warehouse to the head revision, or refuse clearly when told not to migrate
    (``why_not`` says why this run may not, e.g. a read-only run)."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return head
    _refuse_unknown_revision(engine, current)
    if not auto_upgrade:
        reason = why_not or "WAREHOUSE_AUTO_MIGRATE=0 switches automatic upgrades off"
        raise SchemaOutOfDate(
            f"The warehouse at {describe(engine)} is at schema revision {current or 'none (empty)'}"
            f" but this version needs {head}, and {reason}. Run `make migrate` (python -m "
            "warehouse.migrate upgrade), or a sync (which migrates unless WAREHOUSE_AUTO_MIGRATE=0)."
        )
    log.info("Migrating warehouse %s from %s to %s", describe(engine), current or "empty", head)
    upgrade(engine, "head")
    return head


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Migrate the warehouse named by WAREHOUSE_URL.")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("upgrade", help="upgrade to the newest revision")
    down = sub.add_parser("downgrade", help="downgrade to a revision (e.g. 0001_baseline)")
    down.add_argument("revision")
    sub.add_parser("current", help="print the current revision")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        engine = create_warehouse_engine()
    except WarehouseUrlError as error:  # its message never shows the password
        parser.exit(2, f"error: {error}\n")
    try:
        if args.action == "upgrade":
            upgrade(engine)
        elif args.action == "downgrade":
            downgrade(engine, args.revision)
    except (SchemaNewerThanCode, MigrationLockTimeout) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"{describe(engine)}: revision {current_revision(engine)} (head {head_revision()})")


if __name__ == "__main__":
    main()

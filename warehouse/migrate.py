"""Apply the warehouse's Alembic revisions (version table ``warehouse_alembic_version``).

Usable from code (``upgrade(engine)``) and as ``python -m warehouse.migrate [upgrade|downgrade REV|current]``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from warehouse.engine import WarehouseUrlError, create_warehouse_engine, describe
from warehouse.initial_load import restore_deferred_indexes

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "warehouse_alembic_version"
log = logging.getLogger(__name__)


class SchemaOutOfDate(RuntimeError):
    """The warehouse needs migrations and automatic upgrades were switched off."""


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


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Go back to ``revision``, one revision per transaction; indexes a failed first load left
    deferred are built first, so the revisions find the schema they expect
    (``warehouse.initial_load``).

    One step at a time because MySQL/MariaDB commit DDL implicitly: in one transaction, a
    revision that refuses would roll back the version table but not the DDL of the revisions
    before it. So a refusal always leaves the warehouse at the last revision fully undone."""
    if current_revision(engine) == head_revision():
        restore_deferred_indexes(engine)
    config = _config()
    script = ScriptDirectory.from_config(config)
    current = current_revision(engine)
    if current is None:
        return
    steps = [step.down_revision for step in script.iterate_revisions(current, revision)
             if step.revision != revision]
    for target in steps:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, target or "base")


def ensure_schema(engine: Engine, auto_upgrade: bool = True) -> str:
    """Bring the warehouse to the head revision, or refuse clearly when told not to migrate."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return head
    if not auto_upgrade:
        raise SchemaOutOfDate(
            f"The warehouse at {describe(engine)} is at revision {current or 'none'} but this "
            f"version needs {head}. Run `make migrate` (or unset WAREHOUSE_AUTO_MIGRATE=0)."
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
    if args.action == "upgrade":
        upgrade(engine)
    elif args.action == "downgrade":
        downgrade(engine, args.revision)
    print(f"{describe(engine)}: revision {current_revision(engine)} (head {head_revision()})")


if __name__ == "__main__":
    main()

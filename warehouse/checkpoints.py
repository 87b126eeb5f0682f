"""SQLite WAL checkpoints on a thread of their own while a bulk writer commits batch after batch.

With the default ``wal_autocheckpoint`` every commit that leaves the WAL over 1000 pages copies
the WAL back into the database file (and syncs it) before ``COMMIT`` returns, so on a full load
each batch waits for a checkpoint of the previous ones: ~0.5 s per 100k reservations, measured.
A writer that owns its connections (the sync's writer process, ``pipelines.writer``) turns that
off for them and asks this thread for a PASSIVE checkpoint after each commit instead; the copy
then runs in C on another connection (no GIL) while the next batch is being written.
PASSIVE never blocks the writer or readers; whatever it could not copy is copied by the next
one, by ``finish``, or by any other connection's automatic checkpoint, so nothing depends on
this thread for durability: committed transactions are in the WAL either way.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)


def is_sqlite_file(engine: Engine) -> bool:
    database = engine.url.database or ""
    return (engine.url.get_backend_name() == "sqlite" and bool(database)
            and database != ":memory:" and "mode=memory" not in str(engine.url))


def _no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()


class BackgroundCheckpoints:
    """PASSIVE checkpoints of ``engine``'s SQLite file on request, from a daemon thread.

    Call ``install`` before the engine opens its first connection (its connections then skip
    the automatic checkpoint), ``request`` after each commit, and ``finish`` at the end.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.checkpoints = 0
        self._due = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    def install(self) -> BackgroundCheckpoints:
        sa.event.listen(self.engine, "connect", _no_autocheckpoint)
        self._thread = threading.Thread(target=self._run, name="wal-checkpoints", daemon=True)
        self._thread.start()
        return self

    def request(self) -> None:
        self._due.set()

    def _checkpoint(self, conn: sa.Connection, mode: str = "PASSIVE") -> None:
        conn.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})").fetchall()
        self.checkpoints += 1

    def _run(self) -> None:
        try:
            with self.engine.connect() as conn:
                while True:
                    self._due.wait()
                    self._due.clear()
                    if self._stop:
                        return
                    self._checkpoint(conn)
        except Exception as error:  # noqa: BLE001 - checkpoints are an optimization, never fatal
            log.warning("background WAL checkpoints stopped (%s); SQLite's own take over",
                        type(error).__name__)

    def finish(self) -> None:
        """Stop the thread and copy what is left, so the WAL does not stay large."""
        self._stop = True
        self._due.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        sa.event.remove(self.engine, "connect", _no_autocheckpoint)
        try:
            with self.engine.connect() as conn:
                self._checkpoint(conn)
        except sa.exc.DBAPIError as error:  # busy readers: their own commits checkpoint later
            log.info("final WAL checkpoint skipped: %s", type(error.orig).__name__)

"""Reading reservations in a child process, so the sync's own process keeps its GIL for the warehouse.

In one process the reader threads (requests, urllib3, JSON) and the sync's normalizing and
writing take turns on one GIL; here a child process runs the very same
``TaskRouterClient.read_reservations`` (its reader pool, both retry layers, its rate limit) and
streams each worker's read back through a pipe, and the parent only decodes one orjson frame per
worker. What that costs and saves: benchmarks/results/design-notes.md ("The reader process").

This module is the parent's side and the frames; the child is ``__main__.py``, a plain
``python -m pipelines.taskrouter.reader_process``, not a fork: no copy of the parent's threads,
locks or database connections, and it imports only this package. Credentials reach it on stdin,
never in its arguments or environment (the Twilio variables are removed from the environment it
inherits). The parent sees the same ``WorkerRead`` values, the same exceptions
(``TaskRouterAuthError`` and the other ``TaskRouterError`` kinds are rebuilt from their fields)
and live request counters; a child that dies raises ``ReaderProcessFailed`` and everything
loaded before stays committed. Closing the iterator early (the sync failed) kills the child.

Frames, child to parent: a 4-byte little-endian length, then an orjson array:
``["read", worker_sid, records, pages, outcome, error, stats]``, ``["failed", worker_sid,
records, pages, error, fault, attempts, retried, stats]`` (a read TaskRouter failed: how it
ended, for ``WorkersFailed``), ``["raise", class, message, status, code, more_info, path,
stats]`` or ``["done", peak_rss_mb, stats]``. A message orjson cannot write (a record nested
deeper than its 254 levels: orjson reads 1024, so the reader threads load such a record) goes as
a pickle instead, which opens with byte 0x80 where an orjson array opens with ``[``; the parent
unpickles only what its own child wrote on a private pipe. A read neither can carry fails that
one worker, naming it and the cause.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

try:
    import fcntl
except ImportError:  # not on Windows
    fcntl = None  # type: ignore[assignment]

from pipelines.taskrouter.credentials import CREDENTIAL_VARIABLES, Credentials
from pipelines.taskrouter.errors import (
    ReaderProcessFailed,
    TaskRouterAuthError,
    TaskRouterBadPage,
    TaskRouterError,
    TaskRouterNotFound,
    UnsafeNextPageUrl,
)
from pipelines.taskrouter.options import ClientOptions
from pipelines.taskrouter.reads import ClientStats, WorkerRead

_HEADER = struct.Struct("<I")
_ERRORS: dict[str, type[TaskRouterError]] = {
    cls.__name__: cls for cls in (TaskRouterError, TaskRouterAuthError, TaskRouterNotFound,
                                  TaskRouterBadPage, UnsafeNextPageUrl)
}
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])
_STDERR_TAIL = 2000
PIPE_BYTES = 1 << 20
_PICKLED = b"\x80"  # pickle's PROTO opcode opens protocol 2 and later; an orjson array opens "["
# Pickling recurses twice per nesting level: enough for the deepest record orjson reads (1024).
_PICKLE_RECURSION_LIMIT = 5000
UNPASSABLE = "a record the reader process cannot pass on"  # the fault of a read no frame carries


def read_in_child_process(credentials: Credentials, base_url: str, options: ClientOptions,
                          workspace_sid: str, worker_sids: Iterable[str], status: str | None,
                          stats: ClientStats) -> Iterator[WorkerRead]:
    """``TaskRouterClient.read_reservations`` run by a child process; ``stats`` follows its counters."""
    job = orjson.dumps({
        "credentials": {"username": credentials.username, "password": credentials.password,
                        "kind": credentials.kind},
        "base_url": base_url, "options": options.for_child(), "workspace_sid": workspace_sid,
        "worker_sids": list(worker_sids), "status": status,
    })
    with tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen([sys.executable, "-m", "pipelines.taskrouter.reader_process"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                 env=_child_environment(), close_fds=True)
        try:
            assert child.stdin is not None and child.stdout is not None
            _widen_pipe(child.stdout)
            try:
                child.stdin.write(job)
                child.stdin.close()
            except BrokenPipeError:
                pass  # it died at start-up: reported below from its exit code and stderr
            del job
            seen: dict[str, float] = {}
            while (frame := _read_frame(child.stdout)) is not None:
                message = pickle.loads(frame) if frame[:1] == _PICKLED else orjson.loads(frame)
                del frame
                kind = message[0]
                _follow_counters(stats, seen, message[-1])
                if kind == "read":
                    _, worker_sid, records, pages, outcome, error, _ = message
                    del message
                    yield WorkerRead(workspace_sid, worker_sid, records, pages, outcome, error,
                                     fault=UNPASSABLE if outcome == "failed" else None)
                elif kind == "failed":
                    _, worker_sid, records, pages, error, fault, attempts, retried, _ = message
                    yield WorkerRead(workspace_sid, worker_sid, records, pages, "failed", error,
                                     fault, attempts, retried)
                elif kind == "raise":
                    raise _rebuilt(*message[1:7])
                else:  # "done"
                    stats.reader_peak_rss_mb = max(stats.reader_peak_rss_mb, message[1])
                    child.wait(timeout=30)
                    return
            code = child.wait(timeout=30)
            raise ReaderProcessFailed(
                f"the TaskRouter reader process stopped before it finished (exit code {code}); "
                f"the workers read so far are loaded, the next sync reads the rest. "
                f"Its last output: {_tail(stderr) or '(none)'}")
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            if child.stdout is not None:
                child.stdout.close()


def _widen_pipe(stream: IO[bytes]) -> None:
    """A 1 MiB pipe (Linux; 64 KiB by default): the child writes dozens of workers ahead
    instead of waiting for the sync to take each one."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if set_size is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(stream.fileno(), set_size, PIPE_BYTES)


def _child_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARIABLES}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
    return env


def _read_frame(stream: IO[bytes]) -> bytes | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    body = stream.read(size)
    return body if len(body) == size else None


def _follow_counters(stats: ClientStats, seen: dict[str, float], now: dict[str, float]) -> None:
    """Add what the child's counters (its ``ClientStats.snapshot``) gained since the last frame."""
    deltas = {name: value - seen.get(name, 0.0) for name, value in now.items()
              if value != seen.get(name, 0.0)}
    if deltas:
        stats.add(**deltas)
        seen.update(now)


def _rebuilt(name: str, message: str, status: int | None, code: int | None,
             more_info: str | None, path: str | None) -> Exception:
    cls = _ERRORS.get(name)
    if cls is None:
        return ReaderProcessFailed(f"the TaskRouter reader process failed: {name}: {message}")
    return cls(message, status=status, code=code, more_info=more_info, path=path)


def _tail(stderr: IO[bytes]) -> str:
    stderr.seek(0, os.SEEK_END)
    stderr.seek(max(0, stderr.tell() - _STDERR_TAIL))
    return stderr.read().decode("utf-8", "replace").strip()


# -- the child's frames (the child itself: __main__.py) -----------------------------------------
def _encoded(message: list[Any]) -> bytes:
    """orjson for every normal frame; a pickle for what orjson cannot write (nesting deeper
    than 254 levels, a 128-bit integer), read back by the parent exactly as the threads hold it."""
    try:
        return orjson.dumps(message)
    except TypeError:  # orjson.JSONEncodeError
        pass
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, _PICKLE_RECURSION_LIMIT))
    try:
        return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        sys.setrecursionlimit(limit)


def write_frame(out: IO[bytes], message: list[Any]) -> None:
    body = _encoded(message)
    out.write(_HEADER.pack(len(body)) + body)


def _read_message(read: WorkerRead, stats: dict[str, float]) -> list[Any]:
    if read.outcome == "failed" and read.fault is not None:
        return ["failed", read.worker_sid, read.records, read.pages, read.error, read.fault,
                read.attempts, read.retried, stats]
    return ["read", read.worker_sid, read.records, read.pages, read.outcome, read.error, stats]


def write_read(out: IO[bytes], read: WorkerRead, stats: dict[str, float]) -> None:
    """One worker's frame; a read no encoding can carry fails that worker alone, not the sync."""
    try:
        write_frame(out, _read_message(read, stats))  # encoded whole before anything is written
    except (RecursionError, TypeError, ValueError, pickle.PicklingError) as exc:
        cause = f"{type(exc).__name__}: {exc}"
        failed = WorkerRead(read.workspace_sid, read.worker_sid, [], read.pages, "failed",
                            f"worker {read.worker_sid}: its reservations could not be passed from "
                            f"the reader process ({cause}); a record is probably nested too deeply. "
                            "TASKROUTER_READER_PROCESS=0 reads it in the sync's own process")
        write_frame(out, _read_message(failed, stats))  # a "read" frame: the parent names it


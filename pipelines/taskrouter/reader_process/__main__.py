"""The reader process itself: ``python -m pipelines.taskrouter.reader_process`` (see ``__init__``).

It reads the job (credentials, base URL, ``ClientOptions``, the workers) from stdin, reads every
worker with its own ``TaskRouterClient`` and writes one frame per worker to stdout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO, Any

import orjson

from pipelines.taskrouter.client import TaskRouterClient
from pipelines.taskrouter.credentials import Credentials
from pipelines.taskrouter.errors import TaskRouterError
from pipelines.taskrouter.options import ClientOptions
from pipelines.taskrouter.reader_process import write_frame, write_read


def _peak_rss_mb() -> float:
    """This process's own peak RSS since its exec (``VmHWM``; 0.0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def serve(job: dict[str, Any], out: IO[bytes]) -> None:
    """The child's work: read every worker of ``job`` and write one frame per worker to ``out``."""
    secret = job["credentials"]
    credentials = Credentials(secret["username"], secret["password"], kind=secret["kind"])
    options = ClientOptions(**{**job["options"], "reader_process": False})
    with TaskRouterClient(credentials, job["base_url"], options) as client:
        counters = client.stats.snapshot
        try:
            for read in client.read_reservations(job["workspace_sid"], job["worker_sids"],
                                                 status=job["status"]):
                write_read(out, read, counters())
                out.flush()
        except Exception as exc:  # noqa: BLE001 - carried to the parent, raised there
            fields = ([exc.message, exc.status, exc.code, exc.more_info, exc.path]
                      if isinstance(exc, TaskRouterError) else [str(exc), None, None, None, None])
            write_frame(out, ["raise", type(exc).__name__, *fields, counters()])
        else:
            write_frame(out, ["done", _peak_rss_mb(), counters()])
        out.flush()


def main() -> None:
    job = orjson.loads(sys.stdin.buffer.read())
    # the frames get the real stdout to themselves; a stray print goes to stderr instead
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        serve(job, out)
    except BrokenPipeError:  # the parent stopped listening (it failed or was cancelled)
        os._exit(1)


if __name__ == "__main__":
    main()

"""What the client hands back: one worker's read (``WorkerRead``) and its counters (``ClientStats``)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from pipelines.taskrouter.errors import TaskRouterError, failure_line, label_of, rule_of


@dataclass
class ClientStats:
    """Counters shared by all threads of one client; read them for progress and metadata."""

    requests: int = 0
    retries: int = 0
    pages: int = 0
    bytes: int = 0
    rate_limit_wait_s: float = 0.0
    reader_peak_rss_mb: float = 0.0  # the reader process's own peak (pipelines.taskrouter.reader_process)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: float) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    # The client's own hot-path counters: one lock, no keyword/setattr work.
    def count_attempt(self, rate_limit_wait_s: float, retry: bool = False) -> None:
        with self._lock:
            self.requests += 1
            if retry:
                self.retries += 1
            if rate_limit_wait_s:
                self.rate_limit_wait_s += rate_limit_wait_s

    def count_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes += n

    def count_page(self) -> None:
        with self._lock:
            self.pages += 1

    def count_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {
                "requests": self.requests,
                "retries": self.retries,
                "pages": self.pages,
                "bytes": self.bytes,
                "rate_limit_wait_s": round(self.rate_limit_wait_s, 3),
            }


@dataclass
class WorkerRead:
    """One worker's complete reservation list, or why it could not be read.

    A failed read says how it ended: ``fault`` (its short name, "HTTP 500"), the HTTP
    ``attempts`` its last request made, and whether that failure is one that is ``retried``.
    """

    workspace_sid: str
    worker_sid: str
    records: list[dict[str, Any]]
    pages: int = 0
    outcome: str = "ok"  # ok | not_found | failed
    error: str | None = None
    fault: str | None = None
    attempts: int = 0
    retried: bool = False

    @property
    def complete(self) -> bool:
        return self.outcome == "ok"

    def failed_with(self, error: TaskRouterError) -> WorkerRead:
        """This read, failed by ``error``."""
        self.outcome, self.error = "failed", str(error)
        self.fault, self.attempts, self.retried = label_of(error), error.attempts, rule_of(
            error).retried
        return self

    def failure(self) -> str:
        """How the read ended, for ``WorkersFailed``: "HTTP 500 after 6 attempts"."""
        if self.fault is None:
            return "an error"
        return failure_line(self.fault, self.attempts, self.retried)

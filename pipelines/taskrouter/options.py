"""The client's tuning, declared once: ``ClientOptions``.

``pipelines.settings`` builds it from the environment, the Dagster resource from its config, and
the reader process gets the same values (``for_child``), so a new knob is added here and
nowhere else in the client.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

DEFAULT_BASE_URL = "https://taskrouter.twilio.com"
MAX_PAGE_SIZE = 1000  # TaskRouter answers error 20007 above it
# Requests in flight at once: TaskRouter's per-resource rate limits, not speed, set it (README).
DEFAULT_CONCURRENCY = 8
READER_PROCESS_CHOICES = (True, False, "auto")


@dataclass(frozen=True)
class ClientOptions:
    """How a ``TaskRouterClient`` pages, paces and retries.

    Args:
        page_size: records per page, 1..1000 (``PageSize``).
        concurrency: requests in flight at once; the reader pool starts up to four threads per
            slot, extra ones only while others back off (``pipelines.taskrouter.pool``).
        requests_per_second: the client's own rate limit (None: none; 429s still slow it down).
        connect_timeout, read_timeout: seconds, per attempt.
        max_attempts: HTTP attempts per request in all, both retry layers together.
        backoff_factor, backoff_max: exponential backoff with jitter between attempts.
        retry_after_max: the longest ``Retry-After`` honoured (seconds).
        max_retry_wait: no retry starts this long after the request's first attempt.
        reader_process: read reservations in a child process: True, False, or "auto" (only a
            read whose caller expects many writes, i.e. a first load).
    """

    page_size: int = MAX_PAGE_SIZE
    concurrency: int = DEFAULT_CONCURRENCY
    requests_per_second: float | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 6
    backoff_factor: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 60.0
    max_retry_wait: float = 120.0
    reader_process: bool | str = False

    def __post_init__(self) -> None:
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE} (TaskRouter error 20007 above)")
        if self.reader_process not in READER_PROCESS_CHOICES:
            raise ValueError(
                f"reader_process must be True, False or 'auto', not {self.reader_process!r}")
        # at least one slot and one attempt, whatever was asked
        object.__setattr__(self, "concurrency", max(1, int(self.concurrency)))
        object.__setattr__(self, "max_attempts", max(1, int(self.max_attempts)))

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)

    @property
    def max_threads(self) -> int:
        """Reader threads at most: four per slot (see ``pipelines.taskrouter.pool``)."""
        return 4 * self.concurrency

    def with_rate(self, requests_per_second: float | None) -> ClientOptions:
        """The same options with another rate limit (a shard's share); None or 0 keeps this one."""
        if not requests_per_second:
            return self
        return replace(self, requests_per_second=requests_per_second)

    def for_child(self) -> dict[str, Any]:
        """The options as JSON for the reader process, which reads in its own threads."""
        return {**asdict(self), "reader_process": False}

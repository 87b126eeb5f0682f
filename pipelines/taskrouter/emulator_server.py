"""The emulator's server: its faults, what it saw (stats), its rate limit and its page tokens.

``Faults`` lists what a test, the demo or a benchmark can make the emulator do wrong, as the
real API sometimes does; ``ServerStats`` is what ``GET /_emulator/stats`` reports.
"""

from __future__ import annotations

import base64
import random
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipelines.taskrouter.emulator_world import World
from pipelines.taskrouter.ratelimit import TokenBucket

FAULT_KINDS = ("429", "500", "503", "reset", "truncated", "badjson", "slow")


@dataclass
class Faults:
    latency_ms: float = 0.0
    requests_per_second: float | None = None  # above it: 429 with Retry-After
    rate_limit_burst: float | None = None  # requests allowed at once (default: rate / 5, >= 2)
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    slow_seconds: float = 2.0
    vanish_after_listing: int = 0  # workers deleted right after a complete worker listing ...
    vanish_on_listing: int = 1  # ... the n-th one (a Dagster sync lists workers twice)
    failing_workers: tuple[str, ...] = ()  # worker sids whose reservations always answer 500
    missing_once: tuple[str, ...] = ()  # worker sids whose reservations answer 404 once (a blip)
    next_page_base_url: str | None = None  # put next_page_url on another origin (must be refused)
    forbidden: bool = False  # answer every API request 403 (credentials valid, access denied)
    retry_after_header: bool = True
    events_refused: int = 0  # answer the Events resource with this status (403 or 404)
    events_retention: str = "refuse"  # a StartDate older than 30 days: "refuse" (400) or "truncate"
    events_lag_seconds: int = 0  # events become visible this long after they happen
    events_fail_after: int | None = None  # Events requests after this many answer 500
    retry_after: str = "1"  # the header's value (seconds or an HTTP date; junk to test parsing)
    seed: int = 1

    def __post_init__(self) -> None:
        unknown = set(self.fault_kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {FAULT_KINDS}")
        if self.events_retention not in ("refuse", "truncate"):
            raise ValueError("events_retention must be 'refuse' or 'truncate'")


@dataclass
class ServerStats:
    requests: int = 0
    api_requests: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    events_requests: int = 0
    in_flight: int = 0  # API requests being answered right now
    max_in_flight: int = 0
    arrivals: list[float] = field(default_factory=list)  # monotonic time of each API request
    lock: threading.Lock = field(default_factory=threading.Lock)

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "api_requests": self.api_requests,
                "faults": dict(self.faults),
                "rate_limited": self.rate_limited,
                "events_requests": self.events_requests,
                "max_in_flight": self.max_in_flight,
                "max_requests_in_any_second": max_in_window(self.arrivals, 1.0),
            }


def max_in_window(times: list[float], window: float) -> int:
    """The most events inside any sliding window of ``window`` seconds."""
    ordered = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] > window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def page_token(value: int) -> str:
    return "PA" + base64.urlsafe_b64encode(f"after:{value}".encode()).decode().rstrip("=")


def token_position(token: str) -> int:
    if not token.startswith("PA"):
        raise ValueError("bad token")
    raw = token[2:] + "=" * (-len(token[2:]) % 4)
    text = base64.urlsafe_b64decode(raw.encode()).decode()
    if not text.startswith("after:"):
        raise ValueError("bad token")
    return int(text[6:])


class ApiError(Exception):
    """An answer in TaskRouter's error shape (status, Twilio code, message, headers)."""

    def __init__(self, status: int, code: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, world: World, faults: Faults, handler: type[BaseHTTPRequestHandler],
                 host: str = "127.0.0.1", port: int = 0):
        super().__init__((host, port), handler)
        self.world = world
        self.faults = faults
        self.stats = ServerStats()
        self.limiter = TokenBucket(None)
        self.rng = random.Random(faults.seed)
        self.rng_lock = threading.Lock()
        self._vanished = False
        self._listings = 0
        self._missed: set[str] = set()  # missing_once workers already answered 404
        self.set_faults(faults)
        host, port = self.server_address[:2]
        world.base_url = f"http://{host}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (timeouts, injected resets) are expected here: stay quiet."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        rate = faults.requests_per_second or 0.0
        self.limiter = TokenBucket(rate, faults.rate_limit_burst or max(2.0, rate / 5))

    @property
    def base_url(self) -> str:
        return self.world.base_url

    def roll_fault(self) -> str | None:
        f = self.faults
        if f.fault_rate <= 0:
            return None
        with self.rng_lock:
            if self.rng.random() >= f.fault_rate:
                return None
            return self.rng.choice(f.fault_kinds)

    def over_rate_limit(self) -> bool:
        return not self.limiter.try_acquire()

    def chance(self) -> float:
        with self.rng_lock:
            return self.rng.random()

    def miss_once(self, worker_sid: str) -> bool:
        """True the first time a ``missing_once`` worker's reservations are asked for."""
        if worker_sid not in self.faults.missing_once:
            return False
        with self.rng_lock:
            first = worker_sid not in self._missed
            self._missed.add(worker_sid)
        return first

    def after_worker_listing(self, workspace_sid: str) -> None:
        with self.rng_lock:
            self._listings += 1
            due = (self.faults.vanish_after_listing and not self._vanished
                   and self._listings >= self.faults.vanish_on_listing)
            if due:
                self._vanished = True
        if due:
            self.world.delete_workers(self.faults.vanish_after_listing, workspace_sid)

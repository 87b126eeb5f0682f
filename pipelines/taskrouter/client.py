"""TaskRouter REST client: Basic auth, paging by ``next_page_url``, retries, a shared rate limit.

Retries are layered on well-kept libraries:
- urllib3's ``Retry`` (mounted on the session's adapter) retries 429/500/502/503/504, connection
  errors and read timeouts, honouring ``Retry-After`` (capped) and otherwise backing off
  exponentially with jitter;
- ``tenacity`` retries what urllib3 cannot see, because it happens after the headers arrived: a
  body cut short, a reset mid-body, or a 200 whose JSON is not a TaskRouter page.
Both layers draw on ONE budget per logical request (a thread-local count of failed attempts and
a deadline), so a request makes at most ``max_attempts`` HTTP attempts in all, however its
failures alternate between the layers, and stops retrying once ``max_retry_wait`` has passed.
Every attempt, retries included, first takes a slot from the shared rate limiter. 401/403 and
redirects are never retried or followed.

Per-request CPU matters (a full sync makes one request per worker at least), so the hot path
hands a ready ``PreparedRequest`` straight to the session's ``HTTPAdapter`` (the adapter's
``send``, with its urllib3 ``Retry``), instead of ``Session.get`` re-merging session settings,
cookies, hooks and params for every page; the URL and headers it sends are the same.
"""

from __future__ import annotations

import contextlib
import json
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
import requests
import tenacity
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import InvalidHeader, MaxRetryError
from urllib3.util.retry import Retry

from pipelines.taskrouter.clock import ServerClock
from pipelines.taskrouter.credentials import CREDENTIAL_VARIABLES, Credentials
from pipelines.taskrouter.errors import (
    TaskRouterAuthError,
    TaskRouterBadPage,
    TaskRouterError,
    TaskRouterNotFound,
    UnsafeNextPageUrl,
)
from pipelines.taskrouter.ratelimit import RateLimiter

DEFAULT_BASE_URL = "https://taskrouter.twilio.com"
MAX_PAGE_SIZE = 1000
# Requests in flight at once: TaskRouter's per-resource rate limits, not speed, set it (README).
DEFAULT_CONCURRENCY = 8
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Bodies are read in one piece where the length is known (requests' default is 10 KiB chunks).
_READ_CHUNK = 1 << 20


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
    """One worker's complete reservation list, or why it could not be read."""

    workspace_sid: str
    worker_sid: str
    records: list[dict[str, Any]]
    pages: int = 0
    outcome: str = "ok"  # ok | not_found | failed
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.outcome == "ok"


class _Budget(threading.local):
    """Failed attempts and deadline of the one logical request this thread is making, and the
    reader pool this thread serves (told when the thread backs off, so it can lend the slot)."""

    failures: int = 0
    limit: int = 0  # 0: no request of ours in progress on this thread
    deadline: float = 0.0
    pool: _ReaderPool | None = None

    def start(self, limit: int, max_wait: float) -> None:
        self.failures, self.limit, self.deadline = 0, limit, time.monotonic() + max_wait

    def spent(self) -> bool:
        return self.limit > 0 and (
            self.failures >= self.limit or time.monotonic() >= self.deadline
        )


_budget = _Budget()


class _LimitedRetry(Retry):
    """urllib3 Retry that shares the request's budget and calls hooks around each retry's wait.

    ``on_wait`` gives up the request's in-flight slot while it backs off; ``on_retry`` takes
    it back, counts the retry and takes a rate-limit slot, so retries obey the limit too;
    ``on_throttle`` hears every 429, so the shared limiter slows every thread down, not only
    the one that was told.
    """

    on_wait: Any = None
    on_retry: Any = None
    on_throttle: Any = None

    def new(self, **kw: Any) -> _LimitedRetry:
        fresh = super().new(**kw)
        fresh.on_wait, fresh.on_retry = self.on_wait, self.on_retry
        fresh.on_throttle = self.on_throttle
        return fresh

    def increment(self, *args: Any, **kwargs: Any) -> _LimitedRetry:
        _budget.failures += 1
        response = kwargs.get("response", args[2] if len(args) > 2 else None)
        if self.on_throttle is not None and getattr(response, "status", None) == 429:
            self.on_throttle()
        return super().increment(*args, **kwargs)

    def is_exhausted(self) -> bool:
        return super().is_exhausted() or _budget.spent()

    def get_retry_after(self, response: Any) -> float | None:
        # A Retry-After we cannot read is no reason to give up: back off exponentially instead.
        try:
            seconds = super().get_retry_after(response)
        except InvalidHeader:
            return None
        if not seconds:
            return seconds
        # Up to half as long again, at random: threads told the same Retry-After at the same
        # moment would otherwise all come back at the same instant and meet 429 together.
        return min(float(self.retry_after_max), seconds * (1.0 + 0.5 * random.random()))

    def get_backoff_time(self) -> float:
        # urllib3 retries the first failure immediately; a rate-limited API deserves a pause.
        errors = len(self.history)
        if errors == 0:
            return 0.0
        base = self.backoff_factor * (2 ** (errors - 1))
        return float(min(self.backoff_max, base + random.random() * self.backoff_jitter))

    def sleep(self, response: Any = None) -> None:
        if self.on_wait is not None:
            self.on_wait()
        try:
            super().sleep(response)
        finally:
            if self.on_retry is not None:
                self.on_retry()


class _BodyFault(Exception):
    """A response whose body could not be read or parsed; worth another attempt."""


def _is_body_fault(exc: BaseException) -> bool:
    if isinstance(exc, _BodyFault | requests.exceptions.ChunkedEncodingError):
        return True
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        # urllib3 already spent its attempts on this one; do not multiply them.
        return not (exc.args and isinstance(exc.args[0], MaxRetryError))
    return False


def _describe(exc: BaseException) -> str:
    """The kind of failure, without the exception text (it may carry URLs and their queries)."""
    if isinstance(exc, _BodyFault):
        return str(exc)
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError) and reason.reason is not None:
        reason = reason.reason
    inner = f" ({type(reason).__name__})" if isinstance(reason, BaseException) else ""
    return f"{type(exc).__name__}{inner}"


def _origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an absolute URL; ValueError for one that has none of them."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)  # ValueError: a port out of range
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an absolute http(s) URL")
    return scheme, parts.hostname.lower(), port


class TaskRouterClient:
    """Reads workspaces, workers and reservations from TaskRouter (or the local emulator)."""

    def __init__(
        self,
        credentials: Credentials,
        base_url: str = DEFAULT_BASE_URL,
        *,
        page_size: int = MAX_PAGE_SIZE,
        concurrency: int = DEFAULT_CONCURRENCY,
        requests_per_second: float | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 6,
        backoff_factor: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_max: float = 60.0,
        max_retry_wait: float = 120.0,
        reader_process: bool | str = False,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE} (TaskRouter error 20007 above)")
        self.base_url = base_url.rstrip("/")
        self._origin = _origin(self.base_url)
        self.page_size = page_size
        self.concurrency = max(1, int(concurrency))
        # ``concurrency`` requests in flight at most, and up to four reader threads per slot: a
        # worker backing off before a retry (or waiting out Retry-After) gives its slot to
        # another reader instead of idling it, so faults cost their waits once, not once per
        # blocked slot. Readers beyond ``concurrency`` are started only while some back off
        # (see _ReaderPool): idle extra threads would only fight over the GIL.
        self._in_flight = threading.BoundedSemaphore(self.concurrency)
        self.threads = 4 * self.concurrency
        self.timeout = (connect_timeout, read_timeout)
        self.max_attempts = max(1, int(max_attempts))
        # No retry starts after this many seconds; one started may still wait its backoff (at
        # most backoff_max) or Retry-After (at most retry_after_max) plus its own timeouts.
        self.max_retry_wait = max_retry_wait
        self.backoff_factor, self.backoff_max = backoff_factor, backoff_max
        self.stats = ClientStats()
        self.clock = ServerClock()  # TaskRouter's time, from its responses' Date header
        self.limiter = RateLimiter(requests_per_second)
        self._auth_kind = credentials.kind

        retry = _LimitedRetry(
            total=self.max_attempts - 1,
            connect=self.max_attempts - 1,
            read=self.max_attempts - 1,
            status=self.max_attempts - 1,
            other=0,
            redirect=0,
            allowed_methods=frozenset({"GET"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=backoff_factor,
            backoff_max=backoff_max,
            backoff_jitter=backoff_factor,
            retry_after_max=retry_after_max,
            respect_retry_after_header=True,
            raise_on_status=False,
            raise_on_redirect=False,
        )
        retry.on_wait, retry.on_retry = self._before_backoff, self._before_retry
        retry.on_throttle = self.limiter.slow_down
        adapter = HTTPAdapter(
            pool_connections=4, pool_maxsize=self.threads + 2, max_retries=retry
        )
        self.session = requests.Session()
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.auth = credentials.as_auth()
        self.session.trust_env = False
        self.session.headers.update(
            {"Accept": "application/json", "User-Agent": "taskrouter-warehouse/0.1"}
        )
        # The direct path (see _get_once): URLs under base_url + "/" go to the adapter with the
        # session's headers and the same Basic auth header requests would add. Anything else
        # (an odd base URL, another spelling of the origin) takes Session.get as before.
        self._adapter = adapter
        signed = requests.PreparedRequest()
        signed.headers = CaseInsensitiveDict()
        HTTPBasicAuth(*credentials.as_auth())(signed)
        self._authorization = signed.headers["Authorization"]
        base = urlsplit(self.base_url)
        direct = base.scheme in ("http", "https") and bool(base.hostname)
        self._prefix = f"{self.base_url}/" if direct and not (base.query or base.fragment) else None
        self._local = threading.local()  # per thread: its reusable tenacity.Retrying
        # read_reservations in a child process (pipelines.taskrouter.reader_process), which
        # builds its own client from these: the same tuning, its own connections. True: every
        # read; "auto": the reads whose caller expects many writes (a first load); False: none
        if reader_process not in (True, False, "auto"):
            raise ValueError(f"reader_process must be True, False or 'auto', not {reader_process!r}")
        self.reader_process = reader_process
        self._credentials = credentials
        self._child_options: dict[str, Any] = {
            "page_size": page_size, "concurrency": self.concurrency,
            "requests_per_second": requests_per_second, "connect_timeout": connect_timeout,
            "read_timeout": read_timeout, "max_attempts": self.max_attempts,
            "backoff_factor": backoff_factor, "backoff_max": backoff_max,
            "retry_after_max": retry_after_max, "max_retry_wait": max_retry_wait,
        }

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> TaskRouterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one request -------------------------------------------------------------------------
    def get_json(self, url: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET one URL on the configured host, with both retry layers; returns the parsed body."""
        if params:
            url = _with_query(url, params)
        if self._prefix is None or not url.startswith(self._prefix):
            self._check_same_origin(url)
        retrying = getattr(self._local, "retrying", None)
        if retrying is None:
            retrying = self._local.retrying = self._new_retrying()
        _budget.start(self.max_attempts, self.max_retry_wait)
        try:
            return retrying(self._attempt, url)
        except (requests.exceptions.RequestException, _BodyFault) as exc:
            raise TaskRouterError(
                f"TaskRouter request failed after {_budget.failures} attempt(s): "
                f"{_describe(exc)}",
                path=urlsplit(url).path,
            ) from None
        finally:
            _budget.limit = 0

    def _headers(self) -> CaseInsensitiveDict[str]:
        """What Session.get would send for a GET without cookies: session headers and auth."""
        headers = CaseInsensitiveDict(self.session.headers)
        headers["Authorization"] = self._authorization
        return headers

    def _new_retrying(self) -> tenacity.Retrying:
        """The tenacity layer; one per thread, reused for each of its requests."""
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(_is_body_fault),
            stop=lambda _state: _budget.spent(),
            wait=tenacity.wait_exponential_jitter(
                initial=self.backoff_factor, max=self.backoff_max, jitter=self.backoff_factor
            ),
            before_sleep=lambda _state: self.stats.count_retry(),
            sleep=_backoff_sleep,
            reraise=True,
        )

    def _before_backoff(self) -> None:
        """Runs before every urllib3 retry's wait: give the in-flight slot up meanwhile."""
        self._in_flight.release()
        pool = _budget.pool
        if pool is not None:
            pool.backoff_begins()

    def _before_retry(self) -> None:
        """Runs before every urllib3 retry: take an in-flight slot back, count, rate-limit."""
        pool = _budget.pool
        if pool is not None:
            pool.backoff_ends()
        self._in_flight.acquire()
        self.stats.count_attempt(self.limiter.acquire(), retry=True)

    def _attempt(self, url: str) -> dict[str, Any]:
        with self._in_flight:
            self.stats.count_attempt(self.limiter.acquire())
            try:
                return self._get_once(url)
            except BaseException as exc:
                if _is_body_fault(exc):
                    _budget.failures += 1
                raise

    def _get_once(self, url: str) -> dict[str, Any]:
        # Redirects are not followed: credentials go to TASKROUTER_BASE_URL and nowhere else
        # (HTTPAdapter.send never follows them; Session.get is told not to).
        if self._prefix is not None and url.startswith(self._prefix):
            request = requests.PreparedRequest()
            request.method, request.url, request.body = "GET", url, None
            request.headers = self._headers()
            request.hooks = {"response": []}
            session = self.session
            response = self._adapter.send(
                request,
                timeout=self.timeout,
                verify=session.verify,
                cert=session.cert,
                proxies=session.proxies,
            )
            content = b"".join(response.iter_content(_READ_CHUNK))
        else:
            response = self.session.get(url, timeout=self.timeout, allow_redirects=False)
            content = response.content
        self.stats.count_bytes(len(content))
        self.clock.observe(response.headers.get("Date"))
        if response.status_code >= 300:
            raise self._error_from(response, content)
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            body = _lenient_json(content)
        if not isinstance(body, dict):
            raise _BodyFault("response body is not a JSON object")
        return body

    def _error_from(self, response: requests.Response, content: bytes) -> TaskRouterError:
        path = urlsplit(response.url).path
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        message = str(body.get("message") or response.reason or "error")
        kwargs: dict[str, Any] = {
            "status": response.status_code,
            "code": body.get("code"),
            "more_info": body.get("more_info"),
            "path": path,
        }
        if response.status_code in (401, 403):
            which = (
                "TWILIO_API_KEY_SID / TWILIO_API_KEY_SECRET"
                if self._auth_kind == "api_key"
                else "TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN"
            )
            return TaskRouterAuthError(
                f"TaskRouter refused the credentials ({message}). Check {which} "
                f"(one of {', '.join(CREDENTIAL_VARIABLES)}) and TASKROUTER_BASE_URL",
                **kwargs,
            )
        if response.status_code == 404:
            return TaskRouterNotFound(message, **kwargs)
        if response.status_code < 400:
            return TaskRouterError(
                "TaskRouter answered with a redirect, which is not followed (credentials are only "
                "sent to TASKROUTER_BASE_URL)",
                **kwargs,
            )
        return TaskRouterError(message, **kwargs)

    def _check_same_origin(self, url: str, path: str | None = None) -> None:
        try:
            origin = _origin(url)
        except ValueError as exc:
            raise TaskRouterBadPage(
                f"TaskRouter sent a next page URL that cannot be followed ({exc})", path=path,
            ) from None
        if origin != self._origin:
            scheme, host, port = origin
            raise UnsafeNextPageUrl(
                f"Refusing to follow a URL on {scheme}://{host}:{port}; only "
                f"{self.base_url} (TASKROUTER_BASE_URL) receives the credentials"
            )

    # -- paging ------------------------------------------------------------------------------
    def iter_pages(
        self, path: str, params: dict[str, Any] | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield each page's records, following ``meta.next_page_url`` exactly as given."""
        # the next URLs already carry PageSize, filters and the PageToken
        url = _with_query(f"{self.base_url}{path}", {"PageSize": self.page_size, **(params or {})})
        followed: set[str] = set()
        while url:
            followed.add(url)
            body = self.get_json(url)
            records, url = self._unwrap_page(body, path)
            self.stats.count_page()
            if url in followed:  # a page pointing back would be read forever, rows piling up
                raise TaskRouterBadPage(
                    f"meta.next_page_url repeats a page already read (after {len(followed)} "
                    "page(s)): paging would never end", path=path)
            if url and (self._prefix is None or not url.startswith(self._prefix)):
                self._check_same_origin(url, path)  # named for this list, before it is asked for
            yield records

    def _unwrap_page(
        self, body: dict[str, Any], path: str
    ) -> tuple[list[dict[str, Any]], str | None]:
        meta = body.get("meta")
        key = meta.get("key") if isinstance(meta, dict) else None
        records = body.get(key) if isinstance(key, str) else None
        if not isinstance(records, list):
            raise TaskRouterBadPage(
                "TaskRouter page without a 'meta.key' list (not a TaskRouter list response?)",
                path=path,
            )
        next_url = meta.get("next_page_url")
        if next_url is not None and not isinstance(next_url, str):
            raise TaskRouterBadPage("meta.next_page_url is neither a URL nor null", path=path)
        return records, next_url or None

    # -- listings ----------------------------------------------------------------------------
    def list_workspaces(self, sids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Every workspace of the account, or exactly the given ones (404 names the variable)."""
        wanted = [s.strip() for s in (sids or []) if s and s.strip()]
        if not wanted:
            return [w for page in self.iter_pages("/v1/Workspaces") for w in page]
        found = []
        for sid in wanted:
            try:
                found.append(self.get_json(f"{self.base_url}/v1/Workspaces/{sid}"))
            except TaskRouterNotFound as exc:
                raise TaskRouterNotFound(
                    f"Workspace {sid} does not exist for these credentials; "
                    "check TASKROUTER_WORKSPACE_SIDS",
                    status=exc.status,
                    code=exc.code,
                    path=exc.path,
                ) from None
        return found

    def list_workers(self, workspace_sid: str) -> list[dict[str, Any]]:
        path = f"/v1/Workspaces/{workspace_sid}/Workers"
        return [w for page in self.iter_pages(path) for w in page]

    def read_worker_reservations(
        self, workspace_sid: str, worker_sid: str, status: str | None = None
    ) -> WorkerRead:
        """All pages of one worker, in order; a vanished worker is an outcome, not an error."""
        path = f"/v1/Workspaces/{workspace_sid}/Workers/{worker_sid}/Reservations"
        params = {"ReservationStatus": status} if status else None
        read = WorkerRead(workspace_sid, worker_sid, [])
        try:
            for page in self.iter_pages(path, params):
                read.records.extend(page)
                read.pages += 1
        except TaskRouterNotFound:
            read.outcome, read.error = "not_found", "worker not found (deleted upstream?)"
        except (TaskRouterAuthError, UnsafeNextPageUrl):
            raise
        except TaskRouterError as exc:
            read.outcome, read.error = "failed", str(exc)
        return read

    def read_reservations(
        self,
        workspace_sid: str,
        worker_sids: Iterable[str],
        status: str | None = None,
        *,
        expect_many_writes: bool = False,
    ) -> Iterator[WorkerRead]:
        """Read many workers with a bounded pool; yields as each finishes, so memory stays flat.

        At most ``concurrency`` requests are in flight, and at most ``8 x concurrency`` workers
        are being read or waiting to be consumed. One worker's pages are read in order. With
        ``reader_process`` the same reads run in a child process (``reader_process`` module):
        always when it is True; with "auto" when the caller ``expect_many_writes`` (a first load),
        where it pays: a child costs ~0.3 s to start and ~0.2 CPU-s per 100k rows to frame, and
        an incremental sync's little warehouse work leaves the GIL to the reader threads anyway.
        """
        if self.reader_process is True or (self.reader_process == "auto" and expect_many_writes):
            from pipelines.taskrouter.reader_process import read_in_child_process

            yield from read_in_child_process(self._credentials, self.base_url, self._child_options,
                                             workspace_sid, worker_sids, status, self.stats)
            return
        window = 8 * self.concurrency
        sids = iter(worker_sids)
        pool = _ReaderPool(
            lambda sid: self.read_worker_reservations(workspace_sid, sid, status),
            self.concurrency,
            self.threads,
        )
        outstanding = 0
        exhausted = False
        try:
            while True:
                while not exhausted and outstanding < window:
                    sid = next(sids, None)
                    if sid is None:
                        exhausted = True
                        break
                    pool.submit(sid)
                    outstanding += 1
                if not outstanding:
                    return
                read = pool.next_result()
                outstanding -= 1
                yield read
        finally:
            pool.close()


def _lenient_json(content: bytes) -> Any:
    """What orjson refuses but JSON allows: an escaped lone surrogate (``"\\ud83d"``, an emoji
    cut in half), or nesting deeper than orjson reads. The standard library parses those;
    lone surrogates become U+FFFD, since no database driver can encode them. Anything else
    is a body fault, retried like a truncated body."""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        raise _BodyFault("response body is not valid JSON") from None
    return _without_surrogates(body)


def _without_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    return value


def _with_query(url: str, params: dict[str, Any]) -> str:
    """``url`` with ``params`` appended to its query, encoded as requests encodes them."""
    pairs = [(k, v) for k, v in params.items() if v is not None]
    if not pairs:
        return url
    return f"{url}{'&' if '?' in url else '?'}{urlencode(pairs, doseq=True)}"


def _backoff_sleep(seconds: float) -> None:
    """tenacity's sleep: the slot is already given up; let the reader pool lend the thread's turn."""
    pool = _budget.pool
    if pool is not None:
        pool.backoff_begins()
    try:
        time.sleep(seconds)
    finally:
        if pool is not None:
            pool.backoff_ends()


class _Failed:
    """An exception raised by a reader, carried to the consuming thread."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_STOP = object()


class _ReaderPool:
    """Reader threads for one ``read_reservations`` call.

    ``concurrency`` readers take worker SIDs from a queue and put each result on another (O(1)
    per worker, no waiting over a set of futures). While a reader backs off before a retry it
    has given its in-flight slot up; if that leaves fewer than ``concurrency`` readers able to
    use the slots, another reader is started (``max_threads`` in all), and once the backoff is
    over the first reader to find more active readers than slots retires. So the slots are kept
    busy during backoffs, as with a fixed pool of ``max_threads``, without that many threads
    contending for the GIL when nothing backs off.
    """

    def __init__(
        self, read: Callable[[str], WorkerRead], concurrency: int, max_threads: int
    ) -> None:
        self._read = read
        self.concurrency = concurrency
        self.max_threads = max(concurrency, max_threads)
        self._todo: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[WorkerRead | _Failed] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()  # readers started and not exited
        self._started = 0
        self._live = 0  # readers started and not retired
        self._backing_off = 0  # of those, how many are sleeping before a retry
        self._closing = False

    # -- consumer side -----------------------------------------------------------------------
    def submit(self, sid: str) -> None:
        self._todo.put(sid)
        if self._live < self.concurrency:
            with self._lock:
                if self._live < self.concurrency and not self._closing:
                    self._start_reader()

    def next_result(self) -> WorkerRead:
        result = self._done.get()
        if isinstance(result, _Failed):
            raise result.exc
        return result

    def close(self) -> None:
        """No new worker is started; reads in progress finish; every reader has exited."""
        with self._lock:
            self._closing = True
            threads = list(self._threads)
        for _ in threads:
            self._todo.put(_STOP)
        for thread in threads:
            thread.join()

    # -- reader side -------------------------------------------------------------------------
    def backoff_begins(self) -> None:
        with self._lock:
            self._backing_off += 1
            if (
                not self._closing
                and self._live - self._backing_off < self.concurrency
                and self._live < self.max_threads
            ):
                # no thread to spare (RuntimeError): the slot idles during this backoff
                with contextlib.suppress(RuntimeError):
                    self._start_reader()

    def backoff_ends(self) -> None:
        with self._lock:
            self._backing_off -= 1

    def _start_reader(self) -> None:  # with self._lock held
        self._started += 1
        thread = threading.Thread(
            target=self._run, name=f"taskrouter-reader-{self._started}", daemon=True
        )
        self._live += 1
        self._threads.add(thread)
        try:
            thread.start()
        except BaseException:
            self._live -= 1
            self._threads.discard(thread)
            raise

    def _run(self) -> None:
        _budget.pool = self
        retired = False
        try:
            while True:
                sid = self._todo.get()
                if sid is _STOP or self._closing:
                    break
                try:
                    result: WorkerRead | _Failed = self._read(sid)
                except BaseException as exc:  # carried to the consumer, raised there
                    result = _Failed(exc)
                self._done.put(result)
                if self._backing_off or self._live > self.concurrency:
                    with self._lock:
                        if self._live - self._backing_off > self.concurrency:
                            self._live -= 1
                            retired = True
                            break
        finally:
            _budget.pool = None
            with self._lock:
                if not retired:
                    self._live -= 1
                self._threads.discard(threading.current_thread())

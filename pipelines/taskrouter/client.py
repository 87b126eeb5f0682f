"""TaskRouter REST client: Basic auth, paging by ``next_page_url``, retries, a shared rate limit.

The parts, each its own module: the tuning (``options.ClientOptions``), what each failure means
(``errors.ERRORS``), the two retry layers and their shared budget (``retry``), paging and its
guards (``paging``), the reader threads (``pool``) and the reader process (``reader_process``).
Every attempt, retries included, first takes a slot from the shared rate limiter and one of
``concurrency`` in-flight slots. 401/403 and redirects are never retried or followed.

The hot path (one request per worker at least) hands a ready ``PreparedRequest`` straight to the
session's ``HTTPAdapter`` instead of ``Session.get`` re-merging session settings, cookies, hooks
and params for every page; the URL and headers it sends are the same
(benchmarks/results/design-notes.md, "The client's hot path").
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from requests.structures import CaseInsensitiveDict

from pipelines.taskrouter.clock import ServerClock
from pipelines.taskrouter.credentials import CREDENTIAL_VARIABLES, Credentials
from pipelines.taskrouter.errors import (
    Action,
    Failure,
    TaskRouterError,
    TaskRouterNotFound,
    answer_error,
    make_error,
    rule_of,
)
from pipelines.taskrouter.options import DEFAULT_BASE_URL, ClientOptions
from pipelines.taskrouter.paging import (
    PageFollower,
    check_same_origin,
    direct_prefix,
    origin,
    parse_body,
    with_query,
)
from pipelines.taskrouter.pool import read_all
from pipelines.taskrouter.ratelimit import RateLimiter
from pipelines.taskrouter.reader_process import read_in_child_process
from pipelines.taskrouter.reads import ClientStats, WorkerRead
from pipelines.taskrouter.retry import (
    BodyFault,
    budget,
    describe,
    fault_of,
    new_limited_retry,
    new_retrying,
    retry_in_tenacity,
)

# Bodies are read in one piece where the length is known (requests' default is 10 KiB chunks).
_READ_CHUNK = 1 << 20


class TaskRouterClient:
    """Reads workspaces, workers and reservations from TaskRouter (or the local emulator)."""

    def __init__(self, credentials: Credentials, base_url: str = DEFAULT_BASE_URL,
                 options: ClientOptions | None = None) -> None:
        self.options = options = options or ClientOptions()
        self.base_url = base_url.rstrip("/")
        origin(self.base_url)  # ValueError: no scheme or host to send the credentials to
        self.page_size, self.concurrency = options.page_size, options.concurrency
        self.reader_process = options.reader_process
        # ``concurrency`` requests in flight at most; a reader backing off gives its slot up
        self._in_flight = threading.BoundedSemaphore(options.concurrency)
        self.stats = ClientStats()
        self.clock = ServerClock()  # TaskRouter's time, from its responses' Date header
        self.limiter = RateLimiter(options.requests_per_second)
        self._credentials = credentials
        which = ("TWILIO_API_KEY_SID / TWILIO_API_KEY_SECRET" if credentials.kind == "api_key"
                 else "TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN")
        self._which = f"{which} (one of {', '.join(CREDENTIAL_VARIABLES)})"
        retry = new_limited_retry(options, self._before_backoff, self._before_retry,
                                  self.limiter.slow_down)
        self._adapter = HTTPAdapter(pool_connections=4, pool_maxsize=options.max_threads + 2,
                                    max_retries=retry)
        self.session = requests.Session()
        self.session.mount("https://", self._adapter)
        self.session.mount("http://", self._adapter)
        self.session.auth = credentials.as_auth()
        self.session.trust_env = False
        self.session.headers.update(
            {"Accept": "application/json", "User-Agent": "taskrouter-warehouse/0.1"}
        )
        # The direct path (_get_once): URLs under base_url + "/" go to the adapter with the
        # session's headers and the Basic auth header requests would add; anything else (an odd
        # base URL, another spelling of the origin) takes Session.get.
        signed = requests.PreparedRequest()
        signed.headers = CaseInsensitiveDict()
        HTTPBasicAuth(*credentials.as_auth())(signed)
        self._authorization = signed.headers["Authorization"]
        self._prefix = direct_prefix(self.base_url)
        self._local = threading.local()  # per thread: its reusable tenacity.Retrying

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> TaskRouterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one request -------------------------------------------------------------------------
    def get_json(self, url: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET one URL on the configured host, with both retry layers; returns the parsed body.

        Raises the ``TaskRouterError`` of the failure's row in ``ERRORS``, carrying the HTTP
        attempts the request made."""
        if params:
            url = with_query(url, params)
        if self._prefix is None or not url.startswith(self._prefix):
            check_same_origin(url, self.base_url)
        retrying = getattr(self._local, "retrying", None)
        if retrying is None:
            retrying = self._local.retrying = new_retrying(self.options, self.stats.count_retry)
        budget.start(self.options.max_attempts, self.options.max_retry_wait)
        try:
            return retrying(self._attempt, url)
        except TaskRouterError as exc:
            exc.attempts = budget.attempts
            raise
        except (requests.exceptions.RequestException, BodyFault) as exc:
            raise make_error(fault_of(exc) or "request_error", path=urlsplit(url).path,
                             attempts=budget.failures, detail=describe(exc)) from None
        finally:
            budget.limit = 0

    def _headers(self) -> CaseInsensitiveDict[str]:
        """What Session.get would send for a GET without cookies: session headers and auth."""
        headers = CaseInsensitiveDict(self.session.headers)
        headers["Authorization"] = self._authorization
        return headers

    def _before_backoff(self) -> None:
        """Runs before every urllib3 retry's wait: give the in-flight slot up meanwhile."""
        self._in_flight.release()
        if budget.pool is not None:
            budget.pool.backoff_begins()

    def _before_retry(self) -> None:
        """Runs before every urllib3 retry: take an in-flight slot back, count, rate-limit."""
        if budget.pool is not None:
            budget.pool.backoff_ends()
        self._in_flight.acquire()
        budget.attempts += 1
        self.stats.count_attempt(self.limiter.acquire(), retry=True)

    def _attempt(self, url: str) -> dict[str, Any]:
        with self._in_flight:
            budget.attempts += 1
            self.stats.count_attempt(self.limiter.acquire())
            try:
                return self._get_once(url)
            except BaseException as exc:
                if retry_in_tenacity(exc):  # a failed attempt of the tenacity layer
                    budget.failures += 1
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
            response = self._adapter.send(request, timeout=self.options.timeout,
                                          verify=session.verify, cert=session.cert,
                                          proxies=session.proxies)
            content = b"".join(response.iter_content(_READ_CHUNK))
        else:
            response = self.session.get(url, timeout=self.options.timeout, allow_redirects=False)
            content = response.content
        self.stats.count_bytes(len(content))
        self.clock.observe(response.headers.get("Date"))
        if response.status_code >= 300:
            raise answer_error(response.status_code, content, response.reason,
                               urlsplit(response.url).path, self._which)
        return parse_body(content)

    # -- paging ------------------------------------------------------------------------------
    def iter_pages(
        self, path: str, params: dict[str, Any] | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield each page's records, following ``meta.next_page_url`` exactly as given."""
        pages = PageFollower(self.base_url, path)
        # the next URLs already carry PageSize, filters and the PageToken
        url = with_query(f"{self.base_url}{path}", {"PageSize": self.page_size, **(params or {})})
        while url:
            records, url = pages.take(url, self.get_json(url))
            self.stats.count_page()
            pages.check_next(url)  # before it is asked for
            yield records

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
                    status=exc.status, code=exc.code, path=exc.path,
                ) from None
        return found

    def list_workers(self, workspace_sid: str) -> list[dict[str, Any]]:
        path = f"/v1/Workspaces/{workspace_sid}/Workers"
        return [w for page in self.iter_pages(path) for w in page]

    def read_worker_reservations(
        self, workspace_sid: str, worker_sid: str, status: str | None = None
    ) -> WorkerRead:
        """All pages of one worker, in order. A read ends as its failure's row of ``ERRORS``
        says: CONFIG failures stop the sync (raised), a gone worker is an outcome, anything else
        fails this worker alone (the next sync reads it again)."""
        path = f"/v1/Workspaces/{workspace_sid}/Workers/{worker_sid}/Reservations"
        params = {"ReservationStatus": status} if status else None
        read = WorkerRead(workspace_sid, worker_sid, [])
        try:
            for page in self.iter_pages(path, params):
                read.records.extend(page)
                read.pages += 1
        except TaskRouterError as exc:
            rule = rule_of(exc)
            if rule.failure is Failure.CONFIG:
                raise
            if rule.action is Action.SKIP:
                return self._confirm_gone(read, exc)
            return read.failed_with(exc)
        return read

    def _confirm_gone(self, read: WorkerRead, not_found: TaskRouterError) -> WorkerRead:
        """A 404 on a worker's reservations marks all of them deleted, so it is believed only
        when the worker itself answers 404 too; otherwise the read failed and marks nothing."""
        try:
            self.get_json(f"{self.base_url}/v1/Workspaces/{read.workspace_sid}"
                          f"/Workers/{read.worker_sid}")
        except TaskRouterError as exc:
            rule = rule_of(exc)
            if rule.failure is Failure.CONFIG:
                raise
            if rule.action is not Action.SKIP:
                return read.failed_with(exc)
            read.outcome, read.error = "not_found", "worker not found (deleted upstream?)"
            return read
        return read.failed_with(make_error(
            "worker_still_there", path=not_found.path, status=not_found.status,
            code=not_found.code, attempts=not_found.attempts,
            message=f"its reservations answered 404 ({not_found.message}) but the worker is "
                    "still there: nothing is marked deleted, the next sync reads it again"))

    def read_reservations(
        self,
        workspace_sid: str,
        worker_sids: Iterable[str],
        status: str | None = None,
        *,
        expect_many_writes: bool = False,
    ) -> Iterator[WorkerRead]:
        """Read many workers on the reader pool, yielding each read as it finishes.

        At most ``concurrency`` requests are in flight and one worker's pages are read in
        order. With ``reader_process`` the same reads run in a child process: always when it
        is True, with "auto" when the caller ``expect_many_writes`` (a first load), the only
        case where the child's start-up and framing pay for themselves
        (benchmarks/results/design-notes.md, "The reader process").
        """
        mode = self.options.reader_process
        if mode is True or (mode == "auto" and expect_many_writes):
            yield from read_in_child_process(self._credentials, self.base_url, self.options,
                                             workspace_sid, worker_sids, status, self.stats)
            return
        yield from read_all(lambda sid: self.read_worker_reservations(workspace_sid, sid, status),
                            worker_sids, self.concurrency, self.options.max_threads)

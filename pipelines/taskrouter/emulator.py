"""A local TaskRouter: the same URLs, list envelope, PageToken paging, Basic auth and error bodies.

It serves the demo, the tests and the benchmarks over real HTTP on 127.0.0.1. Each response
goes out in one ``sendall`` with ``TCP_NODELAY`` set, so keep-alive clients do not meet the
~40 ms Nagle/delayed-ACK stall. Optional faults (``Faults``: latency, a rate limit answering 429
with ``Retry-After``, a fault rate over 429/500/503/reset/truncated/badjson/slow, workers
vanishing after listing, workers that always fail, 403 for everything, a ``next_page_url`` on
another origin) let tests prove the client survives the real API; ``GET /_emulator/stats``
reports what the server saw (requests, faults, 429s, the busiest one-second window, the most
requests in flight at once).

Run it alone: ``python -m pipelines.taskrouter.emulator --workers 50``; it prints one JSON line
with its base URL and credentials.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import struct
import sys
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from pipelines.taskrouter.emulator_api import TaskRouterRoutes
from pipelines.taskrouter.emulator_server import (
    FAULT_KINDS,
    ApiError,
    EmulatorServer,
    Faults,
    ServerStats,
    max_in_window,
)
from pipelines.taskrouter.emulator_world import World, WorldConfig, anchor_from_iso

__all__ = ["FAULT_KINDS", "Emulator", "EmulatorServer", "Faults", "ServerStats", "max_in_window"]
ERROR_DOCS = "https://www.twilio.com/docs/errors/"


class _Handler(TaskRouterRoutes, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EmulatorServer
    _counted = False  # this request is counted in ``stats.in_flight`` and not yet answered

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return  # quiet: the sync's own logs are what matter

    # -- plumbing -----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        head = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        head.append("Content-Type: application/json; charset=utf-8")
        head.append(f"Content-Length: {len(body)}")
        head.append(f"Date: {formatdate(self.server.world.clock, usegmt=True)}")  # its own clock
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}")
        self._answered()
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    def _answered(self) -> None:
        """The request leaves ``in_flight`` once, just BEFORE its one write: counted after it,
        a client that already has its reply could send its next request first and be seen
        twice in flight (the concurrency tests would read 4 where 3 were in flight)."""
        if self._counted:
            self._counted = False
            with self.server.stats.lock:
                self.server.stats.in_flight -= 1

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, orjson.dumps(payload), headers)

    def _send_error(self, err: ApiError) -> None:
        body = {
            "code": err.code,
            "message": err.message,
            "more_info": f"{ERROR_DOCS}{err.code}",
            "status": err.status,
        }
        self._send_json(err.status, body, err.headers)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        world = self.server.world
        return (user, password) in {
            (world.account_sid, world.auth_token),
            (world.api_key_sid, world.api_key_secret),
        }

    # -- verbs --------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        server = self.server
        self._counted = False
        with server.stats.lock:
            server.stats.requests += 1
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            if not self._authorized():
                raise ApiError(
                    401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'}
                )
            if parts.path.startswith("/_emulator/"):
                self._control(method, parts.path, query)
                return
            with server.stats.lock:
                server.stats.api_requests += 1
                server.stats.arrivals.append(time.monotonic())
                server.stats.in_flight += 1
                server.stats.max_in_flight = max(server.stats.max_in_flight,
                                                 server.stats.in_flight)
            self._counted = True
            try:
                self._answer(method, parts.path, query)
            finally:
                self._answered()  # a reset writes nothing: its request ends here
        except ApiError as err:
            self._send_error(err)

    def _answer(self, method: str, path: str, query: dict[str, str]) -> None:
        server = self.server
        try:
            if server.faults.forbidden:
                raise ApiError(403, 20403, "Forbidden: these credentials may not read this account")
            if server.faults.latency_ms:
                time.sleep(server.faults.latency_ms / 1000.0)
            if server.over_rate_limit():
                with server.stats.lock:
                    server.stats.rate_limited += 1
                headers = {"Retry-After": server.faults.retry_after} if server.faults.retry_after_header else {}
                raise ApiError(429, 20429, "Too Many Requests", headers)
            fault = server.roll_fault()
            worker = self._reservations_worker(path)
            if worker is not None and worker in server.faults.failing_workers:
                with server.stats.lock:
                    server.stats.faults["failing_worker"] += 1
                self._send_fault_status(500)
                return
            if worker is not None and server.miss_once(worker):
                with server.stats.lock:
                    server.stats.faults["missing_once"] += 1
                raise ApiError(404, 20404, f"The requested resource {path} was not found")
            if fault in ("429", "500", "503"):
                with server.stats.lock:
                    server.stats.faults[fault] += 1
                self._send_fault_status(int(fault))
                return
            if method != "GET":
                raise ApiError(405, 20004, "Method not allowed")
            body = self._route(path, query)
            if fault is not None:
                with server.stats.lock:
                    server.stats.faults[fault] += 1
                self._send_broken(fault, body)
                return
            self._send(200, body)
        except ApiError as err:
            self._send_error(err)

    @staticmethod
    def _reservations_worker(path: str) -> str | None:
        """The worker sid of a ``.../Workers/{WK}/Reservations`` path, else None."""
        parts = [p for p in path.split("/") if p]
        return parts[4] if len(parts) == 6 and parts[5] == "Reservations" else None

    def _send_fault_status(self, status: int) -> None:
        if status == 429:
            headers = {}
            if self.server.faults.retry_after_header and self.server.chance() < 0.5:
                headers["Retry-After"] = self.server.faults.retry_after
            self._send_error(ApiError(429, 20429, "Too Many Requests", headers))
        elif status == 503:
            self._send_error(ApiError(503, 20503, "Service Unavailable"))
        else:
            self._send_error(ApiError(500, 20500, "Internal Server Error"))

    def _send_broken(self, fault: str, body: bytes) -> None:
        if fault == "reset":
            linger = struct.pack("ii", 1, 0)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            self.close_connection = True
        elif fault == "truncated":
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            self._answered()
            self.wfile.write(head + body[: max(1, len(body) // 2)])
            self.close_connection = True
        elif fault == "badjson":
            self._send(200, body[: max(1, len(body) // 2)])
        elif fault == "slow":
            time.sleep(self.server.faults.slow_seconds)
            self._send(200, body)

    # -- the API ------------------------------------------------------------------------------

    # -- control (tests, demo and benchmarks drive the world through these) ------------------
    def _control(self, method: str, path: str, query: dict[str, str]) -> None:
        server, world = self.server, self.server.world
        if path == "/_emulator/advance" and method == "POST":
            figures = world.advance(float(query.get("minutes", "60")))
            self._send_json(200, {**figures, "clock": world.clock})
        elif path == "/_emulator/truth":
            self._send_json(200, {"reservations": world.truth(), "workers": world.truth_workers()})
        elif path == "/_emulator/ever":
            self._send_json(200, {"reservations": world.ever()})
        elif path == "/_emulator/churn" and method == "POST":
            figures = world.churn(float(query.get("minutes", "5")), int(query.get("new", "2")),
                                  float(query.get("changed", "0.02")))
            self._send_json(200, {**figures, "clock": world.clock})
        elif path == "/_emulator/stats":
            self._send_json(200, {**server.stats.as_dict(), "reservations": world.reservation_count()})
        elif path == "/_emulator/delete_workers" and method == "POST":
            gone = world.delete_workers(int(query.get("count", "1")))
            self._send_json(200, {"deleted": gone})
        elif path == "/_emulator/reset" and method == "POST":
            world.reset()
            self._send_json(200, {"reservations": world.reservation_count(), "clock": world.clock})
        elif path == "/_emulator/prewarm" and method == "POST":
            with world.lock:
                n = sum(
                    len(world.reservation_fragments(w))
                    for ws in world.workers
                    for w in world.live_workers(ws)
                )
            self._send_json(200, {"serialized": n})
        else:
            raise ApiError(404, 20404, f"No emulator control at {path}")


class Emulator:
    """An emulator running in a background thread of this process (tests use this)."""

    def __init__(self, config: WorldConfig | None = None, faults: Faults | None = None,
                 port: int = 0) -> None:
        self.world = World(config or WorldConfig())
        self.server = EmulatorServer(self.world, faults or Faults(), _Handler, port=port)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name="taskrouter-emulator")

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def env(self, api_key: bool = False) -> dict[str, str]:
        """Environment variables that point the pipeline at this emulator."""
        w = self.world
        env = {"TASKROUTER_BASE_URL": self.base_url}
        if api_key:
            env |= {"TWILIO_API_KEY_SID": w.api_key_sid, "TWILIO_API_KEY_SECRET": w.api_key_secret,
                    "TWILIO_ACCOUNT_SID": w.account_sid}
        else:
            env |= {"TWILIO_ACCOUNT_SID": w.account_sid, "TWILIO_AUTH_TOKEN": w.auth_token}
        return env

    def start(self) -> Emulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Serve a local TaskRouter emulator on 127.0.0.1.")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--workspaces", type=int, default=2)
    p.add_argument("--workers", type=int, default=25, help="workers per workspace")
    p.add_argument("--reservations", type=int, default=40, help="reservations per worker")
    p.add_argument("--history-days", type=int, default=30)
    p.add_argument("--anchor", help="ISO time the clock starts at (default: now)")
    p.add_argument("--advance-minutes", type=float, default=0.0,
                   help="advance the clock this much (in steps of at most 60 min) before serving")
    p.add_argument("--dirty", action="store_true", help="serve hostile and unusual records")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--rps", type=float, default=None, help="rate limit; above it answer 429")
    p.add_argument("--rps-burst", type=float, default=None, help="requests allowed at once")
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--fault-kinds", default=",".join(FAULT_KINDS))
    p.add_argument("--slow-seconds", type=float, default=2.0)
    p.add_argument("--vanish-after-listing", type=int, default=0)
    p.add_argument("--prewarm", action="store_true", help="serialize every page before serving")
    p.add_argument("--arrivals-per-hour", type=float, default=2.0, help="new tasks per worker")
    p.add_argument("--pace", type=float, default=1.0, help="stretch every lifecycle duration")
    p.add_argument("--open-share", type=float, default=None,
                   help="share of seed reservations still open (default: by age)")
    p.add_argument("--no-seed-events", action="store_true",
                   help="no Events for the seed's past (a feed that starts now)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    config = WorldConfig(
        seed=args.seed,
        workspaces=args.workspaces,
        workers_per_workspace=args.workers,
        reservations_per_worker=args.reservations,
        history_days=args.history_days,
        anchor=anchor_from_iso(args.anchor),
        dirty=args.dirty,
        arrivals_per_hour=args.arrivals_per_hour,
        pace=args.pace,
        open_share=args.open_share,
        seed_events=not args.no_seed_events,
    )
    faults = Faults(
        latency_ms=args.latency_ms,
        requests_per_second=args.rps,
        rate_limit_burst=args.rps_burst,
        fault_rate=args.fault_rate,
        fault_kinds=tuple(k for k in args.fault_kinds.split(",") if k),
        slow_seconds=args.slow_seconds,
        vanish_after_listing=args.vanish_after_listing,
    )
    emulator = Emulator(config, faults, port=args.port)
    remaining = args.advance_minutes
    while remaining > 0:
        step = min(60.0, remaining)
        emulator.world.advance(step)
        remaining -= step
    if args.prewarm:
        for ws in emulator.world.workers:
            for worker in emulator.world.live_workers(ws):
                emulator.world.reservation_fragments(worker)
    world = emulator.world
    print(json.dumps({
        "base_url": emulator.base_url,
        "account_sid": world.account_sid,
        "auth_token": world.auth_token,
        "api_key_sid": world.api_key_sid,
        "api_key_secret": world.api_key_secret,
        "reservations": world.reservation_count(),
        "clock": world.clock,
    }), flush=True)
    try:
        emulator.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()

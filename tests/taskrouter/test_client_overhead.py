"""The client's cheap paths keep its guarantees.

Readers are started only as slots need them (more only while some back off), a backing-off
reader lends its slot, an abandoned read stops its readers, and the direct adapter path sends
the URL and headers ``Session.get`` would.
"""

from __future__ import annotations

import threading

import pytest
import requests

from pipelines.taskrouter.emulator import Emulator, Faults
from pipelines.taskrouter.paging import with_query
from tests.helpers import make_client, small_world


def _readers() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("taskrouter-reader-"))


def _workers(emu: Emulator) -> tuple[str, list[str]]:
    ws = next(iter(emu.world.workers))
    return ws, [w.sid for w in emu.world.live_workers(ws)]


def test_readers_never_outnumber_the_slots_when_nothing_backs_off():
    with Emulator(small_world(workers_per_workspace=40), Faults(latency_ms=2)) as emu, \
            make_client(emu, concurrency=3) as client:
        ws, sids = _workers(emu)
        most = 0
        reads = []
        for read in client.read_reservations(ws, sids):
            most = max(most, _readers())
            reads.append(read)
        assert sorted(r.worker_sid for r in reads) == sorted(sids)
        assert all(r.complete for r in reads)
        assert emu.server.stats.as_dict()["max_in_flight"] == 3
    assert most == 3
    assert _readers() == 0


def test_a_reader_backing_off_lends_its_slot_to_another():
    # one slot; the first worker always answers 500 and backs off ~1 s in all before failing:
    # meanwhile the other workers are read through the same slot by a lent reader
    with Emulator(small_world(), Faults(latency_ms=2)) as emu:
        ws, sids = _workers(emu)
        emu.server.set_faults(Faults(latency_ms=2, failing_workers=(sids[0],)))
        with make_client(emu, concurrency=1, max_attempts=3, backoff_factor=0.3,
                         backoff_max=1.0) as client:
            reads = list(client.read_reservations(ws, sids))
            stats = client.stats.snapshot()
        assert emu.server.stats.as_dict()["max_in_flight"] == 1
    assert [r.worker_sid for r in reads][-1] == sids[0], "the others did not wait for it"
    assert reads[-1].outcome == "failed"
    assert all(r.complete for r in reads[:-1]) and len(reads) == len(sids)
    assert stats["retries"] == 2 and stats["requests"] == stats["pages"] + 3  # 3 failed attempts
    assert _readers() == 0


def test_abandoning_the_read_stops_the_readers_within_the_window():
    with Emulator(small_world(workers_per_workspace=80), Faults(latency_ms=2)) as emu, \
            make_client(emu, concurrency=2) as client:
        ws, sids = _workers(emu)
        before = emu.server.stats.as_dict()["api_requests"]
        reads = client.read_reservations(ws, sids)
        first = next(reads)
        reads.close()
        assert first.complete
        assert _readers() == 0
        assert emu.server.stats.as_dict()["api_requests"] - before <= 16  # the window: 8 x 2


def test_direct_path_sends_the_headers_session_get_would():
    with Emulator(small_world(), Faults()) as emu, make_client(emu) as client:
        url = f"{emu.base_url}/v1/Workspaces"
        expected = client.session.prepare_request(requests.Request("GET", url)).headers
        assert dict(client._headers()) == dict(expected)
        assert client._prefix == f"{emu.base_url}/"


@pytest.mark.parametrize("url, params", [
    ("http://h/v1/W/WK1/Reservations", {"PageSize": 1000}),
    ("http://h/v1/W/WK1/Reservations", {"PageSize": 50, "ReservationStatus": "pending"}),
    ("http://h/v1/W?x=1", {"PageSize": 5, "ReservationStatus": None}),
    ("http://h/v1/W", {"Status": "a b&c=d/é"}),
])
def test_query_is_encoded_as_requests_encodes_it(url, params):
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, params)
    assert with_query(url, params) == prepared.url

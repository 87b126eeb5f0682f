"""Edges of extraction that used to lose data or a whole load:

- a worker deleted between its page 1 and page 2 (404 on page 2): the records page 1 returned
  can never be read again, so they are stored, and (the worker being gone) marked deleted
  upstream with the rest of its reservations, on both reader modes;
- a reservation holding an unknown field nested deeper than orjson writes (254 levels, while
  it reads 1024): the reader child process carries it as the reader threads load it, and a read
  no encoding can carry fails that one worker, never the whole read;
- a page without ``meta`` fails its worker at once, and the log says so without "retries".
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from pipelines.taskrouter import emulator as emulator_module
from pipelines.taskrouter.emulator import Emulator, Faults
from pipelines.taskrouter.reader_process import _HEADER, write_read
from pipelines.taskrouter.reads import WorkerRead
from tests.helpers import assert_matches_truth, small_world, sync_with_functions, warehouse_frame
from warehouse.schema import reservations

# page_size 10 (sync_with_functions) and 30 reservations a worker: 3 pages each
WORLD = {"workspaces": 1, "workers_per_workspace": 4}


def delete_after_page_one(monkeypatch: pytest.MonkeyPatch, worker_sid: str) -> dict[str, Any]:
    """The emulator deletes ``worker_sid`` right after serving its first reservations page (an
    admin deleting the worker mid-read): its page 2 answers 404. Returns what page 1 held."""
    original = emulator_module._Handler._reservation_page
    served: dict[str, Any] = {}

    def then_delete(self: Any, path: str, query: dict[str, str], worker: Any, page_size: int) -> bytes:
        body = original(self, path, query, worker, page_size)
        if worker.sid == worker_sid and "PageToken" not in query:
            served["page1"] = orjson.loads(body)["reservations"]
            worker.deleted = True  # called under world.lock, like World.delete_workers
        return body

    monkeypatch.setattr(emulator_module._Handler, "_reservation_page", then_delete)
    return served


def assert_page_one_kept_and_worker_marked(url: str, target: str, page1: list[dict[str, Any]]) -> None:
    stored = warehouse_frame(url).set_index("sid")
    assert len(page1) == 10
    missing = [r["sid"] for r in page1 if r["sid"] not in stored.index]
    assert not missing, f"page-1 records of the deleted worker were not stored: {missing[:3]}"
    for record in page1:
        row = stored.loc[record["sid"]]
        assert row["reservation_status"] == record["reservation_status"]
        assert str(row["date_updated"])[:19] == record["date_updated"][:19].replace("T", " ")
    # the worker is gone, so all of its reservations are gone upstream: every row is marked,
    # the ones page 1 just returned included; none of them is deleted from the warehouse
    mine = stored[stored["worker_sid"] == target]
    assert mine["deleted_upstream_at"].notna().all()


def marked_other_than(url: str, target: str) -> set[str]:
    stored = warehouse_frame(url)
    others = stored[stored["worker_sid"] != target]
    return set(others.loc[others["deleted_upstream_at"].notna(), "sid"])


@pytest.mark.parametrize("reader_process", [False, True], ids=["threads", "child"])
def test_a_worker_deleted_mid_paging_keeps_its_page_one_records_on_a_first_load(
        sqlite_url, monkeypatch, reader_process):
    with Emulator(small_world(**WORLD), Faults()) as emu:
        ws = next(iter(emu.world.workers))
        target = sorted(w.sid for w in emu.world.live_workers(ws))[1]
        served = delete_after_page_one(monkeypatch, target)
        figures, _ = sync_with_functions(emu, sqlite_url, reader_process=reader_process)
        truth = emu.world.truth()  # the target is deleted: its rows are no longer in the truth

    assert figures.workers_skipped == [target] and figures.workers_failed == []
    assert figures.rows_seen == len(truth) + 10
    assert figures.inserted == len(truth) + 10
    assert figures.deleted_upstream == 10  # the page-1 records: stored, then marked
    assert_page_one_kept_and_worker_marked(sqlite_url, target, served["page1"])
    assert_matches_truth(sqlite_url, truth, allow_extra=True)
    assert marked_other_than(sqlite_url, target) == set()
    stored = warehouse_frame(sqlite_url)
    assert set(stored["sid"]) == {r["sid"] for r in truth} | {r["sid"] for r in served["page1"]}


@pytest.mark.parametrize("reader_process", [False, True], ids=["threads", "child"])
def test_a_worker_deleted_mid_paging_on_a_later_sync_keeps_page_one_and_marks_the_rest(
        sqlite_url, monkeypatch, reader_process):
    with Emulator(small_world(**WORLD), Faults()) as emu:
        ws = next(iter(emu.world.workers))
        target = sorted(w.sid for w in emu.world.live_workers(ws))[0]
        first, _ = sync_with_functions(emu, sqlite_url, reader_process=reader_process)
        assert first.workers_skipped == [] and first.deleted_upstream == 0
        before = warehouse_frame(sqlite_url)
        stored_of_target = set(before.loc[before["worker_sid"] == target, "sid"])
        emu.world.advance(120)  # statuses move on, new reservations, TaskRouter deletes some
        # TaskRouter documents no order: say half of the target's next page 1 is new to the
        # warehouse (here: removed from it), so page 1 brings records stored nowhere else
        with emu.world.lock:
            worker = emu.world.find_worker(ws, target)
            upcoming = [orjson.loads(f)["sid"] for f in emu.world.reservation_fragments(worker)[:10]]
        unseen = upcoming[::2]
        engine = sa.create_engine(sqlite_url)
        with engine.begin() as conn:
            conn.execute(reservations.delete().where(reservations.c.sid.in_(unseen)))
        engine.dispose()
        stored_of_target -= set(unseen)
        served = delete_after_page_one(monkeypatch, target)
        second, _ = sync_with_functions(emu, sqlite_url, reader_process=reader_process)
        truth = emu.world.truth()

    assert second.workers_skipped == [target] and second.workers_failed == []
    assert [r["sid"] for r in served["page1"]] == upcoming
    assert_page_one_kept_and_worker_marked(sqlite_url, target, served["page1"])
    assert_matches_truth(sqlite_url, truth, allow_extra=True)
    after = warehouse_frame(sqlite_url)
    assert set(before["sid"]) <= set(after["sid"]), "a deleted reservation left the warehouse"
    mine = set(after.loc[after["worker_sid"] == target, "sid"])
    assert mine == stored_of_target | {r["sid"] for r in served["page1"]}
    # other workers: exactly the reservations TaskRouter deleted since the first sync are marked
    assert marked_other_than(sqlite_url, target) == set(after["sid"]) - mine - {r["sid"] for r in truth}


def nest_in_first_record(monkeypatch: pytest.MonkeyPatch, worker_sid: str, depth: int) -> None:
    """Every reservations page of ``worker_sid`` starts with a record carrying an unknown field
    nested ``depth`` levels deep (valid JSON; TaskRouter may add fields at any time)."""
    original = emulator_module._Handler._route
    field = b'"new_field":' + b"[" * depth + b"]" * depth + b","

    def nested(self: Any, path: str, query: dict[str, str]) -> bytes:
        body = original(self, path, query)
        if worker_sid in path and path.endswith("/Reservations"):
            body = body.replace(b'"reservations":[{', b'"reservations":[{' + field, 1)
        return body

    monkeypatch.setattr(emulator_module._Handler, "_route", nested)


@pytest.mark.parametrize("depth", [300, 1000])
def test_a_deeply_nested_record_loads_through_the_child_as_through_the_threads(
        tmp_path, monkeypatch, depth):
    with Emulator(small_world(**WORLD), Faults()) as emu:
        ws = next(iter(emu.world.workers))
        victim = sorted(w.sid for w in emu.world.live_workers(ws))[2]
        nest_in_first_record(monkeypatch, victim, depth)
        truth = emu.world.truth()
        loaded = {}
        for reader_process in (False, True):
            url = f"sqlite:///{tmp_path / f'child_{reader_process}.db'}"
            figures, _ = sync_with_functions(emu, url, reader_process=reader_process)
            assert figures.workers_failed == [] and figures.rejected == 0
            assert figures.inserted == len(truth)
            loaded[reader_process] = assert_matches_truth(url, truth).drop(
                columns=["first_loaded_at", "last_changed_at"])
    assert loaded[True].sort_index().equals(loaded[False].sort_index())


def frames(raw: bytes) -> list[list[Any]]:
    """Decode what the child wrote, as the parent does (orjson, or a pickle opening 0x80)."""
    out, at = [], 0
    while at < len(raw):
        (size,) = _HEADER.unpack_from(raw, at)
        body = raw[at + _HEADER.size: at + _HEADER.size + size]
        out.append(pickle.loads(body) if body[:1] == b"\x80" else orjson.loads(body))
        at += _HEADER.size + size
    return out


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def test_child_frames_orjson_normally_pickle_when_deep_and_fail_one_worker_beyond(tmp_path):
    stats = {"requests": 3.0}
    plain = WorkerRead("WS1", "WKplain", [{"sid": "WR1"}], pages=1)
    deep = WorkerRead("WS1", "WKdeep", [{"sid": "WR2", "new_field": nested(300)}], pages=1)
    hopeless = WorkerRead("WS1", "WKhopeless", [{"sid": "WR3", "x": nested(5000)}], pages=2)
    path = tmp_path / "frames"
    with path.open("wb") as out:
        for read in (plain, deep, hopeless):
            write_read(out, read, stats)
    raw = path.read_bytes()
    assert raw[_HEADER.size:_HEADER.size + 1] == b"["  # the hot path stays orjson
    got = frames(raw)
    assert got[0] == ["read", "WKplain", [{"sid": "WR1"}], 1, "ok", None, stats]
    assert got[1][:5] == ["read", "WKdeep", deep.records, 1, "ok"]
    _, worker, records, pages, outcome, error, _ = got[2]
    assert (worker, records, pages, outcome) == ("WKhopeless", [], 2, "failed")
    assert "WKhopeless" in error and "RecursionError" in error
    assert "TASKROUTER_READER_PROCESS=0" in error


@pytest.mark.parametrize("reader_process", [False, True], ids=["threads", "child"])
def test_a_page_without_meta_fails_its_worker_at_once_and_says_so(sqlite_url, monkeypatch, caplog,
                                                                 reader_process):
    original = emulator_module._Handler._route
    victims: list[str] = []

    def without_meta(self: Any, path: str, query: dict[str, str]) -> bytes:
        body = original(self, path, query)
        if victims and victims[0] in path and "PageToken" in query:
            page = orjson.loads(body)
            del page["meta"]
            body = orjson.dumps(page)
        return body

    monkeypatch.setattr(emulator_module._Handler, "_route", without_meta)
    caplog.set_level(logging.WARNING, logger="pipelines.loading")
    with Emulator(small_world(**WORLD), Faults()) as emu:
        ws = next(iter(emu.world.workers))
        victims.append(sorted(w.sid for w in emu.world.live_workers(ws))[1])
        figures, client = sync_with_functions(emu, sqlite_url, reader_process=reader_process)
    assert figures.workers_failed == victims
    assert client.stats.snapshot()["retries"] == 0  # a bad envelope is not retried
    lines = [r.getMessage() for r in caplog.records if r.name == "pipelines.loading"]
    assert any(line.startswith(f"worker {victims[0]} could not be read: ") for line in lines), lines
    assert not any("after retries" in line for line in lines)

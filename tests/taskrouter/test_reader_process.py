"""The reader process (``pipelines.taskrouter.reader_process``): the sync's reads in a child.

It must be a drop-in for the reader threads: the same reads, outcomes, errors and counters;
faults retried the same way; a child that dies fails the sync clearly without losing what was
loaded; an abandoned read leaves no process behind; credentials never on its command line or in
its environment.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipelines.loading import list_workers_by_workspace, load_reservations, resolve_workspaces
from pipelines.taskrouter import TaskRouterAuthError, UnsafeNextPageUrl
from pipelines.taskrouter.credentials import CREDENTIAL_VARIABLES
from pipelines.taskrouter.emulator import FAULT_KINDS, Emulator, Faults
from pipelines.taskrouter.errors import ReaderProcessFailed
from pipelines.taskrouter.reader_process import _child_environment
from tests.helpers import (
    PROJECT_ROOT,
    assert_matches_truth,
    make_client,
    small_world,
    sync_with_functions,
)
from warehouse.engine import create_warehouse_engine
from warehouse.migrate import ensure_schema


def reader_children() -> list[int]:
    """PIDs of this process's live reader-process children (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        state = stat.rsplit(")", 1)[1].split()[0]
        if parent == os.getpid() and state != "Z" and b"pipelines.taskrouter.reader_process" in cmdline:
            found.append(int(entry.name))
    return found


GHOST = "WK" + "0" * 32  # a worker TaskRouter does not know: 404, "not_found"


def reads_of(emu: Emulator, reader_process: bool) -> tuple[dict[str, tuple], dict[str, float]]:
    with make_client(emu, reader_process=reader_process) as client:
        listing = list_workers_by_workspace(client, resolve_workspaces(client, None))
        before = client.stats.snapshot()
        reads = {}
        for ws, sids in listing.items():
            for read in client.read_reservations(ws, [*sids, GHOST]):
                reads[(ws, read.worker_sid)] = (read.records, read.pages, read.outcome)
        after = client.stats.snapshot()
    return reads, {k: after[k] - before[k] for k in ("requests", "pages", "bytes")}


def test_the_child_reads_exactly_what_the_reader_threads_read_outcomes_and_counters_included():
    with Emulator(small_world(), Faults()) as emu:
        workspace = next(iter(emu.world.workers))
        failing = emu.world.live_workers(workspace)[3].sid
        emu.server.set_faults(Faults(failing_workers=(failing,)))
        in_threads, thread_counts = reads_of(emu, reader_process=False)
        in_child, child_counts = reads_of(emu, reader_process=True)
    outcomes = [read[2] for read in in_child.values()]
    assert outcomes.count("not_found") == 2 and outcomes.count("failed") == 1
    assert in_child[(workspace, failing)][2] == "failed"
    assert sum(len(read[0]) for read in in_child.values()) > 300
    assert in_child == in_threads
    assert child_counts == thread_counts and child_counts["pages"] > 0
    assert reader_children() == []


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_kind_read_through_the_child_loads_exactly_the_truth(kind, sqlite_url):
    with Emulator(small_world(), Faults(fault_rate=0.15, fault_kinds=(kind,), seed=3)) as emu:
        figures, client = sync_with_functions(emu, sqlite_url, reader_process=True)
        truth = emu.world.truth()
        injected = sum(emu.server.stats.as_dict()["faults"].values())
    assert figures.workers_failed == [] and figures.rows_seen == len(truth)
    assert injected > 0 and figures.retries > 0, "the child's retries reach the parent's figures"
    assert_matches_truth(sqlite_url, truth)


def test_refused_credentials_raise_the_same_error_from_the_child():
    with Emulator(small_world(), Faults()) as emu:
        with make_client(emu, reader_process=True) as client:
            listing = list_workers_by_workspace(client, resolve_workspaces(client, None))
        with make_client(emu, token="wrong-S3CR3T", reader_process=True) as client, \
                pytest.raises(TaskRouterAuthError) as caught:
            for ws, sids in listing.items():
                list(client.read_reservations(ws, sids))
    assert caught.value.status == 401 and "HTTP 401" in str(caught.value)
    assert "/Reservations" in (caught.value.path or "")
    assert "S3CR3T" not in str(caught.value)
    assert reader_children() == []


def test_an_unsafe_next_page_url_is_refused_in_the_child_and_raised_in_the_parent():
    with Emulator(small_world(), Faults()) as emu, make_client(emu, reader_process=True) as client:
        listing = list_workers_by_workspace(client, resolve_workspaces(client, None))
        emu.server.set_faults(Faults(next_page_base_url="http://evil.example"))
        with pytest.raises(UnsafeNextPageUrl):
            for ws, sids in listing.items():
                list(client.read_reservations(ws, sids))


def test_a_child_that_dies_fails_the_sync_clearly_and_keeps_what_was_loaded(sqlite_url):
    world = small_world(workers_per_workspace=60)
    with Emulator(world, Faults(latency_ms=15)) as emu:
        engine = create_warehouse_engine(sqlite_url)
        ensure_schema(engine)
        killed: list[int] = []

        def kill_once_rows_are_committed() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    stored = conn.execute(sa.text("SELECT COUNT(*) FROM reservations")).scalar_one()
                children = reader_children()
                if stored > 0 and children:
                    os.kill(children[0], signal.SIGKILL)
                    killed.append(stored)
                    return
                time.sleep(0.01)

        with make_client(emu, reader_process=True, concurrency=2) as client:
            listing = list_workers_by_workspace(client, resolve_workspaces(client, None))
            killer = threading.Thread(target=kill_once_rows_are_committed)
            killer.start()
            with pytest.raises(ReaderProcessFailed) as caught:
                load_reservations(client, engine, listing, batch_rows=50)
            killer.join()
        assert killed, "the child was killed while the sync ran"
        assert "exit code -9" in str(caught.value) and "next sync reads the rest" in str(caught.value)
        with engine.connect() as conn:
            kept = conn.execute(sa.text("SELECT COUNT(*) FROM reservations")).scalar_one()
        assert kept >= killed[0], "rows committed before the child died are kept"
        engine.dispose()
        # the next sync reads everything again and ends equal to the truth
        sync_with_functions(emu, sqlite_url, reader_process=True)
        assert_matches_truth(sqlite_url, emu.world.truth())
    assert reader_children() == []


def test_an_abandoned_read_leaves_no_child_behind():
    with (Emulator(small_world(workers_per_workspace=40), Faults(latency_ms=5)) as emu,
          make_client(emu, reader_process=True) as client):
        listing = list_workers_by_workspace(client, resolve_workspaces(client, None))
        ws, sids = next(iter(listing.items()))
        reads = client.read_reservations(ws, sids)
        first = next(reads)
        assert first.complete and reader_children()
        reads.close()  # what a failing sync does to the iterator
    assert reader_children() == []


def test_auto_reads_a_first_load_in_a_child_and_later_syncs_in_process(warehouse_url):
    """On every database: MySQL/MariaDB defer no indexes, the empty table still tells."""
    with Emulator(small_world(), Faults()) as emu:
        first, client = sync_with_functions(emu, warehouse_url, reader_process="auto")
        assert client.stats.reader_peak_rss_mb > 0, "the first load was read by a child"
        again, client = sync_with_functions(emu, warehouse_url, reader_process="auto")
        assert client.stats.reader_peak_rss_mb == 0, "an incremental sync reads in-process"
        assert first.inserted == first.rows_seen > 0 and again.unchanged == again.rows_seen
        assert_matches_truth(warehouse_url, emu.world.truth())


@pytest.mark.parametrize(("raw", "expected"), [("", "auto"), ("AUTO", "auto"), ("1", "1"),
                                               ("true", "1"), ("0", "0"), ("off", "0")])
def test_the_reader_process_setting(monkeypatch, raw, expected):
    from pipelines.settings import load_settings

    monkeypatch.setenv("TASKROUTER_READER_PROCESS", raw)
    assert load_settings().reader_process == expected


def test_a_misspelt_reader_process_setting_names_the_variable(monkeypatch):
    from pipelines.settings import load_settings

    monkeypatch.setenv("TASKROUTER_READER_PROCESS", "sometimes")
    with pytest.raises(ValueError, match="TASKROUTER_READER_PROCESS='sometimes'"):
        load_settings()
    with pytest.raises(ValueError, match="reader_process must be"):
        make_client_without_emulator(reader_process="sometimes")


def make_client_without_emulator(**options: object) -> None:
    from pipelines.taskrouter import ClientOptions, TaskRouterClient
    from pipelines.taskrouter.credentials import choose_credentials

    TaskRouterClient(choose_credentials("AC" + "0" * 32, "token"), "http://127.0.0.1:9",
                     ClientOptions(**options))  # type: ignore[arg-type]


def test_the_child_gets_no_credentials_in_its_environment(monkeypatch):
    for name in CREDENTIAL_VARIABLES:
        monkeypatch.setenv(name, "S3CR3T-value")
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    env = _child_environment()
    assert not set(CREDENTIAL_VARIABLES) & set(env)
    assert "S3CR3T" not in repr(env)
    root = str(PROJECT_ROOT)
    assert env["PYTHONPATH"].split(os.pathsep) == [root, "/somewhere/else"]


@pytest.mark.parametrize(("raw", "expected"), [("auto", "auto"), ("1", True), ("yes", True),
                                               ("0", False), ("False", False)])
def test_the_resource_config_takes_the_settings_spellings(raw, expected):
    from pipelines.resources import TaskRouterResource

    resource = TaskRouterResource(account_sid="AC" + "0" * 32, auth_token="secret",
                                  base_url="http://127.0.0.1:9", reader_process=raw)
    with resource.client() as client:
        assert client.reader_process == expected

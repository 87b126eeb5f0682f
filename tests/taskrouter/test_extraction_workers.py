"""Workers that vanish or keep failing, unsafe paging, secrets, and dirty records.

A vanished worker (404) is skipped and counted; a worker that still fails after retries does
not stop the others, is listed, fails the run, and the next run fills the gap. A
``next_page_url`` on another origin is refused before a byte goes there. Secrets appear in no
log line, exception, event or metadata value. Dirty records load as they are.
"""

from __future__ import annotations

import logging
import socket
import traceback

import dagster as dg
import pytest

from pipelines.loading import list_workers_by_workspace, load_reservations, resolve_workspaces
from pipelines.taskrouter import UnsafeNextPageUrl
from pipelines.taskrouter.emulator import Emulator, Faults
from tests.helpers import (
    assert_matches_truth,
    make_client,
    materialization_metadata,
    run_sync_job,
    small_world,
    sync_with_functions,
    warehouse_frame,
)
from warehouse.engine import create_warehouse_engine
from warehouse.migrate import ensure_schema


def _all_event_text(instance: dg.DagsterInstance, run_id: str) -> str:
    """Every event of a run, serialized: messages, errors and metadata values."""
    return "\n".join(dg.serialize_value(entry) for entry in instance.all_logs(run_id))


# -- workers that vanish ----------------------------------------------------------------------
def test_worker_deleted_after_listing_is_skipped_and_counted(sqlite_url):
    faults = Faults(vanish_after_listing=2, vanish_on_listing=1)
    with Emulator(small_world(), faults) as emu:
        figures, _ = sync_with_functions(emu, sqlite_url)
        truth = emu.world.truth()
    assert len(figures.workers_skipped) == 2 and figures.workers_failed == []
    assert figures.workers == 16 and figures.workers_read == 16
    assert_matches_truth(sqlite_url, truth)


def test_vanished_worker_through_dagster_is_a_warning_not_a_failure(emulator, sync_env):
    # the job lists workers twice (workers asset, then reservations asset): vanish after the 3rd
    emulator.server.set_faults(Faults(vanish_after_listing=2, vanish_on_listing=3))
    instance = dg.DagsterInstance.ephemeral()
    result = run_sync_job(instance)
    assert result.success
    meta = materialization_metadata(result, "reservations")
    assert meta["workers_skipped"] == 2 and meta["workers_failed"] == 0
    truth = emulator.world.truth()
    stored = assert_matches_truth(sync_env["WAREHOUSE_URL"], truth, allow_extra=True)
    # the vanished workers' reservations arrive from the events (TaskRouter showed them there)
    vanished = {w.sid for ws in emulator.world.workers.values() for w in ws.values() if w.deleted}
    extra = stored.loc[sorted(set(stored.index) - {r["sid"] for r in truth})]
    assert len(vanished) == 2 and set(extra["worker_sid"]) == vanished
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("vanished upstream and were skipped" in m for m in messages)


# -- workers that keep failing ----------------------------------------------------------------
def test_failing_worker_does_not_stop_the_others_and_a_rerun_fills_the_gap(sqlite_url):
    with Emulator(small_world(), Faults()) as emu:
        ws = next(iter(emu.world.workers))
        bad = emu.world.live_workers(ws)[2].sid
        emu.server.set_faults(Faults(failing_workers=(bad,)))
        figures, _ = sync_with_functions(emu, sqlite_url, max_attempts=3)
        truth = emu.world.truth()
        assert figures.workers_failed == [bad] and figures.workers_skipped == []
        others = [r for r in truth if r["worker_sid"] != bad]
        assert_matches_truth(sqlite_url, others)
        assert emu.server.stats.faults["failing_worker"] == 3, "3 attempts, then give up"

        emu.server.set_faults(Faults())
        again, _ = sync_with_functions(emu, sqlite_url)
        assert again.workers_failed == [] and again.inserted == 30
        assert_matches_truth(sqlite_url, truth)


def test_failing_worker_fails_the_dagster_run_after_loading_everything_else(
    emulator, sync_env, monkeypatch
):
    ws = next(iter(emulator.world.workers))
    bad = emulator.world.live_workers(ws)[5].sid
    emulator.server.set_faults(Faults(failing_workers=(bad,)))
    monkeypatch.setenv("TASKROUTER_MAX_ATTEMPTS", "2")
    instance = dg.DagsterInstance.ephemeral()
    result = run_sync_job(instance, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures and bad in _all_event_text(instance, result.run_id)
    text = str(failures[0].event_specific_data.error)  # type: ignore[union-attr]
    assert "1 worker(s) could not be read after retries" in text and bad in text
    truth = emulator.world.truth()
    url = sync_env["WAREHOUSE_URL"]
    stored = assert_matches_truth(url, [r for r in truth if r["worker_sid"] != bad],
                                  allow_extra=True)
    # the events still brought the failing worker's reservations (those created since the
    # events coverage began: nearly all), without their url and links
    theirs = stored[stored["worker_sid"] == bad]
    assert 25 <= len(theirs) <= 30 and theirs["url"].isna().all()

    emulator.server.set_faults(Faults())
    rerun = run_sync_job(instance)
    assert rerun.success
    meta = materialization_metadata(rerun, "reservations")
    # its sweep completes them, and inserts the few only a list shows
    assert (meta["inserted"], meta["filled"]) == (30 - len(theirs), len(theirs))
    assert_matches_truth(url, truth)


# -- paging that points elsewhere -------------------------------------------------------------
def test_next_page_url_on_another_port_is_refused_and_never_contacted(sqlite_url):
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(8)
    trap.settimeout(0.3)
    elsewhere = f"http://127.0.0.1:{trap.getsockname()[1]}"
    try:
        with Emulator(small_world(), Faults(next_page_base_url=elsewhere)) as emu:
            engine = create_warehouse_engine(sqlite_url)
            ensure_schema(engine)
            with make_client(emu, page_size=10) as client:
                listing = list_workers_by_workspace(client, resolve_workspaces(client, None))
                with pytest.raises(UnsafeNextPageUrl) as caught:
                    load_reservations(client, engine, listing)
            engine.dispose()
            message = str(caught.value)
            assert "Refusing to follow" in message and elsewhere in message
            assert emu.base_url in message and "TASKROUTER_BASE_URL" in message
            with pytest.raises(TimeoutError):
                trap.accept()  # nobody knocked: no credentials went to the other port
            with make_client(emu) as client, pytest.raises(UnsafeNextPageUrl):
                client.get_json(emu.base_url.replace("127.0.0.1", "localhost") + "/v1/Workspaces")
    finally:
        trap.close()


def test_foreign_next_page_url_fails_the_dagster_job_with_a_clear_message(emulator, sync_env,
                                                                          monkeypatch):
    emulator.server.set_faults(Faults(next_page_base_url="http://127.0.0.2:9"))
    monkeypatch.setenv("TASKROUTER_PAGE_SIZE", "10")
    result = run_sync_job(raise_on_error=False)
    assert not result.success
    errors = " ".join(str(e.event_specific_data.error)  # type: ignore[union-attr]
                      for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "Refusing to follow a URL on http://127.0.0.2:9" in errors


# -- secrets ----------------------------------------------------------------------------------
def test_secrets_stay_out_of_logs_errors_and_metadata_when_requests_fail(
    emulator, sync_env, monkeypatch, caplog, capfd
):
    caplog.set_level(logging.DEBUG)
    world = emulator.world
    for name, value in emulator.env(api_key=True).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", world.auth_token)  # both pairs set: the key wins
    monkeypatch.setenv("TASKROUTER_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("TASKROUTER_READ_TIMEOUT_S", "0.5")
    ws = next(iter(world.workers))
    emulator.server.set_faults(Faults(fault_rate=0.2, slow_seconds=1.0,
                                      failing_workers=(world.live_workers(ws)[0].sid,)))
    instance = dg.DagsterInstance.ephemeral()
    failed = run_sync_job(instance, raise_on_error=False)
    assert not failed.success
    texts = [_all_event_text(instance, failed.run_id), caplog.text]

    world.api_key_secret = "rotated-secret"  # the key is revoked upstream: 401 on every request
    emulator.server.set_faults(Faults())
    refused = run_sync_job(instance, raise_on_error=False)
    assert not refused.success
    texts.append(_all_event_text(instance, refused.run_id))
    assert "TWILIO_API_KEY_SID / TWILIO_API_KEY_SECRET" in texts[-1]

    out, err = capfd.readouterr()
    texts += [caplog.text, out, err]
    everything = "\n".join(texts)
    assert "Retrying" in everything or "failed after" in everything  # the failures were logged
    for secret in (world.auth_token, emulator.env(api_key=True)["TWILIO_API_KEY_SECRET"]):
        assert secret not in everything


def test_warehouse_password_stays_out_of_logs_and_errors_when_the_database_is_down(
    sync_env, monkeypatch, caplog, capfd
):
    caplog.set_level(logging.DEBUG)
    url = "postgresql://u:SECRETPW@127.0.0.1:1/x"
    engine = create_warehouse_engine(url)
    with pytest.raises(Exception) as caught:  # noqa: B017 - whatever the driver raises
        ensure_schema(engine)
    engine.dispose()
    direct = "".join(traceback.format_exception(caught.value))

    monkeypatch.setenv("WAREHOUSE_URL", url)
    instance = dg.DagsterInstance.ephemeral()
    result = run_sync_job(instance, raise_on_error=False)
    assert not result.success
    events = _all_event_text(instance, result.run_id)
    out, err = capfd.readouterr()
    assert "127.0.0.1" in events  # the failure is reported, with the host...
    for text in (direct, events, caplog.text, out, err):
        assert "SECRETPW" not in text  # ...but never the password


# -- dirty records ----------------------------------------------------------------------------
def test_dirty_records_load_unknown_statuses_offset_dates_and_hostile_names(warehouse_url):
    with Emulator(small_world(dirty=True, workers_per_workspace=18), Faults()) as emu:
        figures, _ = sync_with_functions(emu, warehouse_url)
        truth = emu.world.truth()
    assert figures.rejected == 0
    assert any(r["reservation_status"] == "escalated" for r in truth)
    assert any(r["date_updated"].endswith("+00:00") for r in truth)
    assert any("routing_hint" in r for r in truth)
    stored = assert_matches_truth(warehouse_url, truth)
    names = set(stored["worker_name"].dropna())
    assert "Robert'); DROP TABLE reservations;--" in names
    assert 'Quote " Back\\slash \t tab' in names and "" in names
    assert stored["worker_name"].isna().any()  # a worker without a name
    assert "escalated" in set(stored["reservation_status"])
    assert len(warehouse_frame(warehouse_url)) == len(truth)  # the table is still there

"""Status history, upstream deletions and quarantine, on SQLite, PostgreSQL and MariaDB.

Syncs go through the real path (emulator over loopback HTTP -> ``load_reservations``); the
emulator's clock advances move reservations along and delete finished ones, as TaskRouter does.
Quarantine is fed crafted records through ``load_batch``, the function every sync batch runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipelines.figures import SyncFigures
from pipelines.loading import list_workers_by_workspace, load_batch, load_reservations
from pipelines.taskrouter import ClientOptions, TaskRouterClient, credentials_from_env
from pipelines.taskrouter.emulator import Emulator, Faults
from tests.helpers import CRAFTED_WK, crafted_reservation, small_world
from warehouse.engine import create_warehouse_engine
from warehouse.schema import rejected_records, reservation_status_history, reservations

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
WK = CRAFTED_WK


@pytest.fixture
def world_emulator() -> Iterator[Emulator]:
    with Emulator(small_world(workers_per_workspace=4, reservations_per_worker=25), Faults()) as emu:
        yield emu


def sync(emulator: Emulator, engine: Engine, *, vanish: int = 0) -> SyncFigures:
    """One reservations sync; ``vanish`` workers are deleted upstream between listing and reading."""
    w = emulator.world
    with TaskRouterClient(credentials_from_env(emulator.env()), emulator.base_url,
                          ClientOptions(max_attempts=2, backoff_factor=0.0)) as client:
        listing = list_workers_by_workspace(client, list(w.workspaces))
        if vanish:
            w.delete_workers(vanish)
        return load_reservations(client, engine, listing, batch_rows=60)


def table(engine: Engine, tbl: sa.Table) -> pd.DataFrame:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(tbl)).mappings().all()
    return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in tbl.columns])


def history_keys(engine: Engine) -> set[tuple[str, str, datetime]]:
    frame = table(engine, reservation_status_history)
    return {(s, st, pd.Timestamp(d).tz_convert("UTC").to_pydatetime())
            for s, st, d in zip(frame["sid"], frame["reservation_status"], frame["date_updated"],
                                strict=True)}


def truth_versions(emulator: Emulator) -> dict[str, tuple[str, datetime, str]]:
    """sid -> (status, date_updated, worker_sid) of every live reservation."""
    return {r["sid"]: (r["reservation_status"],
                       datetime.fromisoformat(r["date_updated"].replace("Z", "+00:00")),
                       r["worker_sid"])
            for r in emulator.world.truth()}


def deleted_marks(engine: Engine) -> dict[str, datetime]:
    frame = table(engine, reservations)
    marked = frame[frame["deleted_upstream_at"].notna()]
    return dict(zip(marked["sid"], marked["deleted_upstream_at"], strict=True))


def test_history_and_deletions_follow_the_emulator_clock(world_emulator, engine):
    emulator = world_emulator
    first = sync(emulator, engine)
    truth = truth_versions(emulator)
    assert first.inserted == len(truth) == first.history_rows
    assert first.deleted_upstream == 0
    assert history_keys(engine) == {(s, st, d) for s, (st, d, _) in truth.items()}
    assert table(engine, reservation_status_history)["previous_status"].isna().all()

    for _ in range(2):
        before = table(engine, reservations).set_index("sid")
        marks_before = deleted_marks(engine)
        history_before = history_keys(engine)
        figures = emulator.world.advance(90)
        assert figures["deleted"] and figures["changed"], figures
        fresh = truth_versions(emulator)
        moved = {s for s, (st, _, _) in fresh.items() if s in truth and truth[s][0] != st}
        new = set(fresh) - set(before.index)
        gone = set(truth) - set(fresh)

        result = sync(emulator, engine)
        # deletions are not updates, and the figures say what happened
        assert (result.inserted, result.updated) == (
            len(new), sum(1 for s in fresh if s in truth and truth[s][:2] != fresh[s][:2]))
        assert result.history_rows == len(new) + len(moved)
        assert result.deleted_upstream == len(gone) > 0
        # one history row per insert and per status change, with the status it left
        added = history_keys(engine) - history_before
        assert added == {(s, fresh[s][0], fresh[s][1]) for s in new | moved}
        hist = table(engine, reservation_status_history).set_index(["sid", "reservation_status"])
        for sid in moved:
            assert hist.loc[(sid, fresh[sid][0]), "previous_status"] == truth[sid][0]
        # marked once, at this sync; earlier marks keep their time; nothing else touched
        marks = deleted_marks(engine)
        assert set(marks) == set(marks_before) | gone
        assert all(marks[s] == marks_before[s] for s in marks_before)
        after = table(engine, reservations).set_index("sid")
        assert (after.loc[sorted(gone), "last_changed_at"]
                == before.loc[sorted(gone), "last_changed_at"]).all(), "marking bumped last_changed_at"
        assert (after.loc[sorted(gone), "reservation_status"]
                == before.loc[sorted(gone), "reservation_status"]).all()
        truth = fresh

    # a rerun with no clock advance adds nothing anywhere
    history_before, marks_before = history_keys(engine), deleted_marks(engine)
    rerun = sync(emulator, engine)
    assert (rerun.inserted, rerun.updated, rerun.history_rows, rerun.deleted_upstream,
            rerun.returned_upstream) == (0, 0, 0, 0, 0)
    assert rerun.unchanged == len(truth)
    assert history_keys(engine) == history_before
    assert deleted_marks(engine) == marks_before


def test_failed_reads_mark_nothing_and_vanished_workers_mark_everything(world_emulator, engine):
    emulator = world_emulator
    sync(emulator, engine)
    before = truth_versions(emulator)
    emulator.world.advance(240)
    after = truth_versions(emulator)
    gone_by_worker: dict[str, set[str]] = {}
    for sid, (_, _, worker) in before.items():
        if sid not in after:
            gone_by_worker.setdefault(worker, set()).add(sid)
    vanishing = next(iter(emulator.world.workers[next(iter(emulator.world.workers))]))
    failing = max((w for w in gone_by_worker if w != vanishing),
                  key=lambda w: len(gone_by_worker[w]))
    emulator.server.set_faults(Faults(failing_workers=(failing,)))

    result = sync(emulator, engine, vanish=1)
    assert result.workers_failed == [failing]
    assert result.workers_skipped == [vanishing]
    marks = deleted_marks(engine)
    stored = table(engine, reservations)
    # the failed worker's read proves nothing: none of its rows are marked
    assert not set(marks) & set(stored.loc[stored["worker_sid"] == failing, "sid"])
    # the vanished worker (404) and all its reservations are gone upstream: all marked
    assert set(stored.loc[stored["worker_sid"] == vanishing, "sid"]) <= set(marks)
    expected = set().union(*(s for w, s in gone_by_worker.items() if w not in (failing, vanishing)))
    others = set(stored.loc[~stored["worker_sid"].isin([failing, vanishing]), "sid"])
    assert set(marks) & others == expected

    emulator.server.set_faults(Faults())
    healed = sync(emulator, engine)
    assert healed.deleted_upstream == len(gone_by_worker[failing])
    assert gone_by_worker[failing] <= set(deleted_marks(engine))


# -- crafted records through load_batch -------------------------------------------------------
def rec(sid: Any, status: str = "pending", updated: str = "2026-11-20T10:00:05Z",
        **extra: Any) -> dict[str, Any]:
    return crafted_reservation(sid, status, updated, **extra)


def test_a_sid_that_comes_back_is_cleared_and_marks_are_not_updates(engine):
    a, b = "WR" + "1" * 32, "WR" + "2" * 32
    load_batch(engine, [rec(a), rec(b)], [WK], NOW)
    gone = load_batch(engine, [rec(a)], [WK], NOW + timedelta(minutes=5))
    assert (gone.deleted_upstream, gone.counts.updated, gone.counts.unchanged) == (1, 0, 1)
    assert set(deleted_marks(engine)) == {b}
    # a partial read (not passed as complete) proves no deletion: nothing more is marked
    partial = load_batch(engine, [], None, NOW + timedelta(minutes=10))
    assert partial.deleted_upstream == 0 and set(deleted_marks(engine)) == {b}
    # but any read that returns a sid proves it exists: unchanged, the mark is cleared
    seen_again = load_batch(engine, [rec(b)], None, NOW + timedelta(minutes=12))
    assert (seen_again.returned_upstream, seen_again.counts.unchanged) == (1, 1)
    assert deleted_marks(engine) == {}
    gone_again = load_batch(engine, [rec(a)], [WK], NOW + timedelta(minutes=14))
    assert gone_again.deleted_upstream == 1 and set(deleted_marks(engine)) == {b}
    back = load_batch(engine, [rec(a), rec(b, "accepted", "2026-11-20T10:01:00Z")], [WK],
                      NOW + timedelta(minutes=15))
    assert (back.returned_upstream, back.deleted_upstream, back.counts.updated) == (1, 0, 1)
    assert deleted_marks(engine) == {}
    assert back.history_rows == 1


def test_rejects_are_quarantined_once_and_the_rest_of_the_batch_loads(engine):
    good, odd = "WR" + "3" * 32, "WR" + "4" * 32
    bad_date = "WR" + "5" * 32
    load_batch(engine, [rec(bad_date)], [WK], NOW)
    batch = [
        rec(good),
        rec(odd, "escalated"),  # unknown status: loaded, not rejected
        {k: v for k, v in rec("x").items() if k != "sid"},  # no sid
        rec(bad_date, updated="yesterday-ish"),  # unparseable date, sid known
        rec("WR" + "6" * 32, worker_sid=12345),  # wrong type
        ["not", "an", "object"],
    ]
    first = load_batch(engine, batch, [WK], NOW + timedelta(minutes=1))
    assert (first.counts.inserted, len(first.rejected), first.quarantined) == (2, 4, 4)
    # a rejected record still exists upstream: its sid is not marked deleted
    assert first.deleted_upstream == 0 and deleted_marks(engine) == {}
    stored = table(engine, rejected_records).set_index("sid", drop=False)
    assert len(stored) == 4
    assert stored.loc[bad_date, "reason"] == "date_updated is not an ISO 8601 date"
    assert '"date_updated":"yesterday-ish"' in stored.loc[bad_date, "raw"]
    assert set(stored["reason"]) == {
        "missing sid", "date_updated is not an ISO 8601 date", "worker_sid is not a string",
        "record is not a JSON object"}
    assert (stored["times_rejected"] == 1).all() and stored["fingerprint"].is_unique
    statuses = dict(zip(*table(engine, reservations)[["sid", "reservation_status"]].T.values,
                        strict=True))
    assert statuses[odd] == "escalated"

    again = load_batch(engine, batch, [WK], NOW + timedelta(minutes=2))
    assert (again.counts.inserted, again.counts.updated, again.quarantined, again.history_rows) \
        == (0, 0, 0, 0)
    stored = table(engine, rejected_records)
    assert len(stored) == 4 and (stored["times_rejected"] == 2).all()
    later = pd.to_datetime(stored["last_rejected_at"], utc=True)
    assert (later > pd.to_datetime(stored["first_rejected_at"], utc=True)).all()


def test_broken_records_from_the_emulator_are_quarantined_once_across_clock_advances(engine):
    from warehouse.quarantine import canonical_json, fingerprint

    def broken(records: list[dict[str, Any]]) -> dict[str, str]:
        """fingerprint -> reason-ish kind, for the records the emulator broke."""
        out = {}
        for r in records:
            if "sid" not in r or r["date_updated"] == "not a date" \
                    or not isinstance(r["worker_sid"], str):
                out[fingerprint("reservation", canonical_json(r))] = r.get("sid")
        return out

    config = small_world(workers_per_workspace=4, reservations_per_worker=25, broken=True)
    with Emulator(config, Faults()) as emulator:
        expected = broken(emulator.world.truth())
        assert len(expected) > 10
        first = sync(emulator, engine)
        assert first.rejected == first.quarantined == len(expected)
        assert first.inserted == len(emulator.world.truth()) - len(expected)
        stored = table(engine, rejected_records)
        assert set(stored["fingerprint"]) == set(expected)
        assert set(stored["reason"]) == {"missing sid", "date_updated is not an ISO 8601 date",
                                         "worker_sid is not a string"}

        seen = set(expected)
        for _ in range(2):
            emulator.world.advance(90)
            now_broken = broken(emulator.world.truth())
            result = sync(emulator, engine)
            assert result.rejected == len(now_broken)
            assert result.quarantined == len(set(now_broken) - seen)
            seen |= set(now_broken)
            assert set(table(engine, rejected_records)["fingerprint"]) == seen
            # rejected sids still exist upstream: never marked deleted
            assert not {s for s in now_broken.values() if s} & set(deleted_marks(engine))

        before = table(engine, rejected_records).set_index("fingerprint")
        rerun = sync(emulator, engine)
        after = table(engine, rejected_records).set_index("fingerprint")
        assert (rerun.quarantined, rerun.inserted, rerun.updated, rerun.history_rows) == (0, 0, 0, 0)
        assert rerun.rejected == len(now_broken) and len(after) == len(before)
        assert (after.loc[list(now_broken), "times_rejected"]
                == before.loc[list(now_broken), "times_rejected"] + 1).all()


def test_the_dagster_sync_reports_history_and_deletions(emulator, sync_env):
    from tests.helpers import materialization_metadata, run_sync_job
    from warehouse.feed import read_cursors

    engine = create_warehouse_engine(sync_env["WAREHOUSE_URL"])
    try:
        first = materialization_metadata(run_sync_job(), "reservations")
        before = {r["sid"] for r in emulator.world.truth()}
        assert (first["deleted_upstream"], first["quarantined"]) == (0, 0)
        assert first["history_rows"] == len(history_keys(engine))
        emulator.world.advance(60)
        gone = before - {r["sid"] for r in emulator.world.truth()}
        second = materialization_metadata(run_sync_job(), "reservations")
        assert gone and second["deleted_upstream"] == len(gone)
        assert set(deleted_marks(engine)) == gone
        # the history holds every transition since the events coverage began, at its own time
        # (the events), and nothing TaskRouter did not do (lists add the statuses they saw)
        coverage = min(c.coverage_start for c in read_cursors(engine).values())
        every = {(s, st, datetime.fromtimestamp(t, UTC)) for s, st, t in emulator.world.transitions()}
        held = history_keys(engine)
        assert held <= every
        assert {k for k in every if k[2] >= coverage} <= held
        assert second["history_rows"] == len(held) - first["history_rows"] > 0
    finally:
        engine.dispose()


def test_workers_deleted_before_the_listing_have_their_reservations_marked(world_emulator, engine):
    from pipelines.loading import load_workers

    emulator = world_emulator
    workspaces = list(emulator.world.workspaces)
    with TaskRouterClient(credentials_from_env(emulator.env()), emulator.base_url) as client:
        load_workers(client, engine, workspaces)
        sync(emulator, engine)
        gone_worker = emulator.world.delete_workers(1)[0]
        figures, listing = load_workers(client, engine, workspaces)
        assert gone_worker not in {w for sids in listing.values() for w in sids}
        stored = table(engine, reservations)
        own = set(stored.loc[stored["worker_sid"] == gone_worker, "sid"])
        assert own and figures.deleted_upstream == len(own)
        assert set(deleted_marks(engine)) == own
        again, _ = load_workers(client, engine, workspaces)  # marks once, never again
        assert again.deleted_upstream == 0
        assert sync(emulator, engine).deleted_upstream == 0

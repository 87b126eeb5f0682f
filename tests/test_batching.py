"""How worker reads are cut into the sync's batches (``pipelines.loading._batches``)."""

from __future__ import annotations

from typing import Any

import pipelines.loading as loading
from pipelines.loading import SyncFigures, _batches
from pipelines.taskrouter import WorkerRead


def reads(per_worker: list[int]) -> list[WorkerRead]:
    return [WorkerRead("WS1", f"WK{n:03d}", [{"sid": f"WR{n:03d}-{k}", "worker_sid": f"WK{n:03d}"}
                                             for k in range(count)])
            for n, count in enumerate(per_worker)]


def sizes(batches: list[tuple[list[dict[str, Any]], list[str]]]) -> list[int]:
    return [len(records) for records, _ in batches]


def test_the_first_batch_closes_early_and_the_rest_are_full_sized(monkeypatch):
    monkeypatch.setattr(loading, "FIRST_BATCH_ROWS", 250)
    figures = SyncFigures()
    batches = list(_batches(iter(reads([100] * 30)), 1000, figures))
    assert sizes(batches) == [300, 1000, 1000, 700]  # workers whole: 3, then 10, 10, 7
    assert figures.rows_seen == 3000 and figures.workers_read == 30
    seen = [sid for records, _ in batches for sid in (r["sid"] for r in records)]
    assert len(seen) == len(set(seen)) == 3000
    for records, workers in batches:  # a worker's reservations all in its one batch
        assert {r["worker_sid"] for r in records} == set(workers)


def test_a_batch_size_below_the_first_batch_size_applies_from_the_start(monkeypatch):
    monkeypatch.setattr(loading, "FIRST_BATCH_ROWS", 1000)
    batches = list(_batches(iter(reads([100] * 10)), 300, SyncFigures()))
    assert sizes(batches) == [300, 300, 300, 100]


def test_the_default_first_batch_is_smaller_than_the_default_batch():
    assert 0 < loading.FIRST_BATCH_ROWS < loading.DEFAULT_BATCH_ROWS

"""Where a reservation status sits in its lifecycle, for tie-breaking equal ``date_updated``.

TaskRouter dates have one-second resolution, so two versions of a reservation can share a
``date_updated``; the one further along (pending < accepted < wrapping < terminal) wins.
Unknown statuses (TaskRouter may add some) rank with the terminal ones: they are loaded, never
rejected, and never lose a tie to an earlier known status.
"""

from __future__ import annotations

KNOWN_STATUSES = (
    "pending",
    "accepted",
    "wrapping",
    "completed",
    "rejected",
    "timeout",
    "canceled",
    "rescinded",
)
TERMINAL_STATUSES = frozenset(KNOWN_STATUSES[3:])
STATUS_RANK: dict[str, int] = {"pending": 0, "accepted": 1, "wrapping": 2}
TERMINAL_RANK = 3


def status_rank(status: str | None) -> int:
    return STATUS_RANK.get(status or "", TERMINAL_RANK)

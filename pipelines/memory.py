"""Keep a long sync's resident memory flat on glibc, and its garbage collector quiet.

A sync parses pages on many reader threads; glibc gives each thread its own malloc arena and
keeps freed pages in them, so RSS creeps up with the number of pages read even though Python
holds next to nothing. Capping the arenas and trimming after each committed batch hands that
memory back (benchmarks/results/design-notes.md, "Memory"). Both are no-ops elsewhere.
"""

from __future__ import annotations

import ctypes
import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

M_ARENA_MAX = -8
_libc = None
if sys.platform.startswith("linux"):
    try:
        # glibc's soname, not ctypes.util.find_library (which runs ldconfig in a subprocess);
        # musl has no libc.so.6 and no malloc_trim: both end in the except
        _libc = ctypes.CDLL("libc.so.6")
        _libc.malloc_trim  # noqa: B018 - glibc only (musl has no malloc_trim)
    except (OSError, AttributeError):
        _libc = None


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread arenas (call before the reader threads start)."""
    if _libc is not None:
        _libc.mallopt(M_ARENA_MAX, arenas)


def release_free_memory() -> None:
    """Return freed heap pages to the OS (cheap: a few milliseconds)."""
    if _libc is not None:
        _libc.malloc_trim(0)


SYNC_GEN0_THRESHOLD = 50_000


@contextmanager
def fewer_collections(gen0: int = SYNC_GEN0_THRESHOLD) -> Iterator[None]:
    """Collect garbage less often while a sync runs; restore the settings after.

    A sync allocates a few container objects per record (one dict per reservation and its
    ``links``), so CPython's default gen-0 threshold of 700 runs a collection every few hundred
    records and a full one, walking every live object (Dagster's, pandas' and SQLAlchemy's
    included), every hundred. Freezing what exists at the start takes those out of every walk,
    and a higher gen-0 threshold makes the walks rare (the CPU saved:
    benchmarks/results/design-notes.md). Nothing is leaked: frozen objects become collectable
    again on exit, and cycles made during the sync are still collected, less often.
    """
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(gen0, before[1], before[2])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()

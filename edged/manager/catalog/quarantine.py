"""Unreferenced artifacts: kept, listed, and deleted only on the operator's word.

An artifact that no manifest references is most often a model the operator still wants: a hand
edit dropped it, or a typo in a sha256 pointed its version elsewhere. So nothing deletes it
implicitly. ``STATE/unreferenced.json`` records when each one was first seen unreferenced, so
that ``edged fsck`` and ``edgectl status`` can list them with their age, and an operator who
configured ``install.unreferenced_retention_days`` gets them deleted once they are that old
(``edged fsck --gc`` deletes them at once). An artifact referenced again (the edit was undone,
the same file installed again) leaves the record by itself.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from edged import errors as e
from edged.manager.catalog.store import Store, fsync_dir

log = logging.getLogger("edged.quarantine")

RECORD = "unreferenced.json"


def _read(state_dir: Path) -> dict[str, float]:
    try:
        data = json.loads((state_dir / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, int | float)}


def _write(state_dir: Path, record: dict[str, float]) -> None:
    path, tmp = state_dir / RECORD, state_dir / f".{RECORD}.tmp"
    try:
        with tmp.open("w") as f:
            json.dump(record, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(state_dir)
    except OSError as exc:  # bookkeeping: a full disk must not stop a start or an fsck
        tmp.unlink(missing_ok=True)
        log.warning("cannot record unreferenced artifacts: %s", exc)


def note(state_dir: Path, unreferenced: Iterable[str],
         clock: Callable[[], float] = time.time) -> dict[str, float]:
    """Record the artifacts unreferenced now (keeping when each was first seen); returns the
    record. Artifacts no longer unreferenced (or gone) leave it."""
    state_dir = Path(state_dir)
    old = _read(state_dir)
    now = clock()
    record = {a: old.get(a, now) for a in sorted(unreferenced)}
    if record != old:
        _write(state_dir, record)
    return record


def expired(record: dict[str, float], retention_days: float | None,
            clock: Callable[[], float] = time.time) -> list[str]:
    """The recorded artifacts older than the retention (none without one)."""
    if retention_days is None:
        return []
    limit = clock() - retention_days * 86400
    return sorted(a for a, seen in record.items() if seen <= limit)


def collect_expired(state_dir: Path, store: Store, unreferenced: Iterable[str],
                    retention_days: float | None,
                    clock: Callable[[], float] = time.time) -> list[str]:
    """Record ``unreferenced`` and delete those past the operator's retention; returns them."""
    record = note(state_dir, unreferenced, clock)
    gone = expired(record, retention_days, clock)
    for a in gone:
        store.remove(a)
        log.warning("deleted unreferenced artifact %s: unreferenced for more than %g day(s) "
                    "(install.unreferenced_retention_days)", a[:12], retention_days)
    if gone:
        note(state_dir, set(record) - set(gone), clock)
    return gone


def blob_bytes(store: Store, artifact: str) -> int:
    """Bytes of one stored artifact, 0 where its record is unreadable (fsck reports that)."""
    try:
        return store.blob(artifact).size_bytes
    except (e.EdgedError, OSError, KeyError, ValueError):
        return 0

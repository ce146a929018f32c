"""Installed versions whose artifact is not in the store: found, reported, never served.

A blob can vanish behind edged's back (a restored backup, a hand ``rm``, a failed disk). That
must not stop the daemon — every other model still serves — so the manifests tolerate it at
start, and the manager reports it: an ``artifact_missing`` event and an error in the log at
start, a note on the version in ``edgectl show``/``models`` (and ``engine_info["problem"]`` for
scripts), and ``DATA_LOSS`` on every load or inference of that version.

The check is a ``stat`` per version, cached per catalog state (a commit makes a new one), so
listing 200 models does not stat 200 directories on every call.

A present artifact can still be corrupt: ``ArtifactVerifier`` re-hashes it on every load.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Protocol

from edged import errors as e
from edged.manager.catalog.manifests import ModelEntry, TierState, VersionEntry
from edged.manager.catalog.store import Store
from edged.manager.seams import EventSink


class MissingArtifacts:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: tuple[TierState, dict[tuple[str, int], str]] | None = None

    def of(self, state: TierState) -> dict[tuple[str, int], str]:
        """(model, version) -> artifact id, for every version whose artifact is missing."""
        hit = self._cache
        if hit is not None and hit[0] is state:
            return hit[1]
        out = {(m.name, n): v.store_id for m in state.models.values()
               for n, v in m.versions.items() if not self._store.has(v.store_id)}
        self._cache = (state, out)
        return out

    def error(self, name: str, version: int, artifact: str) -> e.DataLoss:
        return e.DataLoss(
            f"model '{name}' version {version} cannot be served: its artifact {artifact[:12]} "
            f"is missing from the store ({self._store.blobs_dir / artifact}); reinstall the "
            "version (see `edged fsck`)", reason="CORRUPT_ARTIFACT",
            metadata={"model": name, "version": str(version), "artifact": artifact})

    def check(self, name: str, version: int, v: VersionEntry) -> None:
        """DATA_LOSS when version ``v`` of ``name`` has no artifact (a live ``stat``)."""
        if not self._store.has(v.store_id):
            raise self.error(name, version, v.store_id)

    def annotate(self, state: TierState, entry: ModelEntry) -> ModelEntry:
        """``entry`` as shown to clients: each missing version says so in its notes."""
        missing = self.of(state)
        mine = {n: a for (name, n), a in missing.items() if name == entry.name}
        if not mine:
            return entry
        versions = dict(entry.versions)
        for n, artifact in mine.items():
            v = versions[n]
            problem = f"ARTIFACT MISSING: {artifact[:12]} is not in the store; not served"
            versions[n] = replace(v, notes=f"{problem}. {v.notes}".strip(),
                                  engine_info={**v.engine_info, "problem": problem})
        return replace(entry, versions=versions)


class Verifiable(Protocol):
    """What a load names of its artifact (``memory.residency.LoadSpec``)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def artifact(self) -> Path: ...

    @property
    def key(self) -> str: ...


class ArtifactVerifier:
    """Re-hash an artifact on every load, so a corrupt blob is never served.

    Start-up only checks that files exist with the right sizes (hashing a whole store would
    delay readiness by seconds per GB); the full check happens on each load, beside the load
    itself (residency runs it in parallel with the worker's mapping and warm-up, and the model
    is not ready until it passed). No cache keyed by size and mtime: bit rot on flash keeps
    both, and a cached "verified" would let such a blob be served after an unload."""

    def __init__(self, store: Store, events: EventSink) -> None:
        self._store, self._events = store, events

    def __call__(self, spec: Verifiable) -> None:
        sha = spec.artifact.parent.name
        problems = self._store.verify(sha, deep=True)
        if problems:
            self._events.publish("corrupt", spec.name, spec.version, "; ".join(problems))
            raise e.DataLoss(f"model '{spec.key}' is corrupt in the store and will not be "
                             f"served: {'; '.join(problems)} (reinstall it; see `edged fsck`)",
                             reason="CORRUPT_ARTIFACT")

"""Installed versions whose artifact is not in the store: found, reported, never served.

A blob can vanish behind edged's back (a restored backup, a hand ``rm``, a failed disk). That
must not stop the daemon — every other model still serves — so the manifests tolerate it at
start, and the manager reports it: an ``artifact_missing`` event and an error in the log at
start, a note on the version in ``edgectl show``/``models`` (and ``engine_info["problem"]`` for
scripts), and ``DATA_LOSS`` on every load or inference of that version.

The check is a ``stat`` per version, cached per catalog state (a commit makes a new one), so
listing 200 models does not stat 200 directories on every call.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from edged import errors as e


class MissingArtifacts:
    def __init__(self, store: Any) -> None:
        self._store = store
        self._cache: tuple[Any, dict[tuple[str, int], str]] | None = None

    def of(self, state: Any) -> dict[tuple[str, int], str]:
        """(model, version) -> artifact id, for every version whose artifact is missing."""
        if self._store is None:
            return {}
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

    def check(self, name: str, version: int, v: Any) -> None:
        """DATA_LOSS when version ``v`` of ``name`` has no artifact (a live ``stat``)."""
        if self._store is not None and not self._store.has(v.store_id):
            raise self.error(name, version, v.store_id)

    def annotate(self, state: Any, entry: Any) -> Any:
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

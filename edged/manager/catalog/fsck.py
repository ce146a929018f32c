"""Verify the store and manifests: at daemon start (repairing leftovers) and as `edged fsck`.

Problems are reported, never silently "fixed" away: a corrupt or missing artifact that a
manifest references stays in the manifest (the daemon refuses to serve it, with the reason),
while leftovers of interrupted writes (uploads, half-written manifest generations) and
abandoned partial downloads (no download holds them and they have not grown for a day, see
``download``) are removed with ``repair``. It never changes the manifests.

Blobs that no manifest references are never deleted by ``repair`` (so never by a start-up):
a hand edit that dropped a model, or a typo in a sha256, makes a real artifact unreferenced,
and deleting it then loses the model for good. They are kept and listed (``unreferenced``,
with the time each was first seen so, in ``quarantine``) until an explicit ``gc`` (``edged
fsck --gc``) or the retention the operator configured. A state directory that does not exist
is a failure, not an empty store: it is almost always a wrong path.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from edged.manager.catalog import quarantine
from edged.manager.catalog.download import stale_partials
from edged.manager.catalog.manifests import ManifestError, Manifests
from edged.manager.catalog.store import Store
from edged.units import format_size


@dataclass
class FsckReport:
    state_dir: str
    models: int = 0
    blobs: int = 0
    corrupt: list[str] = field(default_factory=list)     # referenced but missing/corrupt
    orphans: list[str] = field(default_factory=list)     # stored but referenced by nothing
    orphan_bytes: int = 0
    collected: bool = False  # the orphans were deleted (gc)
    tmp_leftovers: int = 0
    stale_downloads: int = 0
    manifest_error: str = ""
    repaired: bool = False
    missing_state_dir: bool = False

    @property
    def ok(self) -> bool:
        """Unreferenced artifacts are kept on purpose: listed, not a failure."""
        return not self.missing_state_dir and not self.corrupt and not self.manifest_error \
            and (self.repaired or (not self.tmp_leftovers and not self.stale_downloads))

    def as_dict(self) -> dict[str, object]:
        return {**self.__dict__, "ok": self.ok}

    def describe(self) -> str:
        if self.missing_state_dir:
            return f"{self.state_dir}: the state directory does not exist\n  problems found"
        lines = [f"{self.state_dir}: {self.models} models, {self.blobs} artifacts"]
        lines += [f"  CORRUPT {c}" for c in self.corrupt]
        if self.orphans:
            size = format_size(self.orphan_bytes)
            if self.collected:
                lines.append(f"  deleted {len(self.orphans)} unreferenced artifact(s) ({size})")
            else:
                lines.append(f"  kept {len(self.orphans)} unreferenced artifact(s) ({size}): no "
                             "manifest uses them; `edged fsck --gc` deletes them")
                lines += [f"    {a[:12]}" for a in self.orphans]
        if self.tmp_leftovers:
            verb = "removed" if self.repaired else "found"
            lines.append(f"  {verb} {self.tmp_leftovers} leftover(s) of interrupted writes")
        if self.stale_downloads:
            verb = "removed" if self.repaired else "found"
            lines.append(f"  {verb} {self.stale_downloads} abandoned partial download(s)")
        if self.manifest_error:
            lines.append(f"  MANIFEST {self.manifest_error}")
        lines.append("  ok" if self.ok else "  problems found")
        return "\n".join(lines)


def fsck(state_dir: Path, *, repair: bool = False, deep: bool = True,
         gc: bool = False) -> FsckReport:
    """``repair``: remove leftovers of interrupted writes; ``gc``: also delete unreferenced
    artifacts (only on the operator's word: see the module docstring)."""
    state_dir = Path(state_dir)
    report = FsckReport(str(state_dir), repaired=repair)
    if not state_dir.is_dir():
        report.missing_state_dir = True
        return report
    store = Store(state_dir)
    half_gens = _half_generations(state_dir)
    report.tmp_leftovers = sum(1 for p in store.tmp.iterdir() if p.name != "downloads") + \
        len(half_gens)
    stale = stale_partials(store.tmp)
    report.stale_downloads = len(stale)
    if repair:
        store.cleanup_tmp()
        for p in stale:
            p.unlink(missing_ok=True)
        for p in half_gens:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() \
                else p.unlink(missing_ok=True)
    blobs = store.blobs()
    report.blobs = len(blobs)
    try:
        state = Manifests(state_dir).read_current()
    except (ManifestError, OSError, UnicodeDecodeError) as exc:
        report.manifest_error = str(exc)
        return report
    report.models = len(state.models)
    referenced = set(state.artifacts())
    for sha in sorted(referenced):
        problems = store.verify(sha, deep=deep) if sha in blobs else [f"{sha[:12]}: missing"]
        users = [f"{m.name}:{n}" for m in state.models.values() for n, v in m.versions.items()
                 if sha in v.artifacts]
        report.corrupt += [f"{p} (used by {', '.join(users)})" for p in problems]
    report.orphans = sorted(blobs - referenced)
    report.orphan_bytes = sum(quarantine.blob_bytes(store, a) for a in report.orphans)
    if gc:
        for sha in report.orphans:
            store.remove(sha)
        report.collected = bool(report.orphans)
        Manifests(state_dir).release_kept()  # the generations kept to restore them from
    quarantine.note(state_dir, [] if gc else report.orphans)
    return report


def _half_generations(state_dir: Path) -> list[Path]:
    """Manifest generations a crash left half-written (never in force: the symlink is swapped
    only after a generation is complete), which the next commit would otherwise remove."""
    gens = state_dir / "tiers.d"
    found = sorted(p for p in gens.iterdir() if p.name.startswith(".tmp-gen-")) \
        if gens.is_dir() else []
    link = state_dir / ".tiers.tmp"
    return found + ([link] if link.is_symlink() or link.exists() else [])


def main_json(report: FsckReport) -> str:  # pragma: no cover - CLI helper
    return json.dumps(report.as_dict(), indent=2)

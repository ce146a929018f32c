"""Verify the store and manifests: at daemon start (repairing leftovers) and as `edged fsck`.

Problems are reported, never silently "fixed" away: a corrupt or missing artifact that a
manifest references stays in the manifest (the daemon refuses to serve it, with the reason),
while leftovers of interrupted writes and blobs no manifest references are removed with
``repair``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edged.manager.manifests import ManifestError, Manifests
from edged.manager.store import Store


@dataclass
class FsckReport:
    state_dir: str
    models: int = 0
    blobs: int = 0
    corrupt: list[str] = field(default_factory=list)     # referenced but missing/corrupt
    orphans: list[str] = field(default_factory=list)     # stored but referenced by nothing
    tmp_leftovers: int = 0
    manifest_error: str = ""
    repaired: bool = False

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.manifest_error and (
            self.repaired or (not self.orphans and not self.tmp_leftovers))

    def as_dict(self) -> dict[str, object]:
        return {**self.__dict__, "ok": self.ok}

    def describe(self) -> str:
        lines = [f"{self.state_dir}: {self.models} models, {self.blobs} artifacts"]
        lines += [f"  CORRUPT {c}" for c in self.corrupt]
        if self.orphans:
            verb = "removed" if self.repaired else "found"
            lines.append(f"  {verb} {len(self.orphans)} unreferenced artifact(s)")
        if self.tmp_leftovers:
            verb = "removed" if self.repaired else "found"
            lines.append(f"  {verb} {self.tmp_leftovers} leftover(s) of interrupted writes")
        if self.manifest_error:
            lines.append(f"  MANIFEST {self.manifest_error}")
        lines.append("  ok" if self.ok else "  problems found")
        return "\n".join(lines)


def fsck(state_dir: Path, *, repair: bool = False, deep: bool = True) -> FsckReport:
    state_dir = Path(state_dir)
    report = FsckReport(str(state_dir), repaired=repair)
    if not state_dir.exists():
        return report
    store = Store(state_dir)
    report.tmp_leftovers = sum(1 for p in store.tmp.iterdir() if p.name != "downloads")
    if repair:
        store.cleanup_tmp()
    blobs = store.blobs()
    report.blobs = len(blobs)
    try:
        state = Manifests(state_dir).load()
    except ManifestError as exc:
        report.manifest_error = str(exc)
        return report
    report.models = len(state.models)
    referenced = {v.sha256 for m in state.models.values() for v in m.versions.values()}
    for sha in sorted(referenced):
        problems = store.verify(sha, deep=deep) if sha in blobs else [f"{sha[:12]}: missing"]
        users = [f"{m.name}:{n}" for m in state.models.values() for n, v in m.versions.items()
                 if v.sha256 == sha]
        report.corrupt += [f"{p} (used by {', '.join(users)})" for p in problems]
    report.orphans = sorted(blobs - referenced)
    if repair:
        for sha in report.orphans:
            store.remove(sha)
    return report


def main_json(report: FsckReport) -> str:  # pragma: no cover - CLI helper
    return json.dumps(report.as_dict(), indent=2)

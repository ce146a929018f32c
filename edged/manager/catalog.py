"""What is installed and where: install, tier moves, activate, rollback, remove.

Every operation computes the next ``TierState`` from the current one and commits it with one
atomic manifest switch; blobs that no manifest references any more are deleted only after that
commit, so a crash never leaves a manifest pointing at a missing artifact. One lock serialises
the operations. The capacity rule for tiers is injected (``tier_check``), so the daemon plugs
in its budgets and tests their own.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from edged import errors as e
from edged.manager.manifests import ModelEntry, TierState, VersionEntry
from edged.manager.names import check_name, check_version
from edged.manager.store import Blob, Store

TIERS = ("ram", "swap", "storage")
TierCheck = Callable[[str, TierState, str, VersionEntry], None]


def footprint(v: VersionEntry) -> int:
    return v.measured_bytes or v.estimated_bytes


def budget_tier_check(ram_budget: int, swap_budget: int, reserve: int = 0) -> TierCheck:
    """ram: the whole ram tier must fit at once (it is all loaded); swap: the model alone must
    fit (swap models load on demand and are evicted, so their sum may exceed the budget)."""

    def check(name: str, state: TierState, tier: str, entry: VersionEntry) -> None:
        if tier == "ram":
            total = sum(footprint(m.versions[m.active]) for m in state.models.values()
                        if m.tier == "ram")
            if total > ram_budget:
                raise e.CapacityExceeded(
                    f"putting '{name}' in the ram tier would need {total} bytes for the whole "
                    "tier (ram models are all loaded at once)",
                    e.CapacityNumbers("ram", total, ram_budget, total - footprint(entry),
                                      ram_budget - (total - footprint(entry)), reserve))
        elif tier == "swap" and footprint(entry) > swap_budget:
            raise e.CapacityExceeded(
                f"'{name}' alone needs more than the whole swap budget",
                e.CapacityNumbers("swap", footprint(entry), swap_budget, 0, swap_budget, reserve))

    return check


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace(
        "+00:00", "Z")


class Catalog:
    def __init__(self, store: Store, manifests: Any, *,
                 inspect: Callable[[Path, str | None], Any],
                 tier_check: TierCheck | None = None,
                 clock: Callable[[], str] = _now) -> None:
        self.store = store
        self.manifests = manifests
        self._inspect = inspect
        self._tier_check = tier_check
        self._clock = clock
        self._lock = threading.RLock()

    # -- reads ---------------------------------------------------------------------------
    @property
    def state(self) -> TierState:
        return self.manifests.current  # type: ignore[no-any-return]

    def get(self, name: str) -> ModelEntry:
        m = self.state.models.get(name)
        if m is None:
            raise e.NotFound(f"model '{name}' is not installed", field="name")
        return m

    def list(self) -> list[ModelEntry]:
        state = self.state
        return [state.models[n] for n in sorted(state.models)]

    def reload(self) -> TierState:
        with self._lock:
            return self.manifests.reload()  # type: ignore[no-any-return]

    # -- writes --------------------------------------------------------------------------
    def _commit(self, models: Mapping[str, ModelEntry], check: tuple[str, str] | None = None
                ) -> TierState:
        new = TierState(dict(models), self.state.generation)
        if check is not None and self._tier_check is not None:
            name, tier = check
            m = new.models[name]
            self._tier_check(name, new, tier, m.versions[m.active])
        return self.manifests.commit(new)  # type: ignore[no-any-return]

    def install(self, name: str, blob: Blob, *, version: int | None = None, tier: str = "swap",
                tasks: Sequence[str] = (), quality: float = 0.0, providers: Sequence[str] = (),
                precision: str = "fp32", notes: str = "",
                warmup_shapes: Mapping[str, Sequence[int]] | None = None,
                group: str | None = None, activate: bool = True,
                engine_info: Mapping[str, str] | None = None,
                allow_signature_change: bool = True) -> ModelEntry:
        """Add a verified blob as a version; an artifact that does not inspect cleanly is
        refused and its blob removed (nothing is left behind)."""
        check_name(name)
        if tier not in TIERS:
            raise e.InvalidArgument(f"unknown tier {tier!r}", field="tier")
        with self._lock:
            try:
                info = self._inspect(blob.main, None)
            except e.EdgedError:
                self._drop_if_unreferenced(blob.sha256)
                raise
            models = dict(self.state.models)
            old = models.get(name)
            number = check_version(version) if version else (max(old.versions) + 1 if old
                                                             else 1)
            if old is not None and number in old.versions:
                self._drop_if_unreferenced(blob.sha256)
                raise e.AlreadyExists(f"model '{name}' already has version {number}",
                                      field="version")
            entry = VersionEntry(
                sha256=blob.sha256, size_bytes=blob.size_bytes, format=info.format,
                tasks=tuple(tasks), quality=float(quality), providers=tuple(providers),
                precision=precision or "fp32", notes=notes, signature=info.signature,
                estimated_bytes=int(info.estimate_bytes), installed_at=self._clock(),
                warmup_shapes={k: tuple(v) for k, v in (warmup_shapes or {}).items()},
                group=group or None, engine_info=dict(engine_info or {}))
            if old is None:
                models[name] = ModelEntry(name, tier if activate else "storage", number,
                                          {number: entry})
            else:
                versions = {**old.versions, number: entry}
                if activate:
                    if not allow_signature_change:
                        self._signature_guard(name, old.versions[old.active], entry)
                    models[name] = ModelEntry(name, tier, number, versions, old.active)
                else:
                    models[name] = replace(old, versions=versions)
            try:
                self._commit(models, (name, models[name].tier) if activate else None)
            except e.EdgedError:
                self._drop_if_unreferenced(blob.sha256)
                raise
            return self.get(name)

    def _signature_guard(self, name: str, old: VersionEntry, new: VersionEntry) -> None:
        diff = old.signature.diff(new.signature)
        if diff:
            raise e.SignatureChanged(f"model '{name}': the new version changes the signature "
                                     "(allow it explicitly)", diff)

    def set_tier(self, name: str, tier: str) -> ModelEntry:
        if tier not in TIERS:
            raise e.InvalidArgument(f"unknown tier {tier!r} (ram, swap, storage)", field="tier")
        with self._lock:
            m = self.get(name)
            if m.tier == tier:
                return m
            models = {**self.state.models, name: replace(m, tier=tier)}
            self._commit(models, (name, tier))
            return self.get(name)

    def activate(self, name: str, version: int, *,
                 allow_signature_change: bool = False) -> ModelEntry:
        with self._lock:
            m = self.get(name)
            check_version(version)
            if version not in m.versions:
                raise e.NotFound(f"model '{name}' has no version {version}", field="version")
            if version == m.active:
                return m
            if not allow_signature_change:
                self._signature_guard(name, m.versions[m.active], m.versions[version])
            models = {**self.state.models, name: replace(m, active=version, previous=m.active)}
            self._commit(models, (name, m.tier))
            return self.get(name)

    def rollback(self, name: str) -> ModelEntry:
        """Back to the version active before the last switch, else the highest older one."""
        with self._lock:
            m = self.get(name)
            target = m.previous if m.previous in m.versions and m.previous != m.active else max(
                (v for v in m.versions if v < m.active), default=None)
            if target is None:
                raise e.FailedPrecondition(f"model '{name}' has no earlier version to roll "
                                           "back to")
            return self.activate(name, target, allow_signature_change=True)

    def remove(self, name: str, version: int | None = None, *, force: bool = False,
               in_use: Callable[[str], bool] = lambda k: False) -> list[int]:
        with self._lock:
            m = self.get(name)
            targets = [version] if version else sorted(m.versions)
            for v in targets:
                if v not in m.versions:
                    raise e.NotFound(f"model '{name}' has no version {v}", field="version")
            if m.active in targets and in_use(f"{name}:{m.active}") and not force:
                raise e.FailedPrecondition(f"model '{name}' version {m.active} is active and in "
                                           "use: pass --force to remove it")
            models = dict(self.state.models)
            left = {n: v for n, v in m.versions.items() if n not in targets}
            if not left:
                del models[name]
            elif m.active in targets:
                new_active = m.previous if m.previous in left else max(left)
                models[name] = ModelEntry(name, m.tier, new_active, left, None)
            else:
                models[name] = replace(m, versions=left,
                                       previous=None if m.previous in targets else m.previous)
            self._commit(models)
            for v in targets:
                self._drop_if_unreferenced(m.versions[v].sha256)
            return targets

    def record_measurement(self, name: str, version: int, measured_bytes: int,
                           load_seconds: float) -> None:
        with self._lock:
            m = self.state.models.get(name)
            if m is None or version not in m.versions:
                return
            v = m.versions[version]
            if v.measured_bytes == measured_bytes and v.load_seconds == load_seconds:
                return
            nv = replace(v, measured_bytes=int(measured_bytes),
                         load_seconds=round(float(load_seconds), 4))
            models = {**self.state.models, name: replace(m, versions={**m.versions,
                                                                       version: nv})}
            self._commit(models)

    def _drop_if_unreferenced(self, sha256: str) -> None:
        refs = {v.sha256 for m in self.state.models.values() for v in m.versions.values()}
        if sha256 not in refs:
            self.store.remove(sha256)

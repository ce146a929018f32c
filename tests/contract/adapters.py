"""One small interface over the two ways to drive edged, so that one suite runs against both:
``InProcess`` (a ``ModelManager`` built by ``edged.daemon.build_parts``, the daemon's own
composition) and ``OverSocket`` (``EdgedClient`` to a real daemon on a real Unix socket).

The adapters are thin on purpose: each translates arguments and return values and nothing
else, so what the suite checks is the two interfaces' behaviour. Where they differ (see the
README of this folder's tests, ``test_models_contract.py``'s docstring) the adapter says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edged import errors as e
from edged.views import InstallSpec

CHUNK = 64 << 10


@dataclass(frozen=True)
class ModelInfo:
    name: str
    active: int
    tier: str
    versions: tuple[int, ...]
    loaded: bool


@dataclass(frozen=True)
class Installed:
    name: str
    version: int
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class Check:
    decision: str  # admit | admit_after_evicting | reject
    numbers: e.CapacityNumbers


class Api(Protocol):
    def install(self, name: str, path: Path, *, extra: Sequence[Path] = (),
                tier: str = "swap", version: int | None = None, sha256: str | None = None,
                activate: bool = True) -> Installed: ...
    def list(self, tier: str | None = None) -> list[ModelInfo]: ...
    def show(self, name: str) -> ModelInfo: ...
    def set_tier(self, name: str, tier: str) -> ModelInfo: ...
    def activate(self, name: str, version: int) -> ModelInfo: ...
    def rollback(self, name: str) -> ModelInfo: ...
    def load(self, name: str) -> int: ...
    def unload(self, name: str) -> int: ...
    def check(self, name: str, tier: str | None = None) -> Check: ...
    def infer(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...
    def remove(self, name: str, version: int | None = None) -> list[int]: ...


# -- in process: the manager's own nouns -----------------------------------------------------
@dataclass(frozen=True)
class _FileHeader:
    """What the manager reads of a file header (the servicer hands it the proto)."""

    path: str
    sha256: str
    size_bytes: int


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


class InProcess:
    """Differences from the client: install takes (file header, chunks) pairs, not paths;
    models come back as (catalog entry, loaded view or None); load returns (view, evicted,
    seconds); unload returns freed bytes; check returns a CheckView; infer takes a version and
    output/shared-memory arguments and returns (version, outputs)."""

    def __init__(self, manager: Any) -> None:
        self.m = manager

    def install(self, name: str, path: Path, *, extra: Sequence[Path] = (),
                tier: str = "swap", version: int | None = None, sha256: str | None = None,
                activate: bool = True) -> Installed:
        files = [path, *extra]
        parts = ((_FileHeader(f.name, (sha256 or _sha(f)) if i == 0 else _sha(f),
                              f.stat().st_size), _chunks(f))
                 for i, f in enumerate(files))
        r = self.m.install_stream(InstallSpec(name=name, version=version, tier=tier,
                                              activate=activate), parts)
        return Installed(name, r.version, r.sha256, r.size_bytes)

    @staticmethod
    def _info(row: tuple[Any, Any]) -> ModelInfo:
        entry, loaded = row
        return ModelInfo(entry.name, entry.active, entry.tier, tuple(sorted(entry.versions)),
                         loaded is not None and loaded.state == "ready")

    def list(self, tier: str | None = None) -> list[ModelInfo]:
        return [self._info(r) for r in self.m.list_models(tier=tier)]

    def show(self, name: str) -> ModelInfo:
        return self._info(self.m.get_model(name))

    def set_tier(self, name: str, tier: str) -> ModelInfo:
        return self._info(self.m.set_tier(name, tier))

    def activate(self, name: str, version: int) -> ModelInfo:
        return self._info(self.m.activate(name, version))

    def rollback(self, name: str) -> ModelInfo:
        return self._info(self.m.rollback(name))

    def load(self, name: str) -> int:
        view, _evicted, _seconds = self.m.load(name)
        return int(view.footprint_bytes)

    def unload(self, name: str) -> int:
        return int(self.m.unload(name))

    def check(self, name: str, tier: str | None = None) -> Check:
        v = self.m.check(name=name, artifact_path=None, tier=tier)
        return Check(v.decision, v.numbers)

    def infer(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        _version, outputs = self.m.infer(name, None, dict(inputs), None, {})
        return dict(outputs)

    def remove(self, name: str, version: int | None = None) -> list[int]:
        return list(self.m.remove(name, version))


# -- over the socket: the client's protos ----------------------------------------------------
TIER_NAMES = {1: "ram", 2: "swap", 3: "storage"}
DECISIONS = {1: "admit", 2: "admit_after_evicting", 3: "reject"}


class OverSocket:
    """Differences from the manager: protos (``Model``, ``LoadResponse``, ``CheckResponse``)
    with enum tiers and decisions; unset means 0 (version 0 = "the next one"); the numbers of a
    check are a ``CapacityRejection`` message."""

    def __init__(self, client: Any) -> None:
        self.c = client

    def install(self, name: str, path: Path, *, extra: Sequence[Path] = (),
                tier: str = "swap", version: int | None = None, sha256: str | None = None,
                activate: bool = True) -> Installed:
        r = self.c.install(name, path, extra_files=list(extra), tier=tier,
                           version=version or 0, sha256=sha256, activate=activate)
        return Installed(name, r.version, r.sha256, r.size_bytes)

    @staticmethod
    def _info(m: Any) -> ModelInfo:
        return ModelInfo(m.name, m.active_version, TIER_NAMES[m.tier],
                         tuple(v.version for v in m.versions),
                         m.HasField("loaded") and m.loaded.state == 3)  # LOAD_STATE_READY

    def list(self, tier: str | None = None) -> list[ModelInfo]:
        return [self._info(m) for m in self.c.list_models(tier=tier)]

    def show(self, name: str) -> ModelInfo:
        return self._info(self.c.get_model(name))

    def set_tier(self, name: str, tier: str) -> ModelInfo:
        return self._info(self.c.set_tier(name, tier))

    def activate(self, name: str, version: int) -> ModelInfo:
        return self._info(self.c.activate(name, version))

    def rollback(self, name: str) -> ModelInfo:
        return self._info(self.c.rollback(name))

    def load(self, name: str) -> int:
        return int(self.c.load(name).model.footprint_bytes)

    def unload(self, name: str) -> int:
        return int(self.c.unload(name).freed_bytes)

    def check(self, name: str, tier: str | None = None) -> Check:
        r = self.c.check(name, tier=tier)
        n = r.numbers
        return Check(DECISIONS[r.decision], e.CapacityNumbers(
            n.tier, n.needed_bytes, n.budget_bytes, n.used_bytes, n.free_bytes,
            n.reserve_bytes, tuple(n.evict_candidates)))

    def infer(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(self.c.infer(name, dict(inputs)))

    def remove(self, name: str, version: int | None = None) -> list[int]:
        return list(self.c.remove(name, version or 0))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()

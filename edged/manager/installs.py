"""The three ways an artifact arrives — a client stream, a path on the device, an http(s)
URL — all end in the same store upload and the same catalog install.

The request itself (name, tier, version number) is checked before a byte is written. Whatever
goes wrong after that (checksum, truncated file, disk full, an artifact that does not inspect,
a refused version) the upload is aborted or the blob removed, so nothing is left behind and the
catalog is untouched. Messages name the user's file, never the store's temporary names.

Reinstalling an artifact whose stored copy is corrupt (what a ``DATA_LOSS`` on load tells the
user to do) repairs it: the store replaces the copy by the verified upload (``Store.adopt``),
and a ``repaired`` event says so, besides the ``install`` event.

An install that activates its version is a version switch (``transitions``): the version is
loaded before the commit when the model's current version is loaded or the tier is ram, and
a version that does not load is not installed.

``Installer`` is built on the parts it uses (the store, the catalog as ``InstallCatalog``, the
residency and the specs bridge for the switch, the event sink), never on the manager.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from edged import errors as e
from edged.manager.catalog.manifests import ModelEntry, TierState
from edged.manager.catalog.names import check_name, check_version
from edged.manager.catalog.store import Blob, Store, with_user_names
from edged.manager.memory.residency import Residency
from edged.manager.seams import EventSink
from edged.manager.specs import Specs
from edged.manager.transitions import Transition
from edged.units import format_size
from edged.values import TIERS
from edged.views import InstallSpec

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class InstallResult:
    entry: ModelEntry
    version: int
    sha256: str
    size_bytes: int
    seconds: float


def check_spec(spec: InstallSpec) -> None:
    """What can be refused before anything is written."""
    check_name(spec.name)
    if spec.tier and spec.tier not in TIERS:
        raise e.InvalidArgument(f"unknown tier {spec.tier!r} (ram, swap, storage)",
                                field="tier")
    if spec.version:
        check_version(spec.version)


class InstallCatalog(Protocol):
    """The catalog as installs use it (``catalog.catalog.Catalog``)."""

    @property
    def state(self) -> TierState: ...

    def get(self, name: str) -> ModelEntry: ...

    def install(self, name: str, blob: Blob, *, version: int | None = None, tier: str = "",
                tasks: Sequence[str] = (), quality: float = 0.0, providers: Sequence[str] = (),
                precision: str = "", notes: str = "",
                warmup_shapes: Mapping[str, Sequence[int]] | None = None,
                group: str | None = None, activate: bool = True,
                engine_info: Mapping[str, str] | None = None,
                allow_signature_change: bool = True, inherit: bool = True,
                before_commit: Callable[[ModelEntry], None] | None = None) -> ModelEntry: ...

    def add_variant(self, name: str, version: int | None, variant: str, blob: Blob, *,
                    precision: str, quality: float | None = None,
                    notes: str = "") -> ModelEntry: ...

    def record_measurement(self, name: str, version: int, measured_bytes: int,
                           load_seconds: float, variant: str = "") -> None: ...


class Installer:
    def __init__(self, *, store: Store, catalog: InstallCatalog, residency: Residency,
                 specs: Specs, events: EventSink, allow_local: bool) -> None:
        """``allow_local``: whether an install may name a path on the device
        (``install.allow_local_paths``)."""
        self._store = store
        self._catalog = catalog
        self._res = residency
        self._specs = specs
        self._events = events
        self._allow_local = allow_local

    def from_stream(self, spec: InstallSpec,
                    parts: Iterator[tuple[Any, Iterator[bytes]]]) -> InstallResult:
        """The artifact's files as a client streams them: (file header, chunks) pairs."""
        started = time.monotonic()
        check_spec(spec)
        upload = None
        display = "the artifact"
        try:
            for i, (fh, chunks) in enumerate(parts):
                if i == 0:
                    display = _display(fh.path or "")
                    upload = self._store.begin(fh.sha256 or None, fh.size_bytes or None,
                                               display)
                else:
                    assert upload is not None
                    upload.add_file(fh.path, fh.sha256 or None, fh.size_bytes or None)
                for chunk in chunks:
                    upload.write(chunk)
            if upload is None:
                raise e.InvalidArgument("the install stream carried no file", field="file")
            blob = upload.commit()
            upload = None
        finally:
            if upload is not None:
                upload.abort()
        return self._finish(spec, blob, started, display)

    def from_source(self, spec: InstallSpec, source: str, sha256: str | None,
                    size: int | None, progress: Progress) -> InstallResult:
        """An http(s) URL (with its sha256) or a path on the device."""
        started = time.monotonic()
        check_spec(spec)
        if source.startswith(("http://", "https://")):
            if not sha256:
                raise e.InvalidArgument("installing from a URL needs the expected sha256",
                                        field="sha256")
            from edged.manager.catalog.download import download

            display = _display(urllib.parse.urlsplit(source).path) or source
            blob = download(self._store, source, sha256, size,
                            progress=lambda done, total: progress(done, total or 0, "download"),
                            display=display)
        else:
            if not self._allow_local:
                raise e.PermissionDenied("installing from paths on the device is disabled "
                                         "(install.allow_local_paths)")
            path = Path(source)
            if not path.is_absolute():
                raise e.InvalidArgument(f"{source!r} is not an absolute path", field="source")
            if not path.is_file():
                raise e.NotFound(f"{source} is not a file on the device", field="source")
            display = path.name
            progress(0, path.stat().st_size, "copy")
            blob = self._store.put_file(path, sha256)
            progress(blob.size_bytes, blob.size_bytes, "copy")
        progress(blob.size_bytes, blob.size_bytes, "commit")
        return self._finish(spec, blob, started, display)

    def _finish(self, spec: InstallSpec, blob: Blob, started: float,
                display: str) -> InstallResult:
        if spec.variant:
            return self._finish_variant(spec, blob, started, display)
        before = self._catalog.state.models.get(spec.name)
        switch = Transition(self._res, self._specs, before) if spec.activate else None
        try:
            entry = self._catalog.install(
                spec.name, blob, version=spec.version, tier=spec.tier, tasks=spec.tasks,
                quality=spec.quality, providers=spec.providers, precision=spec.precision,
                notes=spec.notes, warmup_shapes=spec.warmup_shapes, group=spec.group,
                activate=spec.activate, engine_info=spec.engine_info,
                allow_signature_change=spec.allow_signature_change, inherit=spec.inherit,
                before_commit=switch.prepare if switch is not None else None)
        except BaseException as exc:
            if switch is not None:
                switch.abort()
            if isinstance(exc, e.EdgedError):
                with_user_names(exc, {str(blob.main): display, blob.main.name: display})
            raise
        number = max(set(entry.versions) - set(before.versions if before else ()))
        if switch is not None:
            switch.settle(entry)
            if switch.load_result is not None:
                view, seconds = switch.load_result
                self._catalog.record_measurement(spec.name, number, view.footprint_bytes,
                                                 seconds)
        if blob.repaired:
            self._events.publish(
                "repaired", spec.name, number, f"artifact {blob.id[:12]} was corrupt in the "
                f"store ({'; '.join(blob.repaired)}); replaced by this verified upload",
                artifact=blob.id[:12])
        self._events.publish("install", spec.name, number, format_size(blob.size_bytes),
                             sha256=blob.sha256[:12], tier=entry.tier,
                             size_bytes=blob.size_bytes)
        return InstallResult(self._catalog.get(spec.name), number, blob.sha256,
                             blob.size_bytes, time.monotonic() - started)

    def _finish_variant(self, spec: InstallSpec, blob: Blob, started: float,
                        display: str) -> InstallResult:
        """The artifact is another form of an installed version (``--variant``): added to it,
        nothing loaded or switched."""
        try:
            entry = self._catalog.add_variant(
                spec.name, spec.version, spec.variant, blob,
                precision=spec.precision or spec.variant,
                quality=spec.quality or None, notes=spec.notes)
        except BaseException as exc:
            if isinstance(exc, e.EdgedError):
                with_user_names(exc, {str(blob.main): display, blob.main.name: display})
            raise
        number = spec.version or entry.active
        self._events.publish("install", spec.name, number,
                             f"variant {spec.variant}: {blob.size_bytes} bytes",
                             sha256=blob.sha256[:12], variant=spec.variant)
        return InstallResult(entry, number, blob.sha256, blob.size_bytes,
                             time.monotonic() - started)


def _display(path: str) -> str:
    return PurePosixPath(path.replace("\\", "/")).name or "the artifact"

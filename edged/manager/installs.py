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
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from edged import errors as e
from edged.manager.catalog.names import check_name, check_version
from edged.manager.catalog.store import with_user_names
from edged.manager.transitions import Transition
from edged.units import format_size
from edged.views import InstallSpec

Progress = Callable[[int, int, str], None]
TIERS = ("ram", "swap", "storage")


@dataclass(frozen=True)
class InstallResult:
    entry: Any
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


def _finish(manager: Any, spec: InstallSpec, blob: Any, started: float,
            display: str) -> InstallResult:
    if spec.variant:
        return _finish_variant(manager, spec, blob, started, display)
    before = manager.catalog.state.models.get(spec.name)
    switch = Transition(manager, before) if spec.activate else None
    try:
        entry = manager.catalog.install(
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
            manager.catalog.record_measurement(spec.name, number, view.footprint_bytes, seconds)
    if blob.repaired:
        manager.events.publish(
            "repaired", spec.name, number, f"artifact {blob.id[:12]} was corrupt in the store "
            f"({'; '.join(blob.repaired)}); replaced by this verified upload",
            artifact=blob.id[:12])
    manager.events.publish("install", spec.name, number, format_size(blob.size_bytes),
                           sha256=blob.sha256[:12], tier=entry.tier, size_bytes=blob.size_bytes)
    return InstallResult(manager.catalog.get(spec.name), number, blob.sha256, blob.size_bytes,
                         time.monotonic() - started)


def _finish_variant(manager: Any, spec: InstallSpec, blob: Any, started: float,
                    display: str) -> InstallResult:
    """The artifact is another form of an installed version (``--variant``): added to it,
    nothing loaded or switched."""
    try:
        entry = manager.catalog.add_variant(
            spec.name, spec.version, spec.variant, blob,
            precision=spec.precision or spec.variant,
            quality=spec.quality or None, notes=spec.notes)
    except BaseException as exc:
        if isinstance(exc, e.EdgedError):
            with_user_names(exc, {str(blob.main): display, blob.main.name: display})
        raise
    number = spec.version or entry.active
    manager.events.publish("install", spec.name, number,
                           f"variant {spec.variant}: {blob.size_bytes} bytes",
                           sha256=blob.sha256[:12], variant=spec.variant)
    return InstallResult(entry, number, blob.sha256, blob.size_bytes,
                         time.monotonic() - started)


def _display(path: str) -> str:
    return PurePosixPath(path.replace("\\", "/")).name or "the artifact"


def from_stream(manager: Any, spec: InstallSpec,
                parts: Iterator[tuple[Any, Iterator[bytes]]]) -> InstallResult:
    started = time.monotonic()
    check_spec(spec)
    upload = None
    display = "the artifact"
    try:
        for i, (fh, chunks) in enumerate(parts):
            if i == 0:
                display = _display(fh.path or "")
                upload = manager.store.begin(fh.sha256 or None, fh.size_bytes or None, display)
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
    return _finish(manager, spec, blob, started, display)


def from_source(manager: Any, spec: InstallSpec, source: str, sha256: str | None,
                size: int | None, progress: Progress, *, allow_local: bool) -> InstallResult:
    started = time.monotonic()
    check_spec(spec)
    if source.startswith(("http://", "https://")):
        if not sha256:
            raise e.InvalidArgument("installing from a URL needs the expected sha256",
                                    field="sha256")
        from edged.manager.catalog.download import download

        display = _display(urllib.parse.urlsplit(source).path) or source
        blob = download(manager.store, source, sha256, size,
                        progress=lambda done, total: progress(done, total or 0, "download"),
                        display=display)
    else:
        if not allow_local:
            raise e.PermissionDenied("installing from paths on the device is disabled "
                                     "(install.allow_local_paths)")
        path = Path(source)
        if not path.is_absolute():
            raise e.InvalidArgument(f"{source!r} is not an absolute path", field="source")
        if not path.is_file():
            raise e.NotFound(f"{source} is not a file on the device", field="source")
        display = path.name
        progress(0, path.stat().st_size, "copy")
        blob = manager.store.put_file(path, sha256)
        progress(blob.size_bytes, blob.size_bytes, "copy")
    progress(blob.size_bytes, blob.size_bytes, "commit")
    return _finish(manager, spec, blob, started, display)

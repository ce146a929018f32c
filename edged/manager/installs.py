"""The three ways an artifact arrives — a client stream, a path on the device, an http(s)
URL — all end in the same store upload and the same catalog install.

Whatever goes wrong (checksum, truncated file, disk full, bad name) the upload is aborted, so
nothing is left behind and the catalog is untouched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edged import errors as e
from edged.manager.views import InstallSpec

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class InstallResult:
    entry: Any
    version: int
    sha256: str
    size_bytes: int
    seconds: float


def _finish(manager: Any, spec: InstallSpec, blob: Any, started: float) -> InstallResult:
    entry = manager.catalog.install(
        spec.name, blob, version=spec.version, tier=spec.tier, tasks=spec.tasks,
        quality=spec.quality, providers=spec.providers, precision=spec.precision,
        notes=spec.notes, warmup_shapes=spec.warmup_shapes, group=spec.group,
        activate=spec.activate, engine_info=spec.engine_info,
        allow_signature_change=spec.allow_signature_change)
    number = max(v for v, ver in entry.versions.items() if ver.sha256 == blob.sha256)
    manager.events.publish("install", spec.name, number, f"{blob.size_bytes} bytes",
                           sha256=blob.sha256[:12], tier=spec.tier)
    if spec.activate and entry.tier == "ram" and manager.residency is not None:
        manager.residency.load(manager.load_spec(entry, entry.active))
    return InstallResult(entry, number, blob.sha256, blob.size_bytes, time.monotonic() - started)


def from_stream(manager: Any, spec: InstallSpec,
                parts: Iterator[tuple[Any, Iterator[bytes]]]) -> InstallResult:
    from edged.manager.names import check_name

    started = time.monotonic()
    check_name(spec.name)
    upload = None
    try:
        for i, (fh, chunks) in enumerate(parts):
            if i == 0:
                upload = manager.store.begin(fh.sha256 or None, fh.size_bytes or None)
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
    return _finish(manager, spec, blob, started)


def from_source(manager: Any, spec: InstallSpec, source: str, sha256: str | None,
                size: int | None, progress: Progress, *, allow_local: bool) -> InstallResult:
    from edged.manager.names import check_name

    started = time.monotonic()
    check_name(spec.name)
    if source.startswith(("http://", "https://")):
        if not sha256:
            raise e.InvalidArgument("installing from a URL needs the expected sha256",
                                    field="sha256")
        from edged.manager.download import download

        blob = download(manager.store, source, sha256, size,
                        progress=lambda done, total: progress(done, total or 0, "download"))
    else:
        if not allow_local:
            raise e.PermissionDenied("installing from paths on the device is disabled "
                                     "(install.allow_local_paths)")
        path = Path(source)
        if not path.is_absolute():
            raise e.InvalidArgument(f"{source!r} is not an absolute path", field="source")
        if not path.is_file():
            raise e.NotFound(f"{source} is not a file on the device", field="source")
        progress(0, path.stat().st_size, "copy")
        blob = manager.store.put_file(path, sha256)
        progress(blob.size_bytes, blob.size_bytes, "copy")
    progress(blob.size_bytes, blob.size_bytes, "commit")
    return _finish(manager, spec, blob, started)

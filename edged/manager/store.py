"""The content-addressed artifact store under ``STATE/store/<sha256>/``.

Every artifact version is a directory named by the sha256 of its main file, holding that file
(``model.onnx`` / ``model.engine``), its ONNX external-data files under their own relative
names, and ``files.json`` — written last, so its presence means the directory is complete.
Writes go to ``STATE/tmp/`` first (fsync every file), then one ``rename`` of the whole
directory into ``store/`` and an fsync of ``store/``: a crash leaves either nothing or a
complete artifact, and ``cleanup_tmp`` removes the leftovers of interrupted writes at start.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from edged import errors as e
from edged.hashing import sha256_file
from edged.manager.names import check_relpath

CHUNK = 1 << 20
MAIN_NAMES = {"onnx": "model.onnx", "tensorrt": "model.engine"}
_HEX = set("0123456789abcdef")


def is_sha256(text: str) -> bool:
    return isinstance(text, str) and len(text) == 64 and set(text) <= _HEX


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Blob:
    sha256: str
    size_bytes: int  # main file + external data
    main: Path
    files: dict[str, int] = field(default_factory=dict)  # relname -> bytes (main included)


class Upload:
    """A streaming write into ``STATE/tmp``: ``write`` chunks, ``add_file`` for the next file,
    ``commit`` to verify and move into the store, ``abort`` to leave nothing behind."""

    def __init__(self, store: Store, expected_sha256: str | None,
                 expected_size: int | None) -> None:
        if expected_sha256 is not None and not is_sha256(expected_sha256.lower()):
            raise e.InvalidArgument("sha256 must be 64 hex characters", field="sha256")
        self._store = store
        self.dir = store.tmp / f"upload-{uuid.uuid4().hex}"
        self.dir.mkdir(parents=True)
        self._files: list[dict[str, Any]] = []
        self._fh: BinaryIO | None = None
        self._total = 0
        store.check_disk(expected_size or 0)
        self._open("model.bin", expected_sha256, expected_size)

    def _open(self, rel: str, sha: str | None, size: int | None) -> None:
        self._close_current()
        path = self.dir / "data" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("wb")
        self._files.append({"rel": rel, "path": path, "hash": hashlib.sha256(), "size": 0,
                            "expect_sha": sha.lower() if sha else None, "expect_size": size})

    def add_file(self, rel: str, sha256: str | None = None, size: int | None = None) -> None:
        rel = check_relpath(rel)
        if any(f["rel"] == rel for f in self._files[1:]):
            raise e.InvalidArgument(f"file {rel!r} sent twice", field="file.path")
        self._store.check_disk(size or 0)
        self._open(rel, sha256, size)

    def write(self, chunk: bytes) -> None:
        assert self._fh is not None
        cur = self._files[-1]
        self._total += len(chunk)
        if self._total > self._store.max_artifact_bytes:
            raise e.ResourceExhausted(
                f"upload exceeds the configured limit of {self._store.max_artifact_bytes} bytes "
                "(install.max_artifact_bytes)", field="chunk", reason="RESOURCE_EXHAUSTED")
        if cur["expect_size"] is not None and cur["size"] + len(chunk) > cur["expect_size"]:
            raise e.DataLoss(f"{cur['rel']}: more bytes than the announced "
                             f"{cur['expect_size']}", field="file.size_bytes")
        self._fh.write(chunk)
        cur["hash"].update(chunk)
        cur["size"] += len(chunk)

    def _close_current(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def commit(self, fmt: str | None = None) -> Blob:
        self._close_current()
        for f in self._files:
            digest = f["hash"].hexdigest()
            if f["expect_size"] is not None and f["size"] != f["expect_size"]:
                raise e.DataLoss(f"{f['rel']}: got {f['size']} bytes, expected "
                                 f"{f['expect_size']} (truncated transfer?)",
                                 field="file.size_bytes")
            if f["expect_sha"] is not None and digest != f["expect_sha"]:
                raise e.DataLoss(f"{f['rel']}: sha256 {digest} does not match the expected "
                                 f"{f['expect_sha']}", field="sha256")
            f["sha"] = digest
        main = self._files[0]
        if main["size"] == 0:
            raise e.InvalidArgument("the artifact is empty", field="file")
        return self._store.adopt(self.dir, self._files, fmt)

    def abort(self) -> None:
        try:
            self._close_current()
        except OSError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class Store:
    def __init__(self, root: Path, *, disk_reserve_bytes: int = 512 << 20,
                 max_artifact_bytes: int = 8 << 30,
                 external_files: Callable[[Path], list[str]] = lambda p: [],
                 detect_format: Callable[[Path], str] | None = None,
                 disk_usage: Callable[[Path], Any] = shutil.disk_usage,
                 crash_hook: Callable[[str], None] | None = None) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "store"
        self.tmp = self.root / "tmp"
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.disk_reserve = disk_reserve_bytes
        self.max_artifact_bytes = max_artifact_bytes
        self._external_files = external_files
        self._detect = detect_format
        self._disk_usage = disk_usage
        self.crash_hook = crash_hook

    def _hook(self, point: str) -> None:
        if self.crash_hook is not None:
            self.crash_hook(point)

    def check_disk(self, needed: int) -> None:
        """Refuse before writing when the disk would fill past the reserve."""
        free = self._disk_usage(self.root).free
        if needed > self.max_artifact_bytes:
            raise e.ResourceExhausted(f"artifact of {needed} bytes exceeds the configured limit "
                                      f"of {self.max_artifact_bytes} bytes", field="size_bytes")
        if free - needed < self.disk_reserve:
            raise e.ResourceExhausted(
                f"disk would fill: {needed} bytes needed, {free} free, {self.disk_reserve} kept "
                "in reserve (budgets.disk_reserve)", field="size_bytes", reason="DISK_FULL")

    def begin(self, expected_sha256: str | None = None,
              expected_size: int | None = None) -> Upload:
        return Upload(self, expected_sha256, expected_size)

    def put_file(self, path: Path, expected_sha256: str | None = None) -> Blob:
        """Copy a file on the device (and the external data next to it) into the store."""
        path = Path(path)
        extras = self._external_files(path)
        sizes = [path.stat().st_size] + [(path.parent / r).stat().st_size for r in extras
                                         if (path.parent / r).is_file()]
        up = self.begin(expected_sha256, path.stat().st_size)
        try:
            self.check_disk(sum(sizes))
            for i, src in enumerate([path, *(path.parent / check_relpath(r) for r in extras)]):
                if i:
                    if not src.is_file():
                        raise e.InvalidArgument(f"external data file {src.name} is missing "
                                                f"next to {path.name}", field="source")
                    up.add_file(str(src.relative_to(path.parent)))
                with src.open("rb") as f:
                    while chunk := f.read(CHUNK):
                        up.write(chunk)
            blob = up.commit()
            up = None  # type: ignore[assignment]
            return blob
        finally:
            if up is not None:
                up.abort()

    def adopt(self, updir: Path, files: list[dict[str, Any]], fmt: str | None) -> Blob:
        """Verify an upload's format, lay it out, and rename it into the store atomically."""
        data = updir / "data"
        main_tmp = data / "model.bin"
        kind = fmt or (self._detect(main_tmp) if self._detect else "onnx")
        main_name = MAIN_NAMES.get(kind, "model.bin")
        sha = files[0]["sha"]
        os.replace(main_tmp, data / main_name)
        manifest = {"main": main_name, "format": kind,
                    "files": {main_name if i == 0 else f["rel"]: {"sha256": f["sha"],
                                                                  "size": f["size"]}
                              for i, f in enumerate(files)}}
        _write_json(data / "files.json", manifest)
        fsync_dir(data)
        target = self.blobs_dir / sha
        self._hook("store.before_rename")
        if target.exists():
            shutil.rmtree(updir, ignore_errors=True)  # same content already stored
        else:
            os.rename(data, target)
            fsync_dir(self.blobs_dir)
            shutil.rmtree(updir, ignore_errors=True)
        self._hook("store.after_rename")
        return self.blob(sha)

    def blob(self, sha256: str) -> Blob:
        meta = self._meta(sha256)
        files = {rel: int(info["size"]) for rel, info in meta["files"].items()}
        return Blob(sha256, sum(files.values()), self.blobs_dir / sha256 / meta["main"], files)

    def _meta(self, sha256: str) -> dict[str, Any]:
        if not is_sha256(sha256):
            raise e.InvalidArgument(f"{sha256!r} is not a sha256", field="sha256")
        try:
            return json.loads((self.blobs_dir / sha256 / "files.json").read_text())  # type: ignore[no-any-return]
        except FileNotFoundError:
            raise e.NotFound(f"artifact {sha256[:12]} is not in the store") from None
        except ValueError:
            raise e.DataLoss(f"artifact {sha256[:12]}: files.json is corrupt") from None

    def path(self, sha256: str) -> Path:
        return self.blob(sha256).main

    def has(self, sha256: str) -> bool:
        return is_sha256(sha256) and (self.blobs_dir / sha256 / "files.json").exists()

    def blobs(self) -> set[str]:
        return {p.name for p in self.blobs_dir.iterdir() if p.is_dir() and is_sha256(p.name)}

    def remove(self, sha256: str) -> None:
        target = self.blobs_dir / sha256
        if target.exists():
            trash = self.tmp / f"rm-{uuid.uuid4().hex}"
            os.rename(target, trash)
            fsync_dir(self.blobs_dir)
            shutil.rmtree(trash, ignore_errors=True)

    def verify(self, sha256: str, deep: bool = True) -> list[str]:
        """Problems with one stored artifact: missing files, wrong sizes or hashes."""
        try:
            meta = self._meta(sha256)
        except e.EdgedError as exc:
            return [str(exc)]
        problems = []
        for rel, info in meta["files"].items():
            p = self.blobs_dir / sha256 / rel
            if not p.is_file():
                problems.append(f"{sha256[:12]}/{rel}: missing")
            elif p.stat().st_size != info["size"]:
                problems.append(f"{sha256[:12]}/{rel}: {p.stat().st_size} bytes, expected "
                                f"{info['size']}")
            elif deep and sha256_file(p) != info["sha256"]:
                problems.append(f"{sha256[:12]}/{rel}: sha256 mismatch (corrupt)")
        if deep and sha256_file(self.blobs_dir / sha256 / meta["main"]) != sha256 and \
                not problems:
            problems.append(f"{sha256[:12]}: main file does not hash to its name")
        return problems

    def cleanup_tmp(self) -> int:
        """Remove leftovers of interrupted writes; returns how many were removed."""
        n = 0
        for p in self.tmp.iterdir():
            if p.name == "downloads":
                continue
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            n += 1
        return n



def _write_json(path: Path, obj: Any) -> None:
    with path.open("w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())

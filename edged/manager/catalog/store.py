"""The content-addressed artifact store under ``STATE/store/<artifact id>/``.

Every artifact is a directory holding its main file (``model.onnx`` / ``model.engine``), its
ONNX external-data files under their own relative names, and ``files.json`` (each file's size
and sha256) — written last, so its presence means the directory is complete. Writes go to
``STATE/tmp/`` first (fsync every file), then one ``rename`` of the whole directory into
``store/`` and an fsync of ``store/``: a crash leaves either nothing or a complete artifact,
and ``cleanup_tmp`` removes the leftovers of interrupted writes at start. A full disk is
``RESOURCE_EXHAUSTED``/``DISK_FULL``: before writing (``check_disk``, the announced size), as an
upload grows (``check_room``: an upload may announce no size) and when a write itself fails with
``ENOSPC`` (``diskfull``); the upload is then aborted and leaves nothing.

Identity. The directory is named by the *artifact id*, which covers every file of the artifact:
without external data it is the sha256 of the main file; with external data it is the sha256 of
a canonical listing of the main file's sha256 and each data file's name and sha256
(``artifact_id``). An ONNX file whose graph is unchanged while its weights (in the data file)
changed is therefore a different artifact: an upload is only deduplicated into an existing
directory when every file is the same — and when that copy still verifies: a stored copy that
rotted is replaced by the upload (``_repair``), so reinstalling a corrupt model repairs it.
The user-facing ``sha256`` of a version stays the main file's (what users pass with
``--sha256`` and what ``edgectl`` shows); the manifests record the artifact id beside it
(``artifact:``) only when the two differ. Stores written before this rule
named external-data artifacts by their main file's sha256; ``verify`` accepts that name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from edged import errors as e
from edged.hashing import sha256_file
from edged.manager.catalog import crashpoints, diskfull
from edged.manager.catalog.names import check_relpath

log = logging.getLogger("edged.store")

CHUNK = 1 << 20
MAIN_NAMES = {"onnx": "model.onnx", "tensorrt": "model.engine"}
MAIN_TMP = "model.bin"  # the main file's name until its format is known
_HEX = set("0123456789abcdef")


def is_sha256(text: str) -> bool:
    return isinstance(text, str) and len(text) == 64 and set(text) <= _HEX


def artifact_id(main_sha256: str, data_files: Mapping[str, str]) -> str:
    """The store name of an artifact: its main file's sha256 when it has no external data,
    else the sha256 of ``{"main": sha, "data": [[relname, sha], ...]}`` (sorted, compact JSON)."""
    if not data_files:
        return main_sha256
    listing = {"main": main_sha256, "data": sorted([rel, sha] for rel, sha in data_files.items())}
    text = json.dumps(listing, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(b"edged-artifact-v1\n" + text.encode()).hexdigest()


def with_user_names(exc: e.EdgedError, names: Mapping[str, str]) -> e.EdgedError:
    """Replace temporary or store file names in an error's message by the user's own (an
    error about ``model.bin`` tells the user nothing about which of their files is wrong)."""
    msg = exc.message
    for old, new in sorted(names.items(), key=lambda kv: -len(kv[0])):  # paths before names
        if old and new and old != new:
            msg = msg.replace(old, new)
    exc.message = msg
    exc.args = (msg,)
    return exc


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Blob:
    id: str  # the artifact id: the store directory's name (see the module docstring)
    sha256: str  # the main file's sha256 (user-facing)
    size_bytes: int  # main file + external data
    main: Path
    files: dict[str, int] = field(default_factory=dict)  # relname -> bytes (main included)
    repaired: tuple[str, ...] = ()  # the stored copy's problems this upload replaced


class Upload:
    """A streaming write into ``STATE/tmp``: ``write`` chunks, ``add_file`` for the next file,
    ``commit`` to verify and move into the store, ``abort`` to leave nothing behind.

    ``display`` is the user's name for the main file, used in every message about it."""

    def __init__(self, store: Store, expected_sha256: str | None,
                 expected_size: int | None, display: str = MAIN_TMP) -> None:
        if expected_sha256 is not None and not is_sha256(expected_sha256.lower()):
            raise e.InvalidArgument("sha256 must be 64 hex characters", field="sha256")
        store.check_disk(expected_size or 0)  # before anything exists on disk
        self._store = store
        self.display = display or MAIN_TMP
        self.dir = store.tmp / f"upload-{uuid.uuid4().hex}"
        self._files: list[dict[str, Any]] = []
        self._fh: BinaryIO | None = None
        self._total = 0
        try:
            with store.disk_guard(self.display):
                self.dir.mkdir(parents=True)
                self._open(MAIN_TMP, expected_sha256, expected_size)
        except BaseException:
            self.abort()
            raise

    def _label(self, f: dict[str, Any]) -> str:
        return self.display if f is self._files[0] else str(f["rel"])

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
        with self._store.disk_guard(rel):
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
            raise e.DataLoss(f"{self._label(cur)}: more bytes than the announced "
                             f"{cur['expect_size']}", field="file.size_bytes")
        self._store.check_room(len(chunk), self._total - len(chunk), self._label(cur))
        with self._store.disk_guard(self._label(cur)):
            self._fh.write(chunk)
        cur["hash"].update(chunk)
        cur["size"] += len(chunk)

    def _close_current(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fh.close()  # closes the descriptor even when the flush failed (a full disk)

    def commit(self, fmt: str | None = None) -> Blob:
        with self._store.disk_guard(self.display):
            self._close_current()
        for f in self._files:
            digest = f["hash"].hexdigest()
            if f["expect_size"] is not None and f["size"] != f["expect_size"]:
                raise e.DataLoss(f"{self._label(f)}: got {f['size']} bytes, expected "
                                 f"{f['expect_size']} (truncated transfer?)",
                                 field="file.size_bytes")
            if f["expect_sha"] is not None and digest != f["expect_sha"]:
                raise e.DataLoss(f"{self._label(f)}: sha256 {digest} does not match the expected "
                                 f"{f['expect_sha']}", field="sha256")
            f["sha"] = digest
        main = self._files[0]
        if main["size"] == 0:
            raise e.InvalidArgument(f"{self.display}: the artifact is empty", field="file")
        with self._store.disk_guard(self.display):
            return self._store.adopt(self.dir, self._files, fmt, display=self.display)

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
        """``crash_hook``: called at each named crash point (tests); by default the one armed
        by ``EDGED_CRASH_AT`` (see ``crashpoints``), which is None when that is not set."""
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
        self.crash_hook = crash_hook if crash_hook is not None else crashpoints.env_hook()

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

    def check_room(self, chunk: int, written: int, label: str) -> None:
        """As an upload grows: refuse the next chunk when it would eat into the reserve (an
        upload that announces no size passes ``check_disk(0)``; without this it would fill
        the disk before anything refused it)."""
        free = self._disk_usage(self.root).free
        if free - chunk < self.disk_reserve:
            raise e.ResourceExhausted(
                f"disk would fill: {written} bytes of {label} written so far, {free} free, "
                f"{self.disk_reserve} kept in reserve (budgets.disk_reserve)", field="chunk",
                reason="DISK_FULL")

    def disk_guard(self, what: str) -> Any:
        """``ENOSPC``/``EDQUOT`` while writing ``what`` -> ``ResourceExhausted(DISK_FULL)``."""
        return diskfull.guard(self.root, what)

    def begin(self, expected_sha256: str | None = None,
              expected_size: int | None = None, display: str = MAIN_TMP) -> Upload:
        return Upload(self, expected_sha256, expected_size, display)

    def put_file(self, path: Path, expected_sha256: str | None = None,
                 display: str | None = None) -> Blob:
        """Copy a file on the device (and the external data next to it) into the store."""
        path = Path(path)
        extras = self._external_files(path)
        sizes = [path.stat().st_size] + [(path.parent / r).stat().st_size for r in extras
                                         if (path.parent / r).is_file()]
        up = self.begin(expected_sha256, path.stat().st_size, display or path.name)
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

    def adopt(self, updir: Path, files: list[dict[str, Any]], fmt: str | None,
              display: str = MAIN_TMP) -> Blob:
        """Verify an upload's format, lay it out, and rename it into the store atomically.

        The directory is named by the artifact id, so an existing directory of that name
        holds exactly these files (main and data) and is reused."""
        data = updir / "data"
        main_tmp = data / MAIN_TMP
        try:
            kind = fmt or (self._detect(main_tmp) if self._detect else "onnx")
        except e.EdgedError as exc:
            raise with_user_names(exc, {str(main_tmp): display, MAIN_TMP: display}) from None
        main_name = MAIN_NAMES.get(kind, MAIN_TMP)
        data_files = {f["rel"]: f["sha"] for f in files[1:]}
        if main_name in data_files:
            raise e.InvalidArgument(f"external data file {main_name!r} would replace "
                                    f"{display} in the store", field="file.path")
        aid = artifact_id(files[0]["sha"], data_files)
        os.replace(main_tmp, data / main_name)
        manifest = {"id": aid, "main": main_name, "format": kind,
                    "files": {main_name if i == 0 else f["rel"]: {"sha256": f["sha"],
                                                                  "size": f["size"]}
                              for i, f in enumerate(files)}}
        _write_json(data / "files.json", manifest)
        fsync_dir(data)
        target = self.blobs_dir / aid
        self._hook("store.before_rename")
        repaired: list[str] = []
        if self.has(aid):  # the very same files are stored already, unless that copy rotted
            repaired = self.verify(aid, deep=True)
            if repaired:
                self._repair(aid, data, [main_name, *data_files], repaired)
            shutil.rmtree(updir, ignore_errors=True)
        else:
            if target.exists():  # a directory without files.json: not an artifact, set aside
                os.rename(target, self.tmp / f"rm-{uuid.uuid4().hex}")
            os.rename(data, target)
            fsync_dir(self.blobs_dir)
            shutil.rmtree(updir, ignore_errors=True)
        self._hook("store.after_rename")
        return replace(self.blob(aid), repaired=tuple(repaired))

    def _repair(self, aid: str, data: Path, rels: list[str], problems: list[str]) -> None:
        """Replace a stored copy that no longer matches its ``files.json`` by the verified
        upload of the same artifact: file by file with ``rename`` (each file is the old or
        the new one at any instant, never missing: a crash midway leaves a copy that is at
        worst as corrupt as before), ``files.json`` last. A worker that has the old file
        open keeps reading the old inode."""
        target = self.blobs_dir / aid
        self._hook("store.before_repair")
        for rel in [*rels, "files.json"]:
            dst = target / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(data / rel, dst)
            fsync_dir(dst.parent)
        log.warning("store: artifact %s was corrupt (%s); replaced by a verified upload of "
                    "the same files", aid[:12], "; ".join(problems))

    def blob(self, artifact: str) -> Blob:
        """The stored artifact ``artifact`` (its id: the directory name)."""
        meta = self._meta(artifact)
        files = {rel: int(info["size"]) for rel, info in meta["files"].items()}
        main = meta["main"]
        return Blob(artifact, str(meta["files"][main]["sha256"]), sum(files.values()),
                    self.blobs_dir / artifact / main, files)

    def _meta(self, artifact: str) -> dict[str, Any]:
        if not is_sha256(artifact):
            raise e.InvalidArgument(f"{artifact!r} is not an artifact id (64 hex "
                                    "characters)", field="sha256")
        try:
            return json.loads((self.blobs_dir / artifact / "files.json").read_text())  # type: ignore[no-any-return]
        except FileNotFoundError:
            raise e.NotFound(f"artifact {artifact[:12]} is not in the store") from None
        except ValueError:
            raise e.DataLoss(f"artifact {artifact[:12]}: files.json is corrupt") from None

    def path(self, artifact: str) -> Path:
        return self.blob(artifact).main

    def has(self, artifact: str) -> bool:
        return is_sha256(artifact) and (self.blobs_dir / artifact / "files.json").exists()

    def blobs(self) -> set[str]:
        return {p.name for p in self.blobs_dir.iterdir() if p.is_dir() and is_sha256(p.name)}

    def remove(self, artifact: str) -> None:
        target = self.blobs_dir / artifact
        if target.exists():
            self._hook("store.before_remove")
            trash = self.tmp / f"rm-{uuid.uuid4().hex}"
            os.rename(target, trash)
            fsync_dir(self.blobs_dir)
            shutil.rmtree(trash, ignore_errors=True)

    def verify(self, artifact: str, deep: bool = True) -> list[str]:
        """Problems with one stored artifact: missing files, wrong sizes or hashes."""
        try:
            meta = self._meta(artifact)
        except e.EdgedError as exc:
            return [str(exc)]
        problems = []
        for rel, info in meta["files"].items():
            p = self.blobs_dir / artifact / rel
            if not p.is_file():
                problems.append(f"{artifact[:12]}/{rel}: missing")
            elif p.stat().st_size != info["size"]:
                problems.append(f"{artifact[:12]}/{rel}: {p.stat().st_size} bytes, expected "
                                f"{info['size']}")
            elif deep and sha256_file(p) != info["sha256"]:
                problems.append(f"{artifact[:12]}/{rel}: sha256 mismatch (corrupt)")
        main = meta["main"]
        shas = {rel: str(info["sha256"]) for rel, info in meta["files"].items()}
        want = artifact_id(shas.get(main, ""), {r: h for r, h in shas.items() if r != main})
        if not problems and artifact not in (want, shas.get(main)):  # the latter: legacy name
            problems.append(f"{artifact[:12]}: its files do not hash to its name")
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

"""HTTP(S) downloads by the daemon, with resume, progress and sha256, into the store.

Standard library only (urllib): the daemon downloads one artifact at a time, and the only
features needed — ``Range`` resume of a partial file kept under ``STATE/tmp/downloads/`` and a
streaming hash — are a few lines; a dependency would add more than it saves.

Transient failures — a dropped connection, a timeout, HTTP 5xx, 408 and 429 — are retried
(resuming what arrived) with a short backoff. When the attempts run out the install fails with
``ABORTED`` and reason ``DOWNLOAD_FAILED``: not ``UNAVAILABLE``, which clients read as "the
daemon cannot be reached" — here the daemon answered, the server did not. Other HTTP errors
(404, 403, ...) are ``INVALID_ARGUMENT`` on ``source``.

A running download holds an exclusive ``flock`` on its partial file: a second install of the
same artifact at the same time is refused instead of writing into the same file, and
``edged fsck --repair`` (``stale_partials``) only removes partial files that no download holds
and that have not grown for a day — a younger one is kept, so a retried install resumes it.
"""

from __future__ import annotations

import fcntl
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from edged import errors as e
from edged.hashing import sha256_file
from edged.manager.catalog import diskfull
from edged.manager.catalog.store import Blob, Store, is_sha256

CHUNK = 1 << 20
ATTEMPTS = 5
BACKOFF_S = 0.2  # doubled after each failed attempt
RETRY_HTTP = frozenset({408, 429, 500, 502, 503, 504})
STALE_AFTER_S = 24 * 3600


def download(store: Store, url: str, sha256: str, size: int | None,
             progress: Callable[[int, int | None], None] | None = None,
             timeout_s: float = 60.0, display: str | None = None,
             backoff_s: float = BACKOFF_S) -> Blob:
    sha256 = sha256.lower()
    if not is_sha256(sha256):
        raise e.InvalidArgument("sha256 must be 64 hex characters", field="sha256")
    parts = store.tmp / "downloads"
    parts.mkdir(parents=True, exist_ok=True)
    partial = parts / f"{sha256}.part"
    store.check_disk(size or 0)
    with partial.open("a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise e.Aborted(f"{url}: a download of this artifact is already in progress",
                            field="source", reason="DOWNLOAD_FAILED") from None
        keep = False
        try:
            _fetch(store, url, f, size, progress, timeout_s, backoff_s)
            digest = sha256_file(partial)
            if digest != sha256:
                raise e.DataLoss(f"{url}: sha256 {digest} does not match the expected {sha256}",
                                 field="sha256")
            return store.put_file(partial, sha256, display=display or url)
        except e.Aborted:
            keep = os.fstat(f.fileno()).st_size > 0  # what arrived: a retry resumes it
            raise
        finally:
            if not keep:
                partial.unlink(missing_ok=True)


def _fetch(store: Store, url: str, f: BinaryIO, size: int | None,
           progress: Callable[[int, int | None], None] | None, timeout_s: float,
           backoff_s: float) -> None:
    total: int | None = size
    last_error = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        have = os.fstat(f.fileno()).st_size
        req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310
                total = _total(resp, have) or total
                if have and resp.status != 206:  # server ignored Range: start over
                    f.truncate(0)
                    have = 0
                while chunk := resp.read(CHUNK):
                    store.check_room(len(chunk), have, url)  # the reserve, as it grows
                    f.write(chunk)
                    have += len(chunk)
                    if have > store.max_artifact_bytes:
                        f.truncate(0)
                        raise e.ResourceExhausted("download exceeds install.max_artifact_bytes",
                                                  field="source")
                    if progress:
                        progress(have, total)
                f.flush()
                os.fsync(f.fileno())
            if total is None or have >= total:
                return
            last_error = f"the connection closed after {have} of {total} bytes"
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # already complete
                return
            if exc.code not in RETRY_HTTP:
                raise e.InvalidArgument(f"{url}: HTTP {exc.code} {exc.reason}",
                                        field="source") from None
            last_error = f"HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            if diskfull.is_disk_full(exc):  # not the server's fault: no retry
                raise diskfull.error(store.root, url) from None
            last_error = str(getattr(exc, "reason", None) or exc)  # resume from what we have
    raise e.Aborted(f"{url}: download failed after {ATTEMPTS} attempts: {last_error}",
                    field="source", reason="DOWNLOAD_FAILED")


def _total(resp: Any, have: int) -> int | None:
    rng = resp.headers.get("Content-Range")
    if rng and "/" in rng and rng.rsplit("/", 1)[1].isdigit():
        return int(rng.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length")
    return int(length) + (have if resp.status == 206 else 0) if length else None


def stale_partials(tmp: Path, *, now: float | None = None,
                   max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Partial downloads no running download holds and unchanged for ``max_age_s``."""
    parts = Path(tmp) / "downloads"
    if not parts.is_dir():
        return []
    now = time.time() if now is None else now
    out = []
    for p in sorted(parts.iterdir()):
        try:
            if not p.is_file() or now - p.stat().st_mtime < max_age_s:
                continue
            with p.open("rb") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: in use
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        except (BlockingIOError, OSError):
            continue
        out.append(p)
    return out

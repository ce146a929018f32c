"""HTTP(S) downloads by the daemon, with resume, progress and sha256, into the store.

Standard library only (urllib): the daemon downloads one artifact at a time, and the only
features needed — ``Range`` resume of a partial file kept under ``STATE/tmp/downloads/`` and a
streaming hash — are a few lines; a dependency would add more than it saves.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from edged import errors as e
from edged.hashing import sha256_file
from edged.manager.store import Blob, Store, is_sha256

CHUNK = 1 << 20
ATTEMPTS = 5


def download(store: Store, url: str, sha256: str, size: int | None,
             progress: Callable[[int, int | None], None] | None = None,
             timeout_s: float = 60.0) -> Blob:
    sha256 = sha256.lower()
    if not is_sha256(sha256):
        raise e.InvalidArgument("sha256 must be 64 hex characters", field="sha256")
    parts = store.tmp / "downloads"
    parts.mkdir(parents=True, exist_ok=True)
    partial = parts / f"{sha256}.part"
    store.check_disk(size or 0)
    total: int | None = size
    last_error: Exception | None = None
    for _ in range(ATTEMPTS):
        have = partial.stat().st_size if partial.exists() else 0
        req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310
                total = _total(resp, have) or total
                if have and resp.status != 206:  # server ignored Range: start over
                    have = 0
                with partial.open("ab" if have else "wb") as f:
                    while chunk := resp.read(CHUNK):
                        f.write(chunk)
                        have += len(chunk)
                        if have > store.max_artifact_bytes:
                            partial.unlink(missing_ok=True)
                            raise e.ResourceExhausted("download exceeds install.max_artifact_bytes",
                                                      field="source")
                        if progress:
                            progress(have, total)
                    f.flush()
                    os.fsync(f.fileno())
            if total is None or have >= total:
                break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and partial.exists():  # already complete
                break
            raise e.InvalidArgument(f"{url}: HTTP {exc.code} {exc.reason}",
                                    field="source") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            last_error = exc  # connection dropped: resume from what we have
    else:
        raise e.Unavailable(f"{url}: download did not complete after {ATTEMPTS} attempts: "
                            f"{last_error}")
    digest = sha256_file(partial)
    if digest != sha256:
        partial.unlink(missing_ok=True)
        raise e.DataLoss(f"{url}: sha256 {digest} does not match the expected {sha256}",
                         field="sha256")
    try:
        return store.put_file(partial, sha256)
    finally:
        partial.unlink(missing_ok=True)


def _total(resp: Any, have: int) -> int | None:
    rng = resp.headers.get("Content-Range")
    if rng and "/" in rng and rng.rsplit("/", 1)[1].isdigit():
        return int(rng.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length")
    return int(length) + (have if resp.status == 206 else 0) if length else None


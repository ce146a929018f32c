"""sha256 of a file, streamed: the one helper the store, downloads, the client and the OTA
tools share (neutral ground: the client may not import the daemon's layers)."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()

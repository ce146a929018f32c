"""Where the daemon is: ``unix:PATH`` (the default socket) or ``HOST:PORT`` over TLS."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SOCKET = Path("/run/edged/edged.sock")


@dataclass(frozen=True)
class Target:
    grpc_target: str  # what grpc.*_channel() takes
    unix_path: Path | None  # set for local Unix-socket targets (shared memory is possible)
    text: str  # as the user wrote it, for messages

    @property
    def is_local(self) -> bool:
        return self.unix_path is not None


def default_target() -> str:
    return os.environ.get("EDGED_TARGET", f"unix:{DEFAULT_SOCKET}")


def parse_target(text: str | None) -> Target:
    """Accepts ``unix:PATH``, ``unix://PATH``, ``unix:///abs/path``, a bare path, ``HOST:PORT``."""
    raw = (text or default_target()).strip()
    if not raw:
        raise ValueError("empty target")
    if raw.startswith("unix:"):
        rest = raw[len("unix:"):]
        if rest.startswith("//"):
            rest = rest[2:]
        path = Path(rest)
    elif raw.startswith("/") or raw.startswith("."):
        path = Path(raw)
    else:
        if ":" not in raw:
            raise ValueError(f"target {raw!r}: expected unix:PATH or HOST:PORT")
        return Target(raw, None, raw)
    path = path.absolute()
    return Target(f"unix:{path}", path, raw)

"""Named crash points for the crash-consistency tests, armed only by ``EDGED_CRASH_AT``.

The store and the manifests call their crash hook at the instants where a crash matters
(before/after a rename, before a symlink swap, ...). Tests inject their own hook; a test that
drives the real daemon cannot, so it sets ``EDGED_CRASH_AT=POINT`` (or ``POINT:N``, the Nth
time this process reaches POINT) and the hook SIGKILLs the daemon there — exactly what a power
cut or the OOM killer leaves. Without the variable ``env_hook`` returns None and nothing runs:
production pays one ``is None`` test per crash point.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

ENV = "EDGED_CRASH_AT"

Hook = Callable[[str], None]
_seen: dict[str, int] = {}  # per process: the store's and the manifests' hooks count together


def env_hook() -> Hook | None:
    spec = os.environ.get(ENV, "")
    if not spec:
        return None
    point, _, nth = spec.partition(":")
    target = int(nth) if nth.isdigit() and int(nth) > 0 else 1

    def hook(name: str) -> None:
        if name == point:
            _seen[name] = _seen.get(name, 0) + 1
            if _seen[name] == target:
                os.kill(os.getpid(), signal.SIGKILL)

    return hook

"""Is this file already installed? One answer for ``edgectl install`` and ``edged-ota``.

Installing the same artifact again would add a duplicate version (a second number for the
same bytes); both tools answer "already installed as version N" instead and change nothing.
"Same" is the same sha256 and size.
"""

from __future__ import annotations

from edged.views import ModelView


def installed_as(model: ModelView, sha256: str, size_bytes: int | None, *,
                 active_only: bool = False) -> int:
    """The version of ``model`` that holds these very bytes (the active
    one first), else 0. ``size_bytes`` None: not known here (a URL), the sha256 decides.
    ``active_only``: only the active version counts (edged-ota, whose job is to make the file
    active)."""
    versions = sorted(model.versions, key=lambda v: (v.version != model.active_version,
                                                     -v.version))
    for v in versions:
        if active_only and v.version != model.active_version:
            continue
        if v.sha256 == sha256.lower() and size_bytes in (None, v.size_bytes):
            return int(v.version)
    return 0

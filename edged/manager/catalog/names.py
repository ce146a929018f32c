"""Model names and versions: what is allowed, checked in one place.

Names become directory and file names nowhere (the store is content-addressed), but they do go
into YAML keys, log lines and URLs, so they are kept to ``[a-z0-9][a-z0-9._-]{0,62}``.
"""

from __future__ import annotations

import re

from edged import errors as e

# Used with ``fullmatch``: ``match`` with ``$`` would accept a trailing newline ("abc\n").
MODEL_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
MAX_VERSION = 2**31 - 1


def is_valid_name(name: object) -> bool:
    return isinstance(name, str) and MODEL_NAME_RE.fullmatch(name) is not None and \
        ".." not in name


def check_name(name: str, field: str = "name") -> str:
    if not is_valid_name(name):
        raise e.InvalidArgument(
            f"model name {name!r} is not allowed: use 1-63 characters of a-z, 0-9, '.', '_', "
            "'-', starting with a letter or digit, and no '..'", field=field, reason="BAD_NAME")
    return name


def check_version(version: int, field: str = "version") -> int:
    if isinstance(version, bool) or not isinstance(version, int) or not \
            1 <= version <= MAX_VERSION:
        raise e.InvalidArgument(f"version must be an integer from 1 to {MAX_VERSION}, "
                                f"got {version!r}", field=field)
    return version


def check_relpath(rel: str, field: str = "file.path") -> str:
    """An external-data file name: a plain relative path, no '..', no absolute path."""
    parts = rel.replace("\\", "/").split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or \
            "\0" in rel or len(rel) > 255:
        raise e.InvalidArgument(f"file name {rel!r} is not a plain relative path", field=field)
    return "/".join(parts)

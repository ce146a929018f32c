"""A real full disk for tests: a small tmpfs mounted on a directory, and a file that fills it.

Mounting needs root (CAP_SYS_ADMIN); without it the tests that need a real ``ENOSPC`` skip and
say why. ``fill`` leaves exactly ``leave`` bytes free (0: writes until the kernel refuses).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"a real full disk needs a tmpfs mount: {res.stderr.strip() or 'refused'}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill(path: Path, leave: int = 0) -> Path:
    """Fill the file system of ``path`` until ``leave`` bytes are free; returns the filler."""
    filler = path / f"filler-{len(list(path.glob('filler-*')))}"
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY)
    try:
        room = shutil.disk_usage(path).free - leave
        if room > 0:
            os.posix_fallocate(fd, 0, room)
        os.lseek(fd, 0, os.SEEK_END)
        while leave == 0:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass  # full
    finally:
        os.close(fd)
    return filler

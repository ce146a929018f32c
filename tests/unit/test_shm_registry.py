"""The daemon's registry of client shared-memory regions: who may register what, and how
registrations of vanished clients go away. Real files, real ownership (the tests run as root so
they can chown to other users), real flocks held by real child processes."""

from __future__ import annotations

import fcntl
import os
import signal
import time
from pathlib import Path

import pytest

from edged import errors as e
from edged.manager.shm import ShmRegistry

OTHER_UID, GROUP, OTHER_GID = 65534, 100, 65534  # nobody; the socket's group ("users")


def _file(d: Path, name: str, mode: int = 0o600, uid: int = -1, gid: int = -1,
          size: int = 4096) -> Path:
    path = d / name
    path.write_bytes(b"\0" * size)
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


@pytest.fixture
def reg(tmp_path: Path) -> ShmRegistry:
    if os.geteuid() != 0:
        pytest.skip("needs root to create files owned by other users")
    return ShmRegistry(shm_dir=tmp_path, allowed_gid=GROUP, sweep_s=None)


def test_who_may_register_what(reg: ShmRegistry, tmp_path: Path) -> None:
    _file(tmp_path, "mine")  # the daemon's own user, 0600 (same-user clients, tritonclient)
    _file(tmp_path, "robot", 0o660, OTHER_UID, GROUP)  # another user, shared with the group
    reg.register("a", "/mine", 0, 4096)
    reg.register("b", "robot", 0, 4096)
    refused = {
        "robot-private": _file(tmp_path, "robot-private", 0o600, OTHER_UID, GROUP),
        "robot-other-group": _file(tmp_path, "robot-other-group", 0o660, OTHER_UID, OTHER_GID),
        "robot-read-only": _file(tmp_path, "robot-read-only", 0o640, OTHER_UID, GROUP),
        "world-writable": _file(tmp_path, "world-writable", 0o666),
        "edged-4242-w1-3": _file(tmp_path, "edged-4242-w1-3"),  # a daemon's lane
        "sem.lock": _file(tmp_path, "sem.lock"),  # a POSIX semaphore
    }
    for key in refused:
        with pytest.raises(e.PermissionDenied) as info:
            reg.register(f"r-{key}", "/" + key, 0, 64)
        assert key in info.value.message
    (tmp_path / "link").symlink_to(tmp_path / "mine")
    with pytest.raises(e.InvalidArgument, match="not a shared memory object"):
        reg.register("l", "/link", 0, 64)
    assert sorted(r.name for r in reg.status()) == ["a", "b"]


def test_unregister_matches_triton(reg: ShmRegistry, tmp_path: Path) -> None:
    _file(tmp_path, "x")
    reg.register("a", "/x", 0, 64)
    reg.register("b", "/x", 64, 64)
    with pytest.raises(e.AlreadyExists):
        reg.register("a", "/x", 0, 64)
    reg.unregister("never-registered")  # success, as Triton answers
    with pytest.raises(e.NotFound):
        reg.status("never-registered")
    reg.unregister("a")
    assert [r.name for r in reg.status()] == ["b"]
    reg.unregister()  # empty name: every region
    assert reg.status() == []


def test_unlinked_or_replaced_files_drop_their_registration(reg: ShmRegistry,
                                                            tmp_path: Path) -> None:
    a, b = _file(tmp_path, "a"), _file(tmp_path, "b")
    reg.register("a", "/a", 0, 64)
    reg.register("b", "/b", 0, 64)
    a.unlink()
    b.unlink()
    _file(tmp_path, "b")  # a different object under the old name
    with pytest.raises(e.InvalidArgument, match="unlinked") as info:
        reg.resolve("b", 0, 16, "FP32", (4,), "x")
    assert info.value.metadata["shm_region"] == "b"
    assert reg.sweep() == ["a"]
    assert reg.status() == []


def _hold_lock(path: Path) -> int:
    """A child process that holds a shared flock on ``path`` until it is killed."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        fd = os.open(path, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.write(w, b"1")
        while True:
            time.sleep(60)
    os.close(w)
    assert os.read(r, 1) == b"1"
    os.close(r)
    return pid


def test_a_killed_clients_regions_are_dropped(tmp_path: Path) -> None:
    """edged.client holds a shared flock on its arena while it lives; SIGKILL releases it, and
    the sweeper thread drops the registration (and unlinks the abandoned file) on its own."""
    reg = ShmRegistry(shm_dir=tmp_path, sweep_s=0.05)
    leased, plain = _file(tmp_path, "leased"), _file(tmp_path, "plain")
    pid = _hold_lock(leased)
    try:
        reg.register("leased", "/leased", 0, 4096)
        reg.register("plain", "/plain", 0, 4096)  # no lock: only an unlink ends it
        time.sleep(0.3)
        assert sorted(r.name for r in reg.status()) == ["leased", "plain"]
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    deadline = time.monotonic() + 5
    while "leased" in [r.name for r in reg._regions.values()] and (  # noqa: SLF001
            time.monotonic() < deadline):
        time.sleep(0.02)
    assert [r.name for r in reg._regions.values()] == ["plain"]  # noqa: SLF001 - no status call
    assert not leased.exists()
    plain.unlink()
    deadline = time.monotonic() + 5
    while reg._sweeper is not None and time.monotonic() < deadline:  # noqa: SLF001
        time.sleep(0.02)
    assert reg._regions == {} and reg._sweeper is None  # noqa: SLF001 - and the thread ended

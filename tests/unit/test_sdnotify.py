"""sd_notify against a real AF_UNIX datagram socket standing in for systemd (a path one and an
abstract one); the heartbeat only beats while the liveness check passes."""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.sdnotify import Heartbeat, Liveness, Notifier, child_env


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET: collects each datagram as a list of fields."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(5)

    def recv(self) -> list[str]:
        return self.sock.recv(65536).decode().split("\n")

    def pending(self, wait_s: float = 0.0) -> list[list[str]]:
        """Every datagram that arrives within ``wait_s``, without blocking beyond it."""
        out = []
        deadline = time.monotonic() + wait_s
        while True:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                out.append(self.recv())
            except TimeoutError:
                return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[FakeSystemd, dict[str, str]]]:
    path = str(tmp_path / "notify")
    fake = FakeSystemd(path)
    yield fake, {"NOTIFY_SOCKET": path}
    fake.close()


def test_the_start_reload_stop_sequence(systemd: tuple[FakeSystemd, dict[str, str]]) -> None:
    fake, env = systemd
    n = Notifier(env, monotonic_ns=lambda: 123_456_789_000)
    assert n.enabled
    assert n.status("loading the ram tier (2 models)")
    assert n.extend_timeout(90)
    assert n.ready("serving 2 models")
    assert n.reloading()
    assert n.ready()
    assert n.watchdog()
    assert n.stopping()
    assert [fake.recv() for _ in range(7)] == [
        ["STATUS=loading the ram tier (2 models)"],
        ["EXTEND_TIMEOUT_USEC=90000000"],
        ["READY=1", "STATUS=serving 2 models"],
        ["RELOADING=1", "MONOTONIC_USEC=123456789"],
        ["READY=1"],
        ["WATCHDOG=1"],
        ["STOPPING=1"],
    ]
    n.close()


def test_reloading_carries_the_real_monotonic_clock(
        systemd: tuple[FakeSystemd, dict[str, str]]) -> None:
    fake, env = systemd
    before = time.monotonic_ns() // 1000
    Notifier(env).reloading()
    fields = dict(f.split("=", 1) for f in fake.recv())
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= time.monotonic_ns() // 1000


def test_abstract_namespace_socket() -> None:
    name = f"edged-test-{uuid.uuid4().hex}"
    fake = FakeSystemd("\0" + name)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready("up")
        assert fake.recv() == ["READY=1", "STATUS=up"]
    finally:
        fake.close()


def test_status_cannot_inject_fields(systemd: tuple[FakeSystemd, dict[str, str]]) -> None:
    """A model name with a newline must not become a forged READY=1 / MAINPID= line."""
    fake, env = systemd
    Notifier(env).status("loading evil\nREADY=1\nMAINPID=1")
    assert fake.recv() == ["STATUS=loading evil READY=1 MAINPID=1"]
    Notifier(env).status("x" * 5000)
    (line,) = fake.recv()
    assert line.startswith("STATUS=xxx") and len(line) < 600


def test_without_notify_socket_everything_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not any([n.ready("x"), n.status("x"), n.reloading(), n.stopping(), n.watchdog(),
                    n.extend_timeout(1)])
    assert n.watchdog_interval_s() is None
    hb = Heartbeat(n, lambda: True, interval_s=0.01).start()
    assert not hb.running


def test_unsupported_address_disables(caplog: pytest.LogCaptureFixture) -> None:
    assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled
    assert "not a Unix socket" in caplog.text


def test_a_vanished_systemd_is_logged_not_raised(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert n.enabled
    assert n.ready() is False
    assert "sd_notify READY failed" in caplog.text


@pytest.mark.parametrize(("env", "expected"), [
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert Notifier({"NOTIFY_SOCKET": "/nonexistent", **env}).watchdog_interval_s() == expected


def test_child_env_drops_the_notify_variables() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2",
           "PATH": "/usr/bin"}
    assert child_env(env) == {"PATH": "/usr/bin"}


class StampingNotifier(Notifier):
    """Records when each ping is sent: the receiver's clock would add its own scheduling."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env)
        self.sent: list[float] = []

    def watchdog(self) -> bool:
        self.sent.append(time.monotonic())
        return super().watchdog()


def test_heartbeat_pings_at_half_the_watchdog_interval(
        systemd: tuple[FakeSystemd, dict[str, str]]) -> None:
    fake, env = systemd
    notifier = StampingNotifier({**env, "WATCHDOG_USEC": "200000"})
    hb = Heartbeat(notifier, lambda: True)
    assert hb.interval_s == pytest.approx(0.1)
    hb.start()
    try:
        for _ in range(4):
            assert fake.recv() == ["WATCHDOG=1"]
    finally:
        hb.stop()
    assert not hb.running
    gaps = [b - a for a, b in itertools.pairwise(notifier.sent[:4])]
    assert min(gaps) >= 0.099  # never faster than half the interval (load may only slow it)
    assert sum(gaps) / len(gaps) < 1.0


def test_heartbeat_goes_quiet_while_unhealthy_and_resumes(
        systemd: tuple[FakeSystemd, dict[str, str]]) -> None:
    fake, env = systemd
    healthy = threading.Event()
    healthy.set()
    hb = Heartbeat(Notifier(env), healthy.is_set, interval_s=0.02).start()
    try:
        assert fake.recv() == ["WATCHDOG=1"]
        healthy.clear()
        fake.pending(0.1)  # drain anything sent before the flag was seen
        assert fake.pending(0.2) == []  # a hung daemon: systemd's watchdog will fire
        healthy.set()
        assert fake.recv() == ["WATCHDOG=1"]
    finally:
        hb.stop()


def test_a_raising_check_counts_as_unhealthy(systemd: tuple[FakeSystemd, dict[str, str]],
                                             caplog: pytest.LogCaptureFixture) -> None:
    fake, env = systemd

    def broken() -> bool:
        raise RuntimeError("lost the manager")

    hb = Heartbeat(Notifier(env), broken, interval_s=0.01)
    assert hb.beat_once() is False
    assert fake.pending(0.05) == []
    assert "liveness check raised" in caplog.text


def test_liveness_is_a_recent_beat() -> None:
    now = [100.0]
    live = Liveness(5.0, clock=lambda: now[0])
    assert live()
    now[0] = 104.0
    assert live()
    now[0] = 105.5
    assert not live()
    live.beat()
    assert live()


def test_heartbeat_with_liveness_stops_when_beats_stop(
        systemd: tuple[FakeSystemd, dict[str, str]]) -> None:
    """The intended wiring: the serving path beats; once it stops, so do the pings."""
    fake, env = systemd
    live = Liveness(0.15)
    hb = Heartbeat(Notifier(env), live, interval_s=0.02).start()
    try:
        for _ in range(5):
            live.beat()
            time.sleep(0.02)
        assert fake.pending(0.01)
        fake.pending(0.2)  # the grace period runs out
        assert fake.pending(0.15) == []
    finally:
        hb.stop()


def test_extending_start_timeout_keeps_extending_while_the_block_runs(
        systemd: tuple[FakeSystemd, dict[str, str]]) -> None:
    from edged.sdnotify import extending_start_timeout

    fake, env = systemd
    n = Notifier(env)
    with extending_start_timeout(n, "loading the ram tier", window_s=2.0, every_s=0.05):
        time.sleep(0.3)  # a slow resident tier
    n.ready("up")
    got = [f for msg in fake.pending(0.2) for f in msg]
    assert got[0] == "STATUS=loading the ram tier"
    extends = [f for f in got if f.startswith("EXTEND_TIMEOUT_USEC=")]
    assert len(extends) >= 3 and set(extends) == {"EXTEND_TIMEOUT_USEC=2000000"}
    assert got.index("READY=1") > max(i for i, f in enumerate(got) if f in extends)
    assert fake.pending(0.15) == []  # nothing after the block ended


def test_extending_start_timeout_without_systemd_is_a_no_op() -> None:
    from edged.sdnotify import extending_start_timeout

    before = threading.active_count()
    with extending_start_timeout(Notifier({}), "x", every_s=0.01):
        assert threading.active_count() == before  # no thread started

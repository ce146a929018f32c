"""The foundation through the real daemon on a real socket: health, reflection, Status,
`edgectl status`, the socket's mode, stale/duplicate sockets, clean stop, unreachable daemon."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from edged.cli import exitcodes


def edgectl(target: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged.cli.main", "--target", target, *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_health_and_reflection(daemon) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        assert c.health() == "SERVING"
        assert c.health("edged.v1.Models") == "SERVING"
    with grpc.insecure_channel(daemon.target) as ch:
        services = set(ProtoReflectionDescriptorDatabase(ch).get_services())
    assert {"edged.v1.Models", "edged.v1.System", "inference.GRPCInferenceService",
            "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services


def test_status_over_the_socket(client) -> None:  # type: ignore[no-untyped-def]
    st = client.status()
    assert st.version and st.state == "serving" and st.uptime_s >= 0
    assert st.memory.total_bytes > st.memory.available_bytes > 0
    assert st.device.kind in ("cpu", "jetson", "nvidia-gpu") and st.device.cpu_count >= 1
    assert {t.tier for t in st.tiers} == {1, 2, 3}
    assert all(t.budget_bytes > 0 for t in st.tiers)
    assert "procfs" in st.telemetry_sources or "psutil" in st.telemetry_sources


def test_edgectl_status_json_has_the_documented_keys(daemon) -> None:  # type: ignore[no-untyped-def]
    res = edgectl(daemon.target, "--json", "status")
    assert res.returncode == 0, res.stderr
    st = json.loads(res.stdout)  # stdout is exactly one JSON document
    for key in ("version", "uptime_s", "device", "memory", "tiers", "loaded"):
        assert key in st
    for key in ("total_bytes", "available_bytes", "swap_total_bytes", "swap_free_bytes"):
        assert isinstance(st["memory"][key], int)
    assert set(st["tiers"]) == {"ram", "swap", "storage"}
    for tier in st["tiers"].values():
        assert isinstance(tier["budget_bytes"], int) and tier["budget_bytes"] > 0
        assert isinstance(tier["used_bytes"], int) and isinstance(tier["models"], int)
    assert st["loaded"] == []


def test_edgectl_status_table(daemon) -> None:  # type: ignore[no-untyped-def]
    res = edgectl(daemon.target, "status")
    assert res.returncode == 0, res.stderr
    assert "TIER" in res.stdout and "ram" in res.stdout and "memory" in res.stdout


def test_simulated_8gb_device(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory({"budgets": {"memory_total": "8GiB", "reserve": "1GiB", "ram": "50%",
                                    "swap": "25%"}}).start()
    with d.client() as c:
        st = c.status()
    assert st.memory.simulated and st.memory.total_bytes == 8 << 30
    tiers = {t.tier: t for t in st.tiers}
    assert tiers[1].budget_bytes == (7 << 30) // 2
    assert tiers[2].budget_bytes == (7 << 30) // 4


def test_socket_mode_and_clean_stop(daemon) -> None:  # type: ignore[no-untyped-def]
    mode = stat.S_IMODE(os.stat(daemon.socket).st_mode)
    assert mode == 0o660
    assert daemon.stop() == 0
    assert not daemon.socket.exists()


def test_second_daemon_on_the_same_socket_is_refused(daemon, daemon_factory) -> None:  # type: ignore[no-untyped-def]
    second = daemon_factory(root=None)
    second.socket = daemon.socket
    second.start(wait=False)
    assert second.proc is not None
    second.proc.wait(60)
    assert second.stop(expect_clean=False) == 1
    assert "already serving on" in second.log()
    with daemon.client() as c:  # the first one is untouched
        assert c.health() == "SERVING"


def test_stale_socket_is_replaced(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory()
    d.root.mkdir(parents=True, exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(d.socket))
    s.close()  # bound but nobody listens: what a crashed daemon leaves behind
    assert d.socket.exists()
    d.start()
    with d.client() as c:
        assert c.health() == "SERVING"


def test_unreachable_daemon_has_its_own_exit_code(tmp_path: Path) -> None:
    target = f"unix:{tmp_path}/nobody.sock"
    res = edgectl(target, "--timeout", "2", "status")
    assert res.returncode == exitcodes.UNREACHABLE
    assert res.stderr.count("\n") == 1 and "nobody.sock" in res.stderr
    res = edgectl(target, "--timeout", "2", "--json", "status")
    assert res.returncode == exitcodes.UNREACHABLE
    assert json.loads(res.stdout)["error"]["exit_code"] == exitcodes.UNREACHABLE


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signals_stop_cleanly(daemon_factory, sig: str) -> None:  # type: ignore[no-untyped-def]
    import signal

    d = daemon_factory().start()
    d.signal(getattr(signal, sig))
    assert d.proc is not None and d.proc.wait(30) == 0

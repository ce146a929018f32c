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
    mem, dev = st.snapshot.memory, st.snapshot.device
    assert mem.total_bytes > mem.available_bytes > 0
    assert dev.kind in ("cpu", "jetson", "nvidia-gpu") and dev.cpu_count >= 1
    assert {t.tier for t in st.tiers} == {"ram", "swap", "storage"}
    assert all(t.budget_bytes > 0 for t in st.tiers)
    assert "procfs" in st.snapshot.sources or "psutil" in st.snapshot.sources


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
    assert st.snapshot.memory.simulated and st.snapshot.memory.total_bytes == 8 << 30
    tiers = {t.tier: t for t in st.tiers}
    assert tiers["ram"].budget_bytes == (7 << 30) // 2
    assert tiers["swap"].budget_bytes == (7 << 30) // 4


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


# -- one daemon per state dir --------------------------------------------------------------
class SlowUpload:
    """An install stream over the raw stub that stops after its first chunk until released,
    so the daemon holds an upload in progress under STATE/tmp."""

    def __init__(self, target: str, data: bytes) -> None:
        import threading

        from edged.v1 import models_pb2 as mpb
        from edged.v1 import models_pb2_grpc

        self.release = threading.Event()
        self.result: list[object] = []
        self._channel = grpc.insecure_channel(target)
        stub = models_pb2_grpc.ModelsStub(self._channel)
        half = len(data) // 2

        def requests():  # type: ignore[no-untyped-def]
            yield mpb.InstallRequest(header=mpb.InstallHeader(name="slow-upload"))
            yield mpb.InstallRequest(file=mpb.InstallFile(path="m.onnx",
                                                          size_bytes=len(data)))
            yield mpb.InstallRequest(chunk=data[:half])
            self.release.wait(60)
            yield mpb.InstallRequest(chunk=data[half:])

        def run() -> None:
            try:
                self.result.append(stub.Install(requests(), timeout=90))
            except grpc.RpcError as exc:
                self.result.append(exc)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def finish(self) -> object:
        self.release.set()
        self.thread.join(60)
        self._channel.close()
        return self.result[0]


def _uploads(state_dir: Path, timeout: float = 10.0) -> list[Path]:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted((state_dir / "tmp").glob("upload-*"))
        if found and any(p.rglob("*") for p in found):
            return found
        time.sleep(0.02)
    raise AssertionError(f"no upload in progress under {state_dir}/tmp")


@pytest.mark.parametrize("same_socket", [True, False], ids=["same-socket", "other-socket"])
def test_second_daemon_on_the_same_state_dir_is_refused_and_repairs_nothing(
        daemon_factory, tmp_path: Path, same_socket: bool) -> None:  # type: ignore[no-untyped-def]
    import modelgen

    first = daemon_factory().start()
    data = modelgen.add_model(tmp_path / "a.onnx").read_bytes()
    upload = SlowUpload(first.target, data)
    in_progress = _uploads(first.state_dir)
    files_before = sorted(p for d in in_progress for p in d.rglob("*"))

    second = daemon_factory()
    second.state_dir = first.state_dir
    if same_socket:
        second.socket = first.socket
    second.start(wait=False)
    assert second.proc is not None
    second.proc.wait(60)
    assert second.stop(expect_clean=False) == 1
    log = second.log()
    assert f"state dir {first.state_dir} is in use by another edged (pid {first.proc.pid})" \
        in log, log
    assert "Traceback" not in log
    assert not second.socket.exists() or same_socket  # the refused one never bound its socket

    # the first daemon's upload in progress is untouched, and completes
    assert sorted(p for d in in_progress for p in d.rglob("*")) == files_before
    result = upload.finish()
    assert not isinstance(result, grpc.RpcError), result
    with first.client() as c:
        assert c.health() == "SERVING"
        assert [m.name for m in c.list_models()] == ["slow-upload"]


def test_fsck_repair_refuses_a_state_dir_in_use(daemon) -> None:  # type: ignore[no-untyped-def]
    res = subprocess.run([sys.executable, "-m", "edged", "--state-dir", str(daemon.state_dir),
                          "fsck", "--repair"], capture_output=True, text=True, check=False)
    assert res.returncode == 1
    assert "is in use by another edged" in res.stderr and "Traceback" not in res.stderr


# -- start-up failures that restarting cannot fix: exit 2, one line -----------------------
def _start_fails(daemon_factory, config: dict) -> str:  # type: ignore[no-untyped-def]
    d = daemon_factory(config)
    d.start(wait=False)
    assert d.proc is not None
    d.proc.wait(60)
    code = d.stop(expect_clean=False)
    log = d.log()
    assert code == 2, log
    assert "Traceback" not in log
    errors = [line for line in log.splitlines() if "config error" in line]
    assert len(errors) == 1, log
    assert not d.socket.exists()
    return errors[0]


def _private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_bad_tls_path_is_a_config_error(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    token = _private(tmp_path / "t.token", "tok\n")
    line = _start_fails(daemon_factory, {
        "listen": {"tcp": "127.0.0.1:0", "tls_cert": str(tmp_path / "missing.crt"),
                   "tls_key": str(tmp_path / "missing.key")},
        "auth": {"tokens": [{"file": str(token), "scope": "admin"}]}})
    assert "listen.tls_key: cannot read TLS key" in line


def test_world_readable_token_is_a_config_error(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    token = _private(tmp_path / "t.token", "tok\n", 0o644)
    line = _start_fails(daemon_factory, {"auth": {"tokens": [{"file": str(token)}]}})
    assert "auth.tokens[0].file" in line and "chmod o-rwx" in line


def test_missing_unix_group_is_a_config_error(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    line = _start_fails(daemon_factory, {"listen": {"unix_group": "no-such-group-edged"}})
    assert "listen.unix_group: group 'no-such-group-edged' does not exist" in line


def test_budgets_beyond_the_device_are_a_config_error(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    line = _start_fails(daemon_factory, {"budgets": {"reserve": "1TiB"}})
    assert "budgets.reserve: 1.0 TiB leaves nothing of the device's memory" in line


# -- silent targets: something listens, nothing answers ------------------------------------
def test_a_socket_nobody_accepts_on_is_unreachable(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))
        s.listen(16)  # the kernel completes connections into the backlog; nobody accepts
        res = edgectl(f"unix:{path}", "--timeout", "1.5", "status")
    assert res.returncode == exitcodes.UNREACHABLE, res
    assert res.stderr.count("\n") == 1 and "silent.sock" in res.stderr, res.stderr
    assert "no gRPC answer" in res.stderr


def test_a_tcp_listener_that_never_answers_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        target = f"127.0.0.1:{s.getsockname()[1]}"
        res = edgectl(target, "--timeout", "1.5", "--json", "status")
    assert res.returncode == exitcodes.UNREACHABLE, res
    err = json.loads(res.stdout)["error"]
    assert err["exit_code"] == exitcodes.UNREACHABLE and target in err["message"]
    assert res.stderr.count("\n") == 1, res.stderr

"""Zero-copy inference through POSIX shared memory (Triton's system shared-memory extension):
edged.client's automatic use for large tensors, every bad region case, concurrent clients, the
daemon and the robot as different users, release of mappings and cleanup after dead clients,
local-only access, and the hint for oversized messages."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import modelgen
import numpy as np
import pytest
from daemon_harness import REPO, DaemonProcess
from ortref import run_onnx

from edged import errors as e
from edged.client import EdgedClient
from edged.oip import grpc_service_pb2 as oip

DET_SHAPE = (1, 3, 640, 640)  # PP-OCR det: 4.9 MB in, 1.6 MB out




def test_client_uses_shared_memory_for_large_tensors(daemon, demo_models) -> None:  # type: ignore[no-untyped-def]
    x = np.random.default_rng(3).random(DET_SHAPE, dtype=np.float32)
    want = run_onnx(demo_models["ppocr-det"], {"x": x})
    with daemon.client(lanes=False, shm_threshold=64 << 10) as c:
        c.install("det", demo_models["ppocr-det"], warmup_shapes={"x": (1, 3, 64, 64)})
        for _ in range(3):  # the first call learns the output size, the next ones use shm
            got = c.infer("det", {"x": x})
            np.testing.assert_array_equal(got["sigmoid_0.tmp_0"], want["sigmoid_0.tmp_0"])
        regions = c._call(c.oip.SystemSharedMemoryStatus,  # noqa: SLF001 - a real RPC
                          oip.SystemSharedMemoryStatusRequest()).regions
        assert len(regions) == 1  # one arena, registered once, reused
        arena = next(iter(regions.values()))
        assert arena.byte_size >= x.nbytes + want["sigmoid_0.tmp_0"].nbytes
    with daemon.client(lanes=False) as c:  # the closed client unregistered its arena
        assert not c._call(c.oip.SystemSharedMemoryStatus,  # noqa: SLF001
                           oip.SystemSharedMemoryStatusRequest()).regions


def _shm_request(region: str, offset: int, size: int, shape: list[int],
                 out_region: str | None = None) -> oip.ModelInferRequest:
    req = oip.ModelInferRequest(model_name="adder")
    t = req.inputs.add(name="x", datatype="FP32", shape=shape)
    t.parameters["shared_memory_region"].string_param = region
    t.parameters["shared_memory_offset"].int64_param = offset
    t.parameters["shared_memory_byte_size"].int64_param = size
    if out_region:
        o = req.outputs.add(name="y")
        o.parameters["shared_memory_region"].string_param = out_region
        o.parameters["shared_memory_byte_size"].int64_param = size
    return req


def test_bad_regions_are_refused_cleanly(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client.install("adder", modelgen.add_model(tmp_path / "a.onnx"))
    shm = shared_memory.SharedMemory(name="edged_test_bad", create=True, size=4096)
    try:
        np.ndarray((2, 4), np.float32, buffer=shm.buf)[...] = 1.0
        client._shm_register("r", "/edged_test_bad", 4096)  # noqa: SLF001 - the real RPC
        infer = client.oip.ModelInfer

        def call(req: oip.ModelInferRequest) -> e.EdgedError:
            with pytest.raises(e.EdgedError) as info:
                client._call(infer, req)  # noqa: SLF001
            return info.value

        ok = client._call(infer, _shm_request("r", 0, 32, [2, 4], out_region="r"))  # noqa: SLF001
        assert ok.outputs[0].shape == [2, 4]
        np.testing.assert_array_equal(np.ndarray((2, 4), np.float32, buffer=shm.buf), 2.0)
        cases = {
            "unknown region": _shm_request("nope", 0, 32, [2, 4]),
            "outside the region": _shm_request("r", 4090, 32, [2, 4]),
            "size not matching the tensor": _shm_request("r", 0, 16, [2, 4]),
        }
        for what, req in cases.items():
            err = call(req)
            assert isinstance(err, e.InvalidArgument), what
        with pytest.raises(e.InvalidArgument):
            client._shm_register("bad", "/../etc/passwd", 16)  # noqa: SLF001 - path trick
        with pytest.raises(e.InvalidArgument):
            client._shm_register("big", "/edged_test_bad", 1 << 20)  # noqa: SLF001 - too big
        other = shared_memory.SharedMemory(name="edged_test_other", create=True, size=64)
        try:
            os.chown("/dev/shm/edged_test_other", 65534, 65534)  # another user's region
            with pytest.raises(e.PermissionDenied):
                client._shm_register("o", "/edged_test_other", 64)  # noqa: SLF001
        finally:
            other.close()
            other.unlink()
    finally:
        shm.close()
        shm.unlink()
    err = call(_shm_request("r", 0, 32, [2, 4]))  # unlinked while registered
    assert isinstance(err, e.InvalidArgument) and "unlinked" in str(err)
    assert client.health() == "SERVING"


def test_concurrent_clients_on_one_model(daemon, demo_models) -> None:  # type: ignore[no-untyped-def]
    x = np.random.default_rng(4).random((1, 3, 48, 192), dtype=np.float32)
    want = run_onnx(demo_models["ppocr-cls"], {"x": x})
    with daemon.client(lanes=False) as c:
        c.install("cls", demo_models["ppocr-cls"], warmup_shapes={"x": (1, 3, 48, 192)})
        c.load("cls")
    failures: list[Exception] = []

    def worker() -> None:
        with daemon.client(lanes=False) as cl:
            for _ in range(25):
                try:
                    got = cl.infer("cls", {"x": x})
                    np.testing.assert_allclose(got["save_infer_model/scale_0.tmp_1"],
                                               want["save_infer_model/scale_0.tmp_1"],
                                               rtol=1e-5)
                except Exception as exc:  # noqa: BLE001 - collected and asserted below
                    failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == []


# -- the documented deployment: daemon and robot are different users -------------------------
CHILD = Path(__file__).with_name("shm_client_child.py")
DAEMON_UID, ROBOT_UID, SOCKET_GROUP, ROBOT_GROUP = 4242, 65534, 100, 65534  # ..., "users", nogroup


class UserDaemon(DaemonProcess):
    """The daemon as an unprivileged user of the socket's group, as systemd runs it."""

    python = sys.executable

    def command(self) -> list[str]:
        return ["setpriv", f"--reuid={DAEMON_UID}", f"--regid={SOCKET_GROUP}",
                "--clear-groups", "--", self.python, *super().command()[1:]]


def _python_for_other_users(tmp: Path) -> str | None:
    """An interpreter that an unprivileged process can start again (the daemon starts its
    workers with ``sys.executable``). On this dev box the venv's base interpreter lives under
    /root (mode 0700): then a venv-shaped shim — the system's python of the same minor version
    with this venv's site-packages — stands in for it. None if neither works."""
    probe = ["-c", "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import "
                   "edged, numpy, grpc'], check=True)"]
    as_user = ["setpriv", f"--reuid={DAEMON_UID}", f"--regid={SOCKET_GROUP}", "--clear-groups",
               "--"]
    candidates = [sys.executable]
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if system.exists():
        shim = tmp / "venv"
        (shim / "bin").mkdir(parents=True)
        (shim / "bin" / "python").symlink_to(system)
        (shim / "pyvenv.cfg").write_text(f"home = {system.parent}\n"
                                         "include-system-site-packages = false\n")
        site = shim / "lib" / system.name / "site-packages"
        site.parent.mkdir(parents=True)
        site.symlink_to(Path(sys.prefix) / "lib" / system.name / "site-packages")
        for d in (tmp, *shim.rglob("*")):
            if d.is_dir() and not d.is_symlink():
                d.chmod(0o755)
        candidates.append(str(shim / "bin" / "python"))
    for python in candidates:
        if subprocess.run([*as_user, python, *probe], cwd=REPO, capture_output=True,
                          timeout=60).returncode == 0:
            return python
    return None


def _child(target: str, model: str, mode: str = "infer",
           groups: list[int] | None = None) -> subprocess.Popen[str]:
    """The client child; with ``groups``, as the robot user (nobody) with those groups."""
    cmd = [UserDaemon.python if groups is not None else sys.executable, str(CHILD), target,
           model, mode]
    if groups is not None:
        cmd = ["setpriv", f"--reuid={ROBOT_UID}", f"--regid={ROBOT_GROUP}",
               f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups",
               "--", *cmd]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _report(proc: subprocess.Popen[str]) -> dict[str, Any]:
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        proc.wait(30)
        raise AssertionError(f"client child failed: {proc.stderr.read() if proc.stderr else ''}")
    return json.loads(line)  # type: ignore[no-any-return]


def _regions(c: Any) -> list[str]:
    return sorted(c._call(c.oip.SystemSharedMemoryStatus,  # noqa: SLF001 - the real RPC
                          oip.SystemSharedMemoryStatusRequest()).regions)


@pytest.fixture
def user_daemon() -> Iterator[UserDaemon]:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run the daemon and the client as other users")
    tmp = Path(tempfile.mkdtemp(prefix="edged-py-", dir="/tmp"))
    python = _python_for_other_users(tmp)
    if python is None:
        shutil.rmtree(tmp)
        pytest.skip(f"no Python interpreter here that user {DAEMON_UID} may run")
    UserDaemon.python = python
    d = UserDaemon({"listen": {"unix_group": "users", "unix_mode": "0666",
                               "allow_world_access": True}})
    for p in (d.root, *d.root.iterdir()):
        os.chown(p, DAEMON_UID, SOCKET_GROUP)
    d.root.chmod(0o755)
    d.env["HOME"] = str(d.root)
    try:
        yield d.start()
    finally:
        try:
            d.stop()
        finally:
            d.cleanup()
            shutil.rmtree(tmp)


def test_a_robot_user_in_the_socket_group_gets_shared_memory(user_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Daemon as user 4242, robot as nobody: the arena is 0660 with the socket's group, the
    daemon accepts it, its worker maps it. A robot outside the group (the socket is 0666 here so
    it can connect) is refused PERMISSION_DENIED at register, and falls back to gRPC for good."""
    model = modelgen.add_model(tmp_path / "a.onnx")
    model.parent.chmod(0o755)
    with user_daemon.client(lanes=False) as c:
        c.install("adder", model)
    in_group = _report(_child(user_daemon.target, "adder", groups=[SOCKET_GROUP]))
    assert in_group["ok"] and in_group["disabled"] is None
    assert in_group["regions"] == [in_group["arena"]]  # registered: the tensors went through it
    assert (in_group["uid"], in_group["gid"], in_group["mode"]) == (
        ROBOT_UID, SOCKET_GROUP, 0o660)
    outsider = _report(_child(user_daemon.target, "adder", groups=[]))
    assert outsider["ok"] and outsider["regions"] == []
    assert "PERMISSION_DENIED" in outsider["disabled"] or "another user" in outsider["disabled"]
    with user_daemon.client(lanes=False) as c:  # both closed cleanly: nothing left registered
        assert _regions(c) == []


# -- release and cleanup ---------------------------------------------------------------------
def _mapped_by(pid: int, name: str) -> bool:
    return f"/dev/shm/{name}" in Path(f"/proc/{pid}/maps").read_text()


def _wait(what: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_worker_unmaps_a_region_once_it_is_unregistered_and_unlinked(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client.install("adder", modelgen.add_model(tmp_path / "a.onnx"))
    name = f"edged_test_big_{os.getpid()}"
    path = Path("/dev/shm") / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, 64 << 20)
        client._shm_register("big", "/" + name, 64 << 20)  # noqa: SLF001 - the real RPC
        os.pwrite(fd, np.full((2, 4), 3.0, np.float32).tobytes(), 0)
        resp = client._call(client.oip.ModelInfer,  # noqa: SLF001
                            _shm_request("big", 0, 32, [2, 4], out_region="big"))
        assert resp.outputs[0].shape == [2, 4]
        assert np.frombuffer(os.pread(fd, 32, 0), np.float32).tolist() == [4.0] * 8
        worker = client.get_model("adder").loaded.worker_pid
        assert worker and _mapped_by(worker, name)
        client.shm_unregister("big")
    finally:
        os.close(fd)
        path.unlink()
    assert _wait(lambda: not _mapped_by(worker, name)), "the worker still maps the region"
    assert client.health() == "SERVING"


def test_a_killed_client_leaves_nothing_behind(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with daemon.client(lanes=False) as c:
        c.install("adder", modelgen.add_model(tmp_path / "a.onnx"))
        proc = _child(daemon.target, "adder", "hold")
        try:
            report = _report(proc)
            worker = c.get_model("adder").loaded.worker_pid
            assert report["ok"] and report["regions"] == [report["arena"]]
            assert _mapped_by(worker, report["arena"])
        finally:
            proc.kill()
            proc.wait(30)
        assert _wait(lambda: _regions(c) == []), "the dead client's region is still registered"
        assert not (Path("/dev/shm") / report["arena"]).exists()  # same user: unlinked too
        assert _wait(lambda: not _mapped_by(worker, report["arena"]))


# -- who may use shared memory ---------------------------------------------------------------
def test_shared_memory_is_local_only_and_the_daemons_names_are_reserved(  # type: ignore[no-untyped-def]
        daemon_factory, tmp_path) -> None:
    from conftest_certs import make_pki

    pki = make_pki(tmp_path / "pki")
    token = tmp_path / "admin.token"
    token.write_text("admin-secret-1\n")
    token.chmod(0o600)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    d = daemon_factory({
        "listen": {"tcp": f"127.0.0.1:{port}", "tls_cert": str(pki.server_cert),
                   "tls_key": str(pki.server_key)},
        "auth": {"tokens": [{"file": str(token), "scope": "admin"}]}}).start()
    shm = shared_memory.SharedMemory(name=f"edged_test_local_{os.getpid()}", create=True,
                                     size=4096)
    lane = Path("/dev/shm") / f"edged-{os.getpid()}-w1-1"  # what a daemon's lane is called
    lane.write_bytes(b"\0" * 4096)
    try:
        with d.client(lanes=False, shm_threshold=1024) as local, EdgedClient(
                f"127.0.0.1:{port}", tls_ca=pki.ca_cert, token="admin-secret-1") as remote:
            local.install("adder", modelgen.add_model(tmp_path / "a.onnx"))
            with pytest.raises(e.PermissionDenied, match="reserved for the daemon"):
                local._shm_register("lane", "/" + lane.name, 4096)  # noqa: SLF001
            local._shm_register("r", "/" + shm.name, 4096)  # noqa: SLF001 - the real RPC
            for call in (lambda: remote._shm_register("t", "/" + shm.name, 4096),  # noqa: SLF001
                         lambda: remote.shm_unregister(""),
                         lambda: _regions(remote),
                         lambda: remote._call(remote.oip.ModelInfer,  # noqa: SLF001
                                              _shm_request("r", 0, 32, [2, 4]))):
                with pytest.raises(e.PermissionDenied, match="local Unix socket"):
                    call()
            assert remote.infer("adder", {"x": np.ones((1, 4), np.float32)})["y"][0, 0] == 2.0
            local.shm_unregister("never-registered")  # success, as in Triton
            # Names are shared by the socket's clients: an unregister-all (tritonclient's
            # habit at start-up) drops edged.client's arena too, which registers it again.
            x = np.ones((512, 4), np.float32)
            np.testing.assert_array_equal(local.infer("adder", {"x": x})["y"], x + 1)
            assert len(_regions(local)) == 2
            local.shm_unregister("")
            assert _regions(local) == []
            np.testing.assert_array_equal(local.infer("adder", {"x": x * 2})["y"], x * 2 + 1)
            assert len(_regions(local)) == 1 and local._shm.disabled is None  # noqa: SLF001
    finally:
        shm.close()
        shm.unlink()
        lane.unlink()


def test_an_oversized_request_says_what_to_do(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory({"listen": {"max_message_bytes": "1MiB"}}).start()
    x = np.ones((131072, 4), np.float32)  # 2 MiB
    with d.client(lanes=False, shm_threshold=None) as c:
        c.install("adder", modelgen.add_model(tmp_path / "a.onnx"))
        with pytest.raises(e.ResourceExhausted) as info:
            c.infer("adder", {"x": x})
        assert re.search(r"request of \d+ bytes exceeds the daemon's max message size 1048576; "
                         r"use shared memory", info.value.message), info.value.message
    with d.client(lanes=False, max_message_bytes=1 << 20, shm_threshold=None) as c:
        with pytest.raises(e.ResourceExhausted, match="exceeds this client's max_message_bytes"):
            c.infer("adder", {"x": x})
    with d.client(lanes=False) as c:  # what the message advises: automatic on a local socket
        np.testing.assert_array_equal(c.infer("adder", {"x": x})["y"], x + 1)

"""The production service through the real daemon: the sd_notify sequence on a real
NOTIFY_SOCKET, drain on SIGTERM with requests in flight, TLS + token scopes on TCP, Prometheus
metrics, a bounded flood, SIGHUP manifest reloads, journald-style logs."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import modelgen
import numpy as np
import pytest
from conftest_certs import make_pki
from daemon_harness import DaemonProcess
from prometheus_client.parser import text_string_to_metric_families

from edged import errors as e
from edged.client import EdgedClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sd_notify_sequence(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sock_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.settimeout(0.2)
    got: list[str] = []

    def drain(until: float) -> None:
        while time.monotonic() < until:
            try:
                got.append(listener.recv(4096).decode())
            except TimeoutError:
                pass

    d = daemon_factory(env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"})
    d.start()
    drain(time.monotonic() + 1.5)
    d.signal(signal.SIGHUP)
    drain(time.monotonic() + 1.0)
    d.signal(signal.SIGTERM)
    assert d.proc is not None and d.proc.wait(30) == 0
    drain(time.monotonic() + 0.3)
    listener.close()
    lines = [line for msg in got for line in msg.split("\n")]
    ready = [i for i, line in enumerate(lines) if line == "READY=1"]
    assert ready, got
    assert any(line.startswith("STATUS=serving") for line in lines)
    assert lines.count("WATCHDOG=1") >= 2  # every 0.5 s for WatchdogSec=1
    reloading = lines.index("RELOADING=1")
    assert reloading > ready[0] and any(i > reloading for i in ready)  # READY=1 again after
    assert lines.index("STOPPING=1") > reloading


def test_sigterm_drains_requests_in_flight(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory({"stop_grace_s": 20}).start()
    with d.client() as c:
        c.install("slow", modelgen.slow_model(tmp_path / "s.onnx", size=768, repeats=768))
        c.load("slow")
        x = np.ones((1, 768), np.float32)
        c.infer("slow", {"x": x})
        results: list[object] = []

        def call() -> None:
            try:
                results.append(c.infer("slow", {"x": x}))
            except e.EdgedError as exc:
                results.append(exc)

        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30  # SIGTERM only once all three are in flight
        while sum(m.in_flight for m in c.status().loaded) + len(results) < 3:
            assert time.monotonic() < deadline, "the requests never reached the daemon"
            time.sleep(0.005)
        d.signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
    assert d.proc is not None and d.proc.wait(60) == 0
    assert len(results) == 3
    assert all(isinstance(r, dict) for r in results), results  # every in-flight call finished


def _secret(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def test_tcp_needs_tls_and_tokens_with_scopes(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pki = make_pki(tmp_path / "pki")
    admin = _secret(tmp_path / "admin.token", "admin-secret-1")
    infer = _secret(tmp_path / "infer.token", "infer-secret-2")
    port = free_port()
    d = daemon_factory({
        "listen": {"tcp": f"127.0.0.1:{port}", "tls_cert": str(pki.server_cert),
                   "tls_key": str(pki.server_key)},
        "auth": {"tokens": [{"file": str(admin), "scope": "admin"},
                            {"file": str(infer), "scope": "infer"}]}}).start()
    model = modelgen.add_model(tmp_path / "a.onnx")
    target = f"127.0.0.1:{port}"
    with EdgedClient(target, tls_ca=pki.ca_cert, token="infer-secret-2") as c:
        assert c.status().state == "serving"
        with pytest.raises(e.PermissionDenied):
            c.install("adder", model)
    with EdgedClient(target, tls_ca=pki.ca_cert, token="nope") as c:
        with pytest.raises(e.Unauthenticated):
            c.status()
    with EdgedClient(target, tls_ca=pki.ca_cert) as c:
        with pytest.raises(e.Unauthenticated) as info:
            c.list_models()
        assert "adder" not in str(info.value)
    with EdgedClient(target, tls_ca=pki.ca_cert, token="admin-secret-1") as c:
        c.install("adder", model)
        assert c.infer("adder", {"x": np.ones((1, 4), np.float32)})["y"][0, 0] == 2.0
    with EdgedClient(target, timeout=3) as c:  # plaintext to a TLS port: refused
        with pytest.raises(e.Unavailable):
            c.status()
    with d.client() as c:  # the Unix socket: its group and mode are the gate
        assert [m.name for m in c.list_models()] == ["adder"]


def test_prometheus_metrics(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory({"metrics": {"port": 0}}).start()
    with d.client(lanes=False) as c:
        c.install("adder", modelgen.add_model(tmp_path / "a.onnx"))
        for _ in range(3):
            c.infer("adder", {"x": np.ones((1, 4), np.float32)})
        with pytest.raises(e.InvalidArgument):
            c.infer("adder", {"x": np.ones((1, 5), np.float32)})
    m = None
    for _ in range(50):
        m = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", d.log())
        if m:
            break
        time.sleep(0.1)
    assert m, d.log()
    text = urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/metrics", timeout=5).read()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text.decode()) for s in fam.samples}
    assert samples[("edged_requests_total", (("model", "adder"), ("outcome", "ok")))] == 3
    assert samples[("edged_loads_total", (("kind", "demand"), ("model", "adder")))] == 1
    assert any(name == "edged_request_seconds_bucket" for name, _ in samples)
    assert any(name == "edged_memory_bytes" for name, _ in samples)


def _one_second_calls(c: EdgedClient, name: str, path: Path) -> dict[str, np.ndarray]:
    """Install a Loop model and return inputs that keep one call running about 2 s on
    this box: long enough that the requests of a flood are in flight together, whatever the
    box's load (a bound that a flood of 30 ms calls reached only when the threads lined up)."""
    c.install(name, modelgen.loop_model(path))
    # two seconds measured: a calibration on a busy moment that overestimates the box's speed
    # still leaves each call long enough for the flood's requests to overlap
    return modelgen.loop_feeds(lambda f: c.infer(name, f), 2.0)


def _flood(d: DaemonProcess, calls: list[tuple[str, dict[str, np.ndarray]]]) -> list[str]:
    """Every call at once (a barrier), each from its own client over gRPC (the bounds under
    test are the gRPC path's; lanes have their own); the outcome of each."""
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(len(calls))

    def call(name: str, feeds: dict[str, np.ndarray]) -> None:
        with d.client(lanes=False, timeout=120) as cl:
            start.wait()
            try:
                cl.infer(name, feeds)
                r = "ok"
            except e.ResourceExhausted as exc:
                r = exc.reason or "RESOURCE_EXHAUSTED"
            except e.EdgedError as exc:
                r = f"other: {exc!r}"
        with lock:
            outcomes.append(r)

    threads = [threading.Thread(target=call, args=c) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return outcomes


@pytest.mark.slow
def test_bounded_flood_gets_resource_exhausted(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory({"listen": {"max_concurrent_rpcs": 4, "threads": 8},
                        "engines": {"queue_depth": 4, "per_model_concurrency": 2}}).start()
    # (6 per model < 8 threads)
    with d.client(lanes=False) as c:
        feeds = _one_second_calls(c, "slow", tmp_path / "s.onnx")
    outcomes = _flood(d, [("slow", feeds)] * 24)
    assert len(outcomes) == 24
    assert "ok" in outcomes and any(o != "ok" for o in outcomes), outcomes
    assert all(o in ("ok", "QUEUE_FULL", "RESOURCE_EXHAUSTED") for o in outcomes), outcomes
    with d.client() as c:
        assert c.health() == "SERVING"


def test_sighup_reloads_manifests_without_dropping_models(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory().start()
    with d.client() as c:
        c.install("adder", modelgen.add_model(tmp_path / "a.onnx"), quality=0.5)
        c.load("adder")
        pid = c.get_model("adder").loaded.worker_pid
    swap = d.state_dir / "tiers" / "swap.yaml"
    good = swap.read_text()
    swap.write_text(good.replace("quality: 0.5", "quality: lots"))
    d.signal(signal.SIGHUP)
    with d.client() as c:
        deadline = time.monotonic() + 10
        while not c.status().manifest_error and time.monotonic() < deadline:
            time.sleep(0.1)
        err = c.status().manifest_error
        assert "swap.yaml line" in err and "quality" in err
        assert c.get_model("adder").versions[0].quality == 0.5  # old state in force
    swap.write_text(good.replace("quality: 0.5", "quality: 0.75"))
    with d.client() as c:
        r = c.reload()
        assert r.ok and r.models == 1
        m = c.get_model("adder")
        assert m.versions[0].quality == 0.75 and c.status().manifest_error == ""
        assert m.loaded.worker_pid == pid  # still loaded, same worker


def test_logs_are_journald_friendly_under_systemd(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env={"JOURNAL_STREAM": "8:12345", "INVOCATION_ID": "x"}).start()
    d.stop()
    lines = [line for line in d.log().splitlines() if line and not line.startswith("edged ")]
    assert lines and all(re.match(r"<[0-7]>", line) for line in lines), lines
    assert not any(re.match(r"<\d>\d{4}-\d\d-\d\d", line) for line in lines)  # no timestamps


# -- start-up: the ram tier and systemd's start timeout -------------------------------------
class Notifications:
    """The receiving end of $NOTIFY_SOCKET: every line, with the wall-clock time it came."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.lines: list[tuple[float, str]] = []

    def until(self, line: str, timeout: float) -> float:
        """Collect until ``line`` arrives; its arrival time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            now = time.time()
            self.lines += [(now, part) for part in msg.split("\n")]
            if line in msg.split("\n"):
                return now
        raise AssertionError(f"no {line} within {timeout}s: {self.lines}")

    def close(self) -> None:
        self.sock.close()


def test_start_timeout_is_extended_while_the_ram_tier_loads(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = DaemonProcess().start()  # installs the ram-tier model; the next one restarts on it
    with first.client() as c:
        c.install("pinned", modelgen.weights_model(tmp_path / "w.onnx", 8 << 20), tier="ram")
    first.stop()
    listener = Notifications(tmp_path / "notify.sock")
    try:
        d = daemon_factory(root=first.root, env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
        d.start(wait=False)
        ready_at = listener.until("READY=1", 60)
        d.wait_serving(30)
        with d.client() as c:
            loaded = c.get_model("pinned").loaded
            loads = [ev for ev in c.events() if ev.kind == "load" and ev.model == "pinned"]
    finally:
        listener.close()
    lines = [line for _, line in listener.lines]
    assert "STATUS=loading the ram tier" in lines
    extend = [i for i, line in enumerate(lines) if line.startswith("EXTEND_TIMEOUT_USEC=")]
    assert extend and extend[0] < lines.index("READY=1"), lines
    assert int(lines[extend[0]].split("=")[1]) >= 10_000_000  # a window, in microseconds
    assert loaded.state == "ready" and loaded.worker_pid > 0  # ready at READY=1
    assert loads and loads[0].time <= ready_at  # loaded before systemd heard READY=1


# -- stopping: a drain, not a slammed door ---------------------------------------------------
def _workers_of(pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow
def test_drain_answers_not_serving_and_stopping_while_the_call_in_flight_finishes(
        daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory({"stop_grace_s": 30}).start()
    x = np.ones((1, 64), np.float32)
    with d.client(lanes=False, timeout=60) as c:
        c.install("loop", modelgen.loop_model(tmp_path / "loop.onnx"))
        c.install("adder", modelgen.add_model(tmp_path / "a.onnx"))
        c.load("loop")
        c.load("adder")
        t0 = time.monotonic()
        c.infer("loop", {"x": x, "n": np.array(20_000, np.int64)})
        per_iteration = (time.monotonic() - t0) / 20_000
        n = int(min(4.0 / per_iteration, 50_000_000))  # about 4 s in flight
        assert d.proc is not None
        workers = _workers_of(d.proc.pid)
        assert workers
        box: dict[str, object] = {}

        def slow_call() -> None:
            try:
                box["result"] = c.infer("loop", {"x": x, "n": np.array(n, np.int64)})
            except e.EdgedError as exc:
                box["result"] = exc

        slow = threading.Thread(target=slow_call)
        slow.start()
        deadline = time.monotonic() + 10
        while not c.get_model("loop").loaded.in_flight:
            assert time.monotonic() < deadline, "the slow call never got in flight"
            time.sleep(0.01)
        d.signal(signal.SIGTERM)
        with d.client(lanes=False, timeout=5) as other:
            deadline = time.monotonic() + 3
            while other.health() != "NOT_SERVING":
                assert time.monotonic() < deadline, "health never said NOT_SERVING"
                time.sleep(0.02)
            with pytest.raises(e.Unavailable) as refused:
                other.infer("adder", {"x": np.ones((1, 4), np.float32)})
            assert refused.value.reason == "STOPPING", refused.value
            with pytest.raises(e.Unavailable) as status:
                other.status()
            assert status.value.reason == "STOPPING"
            assert slow.is_alive()  # all of this happened during the drain
        slow.join(60)
    assert isinstance(box.get("result"), dict), box
    assert d.stop() == 0
    assert all(_gone(pid) for pid in workers), workers


# -- TCP + TLS through edgectl ---------------------------------------------------------------
def _edgectl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    return subprocess.run([sys.executable, "-m", "edged.cli.main", *args], capture_output=True,
                          text=True, timeout=60, check=False, env=env)


@pytest.mark.slow
def test_edgectl_over_tcp_with_tls_ca_and_token_file(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from edged.cli import exitcodes

    pki = make_pki(tmp_path / "pki")
    other_ca = make_pki(tmp_path / "other", "another CA").ca_cert
    admin = _secret(tmp_path / "admin.token", "admin-secret-1")
    infer = _secret(tmp_path / "infer.token", "infer-secret-2")
    port = free_port()
    daemon_factory({
        "listen": {"tcp": f"127.0.0.1:{port}", "tls_cert": str(pki.server_cert),
                   "tls_key": str(pki.server_key)},
        "auth": {"tokens": [{"file": str(admin), "scope": "admin"},
                            {"file": str(infer), "scope": "infer"}]}}).start()
    model = modelgen.add_model(tmp_path / "a.onnx")
    tcp = ("--target", f"127.0.0.1:{port}", "--timeout", "5")
    res = _edgectl(*tcp, "--tls-ca", str(pki.ca_cert), "--token-file", str(infer), "--json",
                   "status")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["state"] == "serving"
    res = _edgectl(*tcp, "--tls-ca", str(pki.ca_cert), "--token-file", str(infer),
                   "install", "adder", str(model))
    assert res.returncode == exitcodes.BY_CODE[e.Code.PERMISSION_DENIED], res.stderr
    res = _edgectl(*tcp, "--tls-ca", str(pki.ca_cert), "--token-file", str(admin),
                   "install", "adder", str(model))
    assert res.returncode == 0, res.stderr
    res = _edgectl(*tcp, "--tls-ca", str(pki.ca_cert), "--token-file", str(admin), "--json",
                   "models")
    assert res.returncode == 0 and "adder" in res.stdout, res.stderr
    res = _edgectl(*tcp, "--tls-ca", str(pki.ca_cert), "status")  # TLS but no token
    assert res.returncode == exitcodes.BY_CODE[e.Code.UNAUTHENTICATED], res.stderr
    for wrong in ((), ("--tls-ca", str(other_ca))):  # plaintext; a CA that did not sign it
        res = _edgectl(*tcp, *wrong, "--token-file", str(admin), "status")
        assert res.returncode == exitcodes.UNREACHABLE, (wrong, res.stderr)
        assert "TLS handshake failed: check --tls-ca" in res.stderr, res.stderr
        assert res.stderr.count("\n") == 1, res.stderr  # no gRPC core log lines


# -- limits ----------------------------------------------------------------------------------
def test_an_oversized_request_is_resource_exhausted_and_the_daemon_serves_on(
        daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory({"listen": {"max_message_bytes": "256KiB"}}).start()
    width = 32 << 10  # one row: 128 KiB of float32
    with d.client(lanes=False, shm_threshold=None) as c:  # through gRPC, not shared memory
        c.install("wide", modelgen.add_model(tmp_path / "w.onnx", width=width))
        with pytest.raises(e.ResourceExhausted) as info:
            c.infer("wide", {"x": np.ones((4, width), np.float32)})  # 512 KiB
        assert str(256 << 10) in str(info.value), info.value  # the daemon's limit, named
        assert c.infer("wide", {"x": np.ones((1, width), np.float32)})["y"][0, 0] == 2.0
        assert c.health() == "SERVING"


@pytest.mark.slow
def test_rejections_are_counted_by_reason(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Four models, each admitting 2 requests (1 running + 1 queued) that last about a second.
    # First three at once to one model: grpc takes all three (6 RPCs at once), the model's
    # third is QUEUE_FULL. Then two to each model at once: every model admits its two, but 8
    # are more than the 6 RPCs the server takes at once, so grpc's own limit refuses some.
    # (One flood of both kinds counted on how the threads happened to be scheduled: under load
    # grpc could admit at most two per model, and no QUEUE_FULL came.)
    d = daemon_factory({"metrics": {"port": 0},
                        "listen": {"max_concurrent_rpcs": 6, "threads": 16},
                        "engines": {"queue_depth": 1, "per_model_concurrency": 1}}).start()
    names = [f"slow{i}" for i in range(4)]
    with d.client(lanes=False) as c:
        feeds = {n: _one_second_calls(c, n, tmp_path / f"{n}.onnx") for n in names}
    outcomes = _flood(d, [(names[0], feeds[names[0]])] * 3)
    outcomes += _flood(d, [(n, feeds[n]) for n in names for _ in range(2)])
    counts = {r: outcomes.count(r) for r in set(outcomes)}
    assert set(counts) <= {"ok", "QUEUE_FULL", "RESOURCE_EXHAUSTED"}, counts
    assert counts.get("QUEUE_FULL") and counts.get("RESOURCE_EXHAUSTED"), counts
    m = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", d.log())
    assert m, d.log()
    text = urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/metrics", timeout=5).read()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text.decode()) for s in fam.samples}
    assert samples[("edged_rejections_total", (("reason", "queue_full"), ("tier", "swap")))] \
        == counts["QUEUE_FULL"]
    assert samples[("edged_rejections_total", (("reason", "concurrency_limit"), ("tier", "")))] \
        == counts["RESOURCE_EXHAUSTED"]  # grpc's own refusals (no edged ErrorInfo)


# -- unexpected errors: INTERNAL with an id that is in the log, on one line ------------------
def test_internal_error_id_is_in_the_daemon_log_on_one_line(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(env={"EDGED_TEST_FAULT": "/edged.v1.System/Status"}).start()
    with d.client() as c:
        with pytest.raises(e.Internal) as info:
            c.status()
        assert c.health() == "SERVING"
        assert c.list_models() == []  # only the named method fails
    error_id = getattr(info.value, "error_id", "")
    assert re.fullmatch(r"[0-9a-f]{12}", error_id), info.value
    assert error_id in str(info.value) and "Traceback" not in str(info.value)
    d.stop()
    lines = [line for line in d.log().splitlines() if error_id in line]
    assert len(lines) == 1, d.log()
    assert "Traceback (most recent call last):" in lines[0]  # the traceback, escaped inline
    assert "RuntimeError: fault injected by EDGED_TEST_FAULT" in lines[0]


def test_onnxruntime_errors_do_not_reach_the_log_in_colour(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])
    shape = numpy_helper.from_array(np.array([3], np.int64), "shape")
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "bad",
                              [x], [y], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "reshape.onnx"
    onnx.save_model(model, str(path))  # valid, but no [batch, 4] input reshapes to [3]
    d = daemon_factory().start()
    with d.client() as c:
        c.install("bad", path)
        with pytest.raises(e.EdgedError) as info:
            c.load("bad")
        assert "Reshape" in str(info.value) or "reshape" in str(info.value).lower()
    d.stop()
    assert "\x1b[" not in d.log()
    assert not any("[E:onnxruntime" in line for line in d.log().splitlines())

"""The production service through the real daemon: the sd_notify sequence on a real
NOTIFY_SOCKET, drain on SIGTERM with requests in flight, TLS + token scopes on TCP, Prometheus
metrics, a bounded flood, SIGHUP manifest reloads, journald-style logs."""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

import modelgen
import numpy as np
import pytest
from conftest_certs import make_pki
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
        t0 = time.monotonic()
        c.infer("slow", {"x": x})
        one = time.monotonic() - t0
        results: list[object] = []

        def call() -> None:
            try:
                results.append(c.infer("slow", {"x": x}))
            except e.EdgedError as exc:
                results.append(exc)

        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(min(0.05, one / 4))
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
    with d.client() as c:
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


def test_bounded_flood_gets_resource_exhausted(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory({"listen": {"max_concurrent_rpcs": 4, "threads": 8}}).start()
    with d.client() as c:
        c.install("slow", modelgen.slow_model(tmp_path / "s.onnx", size=512, repeats=256))
        c.load("slow")
    outcomes: list[str] = []
    lock = threading.Lock()
    x = np.ones((1, 512), np.float32)

    def call() -> None:
        with d.client(timeout=60) as cl:
            try:
                cl.infer("slow", {"x": x})
                r = "ok"
            except e.ResourceExhausted:
                r = "exhausted"
            except e.EdgedError as exc:
                r = f"other: {exc!r}"
        with lock:
            outcomes.append(r)

    threads = [threading.Thread(target=call) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(outcomes) == 24
    assert "exhausted" in outcomes and "ok" in outcomes
    assert all(o in ("ok", "exhausted") for o in outcomes), outcomes
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

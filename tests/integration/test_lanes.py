"""Direct lanes through the real daemon: results, zero-copy use, revocation under load (unload,
eviction, version switch) with no failed request, a killed worker, deadlines, callers that may
not have a lane, and a lane that another process cannot take."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import modelgen
import numpy as np
import psutil
import pytest
from ortref import run_onnx

from edged import errors as e
from edged.client import EdgedClient
from edged.v1 import models_pb2 as mpb


def _wait_for(cond: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_lane_results_match_grpc_and_in_process(daemon, demo_models) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    cases = {
        "ppocr-cls": ({"x": rng.random((1, 3, 48, 192), dtype=np.float32)}, {"x": (1, 3, 48, 192)}),
        "silero-vad": ({"input": rng.random((1, 512), dtype=np.float32) - 0.5,
                        "state": np.zeros((2, 1, 128), np.float32),
                        "sr": np.array(16000, dtype=np.int64)}, {"input": (1, 512)}),
    }
    with daemon.client() as c, daemon.client(lanes=False) as plain:
        for name, (feeds, warm) in cases.items():
            c.install(name, demo_models[name], warmup_shapes=warm)
            got = c.infer(name, feeds)
            assert c.lanes is not None and c.lanes.opened >= 1 and c.lanes.fallbacks == 0
            via_grpc = plain.infer(name, feeds)
            want = run_onnx(demo_models[name], feeds)
            assert set(got) == set(via_grpc) == set(want)
            for k in want:
                np.testing.assert_array_equal(got[k], via_grpc[k])
                np.testing.assert_array_equal(got[k], want[k])
        only = c.infer("silero-vad", cases["silero-vad"][0], outputs=["output"])
        assert list(only) == ["output"]
        # zero-copy: the inputs are arrays in the lane, the outputs read-only arrays in it
        with c.lane("ppocr-cls") as lane:
            x = lane.inputs({"x": ((1, 3, 48, 192), np.float32)})["x"]
            assert lane.direct and x.flags.writeable
            for _ in range(3):
                frame = rng.random((1, 3, 48, 192), dtype=np.float32)
                x[...] = frame
                out = lane.run()
                assert all(not v.flags.writeable for v in out.values())
                want = run_onnx(demo_models["ppocr-cls"], {"x": frame})
                for k in want:
                    np.testing.assert_array_equal(out[k], want[k])
        # a bad tensor on the lane is the same clear error as over gRPC
        with pytest.raises(e.InvalidArgument) as info:
            c.infer("ppocr-cls", {"x": np.ones((1, 3, 48), np.float32)})
        assert info.value.field == "x"
        st = c.status()
        assert {m.name: m.lanes for m in st.loaded}["ppocr-cls"] >= 1
        _wait_for(lambda: next(m for m in c.status().loaded if m.name == "silero-vad").requests
                  >= 2, what="lane requests counted in status")


def test_lane_requests_reach_metrics_and_trace(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import re
    import urllib.request

    trace = tmp_path / "trace.jsonl"
    d = daemon_factory({"metrics": {"port": 0}, "trace": {"path": str(trace)}}).start()
    with d.client() as c:
        c.install("adder", modelgen.add_model(tmp_path / "a.onnx"))
        for _ in range(5):
            c.infer("adder", {"x": np.ones((1, 4), np.float32)})
        assert c.lanes is not None and c.lanes.opened == 1 and c.lanes.fallbacks == 0
    _wait_for(lambda: re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", d.log())
              is not None, what="the metrics port")
    m = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", d.log())
    assert m is not None
    port = int(m.group(1))

    def counted() -> bool:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        hit = re.search(rb'edged_requests_total\{model="adder",outcome="ok"\} (\d+)', text)
        return hit is not None and float(hit.group(1)) >= 5

    _wait_for(counted, what="lane requests in the metrics")
    _wait_for(lambda: trace.exists() and trace.read_text().count('"adder"') >= 5,
              what="lane requests in the trace file")


def _traffic(daemon, model: str, threads: int, stop: threading.Event,  # type: ignore[no-untyped-def]
             failures: list[Exception], seen: set[float], clients: list[EdgedClient]
             ) -> list[threading.Thread]:
    def run() -> None:
        with daemon.client() as c:
            clients.append(c)
            while not stop.is_set():
                try:
                    out = c.infer(model, {"x": np.zeros((1, 4), np.float32)})
                    seen.add(float(out["y"][0, 0]))
                except Exception as exc:  # noqa: BLE001 - counted as a failed request
                    failures.append(exc)

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    return ts


def _lane_requests(clients: list[EdgedClient]) -> int:
    return sum(c.lanes.opened for c in clients if c.lanes is not None)


def test_unload_and_version_switch_revoke_lanes_under_load_failing_nothing(
        daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as admin:
        admin.install("adder", modelgen.add_model(tmp_path / "v1.onnx", offset=1.0))
        admin.install("adder", modelgen.add_model(tmp_path / "v2.onnx", offset=2.0),
                      activate=False)
        admin.load("adder")
    stop = threading.Event()
    failures: list[Exception] = []
    seen: set[float] = set()
    clients: list[EdgedClient] = []
    threads = _traffic(daemon, "adder", 4, stop, failures, seen, clients)
    try:
        with daemon.client() as admin:
            _wait_for(lambda: next((m.lanes for m in admin.status().loaded), 0) >= 4,
                      what="4 lanes open")
            opened = _lane_requests(clients)
            admin.unload("adder")  # revokes the 4 lanes: their clients retry, then re-open
            _wait_for(lambda: _lane_requests(clients) >= opened + 4, what="lanes re-opened")
            admin.activate("adder", 2)  # version switch: v1's lanes revoked, v2's opened
            _wait_for(lambda: 2.0 in seen, what="v2 answering")
            _wait_for(lambda: any(m.version == 2 and m.lanes >= 1
                                  for m in admin.status().loaded), what="lanes on v2")
            admin.rollback("adder")
            seen.discard(1.0)
            _wait_for(lambda: 1.0 in seen, what="v1 answering again")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == []
    assert seen == {1.0, 2.0} or seen >= {1.0}
    assert _lane_requests(clients) >= opened + 8


@pytest.mark.slow
def test_eviction_revokes_lanes_under_load_failing_nothing(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # each model ~127 MiB loaded, ~226 MiB while it loads: the swap tier holds two, so a
    # request to w3 evicts w1 or w2, both serving lane traffic
    d = daemon_factory({"budgets": {"swap": "400MiB", "ram": "100MiB"},
                        "preload": {"enabled": False}}).start()
    mb = 1 << 20
    x = np.ones((1, 64), np.float32)
    with d.client() as c:
        for name in ("w1", "w2", "w3"):
            c.install(name, modelgen.weights_model(tmp_path / f"{name}.onnx", 100 * mb))
    stop = threading.Event()
    failures: list[Exception] = []
    done = {"w1": 0, "w2": 0}
    clients: list[EdgedClient] = []

    def run(model: str) -> None:
        with d.client() as cl:
            clients.append(cl)
            while not stop.is_set():
                try:
                    cl.infer(model, {"x": x})
                    done[model] += 1
                except Exception as exc:  # noqa: BLE001 - counted as a failed request
                    failures.append(exc)

    threads = [threading.Thread(target=run, args=(m,)) for m in ("w1", "w2")]
    for t in threads:
        t.start()
    try:
        with d.client(lanes=False) as c:
            _wait_for(lambda: sum(m.lanes for m in c.status().loaded) >= 2, what="2 lanes")
            for _ in range(20):  # evicts w1 or w2 under its lane traffic
                try:
                    c.infer("w3", {"x": x})
                    break
                except e.CapacityExceeded:
                    # the victim's clients, revoked, reloaded it at once through gRPC and
                    # raced w3's load for the room: the planner's call, not the lanes'
                    time.sleep(0.2)
            evicted = [ev.model for ev in c.events() if ev.kind == "evict"]
            assert set(evicted) & {"w1", "w2"}, evicted  # one with lanes was evicted
            before = dict(done)
            _wait_for(lambda: all(done[m] > before[m] + 10 for m in done),
                      what="both models' traffic continuing")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    # With a budget this tight the victim's clients, revoked, demand it back at once and may
    # meet a load in progress: a capacity rejection there is the planner's answer (the same
    # for gRPC clients); a revoked lane itself must fail nothing.
    lost = [f for f in failures if not isinstance(f, e.CapacityExceeded)]
    assert lost == [], (lost[:3], d.log()[-6000:])
    assert _lane_requests(clients) >= 3  # the revoked lane was opened again


def test_killed_worker_is_a_clear_error_on_the_lane_at_once(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client.install("loop", modelgen.loop_model(tmp_path / "l.onnx"))
    feeds = modelgen.loop_feeds(lambda f: client.infer("loop", f), 2.0)  # ~2 s a call
    x, n = feeds["x"], int(feeds["n"])
    pid = client.get_model("loop").loaded.worker_pid
    assert client.lanes is not None and client.lanes.opened == 1
    box: dict[str, object] = {}

    def call() -> None:
        t = time.monotonic()
        try:
            box["result"] = client.infer("loop", {"x": x, "n": np.array(n)})
        except Exception as exc:  # noqa: BLE001 - asserted below
            box["error"] = exc
        box["seconds"] = time.monotonic() - t

    t = threading.Thread(target=call)
    t.start()
    worker = psutil.Process(pid)
    cpu0 = sum(worker.cpu_times()[:2])
    deadline = time.monotonic() + 10
    while sum(worker.cpu_times()[:2]) - cpu0 < 0.05:  # the lane request computes there
        assert time.monotonic() < deadline, "the worker never ran the request"
        time.sleep(0.01)
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    t.join(30)
    assert "result" not in box, "the killed request succeeded: the kill came too late"
    err = box["error"]
    assert isinstance(err, e.Unavailable) and err.reason == "WORKER_CRASHED", err
    assert "loop" in str(err) and "died" in str(err)
    assert time.monotonic() - killed_at < 10  # at once, not after the request's timeout
    # The next request, at once (whether or not the daemon has heard of the crash yet: one
    # that finds the worker gone before its send is served on a reload), is served
    out = client.infer("loop", {"x": x, "n": np.array(1)})
    np.testing.assert_allclose(out["y"], np.sin(x * 0.5), rtol=1e-6)
    assert any(ev.kind == "worker_crash" and ev.model == "loop" for ev in client.events())
    # ... and on a new lane: at once, or (when the open raced the daemon hearing of the crash
    # on a busy box) through gRPC first and a new lane after the client's retry pause
    deadline = time.monotonic() + 30
    while client.lanes.opened < 2:
        assert time.monotonic() < deadline, "no new lane after the crash"
        client.infer("loop", {"x": x, "n": np.array(1)})
        time.sleep(0.1)


def test_deadline_on_the_lane(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client.install("loop", modelgen.loop_model(tmp_path / "l.onnx"))
    feeds = modelgen.loop_feeds(lambda f: client.infer("loop", f), 5.0)  # ~5 s a call
    x, n = feeds["x"], int(feeds["n"])
    t0 = time.monotonic()
    with pytest.raises(e.DeadlineExceeded):
        client.infer("loop", {"x": x, "n": np.array(n)}, timeout=0.3)
    assert time.monotonic() - t0 < 3.0  # 10x the deadline
    # the worker cancelled the run: the next request does not wait ~5 s behind it
    out = client.infer("loop", {"x": x, "n": np.array(1)}, timeout=30)
    np.testing.assert_allclose(out["y"], np.sin(x * 0.5), rtol=1e-6)
    with client.lane("loop") as lane:
        views = lane.inputs({"x": ((1, 64), np.float32), "n": ((), np.int64)})
        views["x"][...] = x
        views["n"][...] = n
        with pytest.raises(e.DeadlineExceeded):
            lane.run(timeout=0.3)


def test_callers_without_access_get_no_lane(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    token = tmp_path / "admin.token"
    token.write_text("admin-secret-1\n")
    token.chmod(0o600)
    d = daemon_factory({"auth": {"tokens": [{"file": str(token), "scope": "admin"}],
                                 "require_admin_token_on_socket": True}}).start()
    with EdgedClient(d.target, token="admin-secret-1") as admin:
        admin.install("adder", modelgen.add_model(tmp_path / "a.onnx"))
    with EdgedClient(d.target, token="wrong") as c:
        with pytest.raises(e.Unauthenticated):
            c._call(c.models.OpenLane,
                    mpb.OpenLaneRequest(name="adder", client_pid=os.getpid()))
        with pytest.raises(e.Unauthenticated):  # the lane refused, gRPC says why
            c.infer("adder", {"x": np.ones((1, 4), np.float32)})
        assert c.lanes is not None and c.lanes.opened == 0


def test_another_process_cannot_take_or_map_a_lane(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        c.install("adder", modelgen.add_model(tmp_path / "a.onnx"))
        resp = c.models.OpenLane(mpb.OpenLaneRequest(name="adder", client_pid=os.getpid()),
                                 timeout=30)
        path = Path(resp.path)
        lane_dir = path.parent
        assert stat.S_IMODE(lane_dir.stat().st_mode) == 0o711  # enter, never list
        assert stat.S_ISSOCK(path.stat().st_mode)
        # another process connects first: refused (no memory handed over), the lane waits on
        probe = ("import socket,sys; s=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET); "
                 "s.connect(sys.argv[1]); m,a,_,_=s.recvmsg(65536,64); "
                 "print(len(m), len(a))")
        out = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True,
                             text=True, timeout=30)
        assert out.stdout.split() == ["0", "0"], out
        # the process it was granted to gets it; the path is gone once taken
        from edged.client.lane import Lane

        lane = Lane("adder", resp.version, str(path))
        try:
            views = lane.inputs({"x": ((1, 4), np.float32)})
            views["x"][...] = 1.0
            assert lane.run()["y"][0, 0] == 2.0
            assert not path.exists()
            with pytest.raises(OSError):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                try:
                    s.connect(str(path))
                finally:
                    s.close()
        finally:
            lane.close()
        # the lane's memory has no name anywhere in /dev/shm
        assert not [p for p in Path("/dev/shm").iterdir() if "lane" in p.name]
        # a lane over TCP is refused outright (FAILED_PRECONDITION): tested in unit form by
        # the servicer's transport check; a pid that is not a process is refused here
        with pytest.raises(e.InvalidArgument):
            c._call(c.models.OpenLane, mpb.OpenLaneRequest(name="adder", client_pid=0))


def test_a_model_takes_a_bounded_number_of_lanes(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Each lane is a thread and shared memory in the worker: past the bound an OpenLane is
    RESOURCE_EXHAUSTED (the client then uses gRPC) and the model keeps serving."""
    import os as _os

    from edged.engines.lanes import MAX_OPEN_PER_MODEL
    from edged.v1 import models_pb2 as mpb

    client.install("adder", modelgen.add_model(tmp_path / "a.onnx", offset=1.0))
    req = mpb.OpenLaneRequest(name="adder", client_pid=_os.getpid(), size_bytes=4096)
    for _ in range(MAX_OPEN_PER_MODEL):
        client._call(client.models.OpenLane, req)  # noqa: SLF001 - raw RPC, never connected
    with pytest.raises(e.ResourceExhausted, match="direct lanes open"):
        client._call(client.models.OpenLane, req)  # noqa: SLF001
    x = np.zeros((1, 4), np.float32)
    assert client.infer("adder", {"x": x})["y"][0, 0] == 1.0  # over gRPC: still serving

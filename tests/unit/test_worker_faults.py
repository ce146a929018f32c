"""Crashes, hangs, drains and orphans: workers are killed for real (SIGKILL)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import modelgen
import numpy as np
import psutil
import pytest

from edged import errors as e
from edged.engines.workers import WorkerPool

X = np.ones((1, 64), np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("faults")
    return {"add": modelgen.add_model(d / "add.onnx"), "loop": modelgen.loop_model(d / "loop.onnx")}


@pytest.fixture
def events() -> list[tuple[str, dict[str, object]]]:
    return []


@pytest.fixture
def pool(events: list[tuple[str, dict[str, object]]]) -> Iterator[WorkerPool]:
    # (a fresh worker's "worker_measured", for calibration, is not a fault: left out)
    p = WorkerPool(hang_timeout_s=1.5, on_event=lambda kind, d: None if kind == "worker_measured"
                   else events.append((kind, dict(d))))
    yield p
    p.close()


def _in_background(fn, *args, **kw):  # type: ignore[no-untyped-def]
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = fn(*args, **kw)
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t, box


def _wait_in_flight(pool: WorkerPool, pid: int) -> None:
    deadline = time.monotonic() + 5
    while not any(s.pid == pid and s.in_flight for s in pool.stats()):
        assert time.monotonic() < deadline, "the request never got in flight"
        time.sleep(0.005)
    time.sleep(0.05)  # and is running in the worker


def test_sigkill_mid_request(pool: WorkerPool, models: dict[str, Path],
                             events: list[tuple[str, dict[str, object]]]) -> None:
    slow = pool.load("slow:1", models["loop"], "onnx")
    fast = pool.load("fast:1", models["add"], "onnx")
    stop = threading.Event()
    answered, failures = [0], []

    def steady_traffic() -> None:  # another model, another worker: must not notice anything
        x = np.ones((1, 4), np.float32)
        while not stop.is_set():
            try:
                pool.infer("fast:1", {"x": x})
                answered[0] += 1
            except BaseException as exc:  # noqa: BLE001
                failures.append(exc)

    traffic = threading.Thread(target=steady_traffic)
    traffic.start()
    t, box = _in_background(pool.infer, "slow:1", {"x": X, "n": np.array(10_000_000)})
    _wait_in_flight(pool, slow.pid)
    os.kill(slow.pid, signal.SIGKILL)
    t.join(5)
    err = box.get("error")
    assert isinstance(err, e.Unavailable), box
    assert str(err) == (f"engine worker for 'slow:1' (pid {slow.pid}) died: signal 9 "
                        "(SIGKILL)")
    assert err.reason == "WORKER_CRASHED"
    assert not pool.is_loaded("slow:1") and pool.pid("slow:1") is None
    crash = [d for kind, d in events if kind == "worker_crash"]
    assert crash and crash[0]["key"] == "slow:1" and crash[0]["pid"] == slow.pid
    with pytest.raises(e.Unavailable, match="not loaded"):
        pool.infer("slow:1", {"x": X, "n": np.array(1)})
    time.sleep(0.1)
    stop.set()
    traffic.join()
    assert failures == [] and answered[0] > 10
    assert pool.pid("fast:1") == fast.pid
    again = pool.load("slow:1", models["loop"], "onnx")  # the next load starts a fresh worker
    assert again.pid != slow.pid
    assert pool.infer("slow:1", {"x": X, "n": np.array(2)})["y"].shape == (1, 64)


def test_a_crash_between_requests_is_noticed(pool: WorkerPool, models: dict[str, Path],
                                             events: list[tuple[str, dict[str, object]]]) -> None:
    r = pool.load("idle:1", models["add"], "onnx")
    os.kill(r.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pool.is_loaded("idle:1"):  # nobody is waiting on it: the monitor sees the pidfd
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert [d["key"] for kind, d in events if kind == "worker_crash"] == ["idle:1"]


def test_hung_worker_is_killed(pool: WorkerPool, models: dict[str, Path],
                               events: list[tuple[str, dict[str, object]]]) -> None:
    r = pool.load("hang:1", models["loop"], "onnx")
    os.kill(r.pid, signal.SIGSTOP)  # as stuck as a worker can be
    deadline = time.monotonic() + 5  # the signal is delivered asynchronously: wait for it
    while psutil.Process(r.pid).status() != psutil.STATUS_STOPPED and \
            time.monotonic() < deadline:
        time.sleep(0.01)
    assert psutil.Process(r.pid).status() == psutil.STATUS_STOPPED
    started = time.monotonic()
    with pytest.raises(e.Unavailable, match=r"\(pid \d+\) hung: no reply in 1\.\d s; killed"):
        pool.infer("hang:1", {"x": X, "n": np.array(1)}, timeout_s=10)
    assert 1.5 <= time.monotonic() - started < 4
    assert [k for k, _ in events] == ["worker_hang", "worker_crash"]
    assert not psutil.pid_exists(r.pid) or psutil.Process(r.pid).status() == "zombie"


def test_unload_waits_for_requests_in_flight(pool: WorkerPool, models: dict[str, Path]) -> None:
    r = pool.load("busy:1", models["loop"], "onnx")
    t, box = _in_background(pool.infer, "busy:1", {"x": X, "n": np.array(40_000)})
    _wait_in_flight(pool, r.pid)
    pool.unload("busy:1")  # returns only after the request finished, and the worker ended
    t.join(5)
    assert "error" not in box and box["result"]["y"].shape == (1, 64)  # type: ignore[index]
    assert not psutil.pid_exists(r.pid)


def test_unload_with_timeout_keeps_a_busy_model(pool: WorkerPool,
                                                models: dict[str, Path]) -> None:
    pool.load("busy:2", models["loop"], "onnx")
    t, _ = _in_background(pool.infer, "busy:2", {"x": X, "n": np.array(100_000)})
    _wait_in_flight(pool, pool.pid("busy:2") or 0)
    with pytest.raises(e.Unavailable, match="still has 1 requests in flight"):
        pool.unload("busy:2", timeout_s=0.01)
    t.join(5)
    assert pool.is_loaded("busy:2") and pool.drain("busy:2", 1)
    pool.unload("busy:2")


def test_close_leaves_no_orphans(models: dict[str, Path]) -> None:
    pool = WorkerPool()
    pids = [pool.load(f"m{i}", models["add"], "onnx").pid for i in range(3)]
    pids.append(pool.load("g", models["add"], "onnx", group="grp").pid)
    pool.close()
    assert not [p for p in pids if psutil.pid_exists(p)]
    with pytest.raises(e.Unavailable, match="closed"):
        pool.load("late", models["add"], "onnx")


def test_workers_exit_when_the_daemon_dies(models: dict[str, Path]) -> None:
    code = (
        "import sys, threading; from pathlib import Path; "
        "from edged.engines.workers import WorkerPool; pool = WorkerPool(); "
        "r = [None]; t = threading.Thread(target=lambda: r.__setitem__(0, "
        f"pool.load('m', Path({str(models['add'])!r}), 'onnx'))); t.start(); t.join(); "
        "print(r[0].pid, flush=True); sys.stdin.read()")
    daemon = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert daemon.stdout is not None
    worker = int(daemon.stdout.readline())
    assert psutil.pid_exists(worker)  # loaded from a thread that has ended: still alive
    daemon.kill()
    daemon.wait()
    deadline = time.monotonic() + 5
    while psutil.pid_exists(worker) and psutil.Process(worker).status() != "zombie":
        assert time.monotonic() < deadline, "the worker outlived the daemon"
        time.sleep(0.02)


class _Unheard:
    """SIGKILL ``key``'s worker and wait until it is dead, while this thread holds the
    worker's reader role so that nobody (the monitor included) hears of the death: the window
    between a crash and the daemon noticing it, held open until ``hear()`` (or the end of the
    ``with``, so that a failed test does not leave the pool unable to close)."""

    def __init__(self, pool: WorkerPool, key: str) -> None:
        self.worker = pool._models[key].worker
        self._held = False

    def __enter__(self) -> _Unheard:
        calls = self.worker.calls
        assert calls is not None
        assert calls._reader.acquire(timeout=10)
        self._held = True
        os.kill(self.worker.pid, signal.SIGKILL)
        # dead: its end of the channel is closed (that is when its last thread has exited,
        # not when the process first shows as a zombie)
        hup = select.poll()
        hup.register(calls.chan._sock, select.POLLHUP)
        assert hup.poll(10_000), "the killed worker's end of the channel never closed"
        return self

    def hear(self) -> None:
        if self._held:
            self._held = False
            self.worker.calls._reader.release()  # type: ignore[union-attr]

    def __exit__(self, *exc: object) -> None:
        self.hear()


def _wait_in_frame(t: threading.Thread, function: str, what: str) -> None:
    """Wait until ``t`` is inside a call of ``function``."""
    deadline = time.monotonic() + 10
    while True:
        frame = sys._current_frames().get(t.ident or 0)
        while frame is not None:
            if frame.f_code.co_name == function:
                return
            frame = frame.f_back
        assert t.is_alive() and time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_request_to_a_worker_dead_before_the_send_is_not_delivered(
        pool: WorkerPool, models: dict[str, Path],
        events: list[tuple[str, dict[str, object]]]) -> None:
    """A send to a worker that is already dead fails as NotDelivered (nothing ran: safe to
    retry), unlike a request the worker had when it died (WORKER_CRASHED, above); the pool
    hears of the death before the error reaches the caller."""
    pool.load("a:1", models["add"], "onnx")
    with _Unheard(pool, "a:1") as crash:
        assert pool.is_loaded("a:1")  # nobody has heard yet
        t, box = _in_background(pool.infer, "a:1", {"x": np.ones((1, 4), np.float32)})
        # its send failed; it waits for the reader role to hear of the death
        _wait_in_frame(t, "reap", "the request never found its worker gone")
        crash.hear()
        t.join(10)
    err = box["error"]
    assert isinstance(err, e.NotDelivered) and isinstance(err, e.Unavailable), err
    assert err.reason == "WORKER_CRASHED" and "a:1" in str(err)
    assert not pool.is_loaded("a:1")  # heard of, before the caller got its error
    assert [d["key"] for kind, d in events if kind == "worker_crash"] == ["a:1"]


def test_a_request_in_the_window_after_a_crash_is_served_by_a_reload(tmp_path: Path) -> None:
    """Through the daemon's own parts: a request that reaches the model in the moment between
    its worker's death and the daemon hearing of it is served, on a reload (it used to fail
    UNAVAILABLE); the crash is reported as ever."""
    from inprocess import parts_on

    with parts_on(tmp_path / "state", {"version": 1, "preload": {"enabled": False}}) as parts:
        m = parts.manager
        m.catalog.install("a", m.store.put_file(modelgen.add_model(tmp_path / "a.onnx")))
        x = np.ones((1, 4), np.float32)
        _, first = m.infer("a", None, {"x": x}, None, {})
        with _Unheard(parts.pool, "a:1") as crash:
            t, box = _in_background(m.infer, "a", None, {"x": x}, None, {}, timeout_s=60)
            _wait_in_frame(t, "reap", "the request never found its worker gone")
            crash.hear()
            t.join(60)
        assert "error" not in box, box.get("error")
        version, out = box["result"]  # type: ignore[misc]
        assert version == 1
        np.testing.assert_array_equal(out["y"], first["y"])
        assert parts.pool.pid("a:1") not in (None, crash.worker.pid)
        assert "worker_crash" in [ev.kind for ev in m.events.recent()]

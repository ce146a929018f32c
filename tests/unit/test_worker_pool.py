"""WorkerPool with real worker processes, real ONNX Runtime and the real demo models."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import modelgen
import numpy as np
import onnxruntime as ort
import psutil
import pytest

from edged import errors as e
from edged.engines.base import EngineOptions
from edged.engines.workers import WorkerPool

VAD = EngineOptions(warmup_shapes={"input": (1, 512)})


def _reference(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """In-process ORT with the options the worker uses (1 intra-op, 1 inter-op thread)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)  # type: ignore[no-any-return]


def _feeds(name: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    if name == "silero-vad":
        return {"input": rng.standard_normal((1, 512), dtype=np.float32) * 0.1,
                "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000)}
    hw = {"ppocr-det": (320, 320), "ppocr-rec": (48, 320), "ppocr-cls": (48, 192)}[name]
    return {"x": rng.standard_normal((1, 3, *hw), dtype=np.float32)}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {"add": modelgen.add_model(d / "add.onnx"),
            "two": modelgen.two_input_model(d / "two.onnx"),
            "mixed": modelgen.mixed_weights_model(d / "mixed.onnx"),
            "loop": modelgen.loop_model(d / "loop.onnx")}


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    p = WorkerPool(request_timeout_s=20)
    yield p
    p.close()


def test_demo_models_match_in_process_ort(pool: WorkerPool,
                                          demo_models: dict[str, Path]) -> None:
    for name, path in demo_models.items():
        r = pool.load(name, path, "onnx", VAD if name == "silero-vad" else EngineOptions())
        assert r.providers == ("CPUExecutionProvider",)
        assert r.footprint_bytes > 20 << 20 and r.pid == pool.pid(name)
        assert r.session_seconds > 0 and r.warmup_seconds > 0 and r.dedicated
        feeds = _feeds(name)
        out = pool.infer(name, feeds)
        ref = _reference(path, feeds)
        assert list(out) == [t.name for t in r.signature.outputs]
        for got, want in zip(out.values(), ref, strict=True):
            assert isinstance(got, np.ndarray) and got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
        assert got.flags.writeable
    for name in demo_models:
        pool.unload(name)
    assert not pool.stats()


def test_requested_outputs_and_two_inputs(pool: WorkerPool, models: dict[str, Path]) -> None:
    pool.load("two", models["two"], "onnx")
    try:
        a = np.arange(16, dtype=np.float32).reshape(2, 8)
        out = pool.infer("two", {"a": a, "b": a}, outputs=["idx"])
        assert list(out) == ["idx"]
        np.testing.assert_array_equal(out["idx"], [[7], [7]])
        out = pool.infer("two", {"b": a[:, ::-1], "a": a})  # any order, strided arrays
        np.testing.assert_array_equal(out["sum"], a + a[:, ::-1])
    finally:
        pool.unload("two")


@pytest.mark.parametrize("inputs, outputs, field, message", [
    ({"a": np.zeros((1, 8), np.int64), "b": np.zeros((1, 8), np.float32)}, None, "a",
     "input 'a': expected FP32, got INT64"),
    ({"a": np.zeros((3,), np.float32), "b": np.zeros((1, 8), np.float32)}, None, "a",
     r"input 'a': shape \(3,\) does not match \[-1, 8\]"),
    ({"a": np.zeros((1, 4), np.float32), "b": np.zeros((1, 8), np.float32)}, None, "a",
     r"input 'a': shape \(1, 4\) does not match \[-1, 8\]"),
    ({"a": np.zeros((1, 8), np.float32)}, None, "b", "missing input 'b'"),
    ({"a": np.zeros((1, 8), np.float32), "b": np.zeros((1, 8), np.float32),
      "c": np.zeros(1)}, None, "c", "unknown input 'c'"),
    ({"a": np.zeros((1, 8), np.float32), "b": np.zeros((1, 8), np.float32)}, ["z"], "z",
     "unknown output 'z'"),
    ({"a": np.array(["x"] * 8).reshape(1, 8), "b": np.zeros((1, 8), np.float32)}, None, "a",
     "input 'a': expected FP32, got BYTES"),
])
def test_bad_tensors_are_invalid_argument_naming_the_tensor(
        pool: WorkerPool, models: dict[str, Path], inputs: dict[str, np.ndarray],
        outputs: list[str] | None, field: str, message: str) -> None:
    if not pool.is_loaded("two"):
        pool.load("two", models["two"], "onnx")
    with pytest.raises(e.InvalidArgument, match=message) as exc:
        pool.infer("two", inputs, outputs=outputs)
    assert exc.value.field == field and exc.value.reason == "BAD_TENSOR"
    pool.infer("two", {"a": np.zeros((1, 8), np.float32), "b": np.zeros((1, 8), np.float32)})


def test_groups_share_a_worker(pool: WorkerPool, models: dict[str, Path]) -> None:
    a = pool.load("g-add", models["add"], "onnx", group="g")
    b = pool.load("g-mixed", models["mixed"], "onnx", group="g")
    assert a.pid == b.pid and a.dedicated and not b.dedicated
    assert 0 < b.footprint_bytes < a.footprint_bytes  # the second pays only its own share
    x = np.ones((2, 4), np.float32)
    pool.unload("g-add")
    assert psutil.pid_exists(a.pid) and not pool.is_loaded("g-add")
    assert pool.infer("g-mixed", {"x": np.ones((1, 64), np.float32)})["y"].shape == (1, 64)
    c = pool.load("g-add", models["add"], "onnx", group="g")  # joins the running worker
    assert c.pid == a.pid
    np.testing.assert_array_equal(pool.infer("g-add", {"x": x})["y"], x + 1)
    pool.unload("g-add")
    pool.unload("g-mixed")
    psutil.Process(a.pid).wait(5) if psutil.pid_exists(a.pid) else None
    assert not psutil.pid_exists(a.pid)


def test_concurrent_infers_from_8_threads(pool: WorkerPool, models: dict[str, Path]) -> None:
    pool.load("add-c", models["add"], "onnx", max_concurrency=2)
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            for j in range(25):
                x = np.full((1 + j % 3, 4), i * 100 + j, np.float32)
                np.testing.assert_array_equal(pool.infer("add-c", {"x": x})["y"], x + 1)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pool.unload("add-c")
    assert errors == []


def test_warmup_failure_fails_the_load_cleanly(pool: WorkerPool,
                                               demo_models: dict[str, Path]) -> None:
    workers = len(pool.stats())
    with pytest.raises(e.FailedPrecondition, match="warm-up inference failed .*warmup_shapes"):
        pool.load("vad", demo_models["silero-vad"], "onnx")  # input [1, 64]: too short
    assert not pool.is_loaded("vad") and len(pool.stats()) == workers  # its worker is gone
    with pytest.raises(e.InvalidArgument, match="warmup_shapes names unknown inputs"):
        pool.load("vad", demo_models["silero-vad"], "onnx",
                  EngineOptions(warmup_shapes={"audio": (1, 512)}))
    pool.load("vad", demo_models["silero-vad"], "onnx", VAD)
    pool.unload("vad")


def test_truncated_model_fails_cleanly_and_the_pool_still_works(
        pool: WorkerPool, models: dict[str, Path], tmp_path: Path) -> None:
    data = models["mixed"].read_bytes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(data[: len(data) // 2])
    workers = len(pool.stats())
    with pytest.raises((e.DataLoss, e.InvalidArgument), match="bad.onnx"):
        pool.load("bad", bad, "onnx")
    assert len(pool.stats()) == workers
    pool.load("add-t", models["add"], "onnx")
    assert pool.infer("add-t", {"x": np.zeros((1, 4), np.float32)})["y"][0, 0] == 1
    pool.unload("add-t")


def test_load_errors(pool: WorkerPool, models: dict[str, Path]) -> None:
    pool.load("add-e", models["add"], "onnx")
    try:
        with pytest.raises(e.AlreadyExists):
            pool.load("add-e", models["add"], "onnx")
        with pytest.raises(e.FailedPrecondition, match="none of the preferred"):
            pool.load("add-gpu", models["add"], "onnx",
                      EngineOptions(providers=("CUDAExecutionProvider",)))
    finally:
        pool.unload("add-e")
    with pytest.raises(e.Unavailable, match="model 'add-e' is not loaded"):
        pool.infer("add-e", {"x": np.zeros((1, 4), np.float32)})
    with pytest.raises(e.NotFound):
        pool.unload("add-e")


def test_worker_is_a_fresh_process_with_its_own_oom_score(pool: WorkerPool,
                                                           models: dict[str, Path]) -> None:
    r = pool.load("add-o", models["add"], "onnx")
    try:
        proc = psutil.Process(r.pid)
        assert proc.ppid() == psutil.Process().pid
        assert "edged.engines.worker_main" in " ".join(proc.cmdline())
        assert Path(f"/proc/{r.pid}/oom_score_adj").read_text().strip() == "500"
        stats = next(s for s in pool.stats() if s.pid == r.pid)
        assert stats.keys == ("add-o",) and stats.rss_anon_bytes > 0
    finally:
        pool.unload("add-o")


def test_deadline_cancels_the_run_and_the_worker_keeps_serving(
        pool: WorkerPool, models: dict[str, Path]) -> None:
    pool.load("loop-d", models["loop"], "onnx")
    try:
        x = np.ones((1, 64), np.float32)
        with pytest.raises(e.DeadlineExceeded, match="longer than 0.2 s"):
            pool.infer("loop-d", {"x": x, "n": np.array(50_000_000)}, timeout_s=0.2)
        # ORT abandoned the run (RunOptions.terminate): the next call is answered at once
        out = pool.infer("loop-d", {"x": x, "n": np.array(1)}, timeout_s=5)
        np.testing.assert_allclose(out["y"], np.sin(x * 0.5))
    finally:
        pool.unload("loop-d")


def test_queue_depth_bounds_the_waiting_requests(models: dict[str, Path]) -> None:
    """queue_depth counts requests *waiting* for one of the model's running slots: with one
    slot and queue_depth 1, one runs, one waits, the third is refused at once."""
    pool = WorkerPool(queue_depth=1)
    try:
        pool.load("loop-q", models["loop"], "onnx", max_concurrency=1)
        x = np.ones((1, 64), np.float32)
        long = {"x": x, "n": np.array(100_000)}
        running = threading.Thread(target=pool.infer, args=("loop-q", long))
        running.start()
        while not pool.stats()[0].in_flight:  # (the only worker of this pool)
            pass
        waiting = threading.Thread(target=pool.infer, args=("loop-q", {"x": x, "n": np.array(1)}))
        waiting.start()
        while pool.in_flight("loop-q") < 2:
            time.sleep(0.001)
        t0 = time.monotonic()
        with pytest.raises(e.ResourceExhausted, match="1 requests running and 1 queued") as exc:
            pool.infer("loop-q", {"x": x, "n": np.array(1)})
        assert exc.value.reason == "QUEUE_FULL" and time.monotonic() - t0 < 0.3
        assert running.is_alive() and waiting.is_alive()
        running.join()
        waiting.join()
        assert pool.in_flight("loop-q") == 0
    finally:
        pool.close()


def test_a_short_model_turning_long_does_not_block_the_worker(
        pool: WorkerPool, models: dict[str, Path]) -> None:
    """A short inference runs on the thread that read it, which keeps the socket; when the
    daemon sends while one is in flight it nudges the worker, which hands the socket to another
    thread: so a request is served while a long one runs, on the same model."""
    pool.load("loop-r", models["loop"], "onnx")
    try:
        x = np.ones((1, 64), np.float32)
        for _ in range(30):  # its moving average is now "short"
            pool.infer("loop-r", {"x": x, "n": np.array(1)})
        long = threading.Thread(target=pool.infer,
                                args=("loop-r", {"x": x, "n": np.array(400_000)}))
        long.start()
        pid = pool.pid("loop-r")
        while not any(st.pid == pid and st.in_flight for st in pool.stats()):
            pass
        time.sleep(0.02)  # now it runs
        t0 = time.monotonic()
        pool.infer("loop-r", {"x": x, "n": np.array(1)})
        assert time.monotonic() - t0 < 0.5  # not after the long one (~3 s)
        assert long.is_alive()
        long.join()
        assert pool.ping("loop-r") < 0.5
    finally:
        pool.unload("loop-r")


def test_memory_limit_caps_the_arena(pool: WorkerPool, tmp_path: Path) -> None:
    """memory_limit_bytes is ORT's arena cap: an inference that needs more fails cleanly
    (ResourceExhausted), and the model keeps serving smaller ones."""
    path = modelgen.weights_model(tmp_path / "w.onnx", 8 << 20)
    pool.load("capped", path, "onnx", EngineOptions(memory_limit_bytes=16 << 20))
    try:
        with pytest.raises(e.ResourceExhausted, match="memory_limit_bytes"):
            pool.infer("capped", {"x": np.ones((1000, 64), np.float32)})
        assert pool.infer("capped", {"x": np.ones((1, 64), np.float32)})["y"].shape == (1, 1)
    finally:
        pool.unload("capped")


def test_spare_workers_take_the_interpreter_start_out_of_loads(
        models: dict[str, Path]) -> None:
    cold = WorkerPool()
    try:
        first = cold.load("s0", models["add"], "onnx")
    finally:
        cold.close()
    pool = WorkerPool(spare_workers=1)  # starts one at once, in the background
    try:
        deadline = time.monotonic() + 10
        while not pool.spares_ready:
            assert time.monotonic() < deadline, "no spare worker was started"
            time.sleep(0.02)
        (spare,) = [s.pid for s in pool.stats()]
        second = pool.load("s1", models["add"], "onnx")
        assert second.pid == spare and second.dedicated
        overhead = second.load_seconds - second.session_seconds - second.warmup_seconds
        cold_overhead = first.load_seconds - first.session_seconds - first.warmup_seconds
        assert overhead < cold_overhead / 2, (overhead, cold_overhead)
        third = pool.load("s2", models["add"], "onnx")  # waits for the next spare, if need be
        assert third.pid not in (spare, first.pid)
        pool.unload("s1")
    finally:
        pool.close()
    assert not pool.stats() and not pool.spares_ready


def test_footprint_grows_to_what_real_inferences_reach(demo_models: dict[str, Path]) -> None:
    """The load measures after a tiny warm-up (ppocr-det: 64x64); a real 640x640 frame grows
    ORT's arena, and the worker keeps it: the monitor's look grows the footprint to the
    worker's anonymous high-water mark and reports it as a ``footprint`` event."""
    events: list[tuple[str, dict[str, object]]] = []
    pool = WorkerPool(on_event=lambda kind, d: events.append((kind, dict(d))),
                      remeasure_interval_s=3600)  # (this test looks itself)
    try:
        r = pool.load("det", demo_models["ppocr-det"], "onnx")
        assert pool.footprint("det") == r.footprint_bytes
        assert pool.remeasure() == []  # nothing served since the load: nothing to look at
        x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
        pool.infer("det", {"x": x})
        (grown,) = pool.remeasure()
        rss = psutil.Process(r.pid).memory_full_info()
        anon_now = rss.rss - rss.shared
        assert grown[0] == "det" and grown[1] == pool.footprint("det")
        assert pool.footprint("det") > r.footprint_bytes + (20 << 20)  # measured: +70 MB
        assert pool.footprint("det") >= 0.95 * anon_now
        # (the fresh worker's own cost, for calibration, comes first)
        assert [k for k, _ in events] == ["worker_measured", "footprint"]
        assert events[0][1]["key"] == "det" and events[0][1]["footprint"] == r.footprint_bytes
        assert events[1][1]["key"] == "det" and events[1][1]["bytes"] == pool.footprint("det")
        before = pool.footprint("det")
        pool.infer("det", {"x": x})  # the same size again: no new peak, no new event
        assert pool.remeasure() == [] and pool.footprint("det") == before
    finally:
        pool.close()


def test_the_budget_cap_reaches_the_runtime(tmp_path: Path) -> None:
    """``memory_cap`` (the daemon's tier-budget rule) is the arena cap of a load that brings
    none: an inference needing more fails cleanly; options with their own cap keep it."""
    path = modelgen.weights_model(tmp_path / "w.onnx", 8 << 20)
    asked: list[str] = []
    pool = WorkerPool(memory_cap=lambda key: asked.append(key) or 24 << 20)
    try:
        r = pool.load("capped", path, "onnx")
        assert asked == ["capped"] and r.memory_limit_bytes == 24 << 20
        with pytest.raises(e.ResourceExhausted, match="memory_limit_bytes"):
            pool.infer("capped", {"x": np.ones((1000, 64), np.float32)})  # ~130 MB
        assert pool.infer("capped", {"x": np.ones((1, 64), np.float32)})["y"].shape == (1, 1)
        own = pool.load("own", path, "onnx", EngineOptions(memory_limit_bytes=512 << 20))
        assert own.memory_limit_bytes == 512 << 20 and asked == ["capped"]
        assert pool.infer("own", {"x": np.ones((1000, 64), np.float32)})["y"].shape == (1000, 1)
    finally:
        pool.close()


def test_daemon_wide_worker_sharing(models: dict[str, Path]) -> None:
    """worker_groups (model name -> group) and share_worker="one" put models whose version
    names no group of its own into one worker; a version's own group still wins."""
    pool = WorkerPool(worker_groups={"a": "pair", "b": "pair"})
    try:
        a = pool.load("a:1", models["add"], "onnx")
        b = pool.load("b:3", models["add"], "onnx")
        c = pool.load("c:1", models["add"], "onnx")
        d = pool.load("a:2", models["add"], "onnx", group="mine")
        assert a.pid == b.pid and not b.dedicated
        assert len({a.pid, c.pid, d.pid}) == 3
    finally:
        pool.close()
    one = WorkerPool(share_worker="one")
    try:
        pids = {one.load(f"m{i}:1", models["add"], "onnx").pid for i in range(3)}
        assert len(pids) == 1
        x = np.zeros((1, 4), np.float32)
        assert all(one.infer(f"m{i}:1", {"x": x})["y"][0, 0] == 1 for i in range(3))
    finally:
        one.close()

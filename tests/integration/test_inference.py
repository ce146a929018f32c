"""Inference through the real daemon: on-demand loads, tiers, capacity decisions with numbers,
bad tensors, a killed engine worker, and a version switch under steady traffic."""

from __future__ import annotations

import os
import signal
import threading
import time

import modelgen
import numpy as np
import psutil
import pytest
from ortref import run_onnx

from edged import errors as e


def test_demo_models_match_in_process_onnxruntime(client, demo_models) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    cases = {
        "ppocr-cls": ({"x": rng.random((1, 3, 48, 192), dtype=np.float32)}, {"x": (1, 3, 48, 192)}),
        "silero-vad": ({"input": rng.random((1, 512), dtype=np.float32) - 0.5,
                        "state": np.zeros((2, 1, 128), np.float32),
                        "sr": np.array(16000, dtype=np.int64)}, {"input": (1, 512)}),
    }
    for name, (feeds, warmup) in cases.items():
        client.install(name, demo_models[name], warmup_shapes=warmup)
        got = client.infer(name, feeds)
        want = run_onnx(demo_models[name], feeds)
        assert set(got) == set(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    only = client.infer("silero-vad", cases["silero-vad"][0], outputs=["output"])
    assert list(only) == ["output"]


def test_swap_loads_on_demand_storage_refuses(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client.install("adder", modelgen.add_model(tmp_path / "a.onnx"), tier="swap")
    assert client.get_model("adder").state == "unloaded"
    out = client.infer("adder", {"x": np.ones((2, 4), np.float32)})
    np.testing.assert_array_equal(out["y"], np.full((2, 4), 2.0, np.float32))
    assert client.get_model("adder").loaded.worker_pid > 0
    client.set_tier("adder", "storage")
    with pytest.raises(e.FailedPrecondition) as info:
        client.infer("adder", {"x": np.ones((1, 4), np.float32)})
    assert info.value.reason == "STORAGE_TIER"
    client.set_tier("adder", "ram")  # ram: loaded at once, pinned
    assert client.get_model("adder").loaded.state == "ready"


def test_bad_tensors_name_the_tensor_and_the_daemon_keeps_serving(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client.install("two", modelgen.two_input_model(tmp_path / "t.onnx"))
    a = np.ones((1, 8), np.float32)
    bad = [
        ({"a": a.astype(np.int64), "b": a}, "a"),          # wrong dtype
        ({"a": np.ones((1, 5), np.float32), "b": a}, "a"),  # wrong shape
        ({"a": a}, "b"),                                    # missing input
        ({"a": a, "b": a, "zz": a}, "zz"),                  # unknown input
    ]
    for feeds, tensor in bad:
        with pytest.raises(e.InvalidArgument) as info:
            client.infer("two", feeds)
        assert tensor in str(info.value)
    with pytest.raises(e.InvalidArgument):
        client.infer("two", {"a": a, "b": a}, outputs=["nope"])
    with pytest.raises(e.NotFound):
        client.infer("missing", {"a": a})
    out = client.infer("two", {"a": a, "b": a})
    np.testing.assert_array_equal(out["sum"], a * 2)


@pytest.mark.slow
def test_capacity_evicts_then_rejects_with_numbers(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # each model: ~127 MiB loaded, ~226 MiB for a moment while it loads (two copies of its
    # weights): two fit the swap tier, and a third loads only after one is evicted
    d = daemon_factory({"budgets": {"swap": "400MiB", "ram": "100MiB"}}).start()
    mb = 1 << 20
    huge = modelgen.weights_model(tmp_path / "huge.onnx", 400 * mb)
    with d.client() as c:
        for name in ("w1", "w2", "w3"):
            c.install(name, modelgen.weights_model(tmp_path / f"{name}.onnx", 100 * mb))
        x = np.ones((1, 64), np.float32)
        c.infer("w1", {"x": x})
        c.infer("w2", {"x": x})
        check = c.check("w3")
        assert check.decision == "admit_after_evicting" and len(check.evict) == 1
        victim = check.evict[0].split(":")[0]
        assert victim in ("w1", "w2")
        c.infer("w3", {"x": x})
        assert {m.name for m in c.status().loaded} == {"w1", "w2", "w3"} - {victim}
        swap = next(t for t in c.status().tiers if t.tier == "swap")
        assert 0 < swap.used_bytes <= swap.budget_bytes == 400 * mb
        dry = c.check(artifact_path=str(huge))
        assert dry.decision == "reject" and dry.numbers.needed_bytes > 400 * mb
        assert dry.numbers.budget_bytes == 400 * mb
        with pytest.raises(e.CapacityExceeded) as info:
            c.install("huge", huge)  # a swap model must at least fit the swap budget alone
        n = info.value.numbers
        assert n.tier == "swap" and n.needed_bytes > n.budget_bytes == 400 * mb
        with pytest.raises(e.CapacityExceeded) as info:
            c.install("w4", modelgen.weights_model(tmp_path / "w4.onnx", 100 * mb), tier="ram")
        assert info.value.numbers.tier == "ram"
        assert {m.name for m in c.list_models()} == {"w1", "w2", "w3"}
        kinds = [ev.kind for ev in c.events()]
        assert kinds.count("load") == 3 and kinds.count("evict") == 1
        assert c.health() == "SERVING"


def _calibrated_loop(c, x: np.ndarray, seconds: float) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The loop model's ``n`` for one call of about ``seconds`` on this machine, now."""
    c.infer("loop", {"x": x, "n": np.array(1)})  # (loads it on demand)
    n = 20_000
    t0 = time.perf_counter()
    c.infer("loop", {"x": x, "n": np.array(n)})
    return np.array(max(1000, int(n * seconds / max(time.perf_counter() - t0, 1e-3))))


def test_killed_worker_fails_only_its_request(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL while the request is known to run in the worker (a ~1 s call, killed once the
    daemon has sent it): exactly that request fails, with UNAVAILABLE and a message; the other
    model serves every request meanwhile; the next request reloads the killed model."""
    client.lanes = None  # the gRPC path (test_lanes.py has the lane's)
    client.install("loop", modelgen.loop_model(tmp_path / "l.onnx"))
    client.install("fast", modelgen.add_model(tmp_path / "f.onnx"))
    x, x_fast = np.ones((1, 64), np.float32), np.ones((1, 4), np.float32)
    client.infer("fast", {"x": x_fast})
    n = _calibrated_loop(client, x, 1.0)
    pid = client.get_model("loop").loaded.worker_pid
    box: dict[str, object] = {}

    def call() -> None:
        t0 = time.monotonic()
        try:
            box["result"] = client.infer("loop", {"x": x, "n": n})
        except Exception as exc:  # noqa: BLE001 - asserted below
            box["error"] = exc
        box["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=call)
    t.start()
    deadline = time.monotonic() + 10
    # running: the model's slot counts it, and the worker has been busy on it for a while
    while client.get_model("loop").loaded.in_flight == 0:
        assert time.monotonic() < deadline, "the request never got in flight"
        time.sleep(0.005)
    worker = psutil.Process(pid)
    cpu0 = sum(worker.cpu_times()[:2])
    while sum(worker.cpu_times()[:2]) - cpu0 < 0.03:  # it computes: the request runs there
        assert time.monotonic() < deadline, "the worker never ran the request"
        time.sleep(0.01)
    assert t.is_alive()
    os.kill(pid, signal.SIGKILL)
    fast_failures = []
    for _ in range(20):  # every other model keeps serving, meanwhile and after
        try:
            client.infer("fast", {"x": x_fast})
        except Exception as exc:  # noqa: BLE001 - counted as a failed request
            fast_failures.append(exc)
    t.join(30)
    assert "result" not in box, "the killed request succeeded: the kill came too late"
    err = box["error"]
    assert isinstance(err, e.Unavailable | e.Internal), err
    assert "loop" in str(err) and ("died" in str(err) or "signal" in str(err)), str(err)
    assert box["seconds"] < 5  # failed at once, not after a timeout  # type: ignore[operator]
    assert fast_failures == []
    out = client.infer("loop", {"x": x, "n": np.array(1)})  # reloaded on demand
    np.testing.assert_allclose(out["y"], np.sin(x * 0.5), rtol=1e-6)
    assert client.get_model("loop").loaded.worker_pid not in (0, pid)
    assert any(ev.kind == "worker_crash" for ev in client.events())


@pytest.mark.slow
def test_flooded_model_is_bounded_and_other_models_are_served_at_once(
        daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With the default config, more concurrent requests to one slow model than there are RPC
    threads: those beyond its bound (queue_depth + per_model_concurrency) get QUEUE_FULL at
    once, and a request for another model is answered in its own time meanwhile."""
    from edged import config

    d = config.Config()
    bound = d.engines.queue_depth + d.engines.per_model_concurrency
    flood = d.listen.threads + 6  # more than could ever be held by RPC threads
    with daemon.client(lanes=False, timeout=120) as c:
        c.install("loop", modelgen.loop_model(tmp_path / "l.onnx"))
        c.install("fast", modelgen.add_model(tmp_path / "f.onnx"))
        x, x_fast = np.ones((1, 64), np.float32), np.ones((1, 4), np.float32)
        c.infer("fast", {"x": x_fast})
        n = _calibrated_loop(c, x, 1.0)
        outcomes: list[tuple[str, float, float]] = []  # (outcome, started, ended)
        lock = threading.Lock()
        go = threading.Barrier(flood + 1)

        def call() -> None:
            go.wait()
            t0 = time.monotonic()
            try:
                c.infer("loop", {"x": x, "n": n})
                r = "ok"
            except e.ResourceExhausted as exc:
                r = f"exhausted:{exc.reason}"
            except Exception as exc:  # noqa: BLE001 - asserted below
                r = f"other:{exc!r}"
            with lock:
                outcomes.append((r, t0, time.monotonic()))

        threads = [threading.Thread(target=call) for _ in range(flood)]
        for t in threads:
            t.start()
        go.wait()
        deadline = time.monotonic() + 30
        while True:  # every request beyond the bound has been answered
            with lock:
                rejected = [o for o in outcomes if o[0] != "ok"]
            if len(rejected) >= flood - bound - 2:
                break
            assert time.monotonic() < deadline, outcomes
            time.sleep(0.01)
        fast = []
        for _ in range(3):
            t0 = time.monotonic()
            c.infer("fast", {"x": x_fast})
            fast.append(time.monotonic() - t0)
        fast_done = time.monotonic()
        for t in threads:
            t.join(120)
    ok = [o for o in outcomes if o[0] == "ok"]
    rejected = [o for o in outcomes if o[0] != "ok"]
    assert len(outcomes) == flood
    assert all(o[0] == "exhausted:QUEUE_FULL" for o in rejected), rejected
    assert bound <= len(ok) <= bound + 2, (len(ok), bound)
    # Orders, not wall-clock bounds (a loaded CI box stretches every time alike): the first
    # accepted request took one ~1 s run; every refusal came before it (at once, not after
    # queueing), and so did the other model's three answers (it did not wait for the flood)
    first_run_done = min(end for _, _, end in ok)
    assert max(end for _, _, end in rejected) < first_run_done, (rejected, first_run_done)
    assert fast_done < first_run_done, (fast, fast_done, first_run_done)


def test_runtime_cap_comes_from_the_tier_budget(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A swap model's arena is capped by what the swap budget leaves (200 MiB here), not by a
    fixed 1 GiB: an inference needing ~260 MB fails cleanly and the model keeps serving."""
    d = daemon_factory({"budgets": {"swap": "200MiB"}}).start()
    with d.client() as c:
        c.install("w", modelgen.weights_model(tmp_path / "w.onnx", 8 << 20))
        assert c.infer("w", {"x": np.ones((1, 64), np.float32)})["y"].shape == (1, 1)
        with pytest.raises(e.ResourceExhausted, match="memory_limit_bytes"):
            c.infer("w", {"x": np.ones((2000, 64), np.float32)})  # 2000 x 32768 floats
        assert c.infer("w", {"x": np.ones((4, 64), np.float32)})["y"].shape == (4, 1)
        assert c.health() == "SERVING"


def test_footprint_follows_real_inferences(client, demo_models) -> None:  # type: ignore[no-untyped-def]
    """ppocr-det is measured after a 64x64 warm-up; after one 640x640 frame its worker holds
    ~70 MB more, and the daemon accounts it within a few seconds (the loaded footprint, or the
    version's measured bytes that the planner uses from the next load on)."""
    client.install("ppocr-det", demo_models["ppocr-det"])
    client.load("ppocr-det")
    first = client.get_model("ppocr-det").loaded.footprint_bytes
    x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    client.infer("ppocr-det", {"x": x})
    deadline = time.monotonic() + 15
    while True:
        m = client.get_model("ppocr-det")
        seen = max(m.loaded.footprint_bytes, *(v.measured_bytes for v in m.versions))
        if seen > first + (20 << 20):
            break
        assert time.monotonic() < deadline, (first, seen)
        time.sleep(0.2)


def test_worker_groups_from_the_config(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory({"engines": {"worker_groups": {"pair": ["a", "b"]}}}).start()
    with d.client() as c:
        x = np.zeros((1, 4), np.float32)
        for name in ("a", "b", "c"):
            c.install(name, modelgen.add_model(tmp_path / f"{name}.onnx"))
            assert c.infer(name, {"x": x})["y"][0, 0] == 1
        pid = {n: c.get_model(n).loaded.worker_pid for n in ("a", "b", "c")}
    assert pid["a"] == pid["b"] != pid["c"]


def test_unload_ends_the_worker(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client.install("adder", modelgen.add_model(tmp_path / "a.onnx"))
    client.load("adder")
    pid = client.get_model("adder").loaded.worker_pid
    assert psutil.pid_exists(pid)
    client.unload("adder")
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_version_switch_under_traffic_fails_nothing(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as admin:
        admin.install("adder", modelgen.add_model(tmp_path / "v1.onnx", offset=1.0))
        admin.install("adder", modelgen.add_model(tmp_path / "v2.onnx", offset=2.0),
                      activate=False)
        admin.load("adder")
    stop = threading.Event()
    failures: list[Exception] = []
    seen: set[float] = set()

    def traffic() -> None:
        with daemon.client() as c:
            while not stop.is_set():
                try:
                    out = c.infer("adder", {"x": np.zeros((1, 4), np.float32)})
                    seen.add(float(out["y"][0, 0]))
                except Exception as exc:  # noqa: BLE001 - counted as a failed request
                    failures.append(exc)

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    with daemon.client() as admin:
        admin.activate("adder", 2)
        time.sleep(0.5)
        admin.rollback("adder")
        time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(30)
    assert failures == []
    assert seen == {1.0, 2.0}

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
    assert client.get_model("adder").state == 1  # unloaded
    out = client.infer("adder", {"x": np.ones((2, 4), np.float32)})
    np.testing.assert_array_equal(out["y"], np.full((2, 4), 2.0, np.float32))
    assert client.get_model("adder").loaded.worker_pid > 0
    client.set_tier("adder", "storage")
    with pytest.raises(e.FailedPrecondition) as info:
        client.infer("adder", {"x": np.ones((1, 4), np.float32)})
    assert info.value.reason == "STORAGE_TIER"
    client.set_tier("adder", "ram")  # ram: loaded at once, pinned
    assert client.get_model("adder").loaded.state == 3  # ready


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


def test_capacity_evicts_then_rejects_with_numbers(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory({"budgets": {"swap": "300MiB", "ram": "100MiB"}}).start()
    mb = 1 << 20
    huge = modelgen.weights_model(tmp_path / "huge.onnx", 400 * mb)
    with d.client() as c:
        for name in ("w1", "w2", "w3"):
            c.install(name, modelgen.weights_model(tmp_path / f"{name}.onnx", 100 * mb))
        x = np.ones((1, 64), np.float32)
        c.infer("w1", {"x": x})
        c.infer("w2", {"x": x})
        check = c.check("w3")
        assert check.decision == 2 and len(check.evict) == 1  # admit after evicting one
        victim = check.evict[0].split(":")[0]
        assert victim in ("w1", "w2")
        c.infer("w3", {"x": x})
        assert {m.name for m in c.status().loaded} == {"w1", "w2", "w3"} - {victim}
        swap = next(t for t in c.status().tiers if t.tier == 2)
        assert 0 < swap.used_bytes <= swap.budget_bytes == 300 * mb
        dry = c.check(artifact_path=str(huge))
        assert dry.decision == 3 and dry.numbers.needed_bytes > 300 * mb  # reject
        assert dry.numbers.budget_bytes == 300 * mb
        with pytest.raises(e.CapacityExceeded) as info:
            c.install("huge", huge)  # a swap model must at least fit the swap budget alone
        n = info.value.numbers
        assert n.tier == "swap" and n.needed_bytes > n.budget_bytes == 300 * mb
        with pytest.raises(e.CapacityExceeded) as info:
            c.install("w4", modelgen.weights_model(tmp_path / "w4.onnx", 100 * mb), tier="ram")
        assert info.value.numbers.tier == "ram"
        assert {m.name for m in c.list_models()} == {"w1", "w2", "w3"}
        kinds = [ev.kind for ev in c.events()]
        assert kinds.count("load") == 3 and kinds.count("evict") == 1
        assert c.health() == "SERVING"


def test_killed_worker_fails_only_its_request(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client.install("slow", modelgen.slow_model(tmp_path / "s.onnx", size=512, repeats=512))
    client.install("fast", modelgen.add_model(tmp_path / "f.onnx"))
    x_slow = np.ones((1, 512), np.float32)
    x_fast = np.ones((1, 4), np.float32)
    client.infer("slow", {"x": x_slow})
    client.infer("fast", {"x": x_fast})
    pid = client.get_model("slow").loaded.worker_pid
    errors: list[Exception] = []

    def call() -> None:
        try:
            client.infer("slow", {"x": x_slow})
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    t.join(30)
    assert len(errors) <= 1 and all(isinstance(x, e.Unavailable) for x in errors)
    for _ in range(20):  # every other model keeps serving
        client.infer("fast", {"x": x_fast})
    client.infer("slow", {"x": x_slow})  # reloaded on demand
    assert client.get_model("slow").loaded.worker_pid != pid
    assert any(ev.kind == "worker_crash" for ev in client.events())


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

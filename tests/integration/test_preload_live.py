"""The daemon preloads live: a robot cycling through three models that do not all fit finds the
next one already loaded (preload hits in the event stream); selection and events via edgectl."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path

import modelgen
import numpy as np
import pytest


def edgectl(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged.cli.main", "--target", target, *args],
                          capture_output=True, text=True, timeout=60, check=False)


def wait_not_loading(client, name: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Wait (on the daemon's state, not a guessed sleep) until ``name`` is not being loaded:
    a preload still running on a busy box is let finish before its request comes."""
    deadline = time.monotonic() + timeout
    while any(m.name == name and m.state == "loading" for m in client.status().loaded):
        assert time.monotonic() < deadline, f"{name} still loading after {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_repeating_pattern_gets_preload_hits(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    mb = 1 << 20
    d = daemon_factory({"budgets": {"swap": "200MiB"},  # room for two of the three
                        "preload": {"enabled": True, "interval_s": 0.05}}).start()
    x = np.ones((1, 64), np.float32)
    order = ("wake", "asr", "detect")
    with d.client() as c:
        for name in order:
            c.install(name, modelgen.weights_model(tmp_path / f"{name}.onnx", 60 * mb),
                      tasks=["demo"])
        # requests at least 1 s apart, a robot's pace, and at least twice the slowest load
        # this box measured (a 60 MB load on a busy 2-core CI box can take longer than 1 s);
        # a preload of the next model still running then is waited for on its state: how
        # long a load takes here never decides what the test sees
        gap = 1.0
        for i in range(12 * len(order)):
            name = order[i % len(order)]
            wait_not_loading(c, name)
            c.infer(name, {"x": x})
            if i % len(order) == len(order) - 1:
                gap = max(1.0, 2.0 * max(v.load_seconds for m in c.list_models()
                                         for v in m.versions))
            time.sleep(gap)
        events = list(c.events())
        swap = next(t for t in c.status().tiers if t.tier == "swap")
        # (the requests went over direct lanes, re-opened after each eviction: what the
        # preloader learned, it learned from lane traffic, reported about once a second)
        assert c.lanes is not None and c.lanes.opened >= len(order)
    kinds = [ev.kind for ev in events]
    assert kinds.count("preload") >= 3, kinds
    assert kinds.count("preload_hit") >= 3, kinds
    assert swap.used_bytes <= swap.budget_bytes


def test_select_and_events_through_edgectl(daemon, demo_models) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        c.install("cls-a", demo_models["ppocr-cls"], tasks=["ocr.classify"], quality=0.6)
        c.install("cls-b", demo_models["ppocr-cls"], tasks=["ocr.classify"], quality=0.9)
        c.install("det", demo_models["ppocr-det"], tasks=["ocr.detect"], tier="storage")
    res = edgectl(daemon.target, "--json", "select", "--task", "ocr.classify", "--priority",
                  "quality")
    assert res.returncode == 0, res.stderr
    sel = json.loads(res.stdout)
    assert sel["choice"]["name"] == "cls-b"
    assert [r["name"] for r in sel["runners_up"]] == ["cls-a"]
    res = edgectl(daemon.target, "select", "--task", "ocr.detect")
    assert res.returncode == 5  # only in storage: nothing suitable now
    res = edgectl(daemon.target, "--json", "events")
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [ev["kind"] for ev in lines].count("install") == 3
    follow = subprocess.Popen([sys.executable, "-m", "edged.cli.main", "--target", daemon.target,
                               "events", "--follow", "--kind", "load"],
                              stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        with daemon.client() as c:
            c.load("cls-a")
        ready, _, _ = select.select([follow.stdout], [], [], 30)
        assert ready, "edgectl events --follow printed nothing within 30 s of a load"
        line = follow.stdout.readline()  # type: ignore[union-attr]
        assert " load " in line and "cls-a" in line
    finally:
        follow.terminate()
        follow.wait(10)


def test_selection_modes_and_pins_through_edgectl(daemon_factory, demo_models) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory({"selection": {"mode": "hybrid",
                                      "pins": {"ocr.classify": "cls-a"}}}).start()
    with d.client() as c:
        c.install("cls-a", demo_models["ppocr-cls"], tasks=["ocr.classify"], quality=0.6)
        c.install("cls-b", demo_models["ppocr-cls"], tasks=["ocr.classify"], quality=0.9)
        c.install("cls-old", demo_models["ppocr-cls"], tasks=["ocr.classify"], quality=1.0,
                  tier="storage")

    def select_json(*args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
        res = edgectl(d.target, "--json", "select", "--task", "ocr.classify", "--priority",
                      "quality", *args)
        return res.returncode, json.loads(res.stdout)

    code, sel = select_json()  # hybrid with the configured pin: the pin wins
    assert code == 0 and sel["choice"]["name"] == "cls-a" and sel["mode"] == "hybrid"
    assert "pinned" in sel["reasons"][0]
    code, sel = select_json("--mode", "auto")  # auto ignores pins: the best quality serves
    assert code == 0 and sel["choice"]["name"] == "cls-b"
    assert sel["choice"]["score"] == 0.9
    code, sel = select_json("--pin", "cls-old")  # a pin in storage: hybrid falls back
    assert code == 0 and sel["choice"]["name"] == "cls-b"
    assert "storage tier" in sel["reasons"][0]
    code, sel = select_json("--mode", "manual", "--pin", "cls-old")  # manual: no answer
    assert code == 5 and not sel.get("choice", {}).get("name")
    assert "manual mode: no answer" in sel["reasons"][0]
    res = edgectl(d.target, "select", "--task", "ocr.classify", "--mode", "manual")
    assert res.returncode == 0 and res.stdout.startswith("cls-a v1:")


def test_live_traffic_is_recorded_and_replays(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    trace = tmp_path / "live.jsonl"
    d = daemon_factory({"trace": {"path": str(trace), "max_bytes": "1MiB"}}).start()
    x = np.ones((1, 64), np.float32)
    with d.client() as c:
        for name in ("a", "b"):
            c.install(name, modelgen.weights_model(tmp_path / f"{name}.onnx", 1 << 20))
        for name in ("a", "b", "a", "b", "a"):
            c.infer(name, {"x": x})
        sizes = {m.name: {"size_bytes": m.versions[0].measured_bytes or
                          m.versions[0].estimated_bytes,
                          "load_s": max(m.versions[0].load_seconds, 0.01)}
                 for m in c.list_models()}
    d.stop()
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [ln["model"] for ln in lines] == ["a", "b", "a", "b", "a"]
    assert all(ln["t"] > 0 and ln["duration"] > 0 and ln["version"] == 1 for ln in lines)
    models = tmp_path / "models.json"
    models.write_text(json.dumps(sizes))
    replay = str(Path(__file__).resolve().parents[2] / "tools" / "replay.py")
    res = subprocess.run([sys.executable, replay, "--trace", str(trace), "--models",
                          str(models), "--budget", "64MiB", "--json"], capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    for policy in ("lru", "edged", "optimal"):
        assert set(out["policies"][policy]) >= {"hit_rate", "cold_loads", "stall_s",
                                                "bytes_loaded", "wasted_preloads"}


def test_recording_under_concurrent_clients_fails_nothing(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Four clients at once with a tiny trace file that rotates under them: no request fails,
    and every trace file the daemon leaves reads back in time order."""
    import threading

    from edged.manager.memory.traces import read_trace

    trace = tmp_path / "live.jsonl"
    d = daemon_factory({"trace": {"path": str(trace), "max_bytes": 400}}).start()
    x = np.ones((1, 64), np.float32)
    errors: list[BaseException] = []
    with d.client() as c:
        for name in ("a", "b"):
            c.install(name, modelgen.weights_model(tmp_path / f"{name}.onnx", 1 << 20))

    def client(i: int) -> None:
        with d.client() as c:
            for k in range(25):
                try:
                    c.infer("ab"[(i + k) % 2], {"x": x})
                except BaseException as exc:  # noqa: BLE001 - counted and asserted below
                    errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    d.stop()
    assert errors == []
    for f in (trace, trace.with_name("live.jsonl.1")):
        entries = read_trace(f)  # raises on time going backwards or a torn line
        assert entries and all(e.model in ("a", "b") for e in entries)


def test_switch_and_reload_events_through_the_daemon(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Through the real daemon: a version switch and a SIGHUP reload appear in the stream."""
    import signal

    d = daemon_factory().start()
    with d.client() as c:
        c.install("m", modelgen.add_model(tmp_path / "m1.onnx", offset=1.0))
        c.install("m", modelgen.add_model(tmp_path / "m2.onnx", offset=2.0), activate=False)
        c.activate("m", 2)
        d.signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while not any(e.kind == "manifest_reload" for e in c.events()):
            assert time.monotonic() < deadline, "no manifest_reload event after SIGHUP"
            time.sleep(0.1)
        events = {e.kind: e for e in c.events()}
    assert events["version_switch"].model == "m" and events["version_switch"].version == 2
    assert events["manifest_reload"].details["ok"] == "true"

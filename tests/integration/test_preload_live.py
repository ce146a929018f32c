"""The daemon preloads live: a robot cycling through three models that do not all fit finds the
next one already loaded (preload hits in the event stream); selection and events via edgectl."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import modelgen
import numpy as np


def edgectl(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged.cli.main", "--target", target, *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_repeating_pattern_gets_preload_hits(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    mb = 1 << 20
    d = daemon_factory({"budgets": {"swap": "200MiB"},  # room for two of the three
                        "preload": {"enabled": True, "interval_s": 0.05}}).start()
    x = np.ones((1, 64), np.float32)
    with d.client() as c:
        for name in ("wake", "asr", "detect"):
            c.install(name, modelgen.weights_model(tmp_path / f"{name}.onnx", 60 * mb),
                      tasks=["demo"])
        for _ in range(12):
            for name in ("wake", "asr", "detect"):
                c.infer(name, {"x": x})
                time.sleep(0.6)
        events = list(c.events())
        swap = next(t for t in c.status().tiers if t.tier == 2)
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
        line = follow.stdout.readline()  # type: ignore[union-attr]
        assert " load " in line and "cls-a" in line
    finally:
        follow.terminate()
        follow.wait(10)


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

"""Memory truth seen from outside the real daemon: its own RSS in status, estimates that
count activations at the declared warm-up shapes, calibration and the GPU budget in status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil

MiB = 1 << 20


def edgectl(target: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged.cli.main", "--target", target, *args],
                          capture_output=True, text=True, timeout=timeout)


def test_status_shows_the_daemons_own_rss(daemon) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        shown = c.status().snapshot.process_rss_bytes
    real = psutil.Process(daemon.proc.pid).memory_info().rss
    assert 0.5 * real < shown < 2 * real
    res = edgectl(daemon.target, "status")
    assert res.returncode == 0, res.stderr
    assert "(daemon " in res.stdout and " of it)" in res.stdout


def test_daemon_applies_its_malloc_settings(daemon) -> None:  # type: ignore[no-untyped-def]
    """No MALLOC_* in the harness's environment: the daemon set them itself (its log says)."""
    assert "malloc:" in daemon.log()


def test_install_estimate_counts_activations_at_the_warmup_shapes(
        daemon, demo_models: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        small = c.install("det-small", demo_models["ppocr-det"])
        big = c.install("det-big", demo_models["ppocr-det"],
                        warmup_shapes={"x": [1, 3, 640, 640]})
        est_small = small.model.versions[0].estimated_bytes
        est_big = big.model.versions[0].estimated_bytes
        assert est_big - est_small > 40 * MiB
        loaded = c.load("det-big")
        measured = loaded.model.footprint_bytes
    assert abs(est_big / measured - 1) <= 0.15, (est_big, measured)


def test_calibration_at_first_load_and_by_edged_calibrate(
        daemon, demo_models: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        before = c.status().fixed_costs
        assert before is not None
        assert before["source"] == "not measured" and before["worker_bytes"] == 0
        assert before["gpu_context_bytes"] == 300 * MiB  # the default until measured
        c.install("cls", demo_models["ppocr-cls"])
        c.load("cls")
        first = c.status().fixed_costs
    assert first is not None and first["source"] == "first load"
    assert 20 * MiB < first["worker_bytes"] < 60 * MiB
    assert "onnxruntime" in first["device"]
    res = subprocess.run([sys.executable, "-m", "edged", "--config", str(daemon.config_path),
                          "--state-dir", str(daemon.state_dir), "calibrate", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    with daemon.client() as c:
        now = c.status().fixed_costs
    assert now is not None
    assert now["source"] == "edged calibrate" and 20 * MiB < now["worker_bytes"] < 60 * MiB
    table = edgectl(daemon.target, "status")
    assert "per worker" in table.stdout and "edged calibrate" in table.stdout


def test_no_gpu_budget_without_a_discrete_gpu(daemon) -> None:  # type: ignore[no-untyped-def]
    """On a CPU box (and a Jetson, whose GPU allocates from RAM) there is no GPU budget: GPU
    memory, if any, stays in the ram/swap budgets."""
    with daemon.client() as c:
        assert c.status().gpu_budget is None


def test_growth_after_real_inferences_is_accounted_with_an_event(
        daemon, demo_models: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    """ppocr-det warmed up at its default 1x3x64x64, then sent 640x640 frames: the worker's
    arena grows by ~70 MB; the daemon re-measures it, accounts it and says so in an event."""
    import time

    import numpy as np

    with daemon.client() as c:
        c.install("det", demo_models["ppocr-det"])
        at_load = c.load("det").model.footprint_bytes
        frame = {"x": np.zeros((1, 3, 640, 640), np.float32)}
        deadline = time.monotonic() + 60  # expected within ~2 s
        grown = []
        while not grown and time.monotonic() < deadline:
            c.infer("det", frame)
            grown = [ev for ev in c.events() if ev.kind == "footprint" and ev.model == "det"]
        assert grown, "no footprint event"
        now = next(m.footprint_bytes for m in c.status().loaded if m.name == "det")
    assert now > at_load + 40 * MiB
    assert "after real inferences" in grown[-1].message

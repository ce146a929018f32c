"""Variants through the real daemon (issue 17): made on the device in a child process,
installed only when the operator accepts the output change, pinned or chosen by what fits,
recommended per tier, removed with their artifact; a killed job leaves nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import modelgen
import numpy as np
import pytest

from edged import errors as e

MB = 1 << 20
X = {"x": np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)}


def edgectl(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged.cli.main", "--target", target, *args],
                          capture_output=True, text=True, timeout=300, check=False)


def blobs(d) -> set[str]:  # type: ignore[no-untyped-def]
    return {p.name for p in (d.state_dir / "store").iterdir() if p.is_dir()}


def wait_for(cond, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_variant_is_reported_then_installed_only_when_accepted(daemon, demo_models) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        c.install("rec", demo_models["ppocr-rec"], quality=0.9,
                  warmup_shapes={"x": [1, 3, 48, 320]})
        before = blobs(daemon)
        report = c.make_variant("rec", "fp16")  # report only
        assert not report.installed and report.stage == "refused"
        assert 0 < report.worst_change < 0.1 and report.size_bytes < report.source_bytes
        assert not c.get_model("rec").versions[0].variants
        assert blobs(daemon) == before  # nothing left of the job
        refused = c.make_variant("rec", "fp16", accept_change=report.worst_change / 100)
        assert not refused.installed and "more than the accepted" in refused.message
        made = c.make_variant("rec", "fp16", accept_change=0.1)
        assert made.installed
        (variant,) = made.model.versions[0].variants
        assert variant.name == "fp16" and variant.precision == "fp16"
        assert variant.quality == pytest.approx(0.9 * (1 - made.worst_change), abs=1e-3)
        assert "made on the device from fp32" in variant.notes
        kinds = [ev.kind for ev in c.events()]
        assert "variant_made" in kinds and "variant_job" in kinds
    models = edgectl(daemon.target, "models")
    assert "fp32,fp16" in models.stdout, models.stdout
    show = edgectl(daemon.target, "show", "rec")
    assert "variant fp16" in show.stdout and "serves   auto" in show.stdout, show.stdout


def test_a_pinned_variant_serves_and_is_measured(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = modelgen.weights_model(tmp_path / "w.onnx", 8 * MB, seed=1)
    with daemon.client() as c:
        c.install("w", path, quality=0.8)
        want = c.infer("w", X)["y"]
        assert c.make_variant("w", "fp16", accept_change=0.05).installed
        c.set_variant("w", "fp16")
        c.unload("w")
        got = c.infer("w", X)["y"]
        np.testing.assert_allclose(got, want, rtol=0.05, atol=1e-3)
        (loaded,) = [m for m in c.status().loaded if m.name == "w"]
        assert loaded.variant == "fp16" and loaded.variant_reason == "variant fp16 is pinned"
        # measured on its requests (lane requests are reported about once a second), shown
        # for each tier
        wait_for(lambda: [f.latency_ms > 0 for f in c.recommend("w").fits
                          if f.variant == "fp16"] == [True, True])
        m = c.get_model("w")
        assert m.versions[0].serve == "fp16"
        wait_for(lambda: c.get_model("w").versions[0].variants[0].measured_bytes > 0)
        c.set_variant("w", "auto")
        c.unload("w")
        c.infer("w", X)
        (loaded,) = [m for m in c.status().loaded if m.name == "w"]
        assert loaded.variant == "fp32"  # it fits: the version itself
        assert loaded.variant_reason == "fp32 fits now"


@pytest.mark.slow
def test_a_smaller_variant_serves_where_the_version_cannot(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory({"budgets": {"swap": "60MiB"}, "preload": {"enabled": False}}).start()
    path = modelgen.weights_model(tmp_path / "w.onnx", 40 * MB, seed=2)
    with d.client() as c:
        c.install("w", path, quality=0.8, tier="storage")  # a 40 MB model: no load on install
        assert c.make_variant("w", "fp16", accept_change=0.05).installed
        c.set_tier("w", "swap")
        r = c.recommend("w")
        fits = {(f.variant, f.tier): f for f in r.fits}
        assert fits[("fp32", "swap")].decision in ("never", "reject"), fits[("fp32", "swap")]
        assert fits[("fp16", "swap")].decision == "admit"
        assert r.choice is not None
        assert r.choice.variant == "fp16" and r.choice.tier == "swap", r
        c.infer("w", X)
        (loaded,) = c.status().loaded
        assert loaded.variant == "fp16"
        ev = [x for x in c.events() if x.kind == "variant"]
        assert ev and "fp16" in ev[-1].message and "does not fit" in ev[-1].message
    status = edgectl(d.target, "status")
    assert any(line.split()[:3] == ["w", "1", "fp16"] for line in status.stdout.splitlines()), \
        status.stdout
    assert "w:1 serves fp16: fp32 does not fit without evicting" in status.stdout, status.stdout
    rec = edgectl(d.target, "recommend", "w")
    assert rec.returncode == 0 and "recommended: fp16 in swap" in rec.stdout, rec.stdout
    js = json.loads(edgectl(d.target, "--json", "recommend", "w").stdout)
    assert js["choice"]["variant"] == "fp16" and js["choice"]["tier"] == "swap"


def test_recommend_gives_the_largest_batch_within_each_tier(daemon_factory, demo_models) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory({"budgets": {"ram": "200MiB", "swap": "300MiB"}}).start()
    with d.client() as c:
        c.install("det", demo_models["ppocr-det"], warmup_shapes={"x": [1, 3, 640, 640]})
        r = c.recommend("det")
        fits = {(f.variant, f.tier): f for f in r.fits}
        ram, swap = fits[("fp32", "ram")], fits[("fp32", "swap")]
        assert ram.max_batch >= 1 and swap.max_batch >= ram.max_batch, r
        r2 = c.recommend(artifact_path=str(demo_models["ppocr-det"]),
                         warmup_shapes={"x": [1, 3, 640, 640]})
        assert {f.tier for f in r2.fits} == {"ram", "swap"}
        assert r2.choice is not None and r2.choice.variant == "file"


def test_removing_a_variant_removes_its_artifact(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = modelgen.weights_model(tmp_path / "w.onnx", 4 * MB, seed=3)
    with daemon.client() as c:
        c.install("w", path)
        before = blobs(daemon)
        assert c.make_variant("w", "int8", accept_change=1.0).installed
        assert len(blobs(daemon)) == len(before) + 1
        with pytest.raises(e.FailedPrecondition):
            c.remove_variant("w", "fp32")  # the version itself
        c.remove_variant("w", "int8")
        assert not c.get_model("w").versions[0].variants
        assert blobs(daemon) == before
        with pytest.raises(e.NotFound):
            c.set_variant("w", "int8")


def test_a_variant_installed_from_a_file_needs_the_same_signature(client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client.install("m", modelgen.add_model(tmp_path / "a.onnx", offset=1.0))
    with pytest.raises(e.SignatureChanged):
        client.install("m", modelgen.add_model(tmp_path / "b.onnx", width=8), variant="wide")
    client.install("m", modelgen.add_model(tmp_path / "c.onnx", offset=1.5), variant="alt",
                   quality=0.5)
    (v,) = client.get_model("m").versions
    assert [x.name for x in v.variants] == ["alt"] and v.variants[0].quality == 0.5
    client.set_variant("m", "alt")
    assert client.infer("m", {"x": np.zeros((1, 4), np.float32)})["y"][0, 0] == 1.5


def test_a_daemon_killed_during_a_variant_job_leaves_nothing(daemon, demo_models) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        c.install("det", demo_models["ppocr-det"], warmup_shapes={"x": [1, 3, 640, 640]})
    before = blobs(daemon)
    done = threading.Event()

    def job() -> None:
        try:
            with daemon.client() as c2:
                c2.make_variant("det", "int8", accept_change=1e9)
        except e.EdgedError:
            pass
        finally:
            done.set()

    threading.Thread(target=job, daemon=True).start()
    with daemon.client() as c:
        wait_for(lambda: any(ev.kind == "variant_job" for ev in c.events()))
    daemon.signal(signal.SIGKILL)
    assert done.wait(60)
    daemon.proc.wait(30)
    daemon._stopped = None  # noqa: SLF001 - start the same daemon again on its state dir
    daemon.start()
    with daemon.client() as c:
        assert not c.get_model("det").versions[0].variants
    assert blobs(daemon) == before
    assert not any(p.name.startswith("variant-") for p in (daemon.state_dir / "tmp").iterdir())


def test_the_recommended_batch_holds_in_a_real_load(daemon_factory, demo_models) -> None:  # type: ignore[no-untyped-def]
    """The batch answer comes from the estimate at batched shapes (with a 15% margin): a real
    load of the model at that batch measures within 15% of the estimate, inside the budget."""
    d = daemon_factory({"budgets": {"swap": "200MiB"}, "preload": {"enabled": False}}).start()
    with d.client() as c:
        c.install("det", demo_models["ppocr-det"], warmup_shapes={"x": [1, 3, 640, 640]},
                  tier="storage")
        swap = next(f for f in c.recommend("det").fits if f.tier == "swap")
        batch = swap.max_batch
        assert batch >= 2, swap
        c.install("det-b", demo_models["ppocr-det"], tier="swap",
                  warmup_shapes={"x": [batch, 3, 640, 640]})
        est = c.get_model("det-b").versions[0].estimated_bytes
        view = c.load("det-b").model
        assert abs(view.footprint_bytes - est) <= 0.15 * view.footprint_bytes, (
            batch, est, view.footprint_bytes)
        assert view.footprint_bytes <= 200 * MB  # the recommended batch really fits

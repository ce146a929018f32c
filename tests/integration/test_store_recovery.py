"""The store and the manifests through the real daemon when things go wrong: retrained
external data, a missing artifact, a bad hand edit left on disk, edits beyond the budgets,
switches whose new version does not load, refusals that must leave nothing, failed downloads."""

from __future__ import annotations

import hashlib
import http.server
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
import yaml

from edged import errors as e

MB = 1 << 20


def edgectl(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged.cli.main", "--target", target, *args],
                          capture_output=True, text=True, timeout=120, check=False)


def restart(d) -> None:  # type: ignore[no-untyped-def]
    d.stop()
    d._stopped = None  # noqa: SLF001 - start the same daemon again on its state dir
    d.start()


def store_files(d) -> set[str]:  # type: ignore[no-untyped-def]
    return {str(p.relative_to(d.state_dir)) for sub in ("store", "tmp")
            for p in (d.state_dir / sub).rglob("*")}


def wait_for(cond, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_retrained_external_data_serves_the_new_weights(client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    paths = [modelgen.weights_model(tmp_path / f"v{i}" / "m.onnx", 64 << 10,
                                    external_data=True, seed=i) for i in (1, 2)]
    assert hashlib.sha256(paths[0].read_bytes()).digest() == \
        hashlib.sha256(paths[1].read_bytes()).digest()  # the graph file is the same
    x = np.ones((1, 64), np.float32)
    for i, p in enumerate(paths, 1):
        data = p.with_name("m.onnx.data")
        r = client.install("w", p, extra_files=[data])
        assert r.version == i
        w = np.fromfile(data, np.float32).reshape(64, -1)
        y = client.infer("w", {"x": x})["y"]
        np.testing.assert_allclose(y[0, 0], (x @ w).sum(), rtol=1e-4)


def test_a_missing_artifact_does_not_stop_the_daemon(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        c.install("gone", modelgen.add_model(tmp_path / "a.onnx", offset=1.0))
        c.install("kept", modelgen.add_model(tmp_path / "b.onnx", offset=2.0))
        art = next(v.sha256 for v in c.get_model("gone").versions)
    daemon.stop()
    import shutil

    shutil.rmtree(daemon.state_dir / "store" / art)
    daemon._stopped = None  # noqa: SLF001
    daemon.start()
    x = {"x": np.zeros((1, 4), np.float32)}
    with daemon.client() as c:
        assert c.infer("kept", x)["y"][0, 0] == 2.0  # everything else serves
        for call in (lambda: c.infer("gone", x), lambda: c.load("gone")):
            with pytest.raises(e.DataLoss, match="missing from the store"):
                call()
        assert any(ev.kind == "artifact_missing" and ev.model == "gone" for ev in c.events())
        assert c.health() == "SERVING"
    show = edgectl(daemon.target, "show", "gone")
    assert show.returncode == 0 and "ARTIFACT MISSING" in show.stdout
    assert "missing from the store" in daemon.log()


def test_a_rejected_hand_edit_does_not_stop_the_next_start(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        c.install("m", modelgen.add_model(tmp_path / "a.onnx"), quality=0.5)
    swap = daemon.state_dir / "tiers" / "swap.yaml"
    bad = swap.read_text().replace("quality: 0.5", "quality: lots")
    swap.write_text(bad)
    daemon.signal(signal.SIGHUP)
    with daemon.client() as c:
        wait_for(lambda: "swap.yaml line" in c.status().manifest_error)
    restart(daemon)  # it used to exit here: "cannot start: swap.yaml line ..."
    with daemon.client() as c:
        st = c.status()
        assert "rejected at start" in st.manifest_error and "swap.yaml" in st.manifest_error
        assert c.get_model("m").versions[0].quality == 0.5
        assert c.infer("m", {"x": np.zeros((1, 4), np.float32)})["y"].shape == (1, 4)
    kept = list(daemon.state_dir.glob("swap.yaml.rejected-*"))
    assert len(kept) == 1 and kept[0].read_text() == bad
    assert "manifests:" in daemon.log() and "rejected at start" in daemon.log()


def _hand_move(state: Path, names: list[str], src: str, dst: str) -> None:
    tiers = state / "tiers"
    a = yaml.safe_load((tiers / f"{src}.yaml").read_text())
    b = yaml.safe_load((tiers / f"{dst}.yaml").read_text())
    b["models"] = b.get("models") or {}
    for n in names:
        b["models"][n] = a["models"].pop(n)
    (tiers / f"{src}.yaml").write_text(yaml.safe_dump(a))
    (tiers / f"{dst}.yaml").write_text(yaml.safe_dump(b))


@pytest.mark.slow
def test_reload_checks_the_ram_budget_and_loads_ram_models(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory({"budgets": {"ram": "200MiB", "swap": "400MiB"},
                        "preload": {"enabled": False}}).start()
    with d.client() as c:
        for i, n in enumerate(("a", "b", "c")):
            c.install(n, modelgen.weights_model(tmp_path / f"{n}.onnx", 60 * MB, seed=i))
        c.load("c")
        _hand_move(d.state_dir, ["a", "b", "c"], "swap", "ram")
        r = c.reload()
        assert not r.ok and "ram.yaml" in r.error and "budget 200.0 MiB" in r.error
        assert {m.name: m.tier for m in c.list_models()} == {"a": "swap", "b": "swap", "c": "swap"}
        assert "ram.yaml" in c.status().manifest_error
        _hand_move(d.state_dir, ["b", "c"], "ram", "swap")  # only a: fits
        assert c.reload().ok
        assert c.get_model("a").tier == "ram"
        wait_for(lambda: any(m.name == "a" and m.tier == "ram" and m.state == "ready"
                             for m in c.status().loaded))
        wait_for(lambda: c.get_model("a").versions[0].measured_bytes > 0)  # its commit is in
        _hand_move(d.state_dir, ["a"], "ram", "swap")  # back to swap: evictable again
        assert c.reload().ok
        assert next(m for m in c.status().loaded if m.name == "a").tier == "swap"


def test_a_switch_whose_new_version_fails_to_load_keeps_the_old(daemon, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                             demo_models) -> None:
    x = {"x": np.zeros((1, 4), np.float32)}
    with daemon.client() as c:
        c.install("vad", modelgen.add_model(tmp_path / "v1.onnx", offset=1.0))
        assert c.infer("vad", x)["y"][0, 0] == 1.0  # v1 loaded and serving
        # silero-vad's warm-up fails with the default 64-sample input
        c.install("vad", demo_models["silero-vad"], activate=False)
        with pytest.raises(e.EdgedError) as info:
            c.activate("vad", 2, allow_signature_change=True)
        assert not isinstance(info.value, e.Unavailable)
        m = c.get_model("vad")
        assert m.active_version == 1
        assert c.infer("vad", x)["y"][0, 0] == 1.0  # never offline
        assert not any(ev.kind == "version_switch" for ev in c.events())
        # the same for a move into ram: planned and loaded before the commit
        c.install("sv", demo_models["silero-vad"])
        with pytest.raises(e.EdgedError):
            c.set_tier("sv", "ram")
        assert c.get_model("sv").tier == "swap"


def test_refused_installs_leave_no_file(daemon_factory, tmp_path: Path, demo_models) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory({"install": {"max_artifact_bytes": "1MiB"}}).start()
    with d.client() as c:
        c.install("adder", modelgen.add_model(tmp_path / "v1.onnx", width=4))
        before = store_files(d)
        with pytest.raises(e.SignatureChanged):
            c.install("adder", modelgen.add_model(tmp_path / "v2.onnx", width=8))
        assert store_files(d) == before
        with pytest.raises(e.InvalidArgument, match="version"):
            c.install("adder", modelgen.add_model(tmp_path / "v3.onnx", offset=3.0),
                      version=2**31)
        assert store_files(d) == before
        with pytest.raises(e.ResourceExhausted):
            c.install("rec", demo_models["ppocr-rec"])
        assert store_files(d) == before
        assert [v.version for v in c.get_model("adder").versions] == [1]


def test_errors_name_the_users_file(client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    junk = tmp_path / "det-v7.onnx"
    junk.write_bytes(b"this is not a model\n" * 100)
    with pytest.raises(e.InvalidArgument) as info:
        client.install("det", junk)
    assert "det-v7.onnx" in str(info.value) and "model.bin" not in str(info.value)
    good = modelgen.add_model(tmp_path / "cls-v2.onnx")
    with pytest.raises(e.DataLoss) as info2:
        client.install("cls", good, sha256="0" * 64)
    assert "cls-v2.onnx" in str(info2.value) and "model.bin" not in str(info2.value)


def test_rollback_walks_down_and_remove_zero_is_refused(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        for i in (1, 2, 3):
            c.install("m", modelgen.add_model(tmp_path / f"v{i}.onnx", offset=float(i)))
        assert [c.rollback("m").active_version for _ in range(2)] == [2, 1]
        with pytest.raises(e.FailedPrecondition):
            c.rollback("m")
    res = edgectl(daemon.target, "remove", "m", "0")
    assert res.returncode == 4, res.stderr
    with daemon.client() as c:
        assert [v.version for v in c.get_model("m").versions] == [1, 2, 3]


def test_tier_capacity_errors_carry_the_reserve(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory({"budgets": {"reserve": "256MiB", "ram": "20MiB"}}).start()
    with d.client() as c:
        with pytest.raises(e.CapacityExceeded) as info:
            c.install("big", modelgen.weights_model(tmp_path / "w.onnx", 30 * MB), tier="ram")
        assert info.value.numbers.tier == "ram"
        assert info.value.numbers.reserve_bytes == 256 * MB


@pytest.mark.slow
def test_a_failed_download_is_not_daemon_unreachable(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    hits = []

    class Broken(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            hits.append(1)
            self.send_error(503)

        def log_message(self, *a):  # type: ignore[no-untyped-def]
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/m.onnx"
    try:
        with daemon.client() as c:
            with pytest.raises(e.Aborted) as info:
                c.install_from("m", url, sha256="a" * 64)
            assert info.value.reason == "DOWNLOAD_FAILED" and "HTTP 503" in str(info.value)
            assert len(hits) > 1  # 5xx is retried
        res = edgectl(daemon.target, "--json", "install", "m", url, "--sha256", "a" * 64)
        assert res.returncode == 16, res.stderr
        err = json.loads(res.stdout)["error"]
        assert err["reason"] == "DOWNLOAD_FAILED" and "cannot reach" not in err["message"]
    finally:
        srv.shutdown()


def _sizeless_install(c, name: str, path: Path) -> None:  # type: ignore[no-untyped-def]
    """A streamed install that announces no size (the proto allows it)."""
    import grpc

    from edged.rpc_errors import from_rpc_error
    from edged.v1 import models_pb2 as mpb

    data = path.read_bytes()
    reqs = [mpb.InstallRequest(header=mpb.InstallHeader(name=name, activate=True)),
            mpb.InstallRequest(file=mpb.InstallFile(path=path.name))]
    reqs += [mpb.InstallRequest(chunk=data[i:i + MB]) for i in range(0, len(data), MB)]
    try:
        c.models.Install(iter(reqs), timeout=60)
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from None


def test_a_full_disk_is_disk_full_and_loses_nothing(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A size-less streamed install on a nearly full disk, and a version switch on a 100%
    full one, on a real full file system: RESOURCE_EXHAUSTED/DISK_FULL (they were INTERNAL),
    the old state in force and serving, nothing left behind, and both work once freed."""
    import fulldisk

    d = daemon_factory({"budgets": {"disk_reserve": "1MiB"}, "preload": {"enabled": False}})
    x = {"x": np.zeros((1, 4), np.float32)}
    big = modelgen.weights_model(tmp_path / "big.onnx", 6 * MB)
    with fulldisk.tmpfs(d.state_dir, 24 * MB):
        d.start()
        with d.client(timeout=60) as c:
            for i in (1, 2):
                c.install("m", modelgen.add_model(tmp_path / f"v{i}.onnx", offset=float(i)))
            before, files = c.get_model("m"), store_files(d)
            filler = fulldisk.fill(d.state_dir, leave=3 * MB)
            with pytest.raises(e.ResourceExhausted) as info:
                _sizeless_install(c, "big", big)
            assert info.value.reason == "DISK_FULL" and "big.onnx" in str(info.value)
            assert store_files(d) == files
            more = fulldisk.fill(d.state_dir)  # 100%
            with pytest.raises(e.ResourceExhausted) as info:
                c.activate("m", 1)
            assert info.value.reason == "DISK_FULL" and "bytes free" in str(info.value)
            assert c.get_model("m") == before and c.infer("m", x)["y"][0, 0] == 2.0
            assert not [p.name for p in (d.state_dir / "tiers.d").iterdir()
                        if p.name.startswith(".")]  # the temporary generation is gone
            filler.unlink()
            more.unlink()
            assert c.activate("m", 1).active_version == 1
            _sizeless_install(c, "big", big)
            assert c.infer("big", {"x": np.ones((1, 64), np.float32)})["y"].shape == (1, 1)
        d.stop()
    assert "Traceback" not in d.log()


def test_reinstalling_a_corrupt_model_repairs_it(daemon, demo_models) -> None:  # type: ignore[no-untyped-def]
    """The DATA_LOSS message says "reinstall it": that must serve again (the store used to
    keep its corrupt copy and throw the fresh upload away)."""
    src = demo_models["ppocr-cls"]
    x = {"x": np.zeros((1, 3, 48, 192), np.float32)}
    with daemon.client(timeout=60) as c:
        c.install("cls", src)
        blob = daemon.state_dir / "store" / hashlib.sha256(src.read_bytes()).hexdigest() / \
            "model.onnx"
        raw = bytearray(blob.read_bytes())
        raw[-5000] ^= 0x01  # one bit in the weights
        blob.write_bytes(bytes(raw))
        with pytest.raises(e.DataLoss, match="reinstall it"):
            c.infer("cls", x)
        r = c.install("cls", src)
        assert all(y.shape[0] == 1 for y in c.infer("cls", x).values())  # serves again
        assert blob.read_bytes() == src.read_bytes()
        ev = [ev for ev in c.events() if ev.kind == "repaired"]
        assert len(ev) == 1 and ev[0].model == "cls" and ev[0].version == r.version
        assert "sha256 mismatch" in ev[0].message
    res = subprocess.run([sys.executable, "-m", "edged", "--state-dir", str(daemon.state_dir),
                          "fsck", "--json"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 0, res.stdout

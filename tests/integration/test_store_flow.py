"""Installs, tiers, versions and removal through the real daemon and `edgectl`/the client."""

from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import modelgen
import pytest

from edged import errors as e
from edged.cli import exitcodes


def edgectl(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged.cli.main", "--target", target, *args],
                          capture_output=True, text=True, timeout=120, check=False)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def store_blobs(daemon) -> list[str]:  # type: ignore[no-untyped-def]
    root = daemon.state_dir / "store"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_install_list_show_via_edgectl(daemon, demo_models) -> None:  # type: ignore[no-untyped-def]
    res = edgectl(daemon.target, "install", "ppocr-cls", str(demo_models["ppocr-cls"]),
                  "--tier", "swap", "--task", "ocr.classify", "--quality", "0.7",
                  "--sha256", sha256(demo_models["ppocr-cls"]))
    assert res.returncode == 0, res.stderr
    assert "installed ppocr-cls v1" in res.stdout
    models = json.loads(edgectl(daemon.target, "--json", "models").stdout)["models"]
    assert [m["name"] for m in models] == ["ppocr-cls"]
    m = models[0]
    assert m["active_version"] == 1 and m["tier"] == "swap"
    v = m["versions"][0]
    assert v["format"] == "onnx" and v["size_bytes"] == demo_models["ppocr-cls"].stat().st_size
    assert v["sha256"] == sha256(demo_models["ppocr-cls"]) and v["tasks"] == ["ocr.classify"]
    show = edgectl(daemon.target, "show", "ppocr-cls")
    assert show.returncode == 0
    assert "input  x" in show.stdout and "FP32" in show.stdout
    table = edgectl(daemon.target, "models").stdout
    assert "ppocr-cls" in table and sha256(demo_models["ppocr-cls"])[:12] in table


@pytest.mark.parametrize("name", ["Upper", ".hidden", "../etc", "a/b", "x" * 64, "-lead", ""])
def test_bad_names_are_refused(client, demo_models, name: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(e.InvalidArgument) as info:
        client.install(name, demo_models["ppocr-cls"])
    assert info.value.field and "name" in info.value.field
    assert client.list_models() == []


def test_checksum_mismatch_is_data_loss_and_leaves_nothing(daemon, client, demo_models) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(e.DataLoss):
        client.install("cls", demo_models["ppocr-cls"], sha256="0" * 64)
    assert client.list_models() == []
    assert store_blobs(daemon) == []
    res = edgectl(daemon.target, "install", "cls", str(demo_models["ppocr-cls"]), "--sha256",
                  "1" * 64)
    assert res.returncode == exitcodes.BY_CODE[e.Code.DATA_LOSS]


def test_truncated_and_non_onnx_files_are_refused(daemon, client, demo_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    truncated = tmp_path / "t.onnx"
    truncated.write_bytes(demo_models["ppocr-cls"].read_bytes()[:50_000])
    junk = tmp_path / "j.onnx"
    junk.write_bytes(b"this is not a model\n" * 100)
    for path in (truncated, junk):
        with pytest.raises(e.InvalidArgument):
            client.install("bad", path)
    assert client.list_models() == [] and store_blobs(daemon) == []
    assert client.health() == "SERVING"


def test_oversized_upload_is_refused(daemon_factory, demo_models) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory({"install": {"max_artifact_bytes": "1MiB"}}).start()
    with d.client() as c:
        with pytest.raises(e.ResourceExhausted):
            c.install("rec", demo_models["ppocr-rec"])
        assert c.list_models() == []
        c.install("cls", demo_models["ppocr-cls"])  # under the limit: fine
        assert [m.name for m in c.list_models()] == ["cls"]


def test_external_data_model_installs_with_its_data(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = modelgen.weights_model(tmp_path / "ext.onnx", 2 << 20, external_data=True)
    data = tmp_path / "ext.onnx.data"
    assert data.exists()
    client.install("ext", path, extra_files=[data])
    v = client.get_model("ext").versions[0]
    assert v.estimated_bytes >= 2 << 20
    assert [t.name for t in v.signature.inputs] == ["x"]


def test_versions_activate_rollback_and_signature_guard(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    v1 = modelgen.add_model(tmp_path / "v1.onnx", width=4, offset=1.0)
    v2 = modelgen.add_model(tmp_path / "v2.onnx", width=4, offset=2.0)
    v3 = modelgen.add_model(tmp_path / "v3.onnx", width=8, offset=3.0)  # new signature
    client.install("adder", v1)
    client.install("adder", v2)
    m = client.get_model("adder")
    assert m.active_version == 2
    assert {(v.version, v.active, v.tier) for v in m.versions} == {(1, False, "storage"),
                                                                 (2, True, "swap")}
    assert client.rollback("adder").active_version == 1
    assert client.activate("adder", 2).active_version == 2
    client.install("adder", v3, activate=False)
    with pytest.raises(e.SignatureChanged) as info:
        client.activate("adder", 3)
    assert info.value.diff and "x" in " ".join(info.value.diff)
    assert client.get_model("adder").active_version == 2
    assert client.activate("adder", 3, allow_signature_change=True).active_version == 3
    with pytest.raises(e.AlreadyExists):
        client.install("adder", v1, version=2)
    assert client.remove("adder", 1) == [1]
    assert sorted(v.version for v in client.get_model("adder").versions) == [2, 3]
    client.remove("adder")
    with pytest.raises(e.NotFound):
        client.get_model("adder")


def test_install_from_a_path_on_the_device(client, demo_models) -> None:  # type: ignore[no-untyped-def]
    r = client.install_from("cls", str(demo_models["ppocr-cls"]),
                            sha256=sha256(demo_models["ppocr-cls"]))
    assert r.version == 1 and r.sha256 == sha256(demo_models["ppocr-cls"])
    with pytest.raises(e.InvalidArgument):
        client.install_from("cls2", "relative/path.onnx")


@pytest.fixture
def http_server(demo_models) -> Iterator[str]:  # type: ignore[no-untyped-def]
    root = demo_models["ppocr-cls"].parent

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):  # type: ignore[no-untyped-def]
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):  # type: ignore[no-untyped-def]
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_install_from_an_http_url(client, demo_models, http_server) -> None:  # type: ignore[no-untyped-def]
    url = f"{http_server}/ppocr-cls.onnx"
    seen = []
    r = client.install_from("cls", url, sha256=sha256(demo_models["ppocr-cls"]),
                            progress=lambda d, t: seen.append((d, t)))
    assert r.size_bytes == demo_models["ppocr-cls"].stat().st_size
    assert seen and seen[-1][0] == seen[-1][1]
    with pytest.raises(e.DataLoss):
        client.install_from("cls2", url, sha256="2" * 64)
    with pytest.raises(e.InvalidArgument):
        client.install_from("cls3", url)  # a URL needs the sha256


def test_url_download_resumes_after_a_dropped_connection(client, demo_models) -> None:  # type: ignore[no-untyped-def]
    """The server cuts the first response half-way; the daemon resumes with a Range request."""
    data = demo_models["ppocr-cls"].read_bytes()
    ranges: list[str] = []

    class Flaky(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            rng = self.headers.get("Range")
            ranges.append(rng or "")
            start = int(rng.split("=")[1].split("-")[0]) if rng else 0
            body = data[start:]
            self.send_response(206 if rng else 200)
            self.send_header("Content-Length", str(len(body)))
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not rng:
                self.wfile.write(body[: len(body) // 2])  # then drop the connection
                self.wfile.flush()
                self.connection.shutdown(2)
                return
            self.wfile.write(body)

        def log_message(self, *a):  # type: ignore[no-untyped-def]
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        r = client.install_from("cls", f"http://127.0.0.1:{srv.server_address[1]}/m.onnx",
                                sha256=sha256(demo_models["ppocr-cls"]))
    finally:
        srv.shutdown()
    assert r.sha256 == sha256(demo_models["ppocr-cls"])
    assert ranges[0] == "" and any(x.startswith("bytes=") and x != "bytes=0-" for x in ranges)


def test_fsck_reports_a_corrupt_artifact(daemon, demo_models) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        c.install("cls", demo_models["ppocr-cls"])
    daemon.stop()
    sha = sha256(demo_models["ppocr-cls"])
    blob = daemon.state_dir / "store" / sha / "model.onnx"
    raw = bytearray(blob.read_bytes())
    raw[1000] ^= 0xFF
    blob.write_bytes(bytes(raw))
    res = subprocess.run([sys.executable, "-m", "edged", "--state-dir", str(daemon.state_dir),
                          "fsck", "--json"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 1
    report = json.loads(res.stdout)
    assert not report["ok"] and any("corrupt" in c and "cls:1" in c for c in report["corrupt"])


def test_a_corrupt_artifact_is_never_served(daemon, demo_models) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    with daemon.client() as c:
        c.install("cls", demo_models["ppocr-cls"])
    daemon.stop()
    blob = daemon.state_dir / "store" / sha256(demo_models["ppocr-cls"]) / "model.onnx"
    raw = bytearray(blob.read_bytes())
    raw[-5000] ^= 0x01  # one bit in the weights: ONNX Runtime would load it happily
    blob.write_bytes(bytes(raw))
    daemon._stopped = None  # noqa: SLF001 - start the same daemon again
    daemon.start()
    with daemon.client() as c:
        with pytest.raises(e.DataLoss) as info:
            c.infer("cls", {"x": np.zeros((1, 3, 48, 192), np.float32)})
        assert "corrupt" in str(info.value)
        assert any(ev.kind == "corrupt" for ev in c.events())
        assert c.health() == "SERVING"


def test_bit_rot_after_a_verified_load_is_caught_on_the_next_load(daemon, demo_models) -> None:  # type: ignore[no-untyped-def]
    """A blob verified once, then flipped in place with its size and mtime kept (bit rot on
    flash): the next load after an unload must refuse it, with no restart in between."""
    import os

    import numpy as np

    x = {"x": np.zeros((1, 3, 48, 192), np.float32)}
    with daemon.client() as c:
        c.install("cls", demo_models["ppocr-cls"])
        c.infer("cls", x)  # loaded and verified
        c.unload("cls")
        blob = daemon.state_dir / "store" / sha256(demo_models["ppocr-cls"]) / "model.onnx"
        st = blob.stat()
        raw = bytearray(blob.read_bytes())
        raw[-5000] ^= 0x01
        blob.write_bytes(bytes(raw))
        os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
        with pytest.raises(e.DataLoss):
            c.infer("cls", x)
        assert c.health() == "SERVING"


def test_ram_to_swap_move_keeps_the_swap_budget(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A loaded ram model moving to swap must fit the swap budget like a load: the idle swap
    model it displaces is evicted, and swap never shows more than its budget."""
    import modelgen

    d = daemon_factory({"budgets": {"ram": "300MiB", "swap": "100MiB"},
                        "preload": {"enabled": False}}).start()
    with d.client() as c:
        c.install("a", modelgen.weights_model(tmp_path / "a.onnx", 50 << 20, seed=1))
        c.load("a")
        c.install("b", modelgen.weights_model(tmp_path / "b.onnx", 50 << 20, seed=2),
                  tier="ram")
        assert {m.name for m in c.status().loaded} == {"a", "b"}
        c.set_tier("b", "swap")
        st = c.status()
        swap = next(t for t in st.tiers if t.tier == "swap")
        assert swap.used_bytes <= swap.budget_bytes
        assert {m.name for m in st.loaded} == {"b"}
        assert any(ev.kind == "evict" and ev.model == "a" for ev in c.events())

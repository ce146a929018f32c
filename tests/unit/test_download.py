"""URL downloads against a real local HTTP server: 5xx is retried like a dropped connection, a
download that never completes is ABORTED/DOWNLOAD_FAILED (not UNAVAILABLE, which clients read
as "no daemon"), and fsck removes partial downloads nobody holds that are a day old."""

from __future__ import annotations

import fcntl
import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import modelgen
import pytest

from edged import errors as e
from edged.manager.catalog.download import download
from edged.manager.catalog.fsck import fsck
from edged.manager.catalog.store import Store


@pytest.fixture
def server() -> Iterator[tuple[str, dict]]:  # type: ignore[type-arg]
    """Serves ``state["body"]``; the first ``state["fail"]`` requests get ``state["code"]``."""
    state: dict = {"body": b"", "fail": 0, "code": 503, "seen": []}  # type: ignore[type-arg]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            state["seen"].append(self.path)
            if state["fail"] > 0:
                state["fail"] -= 1
                self.send_error(state["code"])
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(state["body"])))
            self.end_headers()
            self.wfile.write(state["body"])

        def log_message(self, *a):  # type: ignore[no-untyped-def]
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/det-v7.onnx", state
    srv.shutdown()


@pytest.fixture
def model(tmp_path: Path) -> tuple[bytes, str]:
    data = modelgen.add_model(tmp_path / "m.onnx").read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def test_http_5xx_is_retried(tmp_path: Path, server, model) -> None:  # type: ignore[no-untyped-def]
    url, state = server
    state["body"], state["fail"] = model[0], 2
    blob = download(Store(tmp_path / "s"), url, model[1], None, backoff_s=0.01)
    assert blob.sha256 == model[1] and len(state["seen"]) == 3


def test_a_download_that_never_completes_is_download_failed(tmp_path: Path, server,  # type: ignore[no-untyped-def]
                                                           model) -> None:
    url, state = server
    state["body"], state["fail"], state["code"] = model[0], 99, 502
    store = Store(tmp_path / "s")
    with pytest.raises(e.Aborted) as info:
        download(store, url, model[1], None, backoff_s=0.01)
    assert info.value.reason == "DOWNLOAD_FAILED" and "HTTP 502" in str(info.value)
    assert not isinstance(info.value, e.Unavailable)
    assert list((store.tmp / "downloads").iterdir()) == []  # nothing arrived: nothing kept
    state["fail"], state["code"] = 1, 404
    with pytest.raises(e.InvalidArgument, match="HTTP 404"):
        download(store, url, model[1], None, backoff_s=0.01)


def test_fsck_removes_abandoned_partial_downloads(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    parts = store.tmp / "downloads"
    parts.mkdir()
    old, fresh, held = (parts / f"{c * 64}.part" for c in "abc")
    for p in (old, fresh, held):
        p.write_bytes(b"x" * 100)
    day_ago = time.time() - 25 * 3600
    for p in (old, held):
        os.utime(p, (day_ago, day_ago))
    with held.open("rb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # a download in progress holds it
        report = fsck(store.root, repair=False)
        assert report.stale_downloads == 1 and not report.ok
        assert fsck(store.root, repair=True).ok
    assert not old.exists() and fresh.exists() and held.exists()


def test_fsck_of_a_missing_state_dir_fails(tmp_path: Path) -> None:
    assert not fsck(tmp_path / "nope").ok
    res = subprocess.run([sys.executable, "-m", "edged", "--state-dir", str(tmp_path / "nope"),
                          "fsck"], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 1
    assert "does not exist" in res.stdout + res.stderr
    assert not (tmp_path / "nope").exists()  # and it did not create it

"""The store and the manifests on a real full disk (a small tmpfs) and with a corrupt copy in
the store: a full disk is RESOURCE_EXHAUSTED/DISK_FULL that changes nothing and leaves nothing,
and reinstalling a corrupt artifact repairs it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import fulldisk
import modelgen
import pytest

from edged import errors as e
from edged.engines.base import detect_format, inspect
from edged.manager.catalog.catalog import Catalog, budget_tier_check
from edged.manager.catalog.manifests import Manifests
from edged.manager.catalog.store import Store

MB = 1 << 20


def chunks(total: int, size: int = 256 << 10) -> Iterator[bytes]:
    for i in range(0, total, size):
        yield os.urandom(min(size, total - i))


def leftovers(state: Path) -> list[str]:
    """Interrupted writes: uploads in tmp/, temporary generations in tiers.d/."""
    gens = state / "tiers.d"
    return sorted([f"tmp/{p.name}" for p in (state / "tmp").iterdir()] +
                  ([f"tiers.d/{p.name}" for p in gens.iterdir() if p.name.startswith(".")]
                   if gens.is_dir() else []))


class Free:
    """A disk_usage stand-in for a store whose idea of the free space is stale."""

    def __init__(self, free: int) -> None:
        self.free = free


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with fulldisk.tmpfs(tmp_path / "disk", 8 * MB) as mnt:
        yield mnt


def make(state: Path, reserve: int) -> Catalog:
    store = Store(state, detect_format=detect_format, disk_reserve_bytes=reserve)
    manifests = Manifests(state, blob_exists=store.has)
    manifests.load()
    return Catalog(store, manifests, inspect=lambda p, f: inspect(p, f),
                   tier_check=budget_tier_check(1 << 30, 1 << 30))


def test_enospc_while_streaming_is_disk_full_and_leaves_nothing(disk: Path) -> None:
    """Another process fills the disk after the store looked: the write itself fails with
    ENOSPC (it used to reach the client as INTERNAL)."""
    stale = Free(shutil.disk_usage(disk).free)
    store = Store(disk / "state", disk_reserve_bytes=MB, disk_usage=lambda p: stale)
    up = store.begin(None, None, display="big.onnx")  # no size announced: check_disk(0)
    fulldisk.fill(disk, leave=MB // 2)
    with pytest.raises(e.ResourceExhausted) as info:
        try:
            for c in chunks(16 * MB):
                up.write(c)
            up.commit()
        finally:
            up.abort()
    assert info.value.reason == "DISK_FULL"
    assert "big.onnx" in str(info.value) and "bytes free" in str(info.value)
    assert info.value.metadata["free_bytes"].isdigit()
    assert leftovers(disk / "state") == []


def test_a_sizeless_upload_is_refused_before_it_fills_the_disk(disk: Path) -> None:
    store = Store(disk / "state", disk_reserve_bytes=2 * MB)
    up = store.begin(None, None, display="big.onnx")
    written = 0
    with pytest.raises(e.ResourceExhausted) as info:
        for c in chunks(16 * MB):
            up.write(c)
            written += len(c)
    up.abort()
    assert info.value.reason == "DISK_FULL" and "reserve" in str(info.value)
    assert "big.onnx" in str(info.value)
    assert written <= 6 * MB  # refused with the reserve still free, not at ENOSPC
    assert leftovers(disk / "state") == []


def test_the_reserve_is_checked_as_the_stream_grows(tmp_path: Path) -> None:
    """The same rule without a mount: free space read as the upload grows."""
    usage = Free(10 * MB)
    store = Store(tmp_path / "s", disk_reserve_bytes=4 * MB, disk_usage=lambda p: usage)
    up = store.begin(None, None)
    for c in chunks(6 * MB, MB):
        up.write(c)
        usage.free -= len(c)
    with pytest.raises(e.ResourceExhausted, match="6291456 bytes of model.bin written"):
        up.write(b"\0" * MB)
    up.abort()
    assert list(store.tmp.iterdir()) == []


def test_a_commit_on_a_full_disk_keeps_the_old_state(disk: Path, tmp_path: Path) -> None:
    cat = make(disk / "state", reserve=0)
    for i in (1, 2):
        cat.install("m", cat.store.put_file(modelgen.add_model(tmp_path / f"v{i}.onnx",
                                                               offset=float(i))))
    link = disk / "state" / "tiers"
    before, gen = cat.get("m"), os.readlink(link)
    filler = fulldisk.fill(disk)
    with pytest.raises(e.ResourceExhausted) as info:
        cat.activate("m", 1)
    assert info.value.reason == "DISK_FULL" and "tier manifests" in str(info.value)
    assert os.readlink(link) == gen and cat.get("m") == before  # the old state stays
    assert leftovers(disk / "state") == []  # the temporary generation is gone at once
    reread = Manifests(disk / "state").load()
    assert reread.models["m"].active == 2
    filler.unlink()
    assert cat.activate("m", 1).active == 1


def test_reinstalling_a_corrupt_artifact_repairs_it(tmp_path: Path) -> None:
    src = modelgen.weights_model(tmp_path / "w.onnx", 64 << 10)
    cat = make(tmp_path / "state", reserve=0)
    blob = cat.store.put_file(src)
    cat.install("w", blob)
    raw = bytearray(blob.main.read_bytes())
    raw[len(raw) // 2] ^= 1  # bit rot
    blob.main.write_bytes(bytes(raw))
    assert cat.store.verify(blob.id) != []
    again = cat.store.put_file(src)  # it used to keep the corrupt copy and drop this one
    assert again.id == blob.id and again.repaired
    assert "sha256 mismatch" in again.repaired[0]
    assert cat.store.verify(blob.id) == []
    assert blob.main.read_bytes() == src.read_bytes()
    assert list(cat.store.tmp.iterdir()) == []
    assert not cat.store.put_file(src).repaired  # a healthy copy is simply reused


def test_a_download_onto_a_full_disk_is_disk_full_not_retried(disk: Path) -> None:
    """ENOSPC used to be retried like a dropped connection and end as DOWNLOAD_FAILED."""
    import hashlib
    import http.server
    import threading

    from edged.manager.catalog.download import download

    body, seen = os.urandom(12 * MB), []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):  # type: ignore[no-untyped-def]
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/big.onnx"
    try:
        stale = Free(1 << 40)  # the store believes there is room: the write finds out
        store = Store(disk / "state", disk_reserve_bytes=0, disk_usage=lambda p: stale)
        with pytest.raises(e.ResourceExhausted) as info:
            download(store, url, hashlib.sha256(body).hexdigest(), None, backoff_s=0.01)
        assert info.value.reason == "DISK_FULL" and "big.onnx" in str(info.value)
        assert len(seen) == 1
        store = Store(disk / "state", disk_reserve_bytes=2 * MB)  # the real free space
        with pytest.raises(e.ResourceExhausted, match="reserve"):
            download(store, url, hashlib.sha256(body).hexdigest(), None, backoff_s=0.01)
    finally:
        srv.shutdown()
    assert list((disk / "state" / "tmp" / "downloads").iterdir()) == []
    assert leftovers(disk / "state") == ["tmp/downloads"]


def test_fsck_removes_a_half_written_generation(tmp_path: Path) -> None:
    """What a crash (or a full disk, before this was handled) leaves in tiers.d."""
    from edged.manager.catalog.fsck import fsck

    cat = make(tmp_path / "state", reserve=0)
    cat.install("m", cat.store.put_file(modelgen.add_model(tmp_path / "a.onnx")))
    half = tmp_path / "state" / "tiers.d" / ".tmp-gen-00000099"
    half.mkdir()
    (half / "swap.yaml").write_text("version: 1\n")
    os.symlink("tiers.d/gen-00000099", tmp_path / "state" / ".tiers.tmp")
    report = fsck(tmp_path / "state")
    assert report.tmp_leftovers == 2 and not report.ok
    assert fsck(tmp_path / "state", repair=True).ok
    assert leftovers(tmp_path / "state") == []
    assert not (tmp_path / "state" / ".tiers.tmp").is_symlink()
    assert fsck(tmp_path / "state").ok and "m" in Manifests(tmp_path / "state").load().models

"""Shared memory: client regions mapped by the worker (ShmRef) and the daemon's lanes."""

from __future__ import annotations

import fcntl
import os
import signal
import time
from collections.abc import Iterator
from multiprocessing import shared_memory
from pathlib import Path

import modelgen
import numpy as np
import onnxruntime as ort
import pytest

from edged import errors as e
from edged.engines.base import ShmRef
from edged.engines.shm import SHM_DIR, LanePool, RegionCache
from edged.engines.workers import WorkerPool


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerPool]:
    d = tmp_path_factory.mktemp("shm")
    p = WorkerPool()
    p.load("two", modelgen.two_input_model(d / "two.onnx"), "onnx")
    yield p
    p.close()


@pytest.fixture
def region() -> Iterator[shared_memory.SharedMemory]:
    shm = shared_memory.SharedMemory(create=True, size=4096)
    yield shm
    shm.close()
    shm.unlink()


def _put(shm: shared_memory.SharedMemory, offset: int, arr: np.ndarray) -> ShmRef:
    shm.buf[offset:offset + arr.nbytes] = arr.tobytes()
    return ShmRef(shm.name, offset, arr.nbytes, "FP32", arr.shape)


def test_shmref_round_trip(pool: WorkerPool, region: shared_memory.SharedMemory) -> None:
    a = np.arange(16, dtype=np.float32).reshape(2, 8)
    b = np.full((2, 8), 0.5, np.float32)
    ins = {"a": _put(region, 128, a), "b": b}  # one from shared memory, one inline
    out_ref = ShmRef(region.name, 1024, 256, "", ())
    out = pool.infer("two", ins, output_shm={"sum": out_ref})
    ref = out["sum"]
    assert ref == ShmRef(region.name, 1024, 64, "FP32", (2, 8))
    got = np.frombuffer(region.buf, np.float32, 16, 1024).reshape(2, 8)
    np.testing.assert_array_equal(got, a + b)
    np.testing.assert_array_equal(out["idx"], [[7], [7]])  # not asked for in shm: inline
    # the worker caches the mapping; a replaced object of the same name is mapped afresh
    a2 = a * 3
    out = pool.infer("two", {"a": _put(region, 0, a2), "b": b}, outputs=["sum"],
                     output_shm={"sum": out_ref})
    assert list(out) == ["sum"]
    np.testing.assert_array_equal(np.frombuffer(region.buf, np.float32, 16, 1024), (a2 + b).ravel())


@pytest.mark.parametrize("ref, message", [
    (ShmRef("", 0, 64, "FP32", (2, 8)), "not a POSIX shared memory name"),
    (ShmRef("edged-test-no-such-region", 0, 64, "FP32", (2, 8)), "does not exist"),
    (ShmRef("{r}", 4090, 64, "FP32", (2, 8)), r"offset 4090 \+ byte_size 64 is outside"),
    (ShmRef("{r}", -8, 64, "FP32", (2, 8)), "is outside"),
    (ShmRef("{r}", 0, 60, "FP32", (2, 8)), r"byte_size 60 does not match shape \[2, 8\]"),
    (ShmRef("{r}", 0, 64, "INT32", (2, 8)), "expected FP32, got INT32"),
    (ShmRef("{r}", 0, 64, "FP32", (4, 4)), r"shape \(4, 4\) does not match \[-1, 8\]"),
])
def test_bad_input_refs(pool: WorkerPool, region: shared_memory.SharedMemory, ref: ShmRef,
                        message: str) -> None:
    ref = ShmRef(ref.name.format(r=region.name), ref.offset, ref.byte_size, ref.datatype,
                 ref.shape)
    with pytest.raises(e.InvalidArgument, match=message) as exc:
        pool.infer("two", {"a": ref, "b": np.zeros((2, 8), np.float32)})
    assert exc.value.field == "a"


def test_bad_output_refs(pool: WorkerPool, region: shared_memory.SharedMemory) -> None:
    x = np.zeros((2, 8), np.float32)
    with pytest.raises(e.InvalidArgument, match=r"output 'sum': offset 4000 \+ byte_size 200"):
        pool.infer("two", {"a": x, "b": x}, output_shm={"sum": ShmRef(region.name, 4000, 200,
                                                                        "", ())})
    with pytest.raises(e.InvalidArgument, match="64 bytes .* do not fit the 32-byte") as exc:
        pool.infer("two", {"a": x, "b": x}, output_shm={"sum": ShmRef(region.name, 0, 32,
                                                                        "", ())})
    assert exc.value.field == "sum"  # checked by the worker, which knows the size only now
    pool.infer("two", {"a": x, "b": x})  # and the worker is fine


def test_worker_rechecks_bounds_when_the_region_shrank(pool: WorkerPool) -> None:
    """Between the daemon's check and the worker's mapping a client can truncate its region:
    the worker's own bounds check turns that into InvalidArgument, not a SIGBUS."""
    cache = RegionCache()
    shm = shared_memory.SharedMemory(create=True, size=128)
    try:
        assert cache.window(shm.name, 64, 64, "a").nbytes == 64
        os.truncate(SHM_DIR / shm.name, 32)
        with pytest.raises(e.InvalidArgument, match=r"offset 64 \+ 64 bytes is outside"):
            cache.window(shm.name, 64, 64, "a")
    finally:
        shm.close()
        shm.unlink()


def test_large_inline_tensors_use_lanes(demo_models: dict[str, Path]) -> None:
    """PP-OCR det with a 640x640 image: 4.9 MB in, 1.6 MB out, both through a lane."""
    pool = WorkerPool()
    try:
        r = pool.load("det", demo_models["ppocr-det"], "onnx")
        x = np.random.default_rng(3).standard_normal((1, 3, 640, 640), dtype=np.float32)
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        want = ort.InferenceSession(str(demo_models["ppocr-det"]), so,
                                    providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        for _ in range(3):  # the first output comes inline; then the lane has room for it
            (got,) = pool.infer("det", {"x": x}).values()
            np.testing.assert_array_equal(got, want)
            assert got.flags.writeable
        (stats,) = pool.stats()
        assert stats.lane_bytes >= x.nbytes + want.nbytes
        leftovers = [p.name for p in SHM_DIR.glob(f"edged-{os.getpid()}-*")]
        assert leftovers == []  # unlinked once the worker mapped them
        assert r.pid == stats.pid
    finally:
        pool.close()


def test_lane_pool(tmp_path: Path) -> None:
    lanes = LanePool("t", tmp_path)
    a = lanes.acquire(100)
    assert a.size == 1 << 20 and (tmp_path / "t-1").exists()
    b = lanes.acquire(3 << 20)
    assert b.size == 4 << 20
    lanes.release(a)
    c = lanes.acquire(10)
    assert c is a
    lanes.release(c)
    d = lanes.acquire(2 << 20)  # no free lane is big enough: the largest free one is replaced
    assert d.size == 2 << 20 and lanes.take_dropped() == (a.id,)
    assert not (tmp_path / "t-1").exists()
    assert lanes.total_bytes == (4 << 20) + (2 << 20)
    d.announced = True
    lanes.release(d)  # announced: its name is no longer needed
    assert not (tmp_path / f"t-{d.id}").exists()
    lanes.close()
    assert list(tmp_path.iterdir()) == []


def _mapped_here(name: str) -> bool:
    return f"/dev/shm/{name}" in Path("/proc/self/maps").read_text()


def test_region_cache_lets_go_of_unlinked_objects_on_its_own() -> None:
    """The worker's mapping is what keeps an unlinked object's memory alive: the cache's sweeper
    unmaps it within a few sweeps, with no message from the daemon (and then ends)."""
    cache = RegionCache(sweep_s=0.05)
    shm = shared_memory.SharedMemory(create=True, size=1 << 20)
    try:
        view = cache.window(shm.name, 0, 64, "a")
        assert _mapped_here(shm.name) and cache.mapped() == [shm.name]
        del view
    finally:
        shm.close()
        shm.unlink()
    deadline = time.monotonic() + 5
    while (cache.mapped() or _mapped_here(shm.name)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cache.mapped() == [] and not _mapped_here(shm.name)
    time.sleep(0.2)
    assert cache._sweeper is None  # noqa: SLF001 - nothing mapped: no thread left running


def _shm_file(name: str, size: int = 4096) -> Path:
    """An object nobody in this process maps (SharedMemory would map it here too)."""
    path = SHM_DIR / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(fd, size)
    os.close(fd)
    return path


def test_region_cache_drops_idle_and_replaced_mappings() -> None:
    now = [0.0]
    cache = RegionCache(sweep_s=None, idle_s=30, clock=lambda: now[0])
    a = _shm_file(f"edged-test-idle-{os.getpid()}")
    b = _shm_file(f"edged-test-repl-{os.getpid()}")
    try:
        cache.window(a.name, 0, 8, "a")
        cache.window(b.name, 0, 8, "b")
        now[0] = 20.0
        cache.window(b.name, 0, 8, "b")
        now[0] = 40.0
        assert cache.sweep() == [a.name]  # unregistered but not unlinked: idle for 40 s
        assert not _mapped_here(a.name) and _mapped_here(b.name)
        b.unlink()
        _shm_file(b.name)  # replaced by a new object of the same name
        assert cache.sweep() == [b.name]
        assert not _mapped_here(b.name)
    finally:
        a.unlink()
        b.unlink()


def test_region_cache_never_follows_a_symlink(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"x" * 4096)
    link = SHM_DIR / f"edged-test-link-{os.getpid()}"
    link.symlink_to(secret)
    try:
        with pytest.raises(e.InvalidArgument, match="is not a shared memory object"):
            RegionCache(sweep_s=None).window(link.name, 0, 8, "a")
    finally:
        link.unlink()


def test_a_client_unlinks_arenas_whose_client_died(tmp_path: Path) -> None:
    """An arena's creator holds a shared flock on it while it lives; an arena nobody holds is
    a dead client's leftover, unlinked by the next client of the same user."""
    from edged.client.shm import PREFIX, sweep_stale

    alive, dead, foreign = (tmp_path / f"{PREFIX}{n}" for n in ("alive", "dead", "foreign"))
    for p in (alive, dead, foreign):
        p.write_bytes(b"\0" * 64)
    if os.geteuid() == 0:
        os.chown(foreign, 65534, -1)  # another user's: not ours to judge
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child holds the live arena's lock
        fd = os.open(alive, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.write(w, b"1")
        time.sleep(60)
        os._exit(0)
    try:
        assert os.read(r, 1) == b"1"
        removed = sweep_stale(tmp_path, older_than_s=0)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        os.close(w)
    root = os.geteuid() == 0
    assert sorted(removed) == sorted([dead.name] + ([] if root else [foreign.name]))
    assert alive.exists() and not dead.exists() and foreign.exists() == root

"""Zero-copy inference through POSIX shared memory (Triton's system shared-memory extension):
edged.client's automatic use for large tensors, every bad region case, concurrent clients."""

from __future__ import annotations

import os
import threading
from multiprocessing import shared_memory

import modelgen
import numpy as np
import pytest
from ortref import run_onnx

from edged import errors as e
from edged.oip import grpc_service_pb2 as oip

DET_SHAPE = (1, 3, 640, 640)  # PP-OCR det: 4.9 MB in, 1.6 MB out




def test_client_uses_shared_memory_for_large_tensors(daemon, demo_models) -> None:  # type: ignore[no-untyped-def]
    x = np.random.default_rng(3).random(DET_SHAPE, dtype=np.float32)
    want = run_onnx(demo_models["ppocr-det"], {"x": x})
    with daemon.client(shm_threshold=64 << 10) as c:
        c.install("det", demo_models["ppocr-det"], warmup_shapes={"x": (1, 3, 64, 64)})
        for _ in range(3):  # the first call learns the output size, the next ones use shm
            got = c.infer("det", {"x": x})
            np.testing.assert_array_equal(got["sigmoid_0.tmp_0"], want["sigmoid_0.tmp_0"])
        regions = c._call(c.oip.SystemSharedMemoryStatus,  # noqa: SLF001 - a real RPC
                          oip.SystemSharedMemoryStatusRequest()).regions
        assert len(regions) == 1  # one arena, registered once, reused
        arena = next(iter(regions.values()))
        assert arena.byte_size >= x.nbytes + want["sigmoid_0.tmp_0"].nbytes
    with daemon.client() as c:  # the closed client unregistered its arena
        assert not c._call(c.oip.SystemSharedMemoryStatus,  # noqa: SLF001
                           oip.SystemSharedMemoryStatusRequest()).regions


def _shm_request(region: str, offset: int, size: int, shape: list[int],
                 out_region: str | None = None) -> oip.ModelInferRequest:
    req = oip.ModelInferRequest(model_name="adder")
    t = req.inputs.add(name="x", datatype="FP32", shape=shape)
    t.parameters["shared_memory_region"].string_param = region
    t.parameters["shared_memory_offset"].int64_param = offset
    t.parameters["shared_memory_byte_size"].int64_param = size
    if out_region:
        o = req.outputs.add(name="y")
        o.parameters["shared_memory_region"].string_param = out_region
        o.parameters["shared_memory_byte_size"].int64_param = size
    return req


def test_bad_regions_are_refused_cleanly(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client.install("adder", modelgen.add_model(tmp_path / "a.onnx"))
    shm = shared_memory.SharedMemory(name="edged_test_bad", create=True, size=4096)
    try:
        np.ndarray((2, 4), np.float32, buffer=shm.buf)[...] = 1.0
        client._shm_register("r", "/edged_test_bad", 4096)  # noqa: SLF001 - the real RPC
        infer = client.oip.ModelInfer

        def call(req: oip.ModelInferRequest) -> e.EdgedError:
            with pytest.raises(e.EdgedError) as info:
                client._call(infer, req)  # noqa: SLF001
            return info.value

        ok = client._call(infer, _shm_request("r", 0, 32, [2, 4], out_region="r"))  # noqa: SLF001
        assert ok.outputs[0].shape == [2, 4]
        np.testing.assert_array_equal(np.ndarray((2, 4), np.float32, buffer=shm.buf), 2.0)
        cases = {
            "unknown region": _shm_request("nope", 0, 32, [2, 4]),
            "outside the region": _shm_request("r", 4090, 32, [2, 4]),
            "size not matching the tensor": _shm_request("r", 0, 16, [2, 4]),
        }
        for what, req in cases.items():
            err = call(req)
            assert isinstance(err, e.InvalidArgument), what
        with pytest.raises(e.InvalidArgument):
            client._shm_register("bad", "/../etc/passwd", 16)  # noqa: SLF001 - path trick
        with pytest.raises(e.InvalidArgument):
            client._shm_register("big", "/edged_test_bad", 1 << 20)  # noqa: SLF001 - too big
        other = shared_memory.SharedMemory(name="edged_test_other", create=True, size=64)
        try:
            os.chown("/dev/shm/edged_test_other", 65534, 65534)  # another user's region
            with pytest.raises(e.PermissionDenied):
                client._shm_register("o", "/edged_test_other", 64)  # noqa: SLF001
        finally:
            other.close()
            other.unlink()
    finally:
        shm.close()
        shm.unlink()
    err = call(_shm_request("r", 0, 32, [2, 4]))  # unlinked while registered
    assert isinstance(err, e.InvalidArgument) and "unlinked" in str(err)
    assert client.health() == "SERVING"


def test_concurrent_clients_on_one_model(daemon, demo_models) -> None:  # type: ignore[no-untyped-def]
    x = np.random.default_rng(4).random((1, 3, 48, 192), dtype=np.float32)
    want = run_onnx(demo_models["ppocr-cls"], {"x": x})
    with daemon.client() as c:
        c.install("cls", demo_models["ppocr-cls"], warmup_shapes={"x": (1, 3, 48, 192)})
        c.load("cls")
    failures: list[Exception] = []

    def worker() -> None:
        with daemon.client() as cl:
            for _ in range(25):
                try:
                    got = cl.infer("cls", {"x": x})
                    np.testing.assert_allclose(got["save_infer_model/scale_0.tmp_1"],
                                               want["save_infer_model/scale_0.tmp_1"],
                                               rtol=1e-5)
                except Exception as exc:  # noqa: BLE001 - collected and asserted below
                    failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == []

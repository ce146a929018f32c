"""A lane's two ends in one process: the worker's LaneHost with a real ONNX Runtime session and
the client's Lane over a real seqpacket socket and memfd (the daemon is tested in
integration/test_lanes.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import modelgen
import numpy as np
import pytest
from onnx import TensorProto

from edged import errors as e
from edged import lanewire as lw
from edged.client.lane import Lane, LaneRevoked, LaneTooSmall
from edged.engines.base import EngineOptions, get_backend
from edged.engines.lane import LaneHost


@pytest.fixture
def host(tmp_path, request):  # type: ignore[no-untyped-def]
    sessions = {
        "add:1": get_backend("onnx").open(modelgen.add_model(tmp_path / "a.onnx"),
                                          EngineOptions()),
        "big:1": get_backend("onnx").open(modelgen.identity_model(
            tmp_path / "i.onnx", TensorProto.FLOAT, ["n", 1024]), EngineOptions()),
        "nz:1": get_backend("onnx").open(modelgen.nonzero_model(tmp_path / "nz.onnx"),
                                         EngineOptions()),
    }
    h = LaneHost(sessions.get, bind=getattr(request, "param", "always"))
    yield h, tmp_path
    h.revoke(None)


def _open(h: LaneHost, tmp: Path, key: str = "add:1", size: int = 0) -> Lane:
    path = tmp / f"{key.replace(':', '-')}-{time.monotonic_ns()}.lane"
    granted = h.open(1, key, os.getpid(), str(path), size, 0o600, -1)
    assert granted == lw.lane_size(size)
    return Lane(key.split(":")[0], 1, str(path))


def test_lane_size_is_a_power_of_two_with_room_for_the_header() -> None:
    assert lw.lane_size(0) == lw.MIN_LANE_BYTES
    assert lw.lane_size(lw.MIN_LANE_BYTES) == 2 * lw.MIN_LANE_BYTES  # (+ the header)
    n = 5 << 20
    assert lw.lane_size(n) >= n + lw.HEADER_BYTES and lw.lane_size(n) & (lw.lane_size(n) - 1) == 0
    with pytest.raises(ValueError):
        lw.decode(b'{"infer": 1}')


def test_zero_copy_round_trip_and_a_stream_of_like_requests(host) -> None:  # type: ignore[no-untyped-def]
    h, tmp = host
    lane = _open(h, tmp)
    try:
        x = lane.inputs({"x": ((2, 4), np.float32)})["x"]
        for i in range(5):  # the second and later requests reuse the layouts on both sides
            x[...] = i
            out = lane.run(timeout=10)
            np.testing.assert_array_equal(out["y"], np.full((2, 4), i + 1.0, np.float32))
            assert not out["y"].flags.writeable
        got = lane.infer({"x": np.ones((3, 4), np.float32)})  # a new shape: laid out again
        np.testing.assert_array_equal(got["y"], np.full((3, 4), 2.0, np.float32))
        with pytest.raises(e.InvalidArgument) as info:  # checked against the signature
            lane.infer({"x": np.ones((1, 5), np.float32)})
        assert info.value.field == "x"
        assert h.report()[0][3] == 7  # requests served on the lane, counted for the daemon
    finally:
        lane.close()


def test_like_requests_run_bound_to_the_lane_memory(host) -> None:  # type: ignore[no-untyped-def]
    """From the second like request on, ONNX Runtime reads the inputs from and writes the
    outputs into the lane itself (IO binding): the results are those of an unbound run, for
    new values each time, and across changes of layout and back."""
    h, tmp = host
    lane = _open(h, tmp)
    try:
        worker_side = h._lanes[1]
        x = lane.inputs({"x": ((2, 4), np.float32)})["x"]
        for i in range(4):
            x[...] = np.arange(8, dtype=np.float32).reshape(2, 4) * i
            out = lane.run(timeout=10)
            np.testing.assert_array_equal(out["y"], x + 1.0)
            assert (worker_side.bound is not None) == (i >= 1), i  # bound from the 2nd on
        for rows in (3, 2, 3):  # another layout is laid out (and bound) afresh
            got = lane.infer({"x": np.full((rows, 4), rows, np.float32)})
            np.testing.assert_array_equal(got["y"], np.full((rows, 4), rows + 1.0, np.float32))
            got = lane.infer({"x": np.full((rows, 4), -rows, np.float32)})
            np.testing.assert_array_equal(got["y"], np.full((rows, 4), 1.0 - rows, np.float32))
            assert worker_side.bound is not None and not worker_side.unbound
    finally:
        lane.close()


@pytest.mark.parametrize("host", ["device", "never"], indirect=True)
def test_cpu_sessions_run_unbound_by_default(host) -> None:  # type: ignore[no-untyped-def]
    """Binding is for GPU execution providers (on CPU it measured slower than a plain run and
    the copy): a CPU session's lanes run unbound unless asked otherwise, with the same
    results."""
    h, tmp = host
    lane = _open(h, tmp)
    try:
        x = lane.inputs({"x": ((2, 4), np.float32)})["x"]
        for i in range(3):
            x[...] = i
            np.testing.assert_array_equal(lane.run(timeout=10)["y"],
                                          np.full((2, 4), i + 1.0, np.float32))
        assert h._lanes[1].bound is None and h._lanes[1].unbound
    finally:
        lane.close()
    with pytest.raises(ValueError):
        LaneHost(lambda key: None, bind="sometimes")


def test_outputs_whose_shape_follows_the_values_fall_back_to_unbound_runs(host) -> None:  # type: ignore[no-untyped-def]
    """NonZero: the same input layout gives outputs of another shape when the values change.
    The bound run that finds them changed is not an error: the request runs unbound and is
    answered right, and that layout is not bound again."""
    h, tmp = host
    lane = _open(h, tmp, "nz:1")
    try:
        worker_side = h._lanes[1]
        x = lane.inputs({"x": ((6,), np.float32)})["x"]
        for values in ([1, 0, 2, 0, 0, 3], [1, 0, 2, 0, 0, 3], [0, 0, 0, 0, 5, 0],
                       [7, 7, 7, 7, 7, 7], [0, 1, 0, 1, 0, 0]):
            x[...] = values
            out = lane.run(timeout=10)
            np.testing.assert_array_equal(out["y"], np.array([np.nonzero(values)[0]]))
        assert worker_side.unbound and worker_side.bound is None
    finally:
        lane.close()


def test_outputs_that_do_not_fit_ask_for_a_bigger_lane(host) -> None:  # type: ignore[no-untyped-def]
    h, tmp = host
    lane = _open(h, tmp, "big:1")
    try:
        rows = lane.size // 4096 // 2 + 1  # inputs fit; inputs + outputs do not
        with pytest.raises(LaneTooSmall) as info:
            lane.infer({"x": np.ones((rows, 1024), np.float32)})
        assert info.value.needed > lane.size
    finally:
        lane.close()


def test_a_passed_deadline_is_not_run_and_revocation_is_not_an_error(host) -> None:  # type: ignore[no-untyped-def]
    h, tmp = host
    lane = _open(h, tmp)
    try:
        lane.inputs({"x": ((1, 4), np.float32)})
        msg = lw.encode(["infer", 99, time.monotonic() - 1, None,
                         [["x", "FP32", [1, 4], lw.HEADER_BYTES, 16]], 128])
        lane._sock.send(msg)
        reply = lw.decode(lane._wait(99, 0.0, None))
        assert reply[0] == "err" and reply[2] == "DeadlineExceeded"
        assert h.revoke("add:1") == 1
        assert lane.revoked
        with pytest.raises(LaneRevoked):
            lane.run()
    finally:
        lane.close()


def test_a_lane_for_a_model_not_loaded_is_refused(host) -> None:  # type: ignore[no-untyped-def]
    h, tmp = host
    with pytest.raises(e.Unavailable):
        h.open(2, "nope:1", os.getpid(), str(tmp / "x.lane"), 0, 0o600, -1)

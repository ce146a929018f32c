"""Every worker-protocol message class survives the trip through marshal (the channel's
encoding) as the same message, and its wire form is what marshal carries (plain tuples, no
subclasses). The inference request and reply, typed tuples, are exercised by every inference
test (tests/unit/test_worker_pool.py, tests/integration/test_inference.py, ...)."""

from __future__ import annotations

import marshal
from typing import Any

import pytest

from edged import errors as e
from edged.engines import worker_protocol as wp
from edged.engines.base import EngineOptions, Signature, TensorSpec

SIG = Signature((TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("y", "INT64", (1,)),))

REQUESTS: list[Any] = [
    wp.Load("m:1", "/models/m.onnx", "onnx",
            EngineOptions(providers=("CPUExecutionProvider",), warmup_shapes={"x": (1, 4)},
                          engine_info={"tensorrt_version": "10.3"}), 2),
    wp.Unload("m:1"),
    wp.Prepare("onnx"),
    wp.Ping(),
    wp.Exit(),
    wp.GetStats(),
    wp.LaneOpen(7, "m:1", 4242, "/run/edged/lanes/ab.lane", 1 << 20, 0o660, -1),
    wp.LaneRevoke("m:1"),
    wp.LaneRevoke(None),
    wp.GetLaneReport(),
]
REPLIES: list[Any] = [
    wp.Ok(),
    wp.Rss(123456),
    wp.Ready(99, 2 << 20),
    wp.Loaded(SIG, ("CPUExecutionProvider",), 0.25, 0.01, 1000, 5000, 6000),
    wp.Stats({"pid": 5, "models": ["m:1"], "threads": 3, "RssAnon": 10}),
    wp.LaneOpened(1 << 20),
    wp.LanesRevoked(2),
    wp.LaneReport((wp.LaneRow(7, "m:1", 4242, 10, False, [(1.0, 0.001, True)], 0),
                   wp.LaneRow(8, "m:1", 4243, 0, True, [], 3))),
    wp.ErrorReply("InvalidArgument", "bad", "x", "BAD_TENSOR", {"tensor": "x"}),
]


def _exact_tuples(value: object) -> bool:
    """marshal's own rule: tuples, lists and dicts of plain values, no subclasses."""
    if isinstance(value, tuple | list):
        return type(value) in (tuple, list) and all(_exact_tuples(v) for v in value)
    if isinstance(value, dict):
        return all(_exact_tuples(k) and _exact_tuples(v) for k, v in value.items())
    return value is None or type(value) in (int, float, str, bool, bytes)


def _shipped(wire: wp.Wire) -> wp.Wire:
    wire = marshal.loads(marshal.dumps(wire))
    assert isinstance(wire, tuple)
    return wire


@pytest.mark.parametrize("msg", REQUESTS, ids=lambda m: type(m).__name__)
def test_requests_cross_the_wire_unchanged(msg: Any) -> None:
    wire = msg.wire()
    assert _exact_tuples(wire)
    assert isinstance(wire[0], str) and wire[0] in vars(wp.Op).values()
    assert type(msg).of(_shipped(wire)) == msg


@pytest.mark.parametrize("msg", REPLIES, ids=lambda m: type(m).__name__)
def test_replies_cross_the_wire_unchanged(msg: Any) -> None:
    wire = msg.wire()
    assert _exact_tuples(wire)
    assert type(msg).of(_shipped(wire)) == msg


def test_decoded_records_are_the_typed_classes() -> None:
    rows = wp.LaneReport.of(_shipped(REPLIES[7].wire())).lanes
    assert [type(r) for r in rows] == [wp.LaneRow, wp.LaneRow] and rows[1].dropped == 3
    loaded = wp.Load.of(_shipped(REQUESTS[0].wire()))
    assert loaded.options.warmup_shapes == {"x": (1, 4)}
    assert wp.Loaded.of(_shipped(REPLIES[3].wire())).signature == SIG


def test_each_request_decodes_its_own_reply() -> None:
    assert wp.Load("k", "a", "onnx", EngineOptions(), 1).reply(REPLIES[3].wire()) == REPLIES[3]
    assert wp.LaneOpen(1, "k", 1, "p", 1, 0, -1).reply(REPLIES[5].wire()).size == 1 << 20
    assert wp.GetLaneReport().reply(REPLIES[7].wire()) == REPLIES[7]
    assert wp.Ping().reply(wp.Ok().wire()) == wp.Ok()


def test_errors_keep_their_class_and_fields() -> None:
    err = e.NotFound("no model 'm'", field="name", reason="MODEL_NOT_FOUND",
                     metadata={"model": "m"})
    back = wp.ErrorReply.of(_shipped(wp.ErrorReply.of_exception(err).wire())).error()
    assert type(back) is e.NotFound
    assert (back.message, back.field, back.reason, back.metadata) == (
        "no model 'm'", "name", "MODEL_NOT_FOUND", {"model": "m"})
    # classes that carry more than these fields, and unknown names, come back as Internal
    for kind in ("CapacityExceeded", "SignatureChanged", "NoSuchError", "Exception"):
        assert type(wp.ErrorReply(kind, "m", None, "INTERNAL", {}).error()) is e.Internal

"""A robot process that uses both ``edged.client`` and ``tritonclient.grpc`` (issue 14, item 17):
both import in either order in one process, and both then talk to the real daemon; and
``python -m edged.daemon`` runs the daemon."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import pytest
from daemon_harness import DaemonProcess
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

CHILD = r"""
import json, sys
import numpy as np
order, target, model = sys.argv[1], sys.argv[2], sys.argv[3]
if order == "edged-first":
    from edged.client import EdgedClient
    import tritonclient.grpc as tg
else:
    import tritonclient.grpc as tg
    from edged.client import EdgedClient
x = np.random.default_rng(3).random((1, 3, 48, 192), dtype=np.float32)
with EdgedClient(target) as c:
    ours = c.infer(model, {"x": x})
t = tg.InferenceServerClient(url=target)
inp = tg.InferInput("x", list(x.shape), "FP32")
inp.set_data_from_numpy(x)
res = t.infer(model, [inp])
name = next(iter(ours))
print(json.dumps({"same": bool(np.array_equal(ours[name], res.as_numpy(name))),
                  "live": t.is_server_live()}))
"""


@pytest.mark.parametrize("order", ["edged-first", "tritonclient-first"])
def test_edged_client_and_tritonclient_in_one_process(daemon, demo_models, order) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        c.install("cls", demo_models["ppocr-cls"])
    proc = subprocess.run([sys.executable, "-c", CHILD, order, daemon.target, "cls"],
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"same": True, "live": True}


def test_reflection_still_describes_the_inference_service(daemon) -> None:  # type: ignore[no-untyped-def]
    # edged's OIP messages sit in a pool of their own; reflection must still serve them.
    with grpc.insecure_channel(daemon.target) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        fd = db.FindFileContainingSymbol("inference.GRPCInferenceService")
        assert "ModelInferRequest" in [m.name for m in fd.message_type]
        assert db.FindFileContainingSymbol("edged.v1.Models").package == "edged.v1"


class ModuleDaemon(DaemonProcess):
    def command(self) -> list[str]:
        return [sys.executable, "-m", "edged.daemon", *super().command()[3:]]


def test_python_m_edged_daemon_runs_the_daemon() -> None:
    d = ModuleDaemon()
    try:
        d.start()
        with d.client() as c:
            assert c.health() == "SERVING"
        assert d.stop() == 0
    finally:
        d.cleanup()

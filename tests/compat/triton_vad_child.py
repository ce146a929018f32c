"""Runs in a CHILD process: the unchanged ``tritonclient.grpc`` on silero-vad, a model with
three inputs (``input``, ``state``, ``sr``) and two outputs (``output``, ``stateN``).

``python triton_vad_child.py TARGET MODEL INPUTS.npz OUT.npz`` tries what a Triton user does:
``input`` in system shared memory with ``state`` and ``sr`` inline (tritonclient then sends raw
contents for those two only) and ``stateN`` written into shared memory; plain gRPC asking for
one output; a wrong shape; Triton's answers for unknown regions. Writes the outputs to OUT.npz
(``<case>.<output>``) and prints one JSON line with what it saw.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException


def _inline(name: str, arr: np.ndarray, datatype: str) -> grpcclient.InferInput:
    inp = grpcclient.InferInput(name, list(arr.shape), datatype)
    inp.set_data_from_numpy(arr)
    return inp


def _error(fn: object) -> dict[str, str] | None:
    try:
        fn()  # type: ignore[operator]
    except InferenceServerException as exc:
        return {"status": str(exc.status()), "message": exc.message()}
    return None


def main() -> int:
    target, model, inputs_path, out_path = sys.argv[1:5]
    feeds = dict(np.load(inputs_path))
    x, state, sr = feeds["input"], feeds["state"], feeds["sr"]
    client = grpcclient.InferenceServerClient(url=target)
    got: dict[str, np.ndarray] = {}
    report: dict[str, object] = {}

    tag = os.getpid()
    in_key, out_key = f"/edged_vad_in_{tag}", f"/edged_vad_out_{tag}"
    h_in = shm.create_shared_memory_region("vad_in", in_key, x.nbytes)
    h_out = shm.create_shared_memory_region("vad_out", out_key, 1 << 16)
    try:
        shm.set_shared_memory_region(h_in, [x])
        client.register_system_shared_memory("vad_in", in_key, x.nbytes)
        client.register_system_shared_memory("vad_out", out_key, 1 << 16)
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_shared_memory("vad_in", x.nbytes)
        state_out = grpcclient.InferRequestedOutput("stateN")
        state_out.set_shared_memory("vad_out", 1 << 16)
        result = client.infer(model, [inp, _inline("state", state, "FP32"),
                                      _inline("sr", sr, "INT64")],
                              outputs=[grpcclient.InferRequestedOutput("output"), state_out])
        got["mixed.output"] = result.as_numpy("output")
        o = result.get_output("stateN")
        got["mixed.stateN"] = shm.get_contents_as_numpy(h_out, np.float32,
                                                        list(o.shape)).copy()
        report["mixed_outputs"] = sorted(t.name for t in result.get_response().outputs)
        report["unregister_unknown"] = _error(
            lambda: client.unregister_system_shared_memory("never-registered"))
        report["status_unknown"] = _error(
            lambda: client.get_system_shared_memory_status("never-registered"))
        client.unregister_system_shared_memory("vad_in")
        client.unregister_system_shared_memory("vad_out")
        report["regions_after"] = sorted(
            client.get_system_shared_memory_status(as_json=True).get("regions", {}))
    finally:
        shm.destroy_shared_memory_region(h_in)
        shm.destroy_shared_memory_region(h_out)

    plain = [_inline("input", x, "FP32"), _inline("state", state, "FP32"),
             _inline("sr", sr, "INT64")]
    result = client.infer(model, plain, outputs=[grpcclient.InferRequestedOutput("output")])
    report["selected_outputs"] = [t.name for t in result.get_response().outputs]
    got["selected.output"] = result.as_numpy("output")

    bad_state = np.zeros((2, 1, 64), np.float32)
    report["wrong_shape"] = _error(lambda: client.infer(
        model, [plain[0], _inline("state", bad_state, "FP32"), plain[2]]))
    np.savez(out_path, **got)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Runs in a CHILD process: the unchanged ``tritonclient.grpc`` against edged.

One Python process cannot import two Open Inference Protocol modules (both register package
``inference`` in protobuf's default pool), so the test starts this script with
``python triton_child.py TARGET MODEL INPUTS.npz OUT.npz [--shm]`` and compares OUT.npz with
in-process ONNX Runtime. Prints one JSON line with what it saw.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def main() -> int:
    target, model, inputs_path, out_path = sys.argv[1:5]
    use_shm = "--shm" in sys.argv
    client = grpcclient.InferenceServerClient(url=target)
    report: dict[str, object] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "server": client.get_server_metadata(as_json=True),
        "model_ready": client.is_model_ready(model),
    }
    meta = client.get_model_metadata(model, as_json=True)
    report["metadata"] = meta
    feeds = dict(np.load(inputs_path))
    out_names = [o["name"] for o in meta["outputs"]]
    infer_inputs = []
    regions = []
    if use_shm:
        import tritonclient.utils.shared_memory as shm

        for i, (name, arr) in enumerate(feeds.items()):
            key = f"/edged_test_in_{i}"
            h = shm.create_shared_memory_region(f"in{i}", key, arr.nbytes)
            shm.set_shared_memory_region(h, [arr])
            client.register_system_shared_memory(f"in{i}", key, arr.nbytes)
            regions.append(h)
            inp = grpcclient.InferInput(name, list(arr.shape), _dtype(arr))
            inp.set_shared_memory(f"in{i}", arr.nbytes)
            infer_inputs.append(inp)
        out_size = 64 << 20
        out_handles = {}
        outputs = []
        for j, name in enumerate(out_names):
            key = f"/edged_test_out_{j}"
            h = shm.create_shared_memory_region(f"out{j}", key, out_size)
            client.register_system_shared_memory(f"out{j}", key, out_size)
            regions.append(h)
            out_handles[name] = h
            o = grpcclient.InferRequestedOutput(name)
            o.set_shared_memory(f"out{j}", out_size)
            outputs.append(o)
        report["shm_status"] = sorted(client.get_system_shared_memory_status(as_json=True)
                                      .get("regions", {}))
        result = client.infer(model, infer_inputs, outputs=outputs)
        got = {}
        for name in out_names:
            o = result.get_output(name)  # (as_json=True returns None in tritonclient 2.73)
            got[name] = shm.get_contents_as_numpy(
                out_handles[name], _np(o.datatype), list(o.shape)).copy()
        client.unregister_system_shared_memory()
        for h in regions:
            shm.destroy_shared_memory_region(h)
    else:
        for name, arr in feeds.items():
            inp = grpcclient.InferInput(name, list(arr.shape), _dtype(arr))
            inp.set_data_from_numpy(arr)
            infer_inputs.append(inp)
        result = client.infer(model, infer_inputs)
        got = {name: result.as_numpy(name) for name in out_names}
    np.savez(out_path, **got)
    report["index"] = client.get_model_repository_index(as_json=True)
    try:
        client.infer("no-such-model", infer_inputs)
        report["missing_model_error"] = None
    except InferenceServerException as exc:
        report["missing_model_error"] = exc.status()
    client.unload_model(model)
    report["ready_after_unload"] = [m for m in client.get_model_repository_index(
        as_json=True).get("models", []) if m.get("state") == "READY"]
    client.load_model(model)
    report["ready_after_load"] = [m["name"] for m in client.get_model_repository_index(
        as_json=True).get("models", []) if m.get("state") == "READY"]
    print(json.dumps(report, default=str))
    return 0


def _dtype(arr: np.ndarray) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return str(np_to_triton_dtype(arr.dtype))


def _np(datatype: str) -> type:
    from tritonclient.utils import triton_to_np_dtype

    return triton_to_np_dtype(datatype)  # type: ignore[no-any-return]


if __name__ == "__main__":
    sys.exit(main())

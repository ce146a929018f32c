"""Times tritonclient.grpc ModelInfer calls in a CHILD process (tritonclient and edged's OIP
module cannot share one process). ``python triton_client_child.py URL MODEL INPUTS.npz N
[--shm]`` prints one JSON line: {"samples": [seconds, ...]}."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import np_to_triton_dtype


def main() -> int:
    url, model, path, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    feeds = dict(np.load(path))
    client = grpcclient.InferenceServerClient(url=url)
    inputs = []
    for name, arr in feeds.items():
        inp = grpcclient.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    for _ in range(20):
        client.infer(model, inputs)
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        client.infer(model, inputs)
        samples.append(time.perf_counter() - t)
    print(json.dumps({"samples": samples}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The KServe peer: a KServe Python model server running ONNX Runtime, set up by the bench.

``kserve`` pins packages that conflict with ours, so it lives in its own virtual environment
(``bench/.work/kserve-venv``, created on first use with pip from PyPI). The server is a
``kserve.Model`` subclass wrapping an ONNX Runtime session with the same options as edged's
workers, serving the Open Inference Protocol over gRPC; the bench times it with tritonclient
from a child process, like edged.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

WORK = Path(__file__).resolve().parent / ".work"
VENV = WORK / "kserve-venv"

SERVER = r'''
import sys
import numpy as np
import onnxruntime as ort
import kserve
from kserve import InferRequest, InferResponse, InferOutput, Model, ModelServer


class OnnxModel(Model):
    def __init__(self, name, path):
        super().__init__(name)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.ready = True

    def predict(self, payload, headers=None, response_headers=None):
        feeds = {i.name: i.as_numpy() for i in payload.inputs}
        names = [o.name for o in self.sess.get_outputs()]
        outs = self.sess.run(None, feeds)
        result = []
        for n, a in zip(names, outs):
            o = InferOutput(name=n, shape=list(a.shape), datatype="FP32")
            o.set_data_from_numpy(a, binary_data=True)
            result.append(o)
        return InferResponse(model_name=self.name, infer_outputs=result,
                             response_id=payload.id)


if __name__ == "__main__":
    name, path, http_port, grpc_port = sys.argv[1:5]
    model = OnnxModel(name, path)
    ModelServer(http_port=int(http_port), grpc_port=int(grpc_port),
                workers=1, enable_docs_url=False).start([model])
'''


def ensure_venv(timeout_s: float = 900) -> Path | None:
    """Create the venv with kserve + onnxruntime; None (with a message) when it cannot."""
    py = VENV / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import kserve, onnxruntime"],
                                      capture_output=True, check=False).returncode == 0:
        return py
    WORK.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=120)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "kserve", "onnxruntime", "numpy"],
                       check=True, timeout=timeout_s, capture_output=True)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"bench: kserve peer unavailable: {exc}", file=sys.stderr)
        return None
    return py


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class KServePeer:
    def __init__(self, name: str, model: Path) -> None:
        self.name, self.model = name, model
        self.proc: subprocess.Popen[bytes] | None = None
        self.grpc_port = 0

    def start(self, timeout_s: float = 120) -> bool:
        py = ensure_venv()
        if py is None:
            return False
        script = WORK / "kserve_server.py"
        script.write_text(SERVER)
        self.grpc_port, http_port = free_port(), free_port()
        self.log = (WORK / f"kserve-{self.name}.log").open("wb")
        self.proc = subprocess.Popen([str(py), str(script), self.name, str(self.model),
                                      str(http_port), str(self.grpc_port)],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.grpc_port)) == 0:
                    time.sleep(1.0)
                    return True
            time.sleep(0.2)
        return False

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.log.close()

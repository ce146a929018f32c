"""Runs in a CHILD process (often as another user): ``edged.client`` with automatic shared
memory against the daemon, as a robot process would use it.

``python shm_client_child.py TARGET MODEL infer|hold`` infers ``x + 1`` three times with a
tensor above the threshold and prints one JSON line with what it saw: whether the answers were
right, whether shared memory was used (or why not), the arena's owner and mode, the regions the
daemon reported. ``hold`` then sleeps until killed (a client that dies without cleaning up).
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time

import numpy as np

from edged.client import EdgedClient
from edged.oip import grpc_service_pb2 as oip


def main() -> int:
    target, model, mode = sys.argv[1:4]
    x = np.arange(2048, dtype=np.float32).reshape(512, 4)  # 8 KiB: above the threshold below
    c = EdgedClient(target, shm_threshold=1024, lanes=False)
    ok = all(np.array_equal(c.infer(model, {"x": x})["y"], x + 1) for _ in range(3))
    regions = c._call(c.oip.SystemSharedMemoryStatus,  # noqa: SLF001 - the real RPC
                      oip.SystemSharedMemoryStatusRequest()).regions
    report: dict[str, object] = {"ok": ok, "disabled": c._shm.disabled,  # noqa: SLF001
                                 "regions": sorted(regions), "pid": os.getpid()}
    arena = getattr(c._shm._local, "arena", None)  # noqa: SLF001
    if arena is not None:
        st = os.stat(arena.path)
        report.update(arena=arena.region, uid=st.st_uid, gid=st.st_gid,
                      mode=stat.S_IMODE(st.st_mode))
    print(json.dumps(report), flush=True)
    if mode == "hold":
        while True:
            time.sleep(60)
    c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

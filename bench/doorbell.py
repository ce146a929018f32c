"""What a lane's doorbell costs: a round trip between two processes, per mechanism.

    .venv/bin/python bench/doorbell.py [--n 20000]

The lane (edged/engines/lane.py) needs a doorbell each way between a client and an engine
worker: "a request is in the slot" and "the reply is in the slot". Candidates, all from plain
Python (both ends are Python processes):

* ``seqpacket``: a Unix SOCK_SEQPACKET socket pair; a message may carry the request's small
  metadata, and the peer's death is an EOF at once.
* ``dgram``: a Unix SOCK_DGRAM socket pair (no EOF when the peer dies).
* ``fifo``: a pipe each way (what FIFOs in a private directory amount to once open).
* ``eventfd``: an eventfd each way (a counter; carries no bytes, no EOF on death).

A futex would need ctypes syscalls on a shared word; from Python its wait costs a ctypes call
plus the same kernel wake-up as the others, so it was not pursued. Prints p50/p99 per mechanism
in microseconds.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from collections.abc import Callable

# (send, recv): measure() drops what both return (an eventfd's recv reads a counter, not bytes)
Pair = tuple[Callable[[bytes], object], Callable[[], object]]


def _sock_pair(kind: int) -> tuple[Pair, Pair]:
    a, b = socket.socketpair(socket.AF_UNIX, kind)
    return (a.send, lambda: a.recv(256)), (b.send, lambda: b.recv(256))


def _pipes() -> tuple[Pair, Pair]:
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    return ((lambda m: os.write(w1, m), lambda: os.read(r2, 256)),
            (lambda m: os.write(w2, m), lambda: os.read(r1, 256)))


def _eventfds() -> tuple[Pair, Pair]:
    e1, e2 = os.eventfd(0), os.eventfd(0)
    return ((lambda m: os.eventfd_write(e1, 1), lambda: os.eventfd_read(e2)),
            (lambda m: os.eventfd_write(e2, 1), lambda: os.eventfd_read(e1)))


MECHANISMS: dict[str, Callable[[], tuple[Pair, Pair]]] = {
    "seqpacket": lambda: _sock_pair(socket.SOCK_SEQPACKET),
    "dgram": lambda: _sock_pair(socket.SOCK_DGRAM),
    "fifo": _pipes,
    "eventfd": _eventfds,
}


def measure(make: Callable[[], tuple[Pair, Pair]], n: int) -> list[float]:
    """Round trips in microseconds, the echo running in a forked child."""
    (send, recv), (csend, crecv) = make()
    msg = b"x" * 48  # about what a lane request's doorbell carries
    pid = os.fork()
    if pid == 0:
        try:
            for _ in range(n + 100):
                crecv()
                csend(msg)
        finally:
            os._exit(0)
    out = []
    for i in range(n + 100):
        t0 = time.perf_counter()
        send(msg)
        recv()
        if i >= 100:
            out.append((time.perf_counter() - t0) * 1e6)
    os.waitpid(pid, 0)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20000)
    args = p.parse_args()
    print("| doorbell | p50 us | p99 us |\n|---|---|---|")
    for name, make in MECHANISMS.items():
        xs = sorted(measure(make, args.n))
        print(f"| {name} | {statistics.median(xs):.1f} | {xs[int(len(xs) * 0.99)]:.1f} |")


if __name__ == "__main__":
    main()

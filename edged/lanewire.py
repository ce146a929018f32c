"""The wire of a direct lane, shared by the engine worker and ``edged.client`` (neither may
import the other's package, so it lives here, beside ``datatypes``).

A lane is one client's private path to one loaded model's engine worker, granted by the daemon
(``edged.v1.Models/OpenLane``). Two things connect the two processes:

* **The doorbell**: a Unix ``SOCK_SEQPACKET`` connection. Each request and each reply is one
  message (JSON: a few hundred bytes of tensor descriptors), so one ``send`` and one ``recv``
  per direction ring the bell and carry the metadata together. Chosen by measurement
  (``bench/doorbell.py``, 2-core dev box, round trip p50): eventfd 6.4 us, pipe/FIFO 8.2 us,
  seqpacket 12.8 us, datagram 12.9 us (p99 59 us). eventfd and pipes are cheaper by ~5 us but
  carry no metadata and give no sign when the peer dies; with them the lane would need a
  second wait (a pidfd) and a metadata area with its own synchronisation. The seqpacket
  connection ends with an EOF the instant either process dies, which is how a client sees a
  worker crash at once, and it carries the memory's file descriptor (SCM_RIGHTS) at connect.
* **The memory**: an anonymous ``memfd`` the worker creates and passes over that connection.
  It has no name in /dev/shm or anywhere else: only the process that connected (and was
  checked, see below) holds it, so no other client can map it. Layout: a 64-byte header, then
  the data area where the client writes its inputs (at offsets it chooses) and the worker
  writes the outputs (from ``out_at`` on). One request is in flight per lane at a time (a
  one-slot ring); a client gets concurrency with several lanes (``edged.client`` keeps one
  per concurrent caller).

Messages (JSON arrays):

* client -> worker: ``["infer", seq, deadline, outputs|null, [[name, datatype, shape, offset,
  nbytes], ...], out_at]``; ``deadline`` is CLOCK_MONOTONIC seconds (one clock for every
  process of the machine), 0 for none.
* worker -> client: ``["ok", seq, [[name, datatype, shape, offset, nbytes], ...]]``,
  ``["err", seq, error class, message, field, reason, metadata]``, ``["revoked", seq]`` (the
  daemon took the lane back: retry elsewhere, nothing ran), ``["small", seq, bytes]`` (the
  outputs need a lane of that many bytes; nothing was written).
* at connect, worker -> client: ``["hello", size, key]`` with the memfd attached.

The header's ``revoked`` word is set by the worker before it closes a revoked lane: a client
that finds the connection closed and the word set knows the lane was revoked (retry: nothing
failed), and one that finds it closed with the word clear knows the worker died.
"""

from __future__ import annotations

import json
import struct
from typing import Any

MAGIC = 0x4C4E4445  # "EDNL"
HEADER = struct.Struct("<IIIIQ")  # magic, version, revoked, reserved, requests served
HEADER_BYTES = 64
REVOKED_AT = 8
ALIGN = 64
MAX_MESSAGE = 1 << 16
MIN_LANE_BYTES = 1 << 20
MAX_LANE_BYTES = 1 << 31


def align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def lane_size(nbytes: int) -> int:
    """The size of a lane for ``nbytes`` of tensors: a power of two, header included."""
    return max(MIN_LANE_BYTES, 1 << (max(nbytes, 1) + HEADER_BYTES - 1).bit_length())


def encode(msg: Any) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode()


def decode(data: bytes) -> list[Any]:
    msg = json.loads(data)
    if not isinstance(msg, list) or not msg or not isinstance(msg[0], str):
        raise ValueError("a lane message is a JSON array that starts with its kind")
    return msg

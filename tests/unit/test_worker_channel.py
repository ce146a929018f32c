"""The worker channel's framing and error transport (in one process, over a socketpair), and
the reader-role hand-over between concurrent callers (with a real worker)."""

from __future__ import annotations

import marshal
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edged import errors as e
from edged.engines import channel as ch
from edged.engines.worker_proc import WorkerProcess
from edged.engines.worker_protocol import ErrorReply, Ok, Ping


@pytest.fixture
def pair() -> Iterator[tuple[ch.Channel, ch.Channel]]:
    a, b = socket.socketpair()
    ca, cb = ch.Channel(a, buffer_bytes=4096), ch.Channel(b, buffer_bytes=4096)
    yield ca, cb
    ca.close()
    cb.close()


def test_small_and_large_frames(pair: tuple[ch.Channel, ch.Channel]) -> None:
    a, b = pair
    small = np.arange(6, dtype=np.int16).reshape(2, 3)
    big = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)  # > buffer
    done = threading.Event()

    def sender() -> None:
        a.send(1, ("infer", "m:1", {"k": (1, 2)}), [small])
        a.send(2, ("x",), [big, small])
        a.send(3, ("empty",))
        done.set()

    threading.Thread(target=sender).start()
    rid, meta, data = b.recv()  # type: ignore[misc]
    assert (rid, meta) == (1, ("infer", "m:1", {"k": (1, 2)}))
    np.testing.assert_array_equal(np.frombuffer(data, np.int16).reshape(2, 3), small)
    rid, meta, data = b.recv()  # type: ignore[misc]
    assert rid == 2 and data.nbytes == big.nbytes + small.nbytes
    np.testing.assert_array_equal(np.frombuffer(data, np.float32, big.size), big)
    assert b.recv() == (3, ("empty",), memoryview(b""))
    assert done.wait(5)


def test_timeout_loses_nothing(pair: tuple[ch.Channel, ch.Channel]) -> None:
    a, b = pair
    assert b.recv(timeout=0) is None
    meta = marshal.dumps(1)
    frame = ch._HDR.pack(len(meta) + 4, len(meta), 9) + meta + b"abcd"
    a._sock.sendall(frame[:10])  # half a header
    assert b.recv(timeout=0.01) is None
    a._sock.sendall(frame[10:])
    rid, meta, data = b.recv(timeout=1)  # type: ignore[misc]
    assert (rid, meta, bytes(data)) == (9, 1, b"abcd")


def test_concurrent_senders_do_not_interleave(pair: tuple[ch.Channel, ch.Channel]) -> None:
    a, b = pair
    payload = {i: np.full(5000 + i, i, np.uint8) for i in range(8)}

    def send(i: int) -> None:
        for j in range(20):
            a.send(i * 100 + j, ("p", i), [payload[i]])

    with ThreadPoolExecutor(8) as ex:
        futures = [ex.submit(send, i) for i in range(8)]
        seen = 0
        while seen < 160:
            rid, (_, i), data = b.recv()  # type: ignore[misc]
            assert rid // 100 == i and bytes(data) == payload[i].tobytes()
            seen += 1
        for f in futures:
            f.result()


def test_eof(pair: tuple[ch.Channel, ch.Channel]) -> None:
    a, b = pair
    a.send(1, ("last",))
    a.close()
    assert b.recv()[1] == ("last",)  # type: ignore[index]
    with pytest.raises(EOFError):
        b.recv()


def test_errors_cross_the_wire_as_the_same_class() -> None:
    err = e.InvalidArgument("input 'x': bad", field="x", reason="BAD_TENSOR",
                            metadata={"tensor": "x"})
    def across(exc: BaseException) -> e.EdgedError:
        wire = marshal.loads(marshal.dumps(ErrorReply.of_exception(exc).wire()))
        return ErrorReply.of(wire).error()

    back = across(err)
    assert type(back) is e.InvalidArgument and str(back) == str(err)
    assert (back.field, back.reason, back.metadata) == ("x", "BAD_TENSOR", {"tensor": "x"})
    other = across(ValueError("boom"))
    assert type(other) is e.Internal and "ValueError: boom" in other.message
    assert type(ErrorReply.of(("err", "os", "x", None, "INTERNAL", {})).error()) is e.Internal


def test_reader_role_passes_between_concurrent_callers() -> None:
    """16 threads ping one worker at once: each call must get its own reply, and nobody may
    be left waiting when the thread that was reading got its answer."""
    spawner = ThreadPoolExecutor(1)
    w = WorkerProcess("t", spawner=lambda f: spawner.submit(f).result(), shm_threshold=65536,
                      oom_score_adj=None, on_death=lambda w, cause: None)
    w.start(30)
    try:
        def ping(_: int) -> int:
            for _ in range(200):
                assert w.wait(w.request(Ping()), 10) == Ok()
            return 1

        with ThreadPoolExecutor(16) as ex:
            assert sum(ex.map(ping, range(16))) == 16
        assert w.in_flight == 0 and w.requests == 16 * 200
    finally:
        w.stop()
        spawner.shutdown()

"""The request path of one loaded model, daemon side: checks, concurrency slots, lanes, the call.

A request is checked against the signature (validate.py), waits for one of the model's
``max_concurrency`` slots (queueing here: at most ``queue_depth`` requests wait, beyond them
the caller gets ResourceExhausted at once), borrows a lane if it carries large tensors, and is
sent to the worker. A waiting request holds its caller's thread (an RPC thread in the daemon):
the bound keeps one busy model from holding them all. Whoever reads the reply (see worker_proc.py)
decodes it and releases the lane and the slot, exactly once, even for a caller that gave up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np

from edged import errors as e
from edged.engines import channel as ch
from edged.engines import validate
from edged.engines.base import ShmRef, Signature
from edged.engines.calls import Call
from edged.engines.shm import Lane
from edged.engines.worker_proc import WorkerProcess
from edged.engines.worker_protocol import SHM, InferReply, InferRequest, LaneDesc, Op

Outputs = dict[str, np.ndarray | ShmRef]


class LoadedModel:
    """``in_flight`` counts queued + running requests, ``running`` those sent to the worker;
    both under ``cond``, which also wakes queued requests and drains. ``footprint`` grows when
    the pool's monitor sees the worker grow (footprint.py); ``served``/``sampled`` tell it
    which model was busy."""

    def __init__(self, key: str, worker: WorkerProcess, checker: validate.Checker,
                 providers: tuple[str, ...], max_concurrency: int, footprint: int,
                 threshold: int, gpu_bytes: int = 0) -> None:
        self.key, self.worker, self.checker = key, worker, checker
        self.providers, self.footprint, self.gpu_bytes = providers, footprint, gpu_bytes
        self.served = self.sampled = 0
        self.max_concurrency = max_concurrency
        self.cond = threading.Condition(threading.Lock())
        self.in_flight = self.running = 0
        self.waiters = 0  # threads waiting on ``cond`` (queued requests, drains)
        self.draining = False
        self._threshold = threshold
        self._out_hint = 0  # bytes of large outputs seen: reserved in the next request's lane

    @property
    def signature(self) -> Signature:
        return self.checker.sig

    def infer(self, inputs: Mapping[str, np.ndarray | ShmRef], outputs: Sequence[str] | None,
              output_shm: Mapping[str, ShmRef] | None, timeout: float,
              queue_depth: int) -> Outputs:
        deadline = time.monotonic() + timeout
        req = self.checker.prepare(inputs, outputs, output_shm)
        with self.cond:
            if self.in_flight >= self.max_concurrency + queue_depth:
                raise e.ResourceExhausted(
                    f"model '{self.key}' has {self.running} requests running and "
                    f"{self.in_flight - self.running} queued (limit {queue_depth} queued)",
                    reason="QUEUE_FULL")
            self.in_flight += 1
            self.served += 1
            while self.running >= self.max_concurrency:
                left = deadline - time.monotonic()
                self.waiters += 1
                woken = left > 0 and self.cond.wait(left)
                self.waiters -= 1
                if not woken:
                    self._release(running=False)
                    raise e.DeadlineExceeded(f"model '{self.key}' was busy for {timeout:.3g} s")
            self.running += 1
        call = self._send(req)  # releases the slot itself if it fails
        return self.worker.wait(call, deadline - time.monotonic(), budget_s=timeout)

    def wait_idle(self, timeout_s: float | None) -> bool:
        with self.cond:
            self.waiters += 1
            try:
                return self.cond.wait_for(lambda: self.in_flight == 0, timeout_s)
            finally:
                self.waiters -= 1

    def _send(self, req: validate.Prepared) -> Call[Outputs]:
        worker, lane = self.worker, None
        lane_desc: LaneDesc | None = None
        try:
            if req.lane_bytes or self._out_hint:
                lane = worker.lanes.acquire(req.lane_bytes + self._out_hint)
                for offset, arr in req.lane_inputs:
                    lane.mm[offset:offset + arr.nbytes] = ch.raw(arr)
                lane_desc = (lane.id, "" if lane.announced else lane.path.name, lane.size,
                             req.lane_bytes)
            msg: InferRequest = (Op.INFER, self.key, req.descs, req.outputs, req.out_shm,
                                 lane_desc, worker.lanes.take_dropped())
            if lane is not None:
                lane.announced = True
            call: Call[Outputs] = worker.send(
                msg, req.buffers, key=self.key,
                on_done=self._done if lane is None else lambda call: self._done(call, lane))
            return call
        except BaseException:
            if lane is not None:
                worker.lanes.release(lane)
            with self.cond:
                self._release()
            raise

    def _done(self, call: Call[Outputs], lane: Lane | None = None) -> None:
        """Runs on whichever thread reads the reply (or notices the worker's end)."""
        try:
            if call.error is None:
                reply: InferReply = call.reply
                descs = reply[1]
                assert call.data is not None
                call.result = validate.decode_outputs(descs, call.data,
                                                      lane.mm if lane is not None else None)
                large = 0
                for _name, _dt, _shape, where, _region, _offset, n in descs:
                    if where != SHM and n >= self._threshold:
                        large += -(-n // 64) * 64
                if large > self._out_hint:
                    self._out_hint = large  # the next lane has room for them
        finally:
            if lane is not None:
                self.worker.lanes.release(lane)
            with self.cond:
                self._release()

    def _release(self, running: bool = True) -> None:
        """(with ``cond`` held) one request is over: wake a queued one, or a drain."""
        self.in_flight -= 1
        if running:
            self.running -= 1
        if self.waiters:
            self.cond.notify_all()

"""Predictive preloading in the daemon: the same policy the replay tool measures, run live.

``LockedPolicy`` serialises the single-threaded policy objects of ``edged.manager.memory.policy``
(the request threads observe, the residency asks for eviction orders, the preloader asks for
candidates). ``Preloader`` wakes every ``interval_s``, asks the policy what is likely next, and
loads the best candidate through the residency with ``preload=True`` — which admits it only as
``policy.plan_preload`` allows (fit as things are, or evict strictly less valuable idle models).
Demand loads never wait behind it: loads of different models run side by side, and a demand load
that needs a running preload's memory cancels it (see ``Residency.load``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Any

from edged import errors as e
from edged.manager.memory import planner
from edged.manager.memory.policy import CachePolicy, plan_demand, plan_preload

log = logging.getLogger("edged.preloader")


class LockedPolicy:
    """A thread-safe face over one policy object; every query holds one lock (all are
    O(models)). Observations only append to a deque (atomic, ~1 µs) and are folded into the
    policy, in arrival order, by the next query: the request path never waits for learning."""

    def __init__(self, policy: CachePolicy, clock: Callable[[], float] = time.time) -> None:
        self._p = policy
        self._lock = threading.Lock()
        self._clock = clock
        self._pending: deque[tuple[str, float]] = deque()
        self._last_t = -math.inf

    def _fold(self) -> None:
        while self._pending:
            model, t = self._pending.popleft()
            # request threads race between reading the clock and appending: never let the
            # policy see time go backwards (it learns from the gaps between requests)
            self._last_t = t = max(t, self._last_t)
            self._p.observe(model, t)

    def set_model(self, name: str, size_bytes: int, load_s: float) -> None:
        with self._lock:
            self._p.set_model(name, size_bytes, load_s)

    def set_capacity(self, capacity_bytes: int | None) -> None:
        with self._lock:
            self._p.set_capacity(capacity_bytes)

    def observe(self, model: str, t: float) -> None:
        self._pending.append((model, t))
        if len(self._pending) > 4096:  # nobody queried for a while (preloading off): fold now
            with self._lock:
                self._fold()

    def eviction_order(self, residents: Sequence[planner.Resident]) -> list[planner.Resident]:
        with self._lock:
            self._fold()
            return self._p.eviction_order(residents, self._clock())

    def preload_candidates(self, resident_keys: Collection[str]) -> list[str]:
        with self._lock:
            self._fold()
            return self._p.preload_candidates(resident_keys, self._clock())

    def plan(self, req: planner.LoadRequest, residents: Sequence[planner.Resident],
             budgets: planner.Budgets, memory: planner.Memory) -> planner.Decision:
        """A demand load's decision (``policy.plan_demand``: the policy's eviction order and
        victim costs, the same rule the replay tool measures), computed under the lock."""
        with self._lock:
            self._fold()
            return plan_demand(self._p, req, residents, budgets, memory, self._clock())

    def plan_preload(self, req: planner.LoadRequest, residents: Sequence[planner.Resident],
                     budgets: planner.Budgets, memory: planner.Memory) -> planner.Decision:
        with self._lock:
            self._fold()
            return plan_preload(self._p, req, residents, budgets, memory, self._clock())


class Preloader:
    def __init__(self, *, manager: Any, policy: LockedPolicy, interval_s: float,
                 max_per_tick: int = 1, tries_per_tick: int = 3) -> None:
        self._m = manager
        self._policy = policy
        self._interval = interval_s
        self._max = max_per_tick
        self._tries = tries_per_tick  # as tools/replay.py simulates it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="preloader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the preloader must never die
                log.exception("preload pass failed")

    def refresh_models(self) -> None:
        """Tell the policy every installed model's size and measured load time, and the swap
        budget they share (what its experts' regret is measured against)."""
        self._policy.set_capacity(self._m.residency.budgets.swap_bytes)
        for entry in self._m.catalog.list():
            v = entry.versions[entry.active]
            self._policy.set_model(entry.name, v.measured_bytes or v.estimated_bytes,
                                   v.load_seconds or 1.0)

    def tick(self) -> list[str]:
        """One pass: preload up to ``max_per_tick`` likely-next models; returns their keys."""
        self.refresh_models()
        residency = self._m.residency
        present = residency.all_keys()
        done: list[str] = []
        candidates = self._policy.preload_candidates({k.rpartition(":")[0] for k in present})
        for name in candidates[:self._tries]:
            if len(done) >= self._max or self._stop.is_set():
                break
            try:
                entry = self._m.catalog.get(name)
            except e.NotFound:
                continue
            if entry.tier != "swap":
                continue
            try:
                spec = self._m.serving_spec(entry, entry.active)
            except e.EdgedError:  # missing artifact, another TensorRT: nothing to preload
                continue
            if spec.key in present:
                continue
            try:
                residency.load(spec, preload=True)
                done.append(spec.key)
            except (e.CapacityExceeded, e.Aborted):
                continue
            except e.EdgedError as exc:
                log.info("preload of %s failed: %s", spec.key, exc)
        return done

"""Predictive preloading in the daemon: the same policy the replay tool measures, run live.

``LockedPolicy`` serialises the single-threaded policy objects of ``edged.manager.memory.policy``
(the request threads observe, the residency asks for eviction orders, the preloader asks for
candidates). ``Preloader`` wakes every ``interval_s``, asks the policy what is likely next, and
loads the best candidate through the residency with ``preload=True`` — which admits it only as
``capacity.plan_preload`` allows (fit as things are, or evict strictly less valuable idle models).
Demand loads never wait behind it, nor share the disk with it: loads of different models run
side by side, so a demand load cancels a running preload no request waits for, and no preload
starts while a demand load runs (see ``Residency.load``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from edged import errors as e
from edged.manager.memory import planner
from edged.manager.memory.capacity import plan_demand, plan_preload
from edged.manager.memory.policy import CachePolicy
from edged.manager.memory.residency import LoadSpec, Residency
from edged.values import Budgets, ModelKey

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
             budgets: Budgets, memory: planner.Memory) -> planner.Decision:
        """A demand load's decision (``capacity.plan_demand``: the policy's eviction order and
        victim costs, the same rule the replay tool measures), computed under the lock."""
        with self._lock:
            self._fold()
            return plan_demand(self._p, req, residents, budgets, memory, self._clock())

    def plan_preload(self, req: planner.LoadRequest, residents: Sequence[planner.Resident],
                     budgets: Budgets, memory: planner.Memory) -> planner.Decision:
        with self._lock:
            self._fold()
            return plan_preload(self._p, req, residents, budgets, memory, self._clock())


class PreloadModels(Protocol):
    """The installed models as the preloader sees them (``specs.CatalogModels`` in the
    daemon: this side never imports the catalog)."""

    def sizes(self) -> list[tuple[str, int, float]]:
        """(name, bytes, load seconds) of every installed model's active version."""
        ...

    def preload_spec(self, name: str) -> LoadSpec | None:
        """The spec a preload of ``name`` loads; None when it is no swap-tier model (or not
        installed) or cannot be served here (a missing artifact, another TensorRT)."""
        ...


class PreloadPolicy(Protocol):
    """The policy as the preloader asks it (``LockedPolicy``)."""

    def set_model(self, name: str, size_bytes: int, load_s: float) -> None: ...

    def set_capacity(self, capacity_bytes: int | None) -> None: ...

    def preload_candidates(self, resident_keys: Collection[str]) -> list[str]: ...


class Preloader:
    def __init__(self, *, models: PreloadModels, residency: Residency, policy: PreloadPolicy,
                 interval_s: float, max_per_tick: int = 1, tries_per_tick: int = 3) -> None:
        self._models = models
        self._res = residency
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
        self._policy.set_capacity(self._res.budgets.swap)
        for name, size_bytes, load_s in self._models.sizes():
            self._policy.set_model(name, size_bytes, load_s)

    def tick(self) -> list[str]:
        """One pass: preload up to ``max_per_tick`` likely-next models; returns their keys."""
        self.refresh_models()
        residency = self._res
        present = residency.all_keys()
        done: list[str] = []
        candidates = self._policy.preload_candidates({ModelKey.parse(k).name for k in present})
        for name in candidates[:self._tries]:
            if len(done) >= self._max or self._stop.is_set():
                break
            spec = self._models.preload_spec(name)
            if spec is None or spec.key in present:
                continue
            try:
                residency.load(spec, preload=True)
                done.append(spec.key)
            except (e.CapacityExceeded, e.Aborted):
                continue
            except e.EdgedError as exc:
                log.info("preload of %s failed: %s", spec.key, exc)
        return done

"""What is loaded: slots with reference counts, loads through the capacity planner, evictions.

Every load — demand, preload, ram-tier start-up, version switch — asks the planner first and
counts the model's bytes from the moment it is admitted (a loading slot is accounted like a
loaded one), so two concurrent loads can never both squeeze into the same free memory. A slot
with requests in flight is never evicted or unloaded under them: unload and eviction mark it
``unloading`` (new requests wait for a fresh load) and end its worker once it is idle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edged import errors as e
from edged.manager.memory import planner
from edged.manager.seams import EventSink, Sampler
from edged.units import format_size
from edged.values import MEMORY_TIERS, Budgets, ModelKey, SlotState
from edged.views import LoadedView

if TYPE_CHECKING:
    from edged.engines.base import EngineOptions, LoadResult
    from edged.errors import CapacityNumbers

log = logging.getLogger("edged.residency")


@dataclass(frozen=True)
class LoadSpec:
    """Everything needed to load one model version, resolved by the manager from the catalog."""

    name: str
    version: int
    tier: str
    artifact: Path
    fmt: str
    options: EngineOptions | None  # None: a dry run's spec of a file (never loaded)
    group: str | None
    bytes: int  # measured footprint if known, else the estimate
    gpu: bool = False
    peak: int = 0  # what the load itself may hold for a moment (0: no more than ``bytes``)
    variant: str = ""  # which variant of the version this loads ("": the version itself)
    variant_reason: str = ""  # why that variant (manager.variants.choose), for status

    def device_bytes(self, accounted: int) -> int:
        """What of ``accounted`` sits in a discrete GPU's memory (planner rule 5): all but its
        worker's host-side fixed cost; 0 for a CPU model."""
        if not self.gpu:
            return 0
        from edged.engines.estimate import worker_fixed

        return max(0, accounted - worker_fixed(self.options)) if self.options is not None \
            else accounted

    @property
    def key(self) -> ModelKey:
        return ModelKey(self.name, self.version)

    @property
    def load_bytes(self) -> int:
        """What a load of this spec is booked at until it is ready: its transient peak (ONNX
        Runtime holds the parsed model and the initialized weights at once), then the
        measured footprint. Booking only the footprint let concurrent loads overshoot."""
        return max(self.bytes, self.peak)

    @cached_property
    def request(self) -> planner.LoadRequest:
        """The planner's view of a demand load of this spec (specs are cached per catalog
        entry, so selection over many models builds each request once)."""
        return planner.LoadRequest(key=self.key, tier=self.tier, bytes=self.load_bytes,
                                   gpu=self.gpu, gpu_bytes=self.device_bytes(self.bytes))


@dataclass
class Slot:
    spec: LoadSpec
    state: SlotState = SlotState.LOADING
    footprint: int = 0
    in_flight: int = 0
    requests: int = 0
    pid: int = 0
    providers: tuple[str, ...] = ()
    loaded_at: float = 0.0
    last_used: float = 0.0
    preloaded: bool = False
    used_since_preload: bool = False
    cancelled: bool = False
    evicting: bool = False  # chosen as a victim: its bytes are booked to the load it makes room for
    moving_to: str | None = None  # a tier move planned, not yet committed: room held there too
    load_seconds: float = 0.0
    waiting: int = 0  # requests waiting for this slot to finish loading
    error: BaseException | None = None
    ready: threading.Event = field(default_factory=threading.Event)

    @property
    def key(self) -> ModelKey:
        return self.spec.key


class ResidentPool(Protocol):
    """The worker pool as the residency drives it (``engines.workers.WorkerPool``)."""

    def load(self, key: str, artifact: Path, fmt: str, options: EngineOptions | None = None,
             group: str | None = None, max_concurrency: int = 2) -> LoadResult: ...

    def unload(self, key: str, timeout_s: float | None = None) -> None: ...

    def abort_load(self, key: str, cause: str) -> bool: ...


class AdmissionPolicy(Protocol):
    """The capacity decisions as the residency asks them (``preloader.LockedPolicy``: the
    policy's eviction order and victim costs over the planner's rules)."""

    def plan(self, req: planner.LoadRequest, residents: Sequence[planner.Resident],
             budgets: Budgets, memory: planner.Memory) -> planner.Decision: ...

    def plan_preload(self, req: planner.LoadRequest, residents: Sequence[planner.Resident],
                     budgets: Budgets, memory: planner.Memory) -> planner.Decision: ...


class ResidencyMetrics(Protocol):
    """What the residency counts (``edged.metrics.Metrics``, when metrics are on)."""

    def preload_hit(self) -> None: ...

    def preload_wasted(self) -> None: ...

    def rejection(self, tier: str, reason: str = "capacity") -> None: ...

    def worker_restart(self, model: str) -> None: ...

    def count_load(self, model: str, kind: str) -> None: ...

    def eviction(self, model: str, reason: str) -> None: ...


class Residency:
    def __init__(self, *, pool: ResidentPool, budgets: Budgets,
                 memory: Callable[[], planner.Memory], events: EventSink,
                 policy: AdmissionPolicy,
                 on_measured: Callable[[str, int, int, float, str], None],
                 queue_limit: int = 64, concurrency: int = 2,
                 clock: Callable[[], float] = time.time,
                 metrics: ResidencyMetrics | None = None,
                 verify: Callable[[LoadSpec], None] = lambda spec: None,
                 runtime_cap: Callable[[int, int, int], int] | None = None) -> None:
        """``runtime_cap(tier budget, others' bytes, own bytes)``: the cap on a load's runtime
        allocations (``engines.estimate.runtime_cap``), set on its options when they bring
        none; None: no cap from here (the runtime's own fallback applies)."""
        self.pool = pool
        self.budgets = budgets
        self._memory = memory
        self.events = events
        self._policy = policy  # a LockedPolicy: eviction order and the preload rule
        self._on_measured = on_measured
        self._queue_limit = queue_limit
        self._concurrency = concurrency
        self._clock = clock
        self._metrics = metrics
        self._verify = verify  # checks the artifact's sha256 before a worker maps it
        self._runtime_cap = runtime_cap
        self._slots: dict[str, Slot] = {}
        self._demand_waiting = 0
        self._lock = threading.Condition()
        self._closed = False

    # -- views ---------------------------------------------------------------------------
    def views(self) -> list[LoadedView]:
        with self._lock:
            return [self._view(s) for s in self._slots.values()]

    def view(self, key: str) -> LoadedView | None:
        with self._lock:
            s = self._slots.get(key)
            return self._view(s) if s else None

    def all_keys(self) -> set[str]:
        """Every slot, loading ones included (the preloader skips what is on its way)."""
        with self._lock:
            return set(self._slots)

    def loaded_keys(self) -> set[str]:
        with self._lock:
            return {k for k, s in self._slots.items() if s.state == SlotState.READY}

    def _view(self, s: Slot) -> LoadedView:
        return LoadedView(s.spec.name, s.spec.version, s.spec.tier, s.state, s.footprint,
                          s.in_flight, s.requests, s.pid, s.loaded_at, s.last_used,
                          s.providers, s.preloaded, s.evicting, s.spec.variant,
                          variant_reason=s.spec.variant_reason)

    def residents(self) -> list[planner.Resident]:
        """The planner's view: every slot that holds (or is about to hold) memory, oldest first."""
        with self._lock:
            return self._residents()

    def _residents(self) -> list[planner.Resident]:
        """Every slot; and for a tier move between ``plan_retier`` and ``retier`` (the
        manifest commit runs in between, without the lock) the room it holds in its new tier,
        as a resident nobody can evict: no load may take that room meanwhile."""
        slots = sorted(self._slots.values(), key=lambda s: s.last_used or s.loaded_at)
        out = [planner.Resident(key=s.key, tier=s.spec.tier, bytes=s.footprint,
                                in_flight=s.in_flight, gpu=s.spec.gpu,
                                loading=s.state in (SlotState.LOADING, SlotState.UNLOADING),
                                gpu_bytes=s.spec.device_bytes(s.footprint))
               for s in slots]
        out += [planner.Resident(key=f"{s.key}>{s.moving_to}", tier=s.moving_to,
                                 bytes=s.footprint, in_flight=1, gpu=s.spec.gpu)
                for s in slots if s.moving_to is not None and s.moving_to != s.spec.tier]
        return out

    # -- capacity ------------------------------------------------------------------------
    def plan(self, spec: LoadSpec, preload: bool = False,
             memory: planner.Memory | None = None) -> planner.Decision:
        """A dry run; pass ``memory`` to reuse one telemetry reading over many plans."""
        with self._lock:
            return self._plan(spec, preload, memory)

    def memory(self) -> planner.Memory:
        return self._memory()

    def fits(self, specs: list[LoadSpec], memory: planner.Memory | None = None) -> dict[str, str]:
        """What a demand load of each of ``specs`` would get now: key -> ``"admit"`` (fits as
        things are), ``"evict"`` (fits after evicting) or ``"reject"``.

        For selection over many candidates: one snapshot of the residents and one telemetry
        reading for all of them; whether a request fits at all does not depend on the
        eviction order, so ``planner.admissible`` answers without the policy's scores."""
        mem = memory or self._memory()
        with self._lock:
            residents = self._residents()
        reqs = [s.request for s in specs]
        return dict(zip((r.key for r in reqs),
                        planner.admissible(reqs, residents, self.budgets, mem), strict=True))

    def _plan(self, spec: LoadSpec, preload: bool,
              memory: planner.Memory | None = None) -> planner.Decision:
        residents = [r for r in self._residents() if r.key != spec.key]
        req = replace(spec.request, preload=True) if preload else spec.request
        mem = memory or self._memory()
        if preload:
            return self._policy.plan_preload(req, residents, self.budgets, mem)
        return self._policy.plan(req, residents, self.budgets, mem)

    # -- acquire / release (the inference path) ------------------------------------------
    def acquire(self, spec: LoadSpec, timeout_s: float | None = None) -> Slot:
        """Return the ready slot for ``spec`` with one more request counted on it.

        Loads on demand (evicting if the planner says so); waits for a load in progress.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            with self._lock:
                if self._closed:
                    raise e.Unavailable("edged is stopping", reason="STOPPING")
                slot = self._slots.get(spec.key)
                if slot is not None and slot.state == SlotState.READY:
                    if slot.in_flight >= self._queue_limit:
                        raise e.ResourceExhausted(
                            f"model '{spec.key}' has {slot.in_flight} requests queued "
                            f"(limit {self._queue_limit})", reason="QUEUE_FULL")
                    slot.in_flight += 1
                    slot.requests += 1
                    slot.last_used = self._clock()
                    if slot.preloaded and not slot.used_since_preload:
                        slot.used_since_preload = True
                        self.events.publish("preload_hit", spec.name, spec.version)
                        if self._metrics:
                            self._metrics.preload_hit()
                    return slot
                waiting_for = slot
                if slot is not None and slot.state == SlotState.LOADING:
                    # a burst to a cold model must not hold every RPC thread while it loads
                    if slot.waiting >= self._queue_limit:
                        raise e.ResourceExhausted(
                            f"model '{spec.key}' is loading with {slot.waiting} requests "
                            f"waiting for it (limit {self._queue_limit})", reason="QUEUE_FULL")
                    slot.waiting += 1
            if waiting_for is None:
                self.load(spec)
                continue
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if remaining == 0.0:
                raise e.DeadlineExceeded(f"model '{spec.key}' did not become ready in time")
            if waiting_for.state == SlotState.LOADING:
                try:
                    waiting_for.ready.wait(remaining)
                finally:
                    with self._lock:
                        waiting_for.waiting -= 1
                err = waiting_for.error
                failed = waiting_for.state == SlotState.FAILED  # type: ignore[comparison-overlap]
                # (another thread changed the state while this one waited: mypy cannot know)
                if err is not None and failed and not isinstance(
                        err, e.Aborted):  # a cancelled preload: load it on demand instead
                    raise err
            else:  # unloading: wait until it is gone, then load afresh
                with self._lock:
                    self._lock.wait_for(
                        lambda gone=waiting_for: self._slots.get(spec.key) is not gone,  # type: ignore[misc]
                        timeout=remaining)

    def served(self, key: str, requests: int, last_used: float) -> None:
        """``requests`` more were served on ``key``'s direct lanes (counted after the fact,
        engines/lanes.py), the last at ``last_used``: counted and dated as if acquired."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None:
                slot.requests += requests
                slot.last_used = max(slot.last_used, last_used)

    def release(self, slot: Slot) -> None:
        with self._lock:
            slot.in_flight -= 1
            slot.last_used = self._clock()
            idle_unloading = slot.state == SlotState.UNLOADING and slot.in_flight == 0
            self._lock.notify_all()
        if idle_unloading:
            self._finish_unload(slot, reason="released")

    def worker_died(self, key: str, message: str) -> None:
        """The engine's worker crashed: forget the slot so the next request reloads it."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                return
            if slot.state in (SlotState.READY, SlotState.UNLOADING):
                del self._slots[key]
                slot.state = SlotState.FAILED
                self._lock.notify_all()
        self.events.publish("worker_crash", slot.spec.name, slot.spec.version, message)
        if self._metrics:
            self._metrics.worker_restart(slot.spec.name)

    # -- load / unload -------------------------------------------------------------------
    def load(self, spec: LoadSpec, *, preload: bool = False) -> tuple[LoadedView, list[str],
                                                                        float]:
        """Load ``spec`` if the planner admits it; returns (view, evicted keys, seconds)."""
        with self._lock:
            if not preload and spec.key not in self._slots:
                self._yield_preloads(spec)
            existing = self._slots.get(spec.key)
            if existing is not None and existing.state in (SlotState.READY, SlotState.LOADING):
                wait_for = existing
            else:
                wait_for = None
                if preload and (self._demand_waiting or any(
                        s.state == SlotState.LOADING and not s.preloaded
                        for s in self._slots.values())):
                    # loads side by side share the disk: a preload beside a demand load would
                    # slow it (the preloader tries again at its next pass)
                    raise e.Aborted(f"preload of {spec.key} yields to a demand load")
                decision = self._plan(spec, preload)
                if isinstance(decision, planner.Reject) and not preload:
                    decision = self._cancel_preloads_for(spec)
                if isinstance(decision, planner.Reject) and preload:
                    raise e.Aborted(f"preload of {spec.key} does not fit now")
                if isinstance(decision, planner.Reject):
                    self.events.publish("reject", spec.name, spec.version, decision.reason,
                                        **_numbers(decision.numbers))
                    if self._metrics:
                        self._metrics.rejection(spec.tier)
                    planner.raise_if_rejected(decision)
                victims = list(decision.victims) if isinstance(
                    decision, planner.AdmitAfterEvicting) else []
                for key in victims:
                    self._slots[key].state = SlotState.UNLOADING
                    self._slots[key].evicting = True
                slot = Slot(spec=spec, footprint=spec.load_bytes, preloaded=preload,
                            last_used=self._clock())
                self._slots[spec.key] = slot
        if wait_for is not None:
            wait_for.ready.wait()
            if isinstance(wait_for.error, e.Aborted) and not preload:
                return self.load(spec)  # the preload we waited for was cancelled
            if wait_for.error is not None:
                raise wait_for.error
            return self._view(wait_for), [], 0.0
        for key in victims:
            self._evict(key, reason=f"to make room for {spec.key}")
        started = time.monotonic()
        check = _Verification(self._verify, spec)  # hashes while the worker maps and warms up
        try:
            try:
                if slot.cancelled:  # cancelled before its worker was asked for
                    raise e.Aborted(f"preload of {spec.key} cancelled for a demand load")
                result = self.pool.load(str(spec.key), spec.artifact, spec.fmt, self._capped(spec),
                                        spec.group, max_concurrency=self._concurrency)
            except BaseException:
                corrupt = check.wait()
                if corrupt is not None:  # a corrupt artifact explains the failed load
                    raise corrupt from None
                raise
            corrupt = check.wait()
            if corrupt is not None:  # never served: it was only mapped and warmed up
                self.pool.unload(str(spec.key))
                raise corrupt
            if slot.cancelled:
                self.pool.unload(str(spec.key))
                raise e.Aborted(f"preload of {spec.key} cancelled for a demand load")
        except BaseException as exc:
            if slot.cancelled and not isinstance(exc, e.Aborted):  # its worker was killed
                exc = e.Aborted(f"preload of {spec.key} cancelled for a demand load")
            with self._lock:
                slot.state, slot.error = SlotState.FAILED, exc
                self._slots.pop(spec.key, None)
                self._lock.notify_all()
            slot.ready.set()
            if not isinstance(exc, e.Aborted):
                self.events.publish("load_failed", spec.name, spec.version, str(exc))
                raise
            raise exc from None
        seconds = time.monotonic() - started
        with self._lock:
            slot.state = SlotState.READY
            slot.footprint = result.footprint_bytes or spec.bytes
            slot.pid, slot.providers = result.pid, tuple(result.providers)
            slot.load_seconds = result.load_seconds
            slot.loaded_at = slot.last_used = self._clock()
            self.events.publish("preload" if preload else "load", spec.name, spec.version,
                                f"{format_size(slot.footprint)} in {seconds:.2f}s",
                                pid=result.pid, footprint_bytes=slot.footprint,
                                **({"evicted": ",".join(victims)} if victims else {}))
            self._lock.notify_all()
        slot.ready.set()
        try:  # recording the measurement is bookkeeping: a full disk must not fail the load
            self._on_measured(spec.name, spec.version, slot.footprint, result.load_seconds,
                              spec.variant)
        except Exception as exc:  # noqa: BLE001 - logged; the model serves regardless
            log.warning("could not record the measured footprint of %s: %s", spec.key, exc)
        if self._metrics:
            self._metrics.count_load(spec.name, "preload" if preload else "demand")
        return self._view(slot), victims, seconds

    def _capped(self, spec: LoadSpec) -> EngineOptions | None:
        """``spec``'s options with the runtime cap of its load: its tier's budget less what
        the other models in that tier account, at least its own accounted bytes (unless the
        options bring their own cap)."""
        options = spec.options
        if self._runtime_cap is None or options is None or options.memory_limit_bytes:
            return options
        with self._lock:
            me = self._slots.get(spec.key)
            if me is None:
                return options
            tier = me.spec.tier
            others = sum(s.footprint for s in self._slots.values()
                         if s.spec.tier == tier and s is not me)
            mine = me.footprint
        budget = self.budgets.of(tier)
        cap = self._runtime_cap(budget, others, mine)
        return replace(options, memory_limit_bytes=cap) if cap > 0 else options

    def _cancel_preloads_for(self, spec: LoadSpec) -> planner.Decision:
        """A demand load that does not fit: cancel running preloads, wait for them, re-plan.

        Called with the lock held; ``wait_for`` releases it while the preloads finish."""
        self._demand_waiting += 1  # no new preload starts while we wait
        try:
            decision = self._plan(spec, False)
            for _ in range(3):
                running = [s for s in self._slots.values()
                           if s.preloaded and s.state == SlotState.LOADING]
                if not isinstance(decision, planner.Reject) or not running:
                    break
                for victim in running:
                    self._cancel_preload(victim, f"memory needed by {spec.key}")
                self._await_gone(running)
                decision = self._plan(spec, False)
            return decision
        finally:
            self._demand_waiting -= 1

    def _yield_preloads(self, spec: LoadSpec) -> None:
        """Preloads yield to a demand load (lock held): loads run side by side and share the
        disk, so every running preload no request waits for is ended before ``spec`` is
        planned. Where ``spec`` does not fit as things are, it waits (``wait_for`` releases the
        lock) the few ms until their memory is free, rather than evict for room that is about
        to be there."""
        running = [s for s in self._slots.values()
                   if s.preloaded and s.state == SlotState.LOADING and not s.waiting]
        if not running:
            return
        for victim in running:
            self._cancel_preload(victim, f"{spec.key} is loading on demand")
        if isinstance(self._plan(spec, False), planner.Admit):
            return
        self._demand_waiting += 1  # no new preload starts meanwhile
        try:
            self._await_gone(running)
        finally:
            self._demand_waiting -= 1

    def _await_gone(self, slots: list[Slot]) -> None:
        """Wait (lock held; ``wait_for`` releases it) until cancelled loads' slots are gone."""
        self._lock.wait_for(lambda: all(self._slots.get(x.key) is not x for x in slots),
                            timeout=120)

    def _cancel_preload(self, victim: Slot, why: str) -> None:
        """End a running preload now (lock held): a demand load never waits behind it."""
        if victim.cancelled:
            return
        victim.cancelled = True
        self.events.publish("preload_cancelled", victim.spec.name, victim.spec.version, why)
        self._count_wasted(victim)
        self.pool.abort_load(victim.key, f"preload cancelled: {why}")

    def _evict(self, key: str, reason: str) -> None:
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                return
            slot.state = SlotState.UNLOADING
            busy = slot.in_flight > 0
        self.events.publish("evict", slot.spec.name, slot.spec.version, reason)
        if self._metrics:
            self._metrics.eviction(slot.spec.name, "capacity")
        if slot.preloaded and not slot.used_since_preload:
            self._count_wasted(slot)
        if not busy:
            self._finish_unload(slot, reason="evicted")

    def _count_wasted(self, slot: Slot) -> None:
        """A preload that no request used: evicted unused, or cancelled while loading (the
        replay tool counts both the same way)."""
        self.events.publish("preload_wasted", slot.spec.name, slot.spec.version)
        if self._metrics:
            self._metrics.preload_wasted()

    def unload(self, key: str, wait_s: float | None = None) -> int:
        """Unload when idle (waits for in-flight requests); returns the footprint freed."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                raise e.NotFound(f"model '{key}' is not loaded")
            if slot.state == SlotState.LOADING:
                self._lock.wait_for(lambda: slot.state != SlotState.LOADING, timeout=wait_s)
            slot.state = SlotState.UNLOADING
            self._lock.wait_for(lambda: slot.in_flight == 0, timeout=wait_s)
            if slot.in_flight:
                slot.state = SlotState.READY
                raise e.Unavailable(f"model '{key}' still has {slot.in_flight} requests")
        self._finish_unload(slot, reason="unload")
        return slot.footprint

    def _finish_unload(self, slot: Slot, reason: str) -> None:
        try:
            self.pool.unload(str(slot.key))
        except Exception as exc:  # noqa: BLE001 - the worker may already be gone
            log.warning("unloading %s: %s", slot.key, exc)
        with self._lock:
            if self._slots.get(slot.key) is slot:
                del self._slots[slot.key]
            self._lock.notify_all()
        self.events.publish("unload", slot.spec.name, slot.spec.version, reason,
                            freed_bytes=slot.footprint)

    def remeasured(self, key: str, footprint: int) -> None:
        """A loaded model's worker grew after real inferences (engines/footprint.py): account
        the larger footprint from now on, and record it for the next load."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is None or slot.state != SlotState.READY or footprint <= slot.footprint:
                return
            slot.footprint = footprint
            name, version, seconds = slot.spec.name, slot.spec.version, slot.load_seconds
            variant = slot.spec.variant
            victims = self._over_budget(slot.spec.tier, key)
        for v in victims:
            self._evict(v, reason=f"{key} grew to {footprint} bytes: its tier was over budget")
        try:
            self._on_measured(name, version, footprint, seconds, variant)
        except Exception as exc:  # noqa: BLE001 - bookkeeping; the model keeps serving
            log.warning("could not record the grown footprint of %s: %s", key, exc)

    def _over_budget(self, tier: str, grown: str) -> list[str]:
        """A model (``grown``) grew past its estimate after real inferences and took its tier
        over its budget: the models the planner would evict to make room for nothing more,
        marked for eviction (called with the lock held).

        Idle models first. If none can go, busy ones (never ``grown`` itself, nor one that is
        loading): they are drained, not cut off — their running requests finish, and
        ``release`` unloads them after the last (the next request for one reloads it through
        the planner, which evicts or refuses). Empty if the tier is within budget."""
        if tier not in MEMORY_TIERS:
            return []
        nothing = planner.LoadRequest(key=grown, tier=tier, bytes=0)
        residents, mem = self._residents(), self._memory()
        decision = self._policy.plan(nothing, residents, self.budgets, mem)
        if isinstance(decision, planner.Reject):
            drainable = [replace(r, in_flight=0)
                         if r.in_flight and r.key != grown and r.key in self._slots else r
                         for r in residents]  # (a tier move's held room is no model to drain)
            decision = self._policy.plan(nothing, drainable, self.budgets, mem)
        if not isinstance(decision, planner.AdmitAfterEvicting):
            return []
        for v in decision.victims:
            self._slots[v].state = SlotState.UNLOADING
            self._slots[v].evicting = True
        return list(decision.victims)

    def plan_retier(self, key: str, tier: str) -> list[str]:
        """Check that a loaded model can move to ``tier`` (ram <-> swap) and evict what must
        go for it; returns the evicted keys. Raises CapacityExceeded with the numbers when it
        cannot fit. Call before committing the move, then ``retier``."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None:
                slot.moving_to = None  # a second plan for the same model replaces the first
            if slot is None or slot.spec.tier == tier or tier not in MEMORY_TIERS:
                return []
            req = planner.LoadRequest(key=key, tier=tier, bytes=slot.footprint,
                                      gpu=slot.spec.gpu)
            others = [r for r in self._residents() if r.key != key]
            # its bytes are already in MemAvailable: only the tier budget is in question
            mem = self._memory()
            mem = planner.Memory(available_bytes=mem.available_bytes + slot.footprint,
                                 swap_free_bytes=mem.swap_free_bytes,
                                 nvmap_used_bytes=mem.nvmap_used_bytes,
                                 swap_total_bytes=mem.swap_total_bytes)
            decision = self._policy.plan(req, others, self.budgets, mem)
            if isinstance(decision, planner.Reject):
                self.events.publish("reject", slot.spec.name, slot.spec.version,
                                    decision.reason, **_numbers(decision.numbers))
                planner.raise_if_rejected(decision)
            victims = list(decision.victims) if isinstance(
                decision, planner.AdmitAfterEvicting) else []
            for v in victims:
                self._slots[v].state = SlotState.UNLOADING
                self._slots[v].evicting = True
            slot.moving_to = tier
        for v in victims:
            self._evict(v, reason=f"to make room for {key} in the {tier} tier")
        return victims

    def retier(self, key: str, tier: str) -> None:
        """A loaded model moved between ram and swap: account it under its new tier (after
        ``plan_retier`` made room for it)."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None:
                slot.spec, slot.moving_to = replace(slot.spec, tier=tier), None

    def cancel_move(self, key: str) -> None:
        """The tier move ``plan_retier`` planned was not committed: let go of the room it held."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None:
                slot.moving_to = None

    def retire(self, key: str) -> None:
        """Version switch: no new requests for ``key``; unload it once its requests finish."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is None or slot.state != SlotState.READY:
                return
            slot.state = SlotState.UNLOADING
            idle = slot.in_flight == 0
        if idle:
            self._finish_unload(slot, reason="version switch")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()


class _Verification:
    """The artifact's sha256 check, run beside the load: hashing a large model takes about as
    long as ONNX Runtime takes to map it, so doing it first would double the load time. The
    slot is not ready (no request can reach the engine) until the check has passed."""

    def __init__(self, verify: Callable[[LoadSpec], None], spec: LoadSpec) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(verify, spec),
                                        name=f"verify-{spec.key}", daemon=True)
        self._thread.start()

    def _run(self, verify: Callable[[LoadSpec], None], spec: LoadSpec) -> None:
        try:
            verify(spec)
        except BaseException as exc:  # noqa: BLE001 - handed to the loading thread
            self._error = exc

    def wait(self) -> BaseException | None:
        self._thread.join()
        return self._error


def _numbers(n: CapacityNumbers) -> dict[str, object]:
    return {"tier": n.tier, "needed_bytes": n.needed_bytes, "budget_bytes": n.budget_bytes,
            "used_bytes": n.used_bytes, "free_bytes": n.free_bytes,
            "reserve_bytes": n.reserve_bytes}


class SampledMemory:
    """The planner's memory reading, from a fresh telemetry sample (``Residency(memory=)``):
    every capacity decision reads the device as it is now."""

    def __init__(self, sampler: Sampler) -> None:
        self._sampler = sampler

    def __call__(self) -> planner.Memory:
        snap = self._sampler.sample_now()
        m = snap.memory
        return planner.Memory(available_bytes=m.available_bytes,
                              swap_free_bytes=m.swap_free_bytes,
                              nvmap_used_bytes=m.nvmap_used_bytes,
                              swap_total_bytes=m.swap_total_bytes,
                              daemon_rss_bytes=snap.process_rss_bytes)

#!/usr/bin/env python3
"""Replay a request trace against a memory budget, through several cache policies.

    python tools/replay.py --trace T.jsonl --models M.json --budget 6GiB [--json | --explain]

Policies: ``lru``, ``lfu``, ``edged`` (``edged.manager.memory.policy.EdgedPolicy`` with the capacity
planner, demand victims by :func:`edged.manager.memory.capacity.plan_demand` and the preloader rule
:func:`edged.manager.memory.capacity.plan_preload` — the code the daemon runs), ``furthest``
(evict the model whose next use is furthest away: Belady's rule, offline, only a heuristic when
sizes differ) and ``optimal`` (the exact offline minimum of cold loads for any policy that loads
on demand; see ``optimal`` below).

Simulated time, honestly: a load takes the model's ``load_s``; there is one loader, so loads run
one at a time; requests are served in trace order. A request whose model is ready is a hit.
Any other request waits (``stall_s``): for its own demand load (which first waits for an
earlier demand load to finish), or for the rest of a load already running. A *cold load* is a
load some request had to wait for: every demand load, and every preload still running when its
first request came; more requests waiting on the same load add stall, not cold loads. A demand
load cancels a running preload of another model (preloads yield to demand), and its victims are
chosen with what the policy knows when the request comes. The preloader's passes are timed as
the daemon's preloader thread runs them: one every ``--preload-interval`` seconds (the daemon's
``preload.interval_s``) from the first request; a pass asks the policy for candidates and starts
the first (of at most three) that :func:`plan_preload` admits, and then waits for it (the
daemon's pass loads synchronously) before the next interval. A pass that finds the loader busy
with demand loads waits for it and runs the moment it is free (so a busy loader's gaps are
used; the policy ranks candidates by the saving that will land before a demand load cancels
them); a preload never delays a demand load. ``loader_busy`` is the share of the trace's span
the loader spent loading. ``--explain`` lists, per online policy, which waits cost the stall:
a model's first load, a preload too late, requests queued behind a load, and the load (demand
or preload) whose room evicted the model.
``--loader shared`` replays instead as the daemon loads (``SharedLoaderSimulator``): loads of
different models side by side, sharing one disk's speed (preloads yield to demand loads as with
one loader); one loader is the pessimistic default. ``--loader ordered`` is a what-if, not the
daemon: the same, but the disk goes whole to the load with the most requests waiting per second
of it left (``OrderedLoaderSimulator``), to measure what ordering the disk's reads would save.
``--measured-load-times`` (with ``--loader shared``) tells the policy each load's measured
time as it completes, as the daemon does (``Residency`` records every load's wall time, the
catalog keeps the last one, and the preloader's pass gives it to the policy): a load that
shared the disk measures longer than its ``load_s``. Without it the policy keeps the models
file's ``load_s``, as the bench's tables do. (One loader runs a load alone: it measures its
``load_s``.)
``--queue-limit N`` refuses a request, as the daemon does (``Residency.acquire``: QUEUE_FULL),
when N requests already wait on its model's load (``queue_full``: not served, no stall); the
default refuses none. ``rejected`` counts demand loads the planner refused: no room even after
evicting, the other residents loading or in use (with loads side by side, a model loading
beside the LLM at a tight budget). ``wasted_preloads`` counts preloads cancelled, evicted
before their first use, or never used; ``bytes_loaded`` counts what was read, a cancelled
preload's part included. All models are ``swap``-tier, CPU, evictable; the budget is all the
memory they may use. ``edged`` passes the policy's victim costs to the planner; LRU and LFU
evict in order.
``--retry-refused S`` is a what-if for the robot: a refused request (either kind) is sent again
every S seconds until it is served, its stall counted from its first try (``retries``: the
tries sent again; a request still refused ``RETRY_FOR_S`` after its first try is given up,
its wait counted, ``gave_up``). Each try is a request the policy observes, as the daemon
observes a request on arrival; ``rejected`` and ``queue_full`` count requests, not tries.

``optimal`` is a search over (request, resident set) states, with dead models (never requested
again) dropped from a set and a set pruned when another one provably does at least as well
(cost' + |S minus S'| <= cost: the other can reload the difference). It is exact while at most
``MAX_EXACT_MODELS`` models are live at once (requested before and again after some request: a
dead model's bit goes to the next new one, so one-off models cost nothing) and the frontier
stays under ``MAX_STATES``; beyond that it reports ``n/a`` rather than a number it cannot vouch
for. Its loads are timeless (each costs ``load_s`` of stall), and its stall and bytes are those
of one miss-minimal schedule. A preloading policy can beat it: a preload that completes in time
is a load but not a cold load.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edged.manager.memory import planner
from edged.manager.memory.capacity import plan_demand, plan_preload
from edged.manager.memory.policy import CachePolicy, make_policy
from edged.manager.memory.traces import ModelCost, TraceEntry, TraceError, read_models, read_trace
from edged.units import format_size, parse_size
from edged.values import Budgets

MAX_EXACT_MODELS = 24
MAX_STATES = 20_000
RETRY_FOR_S = 600.0  # with retry_s: a robot gives a refused request up after this long
POLICIES = ("lru", "lfu", "edged", "furthest", "optimal")


@dataclass
class Result:
    hit_rate: float | None = None
    cold_loads: int | None = 0
    stall_s: float | None = 0.0
    bytes_loaded: int | None = 0
    wasted_preloads: int | None = 0
    preloads: int | None = 0
    rejected: int | None = 0  # demand loads the planner refused (no room beside loads in flight)
    queue_full: int | None = 0  # requests refused: queue_limit already waiting on the load
    retries: int | None = 0  # with retry_s: refused tries sent again
    gave_up: int | None = 0  # with retry_s: requests still refused RETRY_FOR_S after the first
    loader_busy: float | None = None  # share of the trace's span the loader was loading
    note: str = ""


@dataclass
class Stall:
    """One request that waited (``--explain``): why its model was not ready."""

    t: float
    model: str
    stall_s: float
    cause: str  # "first" load | "evicted" | "preload late" | "queued" (behind a demand load)
    by: str = ""  # the load whose room evicted it (when cause is "evicted") ...
    by_preload: bool = False  # ... and whether that load was a preload
    evicted_at: float = math.nan


@dataclass
class _Slot:
    size: int
    ready_at: float
    preloaded: bool = False
    used: bool = False
    why: Stall | None = None  # with ``explain``: why its demand load was needed
    waiters: int = 0  # requests that waited for this load (one loader: all wait until ready_at)


class Simulator:
    """One online policy over one trace; see the module docstring for the rules of time."""

    def __init__(self, models: dict[str, ModelCost], budget: int,
                 policy: CachePolicy | None, order: Callable[[Sequence[planner.Resident], float],
                                                              Sequence[planner.Resident]],
                 *, preload: bool, interval_s: float = 0.5,
                 on_request: Callable[[int], None] | None = None,
                 explain: bool = False, busy_waits: bool = True,
                 queue_limit: int = 0, measured_load_times: bool = False,
                 retry_s: float = 0.0) -> None:
        self.models, self.policy, self.order = models, policy, order
        self.retry_s = retry_s  # 0: a refused request is not sent again
        self.measured_load_times = measured_load_times
        self.queue_limit = queue_limit  # 0: unbounded
        self.busy_waits = busy_waits
        self.explain = explain
        self.stalls: list[Stall] = []  # with ``explain``: every request that waited
        self._evicted: dict[str, tuple[str, bool, float]] = {}  # model -> (by, preload, when)
        self._cause: tuple[str, bool] = ("", False)  # the load whose room is being made
        self.on_request = on_request
        self.preload, self.interval_s = preload, interval_s
        self.budgets = Budgets(ram=0, swap=budget, reserve=0)
        self.slots: dict[str, _Slot] = {}
        self.loading: tuple[str, bool, float, float] | None = None  # model, preload, start, end
        self.next_pass = 0.0  # the preloader's next pass
        self.r = Result()
        self.hits = 0
        self.busy_s = 0.0
        self.outcomes: list[bool] = []  # per request: served without waiting
        if policy is not None:
            for name, m in models.items():
                policy.set_model(name, m.size_bytes, m.load_s)
            policy.set_capacity(budget)

    # -- the planner's view ------------------------------------------------------------------
    def residents(self, now: float) -> list[planner.Resident]:
        return [planner.Resident(k, "swap", s.size, 0 if s.ready_at <= now else 1, False)
                for k, s in self.slots.items()]

    def memory(self) -> planner.Memory:
        used = sum(s.size for s in self.slots.values())
        return planner.Memory(self.budgets.swap - used, 0, swap_total_bytes=0)

    def evict(self, victims: Sequence[str], now: float = math.nan) -> None:
        for v in victims:
            slot = self.slots.pop(v)
            if self.explain:
                self._evicted[v] = (*self._cause, now)
            if slot.preloaded and not slot.used:
                self.r.wasted_preloads = (self.r.wasted_preloads or 0) + 1

    # -- the loop ----------------------------------------------------------------------------
    def run(self, trace: Sequence[TraceEntry]) -> Result:
        self.next_pass = trace[0].t if trace else 0.0
        retries: list[tuple[float, int, str, float]] = []  # when, order, model, first try
        i = sent = 0
        while i < len(trace) or retries:
            if retries and (i == len(trace) or retries[0][0] < trace[i].t):
                t, _, model, first = heapq.heappop(retries)
                index, entry = -1, TraceEntry(t, model)  # a try sent again
                self.r.retries = (self.r.retries or 0) + 1
            else:
                index, entry, first = i, trace[i], trace[i].t
                i += 1
            self.advance(entry.t)
            if self.policy is not None:
                self.policy.observe(entry.model, entry.t)
            if index >= 0 and self.on_request is not None:
                self.on_request(index)
            refused, hits = (self.r.rejected, self.r.queue_full), self.hits
            self.serve(index, entry)
            if not self.retry_s:
                continue
            if (self.r.rejected, self.r.queue_full) == refused:  # served
                if index < 0:  # after waiting since its first try: not a hit
                    self.hits = hits
                    self._waited(entry, first, "refused, retried")
                continue
            if index < 0:  # a request refused again counts once
                self.r.rejected, self.r.queue_full = refused
            if entry.t + self.retry_s - first <= RETRY_FOR_S:
                sent += 1
                heapq.heappush(retries, (entry.t + self.retry_s, sent, entry.model, first))
            else:
                self.r.gave_up = (self.r.gave_up or 0) + 1
                self._waited(entry, first, "refused, given up")
        self.drain()
        self.evict([k for k, s in self.slots.items() if s.preloaded and not s.used])
        n = len(trace)
        self.r.hit_rate = round(self.hits / n, 4) if n else 1.0
        self.r.stall_s = round(self.r.stall_s or 0.0, 3)
        span = trace[-1].t - trace[0].t if n else 0.0
        self.r.loader_busy = round(min(1.0, self.busy_s / span), 3) if span > 0 else None
        return self.r

    def _waited(self, entry: TraceEntry, first: float, cause: str) -> None:
        """A refused request's wait from its first try to ``entry``'s (``retry_s``)."""
        self.r.stall_s = (self.r.stall_s or 0.0) + entry.t - first
        if self.explain:
            self.stalls.append(Stall(first, entry.model, entry.t - first, cause))

    def advance(self, t: float) -> None:
        """The preloader's passes until ``t``, timed as the daemon's preloader thread runs
        them: one every ``interval_s``; a pass that starts a preload waits for it (the
        daemon's pass loads synchronously), and no pass starts one while the loader is busy."""
        while self.preload and self.next_pass <= t:
            now = self.next_pass
            self.finish(now)
            if self.loading is None and self.try_preload(now):
                assert self.loading is not None
                self.next_pass = self.loading[3] + self.interval_s
            elif self.loading is not None and self.busy_waits:
                # the loader is busy with demand loads: the pass waits for it to be free and
                # then starts the best preload at once (before the next interval's pass)
                self.next_pass = max(now + 1e-6, self.loading[3])
            else:
                self.next_pass = now + self.interval_s
        self.finish(t)

    def finish(self, t: float) -> None:
        if self.loading is not None and self.loading[3] <= t:
            self.loading = None

    def drain(self) -> None:
        """Loads still running when the trace ends (here their stall is charged already)."""

    def try_preload(self, now: float) -> bool:
        assert self.policy is not None
        candidates = self.policy.preload_candidates(list(self.slots), now)[:3]
        residents = self.residents(now) if candidates else []
        for name in candidates:
            cost = self.models.get(name)
            if cost is None:
                continue
            req = planner.LoadRequest(name, "swap", cost.size_bytes, preload=True)
            d = plan_preload(self.policy, req, residents, self.budgets, self.memory(), now)
            if isinstance(d, planner.Reject):
                continue
            self._cause = (name, True)
            self.evict(d.victims if isinstance(d, planner.AdmitAfterEvicting) else (), now)
            self.r.preloads = (self.r.preloads or 0) + 1
            self.r.bytes_loaded = (self.r.bytes_loaded or 0) + cost.size_bytes
            self.start_preload(name, cost, now)
            return True
        return False

    def start_preload(self, name: str, cost: ModelCost, now: float) -> None:
        self.slots[name] = _Slot(cost.size_bytes, now + cost.load_s, preloaded=True)
        self.loading = (name, True, now, now + cost.load_s)
        self.busy_s += cost.load_s

    def queued(self, name: str, slot: _Slot) -> int:
        """Requests waiting for ``slot``'s load now (one loader: every one that waited for it
        so far, since all of them wait until its ``ready_at``)."""
        return slot.waiters

    def wait(self, name: str, slot: _Slot, t: float, stall: Stall | None) -> None:
        """A request at ``t`` waits for ``slot``'s load: its stall is known now (one loader)."""
        slot.waiters += 1
        self.r.stall_s = (self.r.stall_s or 0.0) + slot.ready_at - t
        if stall is not None:
            stall.stall_s = slot.ready_at - t
            self.stalls.append(stall)

    def serve(self, i: int, entry: TraceEntry) -> None:
        t, name = entry.t, entry.model
        slot = self.slots.get(name)
        hit = slot is not None and slot.ready_at <= t
        self.outcomes.append(hit)
        if slot is not None and hit:
            self.hits += 1
            slot.used = True
            return
        if slot is not None and self.queue_limit and self.queued(name, slot) >= self.queue_limit:
            # the daemon refuses a request past queue_limit waiting on a loading model
            # (``Residency.acquire``: RESOURCE_EXHAUSTED, QUEUE_FULL): no stall, not served
            self.r.queue_full = (self.r.queue_full or 0) + 1
            return
        if slot is not None:  # still loading: wait for the rest of it
            late = slot.preloaded and not slot.used
            if late:  # the preload came too late: a cold load
                self.r.cold_loads = (self.r.cold_loads or 0) + 1
            first = slot.why
            self.wait(name, slot, t, None if not self.explain else Stall(
                t, name, 0.0, "preload late" if late
                else f"queued, {first.cause}" if first else "queued",
                *((first.by, first.by_preload, first.evicted_at) if first and not late else ())))
            slot.used = True
            return
        self.demand_load(i, t, name)

    def cost_of(self, i: int, name: str) -> ModelCost:
        cost = self.models.get(name)
        if cost is None:
            raise TraceError(f"trace request {i + 1}: model {name!r} is not in the models file")
        return cost

    def plan(self, name: str, cost: ModelCost, start: float, t: float) -> planner.Decision:
        """A demand load's decision, taken at ``t`` with what the policy knows then, over the
        residents as they will be at ``start`` (at ``start`` the policy would take the
        requests queued until then, not observed yet, for silence)."""
        req = planner.LoadRequest(name, "swap", cost.size_bytes)
        if self.policy is not None:
            return plan_demand(self.policy, req, self.residents(start), self.budgets,
                               self.memory(), t)
        order = self.order
        return planner.plan(req, self.residents(start), self.budgets, self.memory(),
                            eviction_order=lambda rs: order(rs, t))

    def admit_demand(self, name: str, cost: ModelCost, d: planner.Decision, t: float,
                     ready_at: float) -> _Slot | None:
        """Count a demand load the planner decided on (None: rejected) and make its room."""
        if isinstance(d, planner.Reject):
            self.r.rejected = (self.r.rejected or 0) + 1
            return None
        self._cause = (name, False)
        self.evict(d.victims if isinstance(d, planner.AdmitAfterEvicting) else (), t)
        why = None
        if self.explain:
            by = self._evicted.get(name)
            why = Stall(t, name, 0.0, "first" if by is None else "evicted",
                        *(by or ("", False, math.nan)))
        slot = self.slots[name] = _Slot(cost.size_bytes, ready_at, used=True, why=why)
        self.r.cold_loads = (self.r.cold_loads or 0) + 1
        self.r.bytes_loaded = (self.r.bytes_loaded or 0) + cost.size_bytes
        self.wait(name, slot, t, why)
        return slot

    def cancel_preload(self, other: str, left_s: float, name: str, t: float) -> None:
        """``other``'s preload yields to ``name``'s demand load at ``t``: cancelled with
        ``left_s`` seconds of its load (at full speed) unread, which do not count as bytes
        loaded; its slot goes, and the preloader's pass, which gave up, comes again an
        interval later."""
        m = self.models[other]
        self.r.bytes_loaded = (self.r.bytes_loaded or 0) - int(
            m.size_bytes * left_s / max(m.load_s, 1e-9))
        self._cause = (name, False)
        self.evict([other], t)
        self.next_pass = min(self.next_pass, t + self.interval_s)

    def demand_load(self, i: int, t: float, name: str) -> None:
        cost = self.cost_of(i, name)
        start = t
        if self.loading is not None and self.loading[1]:  # a preload yields to demand
            other, _, _, p_end = self.loading
            self.busy_s -= p_end - t
            self.loading = None
            self.cancel_preload(other, p_end - t, name, t)
        elif self.loading is not None:
            start = self.loading[3]  # one loader: wait for the earlier demand load
        end = start + cost.load_s
        if self.admit_demand(name, cost, self.plan(name, cost, start, t), t, end) is not None:
            self.loading = (name, False, start, end)
            self.busy_s += cost.load_s


class SharedLoaderSimulator(Simulator):
    """The same rules with loads side by side, as the daemon runs them (``Residency.load``:
    loads of different models run concurrently, a demand load cancels a running preload no
    request waits for, and no preload starts while a demand load runs),
    sharing one disk: with n loads running each progresses at 1/n of its full speed (processor
    sharing). The loader's throughput is the single loader's, but a small model's load no
    longer waits whole behind a long one. The preloader's pass still waits for its own
    preload. A request's stall is known when the load it waits for completes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flight: dict[str, float] = {}  # model -> full-speed seconds of its load left
        self.waiting: dict[str, list[tuple[float, Stall | None]]] = {}  # arrivals, per model
        self.clock = -math.inf
        self.preloading: str | None = None  # the preloader's load (its pass waits for it)
        self.started: dict[str, float] = {}  # model -> when its load in flight started

    def progress(self, t: float) -> None:
        """Run the loads until ``t``, or until a preload completes (the pass that waited for
        it runs then): each load that completes sets its slot ready and charges the requests
        waiting for it their wait."""
        self.clock = t if self.clock == -math.inf else self.clock
        while self.flight and self.clock < t:
            n = len(self.flight)
            step = min(min(self.flight.values()) * n, t - self.clock)
            self.clock += step
            self.busy_s += step
            done = []
            for name in self.flight:
                self.flight[name] -= step / n
                if self.flight[name] <= 1e-9:
                    done.append(name)
            pass_waited = False
            for name in done:
                pass_waited |= self.complete(name)
            if pass_waited:
                return  # the preloader's pass was waiting for this one
        self.clock = max(self.clock, t)

    def complete(self, name: str) -> bool:
        """``name``'s load is done; True when it was the preloader's."""
        del self.flight[name]
        self.slots[name].ready_at = self.clock
        started = self.started.pop(name)
        if self.measured_load_times and self.policy is not None:
            # the daemon's policy learns the load's wall time, disk sharing included
            self.policy.set_model(name, self.models[name].size_bytes, self.clock - started)
        for arrival, stall in self.waiting.pop(name, []):
            self.r.stall_s = (self.r.stall_s or 0.0) + self.clock - arrival
            if stall is not None:
                stall.stall_s = self.clock - arrival
        if name != self.preloading:
            return False
        self.preloading = None
        self.next_pass = self.clock + self.interval_s
        return True

    def advance(self, t: float) -> None:
        while True:
            target = min(t, self.next_pass) if self.preload else t
            self.progress(target)
            if self.clock < target:  # a preload completed: its pass's next interval starts
                continue
            if not (self.preload and self.next_pass <= t):
                return
            now = self.next_pass
            # no preload starts beside a demand load (``Residency.load``): the pass tries
            # again an interval later
            if self.preloading is None and not self.flight and self.try_preload(now):
                self.next_pass = math.inf  # set when the preload completes
            else:
                self.next_pass = now + self.interval_s

    def drain(self) -> None:
        self.next_pass = math.inf
        while self.flight:
            self.progress(math.inf)

    def start_preload(self, name: str, cost: ModelCost, now: float) -> None:
        self.slots[name] = _Slot(cost.size_bytes, math.inf, preloaded=True)
        self.flight[name] = cost.load_s
        self.started[name] = now
        self.preloading = name

    def queued(self, name: str, slot: _Slot) -> int:
        return len(self.waiting.get(name, ()))

    def wait(self, name: str, slot: _Slot, t: float, stall: Stall | None) -> None:
        self.waiting.setdefault(name, []).append((t, stall))
        if stall is not None:
            self.stalls.append(stall)

    def demand_load(self, i: int, t: float, name: str) -> None:
        cost = self.cost_of(i, name)
        other = self.preloading
        if other is not None and not self.slots[other].used:
            # preloads yield to demand (``Residency``)
            self.preloading = None
            del self.started[other]
            self.cancel_preload(other, self.flight.pop(other), name, t)
        if self.admit_demand(name, cost, self.plan(name, cost, t, t), t, math.inf) is not None:
            self.flight[name] = cost.load_s
            self.started[name] = t


class OrderedLoaderSimulator(SharedLoaderSimulator):
    """Loads side by side as in :class:`SharedLoaderSimulator`, but the disk goes whole to
    one load at a time: the one with the most requests waiting per second of it left (a
    preload no request waits for comes last), chosen again whenever a load completes or a
    request arrives. Not what the daemon does today (its loads share the disk): a what-if for
    ordering the disk's reads, the lead the replay notes follow. With every load equally
    waited on it is shortest-remaining-first, which minimizes the mean wait on one server;
    processor sharing gives every load the disk's speed over n, so the short one finishes late.
    """

    def progress(self, t: float) -> None:
        self.clock = t if self.clock == -math.inf else self.clock
        while self.flight and self.clock < t:
            cur = min(self.flight, key=self._priority)
            step = min(self.flight[cur], t - self.clock)
            self.clock += step
            self.busy_s += step
            self.flight[cur] -= step
            if self.flight[cur] <= 1e-9 and self.complete(cur):
                return  # the preloader's pass was waiting for this one
        self.clock = max(self.clock, t)

    def _priority(self, name: str) -> tuple[float, str]:
        """Lowest first: minus the waiters per full-speed second left (ties: by name)."""
        return -len(self.waiting.get(name, ())) / max(self.flight[name], 1e-9), name


class FurthestNextUse:
    """Belady's order: residents whose next request is furthest away (or never) go first."""

    def __init__(self, trace: Sequence[TraceEntry]) -> None:
        self.uses: dict[str, list[int]] = {}
        for i, e in enumerate(trace):
            self.uses.setdefault(e.model, []).append(i)
        self.position = 0

    def at(self, position: int) -> None:
        self.position = position

    def next_use(self, name: str) -> float:
        uses = self.uses.get(name, [])
        j = bisect.bisect_right(uses, self.position)
        return uses[j] if j < len(uses) else math.inf

    def order(self, residents: Sequence[planner.Resident], now: float) -> list[planner.Resident]:
        return sorted(residents, key=lambda r: (-self.next_use(r.key), r.key))


# -- the exact offline optimum ---------------------------------------------------------------
def optimal(trace: Sequence[TraceEntry], models: dict[str, ModelCost], budget: int) -> Result:
    """Fewest demand loads any policy could do on ``trace`` (see the module docstring)."""
    served = [e.model for e in trace if models[e.model].size_bytes <= budget]
    rejected = len(trace) - len(served)
    bits, live_after, width = _assign_bits(served)
    if width > MAX_EXACT_MODELS:
        return Result(None, None, None, None, None, None, None,
                      note=f"n/a: {width} models live at once > {MAX_EXACT_MODELS}")
    seq = [1 << bits[i] for i in range(len(served))]
    size = [0] * max(1, width)  # per bit: the size of the model that holds it now
    load = [0.0] * max(1, width)
    # state: resident set (bitmask) -> (cold loads, stall, bytes), the best known for it
    states: dict[int, tuple[int, float, int]] = {0: (0, 0.0, 0)}
    for i, b in enumerate(seq):
        j = b.bit_length() - 1
        size[j], load[j] = models[served[i]].size_bytes, models[served[i]].load_s
        nxt: dict[int, tuple[int, float, int]] = {}
        missed = False
        for mask, cost in states.items():
            if mask & b:
                _keep(nxt, mask & live_after[i], cost)
                continue
            missed = True
            paid = (cost[0] + 1, cost[1] + load[j], cost[2] + size[j])
            for victims in _minimal_evictions(mask, size, size[j], budget):
                _keep(nxt, ((mask & ~victims) | b) & live_after[i], paid)
        states = _prune(nxt) if missed and len(nxt) > 1 else nxt
        if len(states) > MAX_STATES:
            return Result(None, None, None, None, None, None, None,
                          note=f"n/a: more than {MAX_STATES} states at request {i + 1}")
    misses, stall, loaded = min(states.values()) if states else (0, 0.0, 0)
    n = len(trace)
    return Result(round((n - misses - rejected) / n, 4) if n else 1.0, misses, round(stall, 3),
                  loaded, 0, 0, rejected,
                  note=f"exact, up to {MAX_EXACT_MODELS} models live at once")


def _assign_bits(seq: Sequence[str]) -> tuple[list[int], list[int], int]:
    """A bit per model while it is *live* (from its first request to its last): a model never
    requested again is dead, dropped from every resident set, and its bit goes to the next new
    model — so one-off models do not count against ``MAX_EXACT_MODELS``, only how many models
    are live at once. Returns each request's bit, the live bits after each request (models
    requested before and after it), and the number of bits used.
    """
    last = {m: i for i, m in enumerate(seq)}
    free: list[int] = []
    width = 0
    owner: dict[str, int] = {}
    out, live_after = [0] * len(seq), [0] * len(seq)
    live = 0
    for i, m in enumerate(seq):
        if m not in owner:
            if free:
                owner[m] = free.pop()
            else:
                owner[m], width = width, width + 1
        k = owner[m]
        out[i] = k
        if last[m] == i:  # dead from here on: its bit is free for the next new model
            live &= ~(1 << k)
            free.append(k)
        else:
            live |= 1 << k
        live_after[i] = live
    return out, live_after, width


def _keep(states: dict[int, tuple[int, float, int]], mask: int,
          cost: tuple[int, float, int]) -> None:
    old = states.get(mask)
    if old is None or cost < old:
        states[mask] = cost


def _minimal_evictions(mask: int, size: list[int], need_size: int, budget: int) -> list[int]:
    """Every inclusion-minimal set of residents whose eviction makes room for ``need_size``."""
    items = sorted(((size[k], 1 << k) for k in range(len(size)) if mask >> k & 1), reverse=True)
    need = sum(s for s, _ in items) + need_size - budget
    if need <= 0:
        return [0]
    suffix = [0] * (len(items) + 1)
    for k in range(len(items) - 1, -1, -1):
        suffix[k] = suffix[k + 1] + items[k][0]
    out: list[int] = []

    def walk(start: int, total: int, chosen: int, smallest: int) -> None:
        if total >= need:
            if total - smallest < need:  # dropping the smallest (hence any) breaks it
                out.append(chosen)
            return
        for k in range(start, len(items)):
            if total + suffix[k] < need:
                return
            walk(k + 1, total + items[k][0], chosen | items[k][1], items[k][0])

    walk(0, 0, 0, 0)
    return out


def _prune(states: dict[int, tuple[int, float, int]]) -> dict[int, tuple[int, float, int]]:
    """Drop (S, c) when another (S', c') has c' + |S minus S'| <= c (it can catch up).

    Safe to apply to all pairs at once: two different sets cannot dominate each other, so a
    chain of dominations ends in a state that is kept. Vectorized: states sorted by cost, each
    block of rows compared only with the states that cost no more.
    """
    items = sorted(states.items(), key=lambda kv: kv[1][0])
    masks = np.fromiter((m for m, _ in items), dtype=np.uint32, count=len(items))
    costs = np.fromiter((c[0] for _, c in items), dtype=np.int32, count=len(items))
    dominated = np.zeros(len(items), dtype=bool)
    for lo in range(0, len(items), 256):
        hi = min(lo + 256, len(items))
        cols = int(np.searchsorted(costs, costs[hi - 1], side="right"))
        extra = _popcount(masks[lo:hi, None] & ~masks[None, :cols])
        hit = costs[None, :cols] + extra <= costs[lo:hi, None]
        hit[np.arange(hi - lo), np.arange(lo, hi)] = False
        dominated[lo:hi] = hit.any(axis=1)
    return {m: c for (m, c), d in zip(items, dominated, strict=True) if not d}


def _popcount(a: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        out: np.ndarray = np.bitwise_count(a).astype(np.int32)
        return out
    a = a - ((a >> 1) & 0x55555555)  # the classic SWAR popcount, for older numpy
    a = (a & 0x33333333) + ((a >> 2) & 0x33333333)
    out = ((((a + (a >> 4)) & 0x0F0F0F0F) * 0x01010101) >> 24).astype(np.int32)
    return out


# -- command line ----------------------------------------------------------------------------
def run_all(trace: Sequence[TraceEntry], models: dict[str, ModelCost], budget: int,
            policies: Sequence[str] = POLICIES, interval_s: float = 0.5,
            loader: str = "single", queue_limit: int = 0,
            measured_load_times: bool = False, retry_s: float = 0.0) -> dict[str, object]:
    missing = sorted({e.model for e in trace} - set(models))
    if missing:
        raise TraceError(f"models file has no size for: {', '.join(missing)}")
    out: dict[str, dict[str, object]] = {}
    for name in policies:
        out[name] = asdict(simulate(name, trace, models, budget, interval_s=interval_s,
                                    loader=loader, queue_limit=queue_limit,
                                    measured_load_times=measured_load_times, retry_s=retry_s))
    return {"policies": out, "budget_bytes": budget, "requests": len(trace)}


LOADERS: dict[str, type[Simulator]] = {"single": Simulator, "shared": SharedLoaderSimulator,
                                       "ordered": OrderedLoaderSimulator}


def simulate(policy_name: str, trace: Sequence[TraceEntry], models: dict[str, ModelCost],
             budget: int, *, preload: bool | None = None, interval_s: float = 0.5,
             loader: str = "single", queue_limit: int = 0,
             measured_load_times: bool = False, retry_s: float = 0.0) -> Result:
    """Run one policy (``lru`` | ``lfu`` | ``edged`` | ``furthest`` | ``optimal``); ``loader``:
    ``single`` (one load at a time) or ``shared`` (side by side, sharing the disk);
    ``queue_limit``: requests refused past that many waiting on one load (0: none refused; the
    optimum's loads take no time, so none wait); ``retry_s``: a refused request sent again
    every that many seconds (0: not sent again; the optimum refuses none)."""
    if policy_name == "optimal":
        return optimal(trace, models, budget)
    sim = LOADERS[loader]
    if policy_name == "furthest":
        oracle = FurthestNextUse(trace)
        return sim(models, budget, None, oracle.order, preload=False,
                   on_request=oracle.at, queue_limit=queue_limit, retry_s=retry_s).run(trace)
    policy = make_policy(policy_name)
    return sim(models, budget, policy, policy.eviction_order,
               preload=(policy_name == "edged") if preload is None else preload,
               interval_s=interval_s, queue_limit=queue_limit,
               measured_load_times=measured_load_times, retry_s=retry_s).run(trace)


def explain(policy_name: str, trace: Sequence[TraceEntry], models: dict[str, ModelCost],
            budget: int, *, interval_s: float = 0.5, loader: str = "single",
            queue_limit: int = 0, measured_load_times: bool = False, retry_s: float = 0.0
            ) -> tuple[Result, list[Stall]]:
    """Run one online policy (``lru`` | ``lfu`` | ``edged``) and return every request that
    waited, with why: its model's first load, a preload that came too late, a wait behind
    another load of it, or the load (demand or preload) whose room evicted it."""
    if policy_name not in ("lru", "lfu", "edged"):
        raise ValueError(f"--explain needs an online policy, not {policy_name!r}")
    policy = make_policy(policy_name)
    sim = LOADERS[loader](models, budget, policy, policy.eviction_order,
                          preload=policy_name == "edged", interval_s=interval_s, explain=True,
                          queue_limit=queue_limit, measured_load_times=measured_load_times,
                          retry_s=retry_s)
    return sim.run(trace), sim.stalls


def explain_table(stalls: Sequence[Stall], top: int = 15) -> str:
    """Stall summed by model and cause, the largest first."""
    groups: dict[tuple[str, str], list[float]] = {}
    for st in stalls:
        by = f"{st.by} ({'preload' if st.by_preload else 'demand'})" if st.by else ""
        g = groups.setdefault((st.model, f"{st.cause} {by}".strip()), [0, 0.0])
        g[0] += 1
        g[1] += st.stall_s
    total = sum(st.stall_s for st in stalls) or 1.0
    lines = [f"{'model':<14}{'why':<36}{'waits':>7}{'stall s':>11}{'share':>8}"]
    for (model, why), (n, sec) in sorted(groups.items(), key=lambda kv: -kv[1][1])[:top]:
        lines.append(f"{model:<14}{why:<36}{int(n):>7}{sec:>11.1f}{sec / total:>8.1%}")
    by_model: dict[str, float] = {}
    for st in stalls:
        by_model[st.model] = by_model.get(st.model, 0.0) + st.stall_s
    lines.append("per model: " + ", ".join(
        f"{m} {s_:.0f} s" for m, s_ in sorted(by_model.items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)


def table(report: dict[str, object]) -> str:
    cols = ("hit_rate", "cold_loads", "stall_s", "bytes_loaded", "wasted_preloads")
    lines = [f"{'policy':<10}" + "".join(f"{c:>16}" for c in cols)]
    policies = report["policies"]
    assert isinstance(policies, dict)
    for name, r in policies.items():
        cells = ["n/a" if r[c] is None else format_size(r[c]) if c == "bytes_loaded"
                 else f"{r[c]:.1%}" if c == "hit_rate" else str(r[c]) for c in cols]
        note = f"  ({r['note']})" if r["note"] else ""
        lines.append(f"{name:<10}" + "".join(f"{c:>16}" for c in cells) + note)
    budget = report["budget_bytes"]
    assert isinstance(budget, int)
    lines.append(f"{report['requests']} requests, budget {format_size(budget)} ({budget} bytes)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trace", type=Path, required=True, help="JSONL trace (t, model, ...)")
    p.add_argument("--models", type=Path, required=True, help="models.json: sizes, load_s")
    p.add_argument("--budget", required=True, help="memory for models: 6GiB, 512MiB, bytes")
    p.add_argument("--policies", default=",".join(POLICIES), help="comma-separated subset")
    p.add_argument("--preload-interval", type=float, default=0.5, help="seconds (daemon's)")
    p.add_argument("--loader", choices=tuple(LOADERS), default="single",
                   help="single: one load at a time (the default, pessimistic); shared: "
                        "loads side by side as the daemon runs them, sharing the disk; "
                        "ordered: side by side, the disk to the load with the most waiters "
                        "per second left (a what-if, not what the daemon does)")
    p.add_argument("--queue-limit", type=int, default=0,
                   help="refuse a request when this many already wait on its model's load, "
                        "as the daemon does (engines.queue_depth + per_model_concurrency: 16 on "
                        "a 4+ core device); 0 (the default): refuse none")
    p.add_argument("--measured-load-times", action="store_true",
                   help="tell the policy each load's measured time (disk sharing included), as "
                        "the daemon does; default: the models file's load_s")
    p.add_argument("--retry-refused", type=float, default=0.0, metavar="S",
                   help="a what-if: send a refused request again every S seconds until it is "
                        "served (its stall from its first try); 0 (the default): not again")
    p.add_argument("--json", action="store_true", help="print only JSON")
    p.add_argument("--explain", action="store_true",
                   help="per online policy: which waits cost the stall, and which load's "
                        "evictions caused them")
    args = p.parse_args(argv)
    try:
        budget = parse_size(args.budget)
        policies = [x for x in args.policies.split(",") if x]
        unknown = set(policies) - set(POLICIES)
        if unknown:
            raise ValueError(f"unknown policies: {', '.join(sorted(unknown))}")
        if not 0.0 <= args.retry_refused < math.inf:
            raise ValueError(f"--retry-refused must be 0 or more seconds, not {args.retry_refused}")
        if args.explain:
            trace, models = read_trace(args.trace), read_models(args.models)
            for name in policies:
                if name in ("furthest", "optimal"):
                    continue
                r, stalls = explain(name, trace, models, budget,
                                    interval_s=args.preload_interval, loader=args.loader,
                                    queue_limit=args.queue_limit,
                                    measured_load_times=args.measured_load_times,
                                    retry_s=args.retry_refused)
                print(f"== {name}: {r.cold_loads} cold loads, {r.stall_s} s stall")
                print(explain_table(stalls))
            return 0
        report = run_all(read_trace(args.trace), read_models(args.models), budget, policies,
                         args.preload_interval, args.loader, args.queue_limit,
                         args.measured_load_times, args.retry_refused)
    except (OSError, ValueError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

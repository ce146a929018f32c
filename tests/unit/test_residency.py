"""Residency with the real worker pool, the real planner and policy, and real ONNX models:
loads through the planner, eviction order, requests in flight are never evicted under, unload
waits for them, preloads never push out busier models and give way to demand loads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import modelgen
import numpy as np
import pytest

from edged import errors as e
from edged.engines.base import EngineOptions, inspect
from edged.engines.workers import WorkerPool
from edged.manager.events import EventBus
from edged.manager.memory import planner
from edged.manager.memory.policy import LruPolicy
from edged.manager.memory.preloader import LockedPolicy
from edged.manager.memory.residency import LoadSpec, Residency
from edged.values import Budgets

MB = 1 << 20
X = {"x": np.ones((1, 64), np.float32)}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {n: modelgen.weights_model(d / f"{n}.onnx", size * MB, seed=i)
            for i, (n, size) in enumerate([("a", 40), ("b", 40), ("c", 40), ("big", 300)])}


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    p = WorkerPool(hang_timeout_s=30)
    yield p
    p.close()


def spec(models: dict[str, Path], name: str, tier: str = "swap") -> LoadSpec:
    est = inspect(models[name]).estimate_bytes
    return LoadSpec(name=name, version=1, tier=tier, artifact=models[name], fmt="onnx",
                    options=EngineOptions(), group=None, bytes=est)


def make(pool: WorkerPool, swap_mb: int, ram_mb: int = 200) -> tuple[Residency, EventBus]:
    events = EventBus(1000)
    res = Residency(
        pool=pool, budgets=Budgets(ram_mb * MB, swap_mb * MB, 64 * MB),
        memory=lambda: planner.Memory(available_bytes=16 << 30, swap_free_bytes=0),
        events=events, policy=LockedPolicy(LruPolicy()), on_measured=lambda *a: None)
    return res, events


def test_load_measures_and_serves(pool: WorkerPool, models: dict[str, Path]) -> None:
    res, events = make(pool, swap_mb=500)
    view, evicted, seconds = res.load(spec(models, "a"))
    assert view.state == "ready" and view.worker_pid > 0 and evicted == [] and seconds > 0
    assert view.footprint_bytes > 40 * MB
    slot = res.acquire(spec(models, "a"))
    assert slot.in_flight == 1
    out = pool.infer(slot.key, X)
    res.release(slot)
    assert out["y"].shape == (1, 1)
    assert [ev.kind for ev in events.recent()] == ["load"]


def test_eviction_is_lru_and_never_under_a_request(pool: WorkerPool,
                                                   models: dict[str, Path]) -> None:
    res, events = make(pool, swap_mb=500)  # narrowed once the measured sizes are known
    for n in ("a", "b"):
        res.load(spec(models, n))
    sizes = {v.name: v.footprint_bytes for v in res.views()}
    res.budgets = Budgets(200 * MB, sizes["a"] + sizes["b"] + MB, 64 * MB)
    busy = res.acquire(spec(models, "a"))  # a is older but busy
    res.load(spec(models, "c"))
    assert {v.name for v in res.views()} == {"a", "c"}
    assert any(ev.kind == "evict" and ev.model == "b" for ev in events.recent())
    res.release(busy)
    with pytest.raises(e.CapacityExceeded) as info:
        res.load(spec(models, "big"))
    assert info.value.numbers.tier == "swap" and info.value.numbers.needed_bytes > 300 * MB
    reject = next(ev for ev in events.recent() if ev.kind == "reject")
    assert reject.model == "big" and int(reject.details["needed_bytes"]) > 300 * MB
    assert int(reject.details["budget_bytes"]) == res.budgets.swap
    assert {"used_bytes", "free_bytes", "reserve_bytes"} <= set(reject.details)


def test_unload_waits_for_requests_in_flight(pool: WorkerPool, models: dict[str, Path]) -> None:
    res, _ = make(pool, swap_mb=500)
    res.load(spec(models, "a"))
    slot = res.acquire(spec(models, "a"))
    done = threading.Event()

    def unload() -> None:
        res.unload("a:1")
        done.set()

    t = threading.Thread(target=unload)
    t.start()
    time.sleep(0.3)
    assert not done.is_set()  # still waiting for our request
    pool.infer(slot.key, X)
    res.release(slot)
    t.join(30)
    assert done.is_set() and res.views() == []


class GatedPool:
    """The real pool, with the load of one key held at a gate: the test decides when that
    preload is "still loading", instead of guessing it with a sleep."""

    def __init__(self, pool: WorkerPool, key: str) -> None:
        self._pool, self._key = pool, key
        self.entered, self.gate = threading.Event(), threading.Event()

    def load(self, key: str, *args: object, **kw: object) -> object:
        if key == self._key:
            self.entered.set()
            assert self.gate.wait(60), "the test never opened the gate"
        return self._pool.load(key, *args, **kw)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self._pool, name)


def _wait(cond, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _preload_in_thread(res: Residency, load: LoadSpec
                       ) -> tuple[threading.Thread, list[BaseException | None]]:
    """Start ``res.load(load, preload=True)`` in a thread; its outcome (None or the exception)
    lands in the returned list."""
    outcome: list[BaseException | None] = []

    def preload() -> None:
        try:
            res.load(load, preload=True)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test checks it
            outcome.append(exc)

    t = threading.Thread(target=preload)
    t.start()
    return t, outcome


def test_preload_does_not_evict_and_demand_cancels_it(pool: WorkerPool,
                                                       models: dict[str, Path]) -> None:
    gated = GatedPool(pool, "b:1")
    res, events = make(gated, swap_mb=500)  # type: ignore[arg-type]
    res.load(spec(models, "a"))
    size = res.views()[0].footprint_bytes
    res.budgets = Budgets(200 * MB, size + 10 * MB, 64 * MB)
    with pytest.raises(e.Aborted):  # would need to evict 'a', which LRU values no lower
        res.load(spec(models, "b"), preload=True)
    assert {v.name for v in res.views()} == {"a"}
    assert not gated.entered.is_set()  # refused before any worker was asked
    # a swap tier with room for one loading 40 MB model (booked at two copies of its
    # weights until ready), not two: 'c' on demand needs the room the preload of 'b' holds
    res, events = make(gated, swap_mb=100)  # type: ignore[arg-type]
    t, outcome = _preload_in_thread(res, spec(models, "b"))
    assert gated.entered.wait(60)  # 'b' is loading as a preload; 'c' needs its room
    demand = threading.Thread(target=lambda: res.load(spec(models, "c")))
    demand.start()
    _wait(lambda: "preload_cancelled" in [ev.kind for ev in events.recent()])
    gated.gate.set()
    demand.join(60)
    t.join(60)
    assert not demand.is_alive() and not t.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], e.Aborted), outcome
    assert {v.name for v in res.views()} == {"c"}
    assert "evict" not in [ev.kind for ev in events.recent()]


def test_worker_crash_forgets_the_slot(models: dict[str, Path]) -> None:

    holder: list[Residency] = []
    pool = WorkerPool(on_event=lambda kind, d: holder[0].worker_died(
        str(d["key"]), str(d["message"])) if kind == "worker_crash" else None)
    try:
        _crash_and_reload(pool, holder, models)
    finally:
        pool.close()


def _crash_and_reload(pool: WorkerPool, holder: list[Residency],
                      models: dict[str, Path]) -> None:
    import os
    import signal

    res, events = make(pool, swap_mb=500)
    holder.append(res)
    view, _, _ = res.load(spec(models, "a"))
    os.kill(view.worker_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while res.views() and time.monotonic() < deadline:  # the pool notices, tells residency
        time.sleep(0.02)
    assert res.views() == []
    slot = res.acquire(spec(models, "a"))  # reloads on demand
    assert pool.infer(slot.key, X)["y"].shape == (1, 1)
    res.release(slot)
    assert "worker_crash" in [ev.kind for ev in events.recent()]


def test_a_demand_load_cancels_a_running_preload_even_with_room_for_both(
        pool: WorkerPool, models: dict[str, Path]) -> None:
    """Preloads yield to demand: loads side by side share the disk, so a running preload no
    request waits for is ended when a demand load of another model starts, memory or not; the
    demand load does not wait for it (it fits as things are)."""
    gated = GatedPool(pool, "b:1")
    res, events = make(gated, swap_mb=500)  # type: ignore[arg-type]
    t, outcome = _preload_in_thread(res, spec(models, "b"))
    assert gated.entered.wait(60)  # 'b' is loading as a preload, held at the gate
    res.load(spec(models, "c"))  # returns with 'b' still held: it never waited for it
    cancelled = [ev for ev in events.recent() if ev.kind == "preload_cancelled"]
    assert [ev.model for ev in cancelled] == ["b"]
    gated.gate.set()
    t.join(60)
    assert not t.is_alive() and len(outcome) == 1 and isinstance(outcome[0], e.Aborted)
    assert {v.name for v in res.views()} == {"c"}
    assert "evict" not in [ev.kind for ev in events.recent()]


def test_no_preload_starts_beside_a_running_demand_load(
        pool: WorkerPool, models: dict[str, Path]) -> None:
    """Loads of different models run side by side and share the disk: a preload started beside
    a demand load would slow it, so it is turned away (Aborted: the preloader tries again at
    its next pass) until the demand load is done; a demand load is never turned away."""
    gated = GatedPool(pool, "a:1")
    res, _ = make(gated, swap_mb=500)  # type: ignore[arg-type]
    th = threading.Thread(target=res.load, args=(spec(models, "a"),))
    th.start()
    assert gated.entered.wait(60)  # 'a' is loading on demand, held at the gate
    with pytest.raises(e.Aborted, match="yields to a demand load"):
        res.load(spec(models, "b"), preload=True)
    res.load(spec(models, "c"))  # another demand load runs beside it
    gated.gate.set()
    th.join(60)
    assert not th.is_alive()
    res.load(spec(models, "b"), preload=True)  # the demand loads are done: it starts
    assert {"a:1", "b:1", "c:1"} <= res.loaded_keys()


def test_demand_load_kills_a_running_preload_instead_of_waiting(
        pool: WorkerPool, models: dict[str, Path], tmp_path: Path) -> None:
    """A preload that takes seconds holds the memory a demand load needs and nothing else can
    be evicted: the demand cancels it and ends its worker, so it waits for none of it."""
    slow_path = modelgen.slow_model(tmp_path / "slow.onnx", size=1024, repeats=800)
    slow = LoadSpec(name="slow", version=1, tier="swap", artifact=slow_path, fmt="onnx",
                    options=EngineOptions(), group=None, bytes=inspect(slow_path).estimate_bytes)
    res, events = make(pool, swap_mb=500)
    t = time.monotonic()
    res.load(slow)
    full_load = time.monotonic() - t
    res.unload("slow:1")
    c = spec(models, "c")
    t = time.monotonic()
    res.load(c)
    c_alone = time.monotonic() - t
    res.unload("c:1")
    res.budgets = Budgets(200 * MB, slow.bytes + c.bytes - 1, 64 * MB)
    outcome: list[BaseException | None] = []

    def preload() -> None:
        try:
            res.load(slow, preload=True)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            outcome.append(exc)

    th = threading.Thread(target=preload)
    th.start()
    deadline = time.monotonic() + 10
    while not any(v.name == "slow" and v.state == "loading" for v in res.views()):
        assert time.monotonic() < deadline, "the preload never started"
        time.sleep(0.01)
    t = time.monotonic()
    res.load(c)
    demand = time.monotonic() - t
    th.join(30)
    assert isinstance(outcome[0], e.Aborted), outcome
    assert {v.name for v in res.views()} == {"c"}
    kinds = [ev.kind for ev in events.recent()]
    assert "preload_cancelled" in kinds and "preload_wasted" in kinds
    assert "load_failed" not in kinds
    # waiting behind the preload would cost about all of its load time on top of c's own
    assert demand < c_alone + full_load / 2, (demand, c_alone, full_load)


def test_a_model_that_grows_past_its_tier_budget_evicts_an_idle_one(
        pool: WorkerPool, models: dict[str, Path]) -> None:
    """Footprints follow real inferences: when one grows and takes its tier over budget, the
    idle models the planner would evict go, so accounting stays within the budget."""
    res, events = make(pool, swap_mb=500)
    res.load(spec(models, "a"))
    res.load(spec(models, "b"))
    sizes = {v.name: v.footprint_bytes for v in res.views()}
    res.budgets = Budgets(200 * MB, sizes["a"] + sizes["b"] + MB, 64 * MB)
    res.remeasured("b:1", sizes["b"] + 10 * MB)
    assert {v.name for v in res.views()} == {"b"}
    assert any(ev.kind == "evict" and ev.model == "a" and "grew" in ev.message
               for ev in events.recent())
    used = sum(v.footprint_bytes for v in res.views())
    assert used <= res.budgets.swap


def _swallow(fn, *a, **kw):  # type: ignore[no-untyped-def]
    try:
        return fn(*a, **kw)
    except e.EdgedError:
        return None


def test_a_growth_with_nothing_idle_drains_a_busy_model(
        pool: WorkerPool, models: dict[str, Path]) -> None:
    """When every other model is busy, the one the planner would evict is drained: its request
    in flight finishes on it, and it unloads right after, so the tier is back within budget."""
    res, events = make(pool, swap_mb=500)
    res.load(spec(models, "a"))
    res.load(spec(models, "b"))
    sizes = {v.name: v.footprint_bytes for v in res.views()}
    res.budgets = Budgets(200 * MB, sizes["a"] + sizes["b"] + MB, 64 * MB)
    busy = res.acquire(spec(models, "a"))  # a request is running on a
    res.remeasured("b:1", sizes["b"] + 10 * MB)
    assert {v.name: v.state for v in res.views()} == {"a": "unloading", "b": "ready"}
    assert any(ev.kind == "evict" and ev.model == "a" and "grew" in ev.message
               for ev in events.recent())
    out = pool.infer("a:1", X)  # the request running on a completes there
    assert set(out) and all(v.shape[0] == 1 for v in out.values())  # type: ignore[union-attr]
    res.release(busy)
    assert {v.name for v in res.views()} == {"b"}
    assert sum(v.footprint_bytes for v in res.views()) <= res.budgets.swap
    # the grown model itself is never its own victim, even when nothing else can go
    res.remeasured("b:1", res.budgets.swap + MB)
    assert {v.name for v in res.views()} == {"b"}


def test_a_planned_tier_move_holds_its_room_until_committed(
        pool: WorkerPool, models: dict[str, Path]) -> None:
    """Between ``plan_retier`` and ``retier`` the manifests are committed without the lock: a
    load in that window must not take the room the move made (it took swap over budget)."""
    res, _ = make(pool, swap_mb=500)
    res.load(spec(models, "a", tier="ram"))
    moving = next(v.footprint_bytes for v in res.views())
    b = spec(models, "b")
    res.budgets = Budgets(200 * MB, b.load_bytes + MB, 64 * MB)  # b alone, or a alone
    assert moving + b.load_bytes > res.budgets.swap
    assert res.plan_retier("a:1", "swap") == []  # swap is empty: a fits there
    with pytest.raises(e.CapacityExceeded):
        res.load(b)  # a's room is held: b no longer fits beside it
    res.retier("a:1", "swap")
    assert [(v.name, v.tier) for v in res.views()] == [("a", "swap")]
    assert all(">" not in r.key for r in res.residents())
    # a move that is not committed lets its room go
    res.budgets = Budgets(200 * MB, moving + b.load_bytes + MB, 64 * MB)
    res.plan_retier("a:1", "ram")
    assert any(r.key == "a:1>ram" and r.tier == "ram" for r in res.residents())
    res.cancel_move("a:1")
    assert [r.key for r in res.residents()] == ["a:1"]
    res.load(b)
    assert sum(v.footprint_bytes for v in res.views()) <= res.budgets.swap

"""Hand-worked capacity decisions: each case is small enough to check with pencil and paper."""

from __future__ import annotations

import pytest

from edged.errors import CapacityExceeded
from edged.manager.memory.planner import (
    Admit,
    AdmitAfterEvicting,
    Budgets,
    LoadRequest,
    Memory,
    Reject,
    Resident,
    plan,
    raise_if_rejected,
)

MiB = 1 << 20
BUDGETS = Budgets(ram_bytes=1000 * MiB, swap_bytes=1000 * MiB, reserve_bytes=100 * MiB)
PLENTY = Memory(available_bytes=10_000 * MiB, swap_free_bytes=0, swap_total_bytes=0)


def res(key: str, mib: int, tier: str = "swap", in_flight: int = 0, gpu: bool = False,
        loading: bool = False) -> Resident:
    return Resident(key=key, tier=tier, bytes=mib * MiB, in_flight=in_flight, gpu=gpu,
                    loading=loading)


def req(key: str, mib: int, tier: str = "swap", gpu: bool = False,
        preload: bool = False) -> LoadRequest:
    return LoadRequest(key=key, tier=tier, bytes=mib * MiB, gpu=gpu, preload=preload)


def test_fits_without_eviction() -> None:
    d = plan(req("new:1", 300), [res("a:1", 400), res("b:1", 300)], BUDGETS, PLENTY)
    assert isinstance(d, Admit)
    assert d.numbers.used_bytes == 700 * MiB
    assert d.numbers.needed_bytes == 300 * MiB
    assert d.numbers.evict_candidates == ("a:1", "b:1")


def test_exact_boundary_fits_and_one_byte_more_does_not() -> None:
    residents = [res("a:1", 600)]
    exact = LoadRequest("n:1", "swap", 400 * MiB)
    assert isinstance(plan(exact, residents, BUDGETS, PLENTY), Admit)
    over = LoadRequest("n:1", "swap", 400 * MiB + 1)
    d = plan(over, residents, BUDGETS, PLENTY)
    assert isinstance(d, AdmitAfterEvicting) and d.victims == ("a:1",)


def test_evicts_the_oldest_one() -> None:
    residents = [res("old:1", 200), res("mid:1", 300), res("new:1", 400)]
    d = plan(req("x:1", 250), residents, BUDGETS, PLENTY)
    assert isinstance(d, AdmitAfterEvicting)
    assert d.victims == ("old:1",)


def test_evicts_the_oldest_two() -> None:
    residents = [res("old:1", 200), res("mid:1", 300), res("new:1", 400)]
    d = plan(req("x:1", 550), residents, BUDGETS, PLENTY)
    assert isinstance(d, AdmitAfterEvicting)
    assert d.victims == ("old:1", "mid:1")


def test_drops_victims_made_unnecessary_by_a_later_big_one() -> None:
    # prefix is (small, big); big alone frees enough, so small stays
    residents = [res("small:1", 50), res("big:1", 600), res("c:1", 300)]
    d = plan(req("x:1", 600), residents, BUDGETS, PLENTY)
    assert isinstance(d, AdmitAfterEvicting)
    assert d.victims == ("big:1",)


def test_pinned_models_are_never_evicted() -> None:
    residents = [res("pinned:1", 900, tier="ram"), res("s:1", 200)]
    d = plan(req("x:1", 200, tier="ram"), residents, BUDGETS, PLENTY)
    assert isinstance(d, Reject)
    assert "pinned" in d.reason
    assert d.numbers.tier == "ram" and d.numbers.used_bytes == 900 * MiB
    assert d.numbers.budget_bytes == 1000 * MiB


def test_ram_load_may_evict_idle_swap_models_for_live_memory() -> None:
    mem = Memory(available_bytes=500 * MiB, swap_free_bytes=0, swap_total_bytes=0)
    residents = [res("pinned:1", 100, tier="ram"), res("s:1", 300), res("t:1", 300)]
    d = plan(req("x:1", 600, tier="ram"), residents, BUDGETS, mem)
    assert isinstance(d, AdmitAfterEvicting)
    assert d.victims == ("s:1",)  # 500 - 100 reserve + 300 freed = 700 >= 600


def test_busy_models_are_never_evicted() -> None:
    residents = [res("busy:1", 500, in_flight=2), res("idle:1", 300)]
    d = plan(req("x:1", 400), residents, BUDGETS, PLENTY)
    assert isinstance(d, AdmitAfterEvicting) and d.victims == ("idle:1",)
    d = plan(req("x:1", 600), residents, BUDGETS, PLENTY)
    assert isinstance(d, Reject)
    assert d.numbers.evict_candidates == ("idle:1",)


def test_loading_models_are_never_evicted_and_count_as_pending() -> None:
    mem = Memory(available_bytes=700 * MiB, swap_free_bytes=0, swap_total_bytes=0)
    residents = [res("loading:1", 300, loading=True)]
    # 700 available - 300 pending - 100 reserve = 300
    assert isinstance(plan(req("x:1", 300), residents, BUDGETS, mem), Admit)
    d = plan(req("x:1", 301), residents, BUDGETS, mem)
    assert isinstance(d, Reject) and d.numbers.evict_candidates == ()
    assert d.numbers.free_bytes == 400 * MiB


def test_preload_never_evicts() -> None:
    residents = [res("a:1", 700)]
    assert isinstance(plan(req("p:1", 300, preload=True), residents, BUDGETS, PLENTY), Admit)
    d = plan(req("p:1", 301, preload=True), residents, BUDGETS, PLENTY)
    assert isinstance(d, Reject) and "preload" in d.reason


def test_reserve_is_respected() -> None:
    mem = Memory(available_bytes=600 * MiB, swap_free_bytes=0, swap_total_bytes=0)
    assert isinstance(plan(req("x:1", 500), [], BUDGETS, mem), Admit)
    d = plan(req("x:1", 501), [], BUDGETS, mem)
    assert isinstance(d, Reject)
    assert d.numbers.reserve_bytes == 100 * MiB and d.numbers.free_bytes == 600 * MiB


def test_cpu_swap_model_gets_swap_credit_gpu_model_does_not() -> None:
    mem = Memory(available_bytes=300 * MiB, swap_free_bytes=500 * MiB,
                 swap_total_bytes=500 * MiB)
    assert isinstance(plan(req("cpu:1", 600), [], BUDGETS, mem), Admit)
    d = plan(req("gpu:1", 600, gpu=True), [], BUDGETS, mem)
    assert isinstance(d, Reject)
    assert "GPU" in d.reason
    assert d.numbers.free_bytes == 300 * MiB


def test_ram_tier_model_gets_no_swap_credit() -> None:
    mem = Memory(available_bytes=300 * MiB, swap_free_bytes=500 * MiB,
                 swap_total_bytes=500 * MiB)
    assert isinstance(plan(req("r:1", 600, tier="ram"), [], BUDGETS, mem), Reject)


def test_gpu_load_does_not_count_swapped_out_victims_as_ram() -> None:
    # device already swapping: 'cpu' holds 1100 MiB of which 900 MiB sit in swap
    mem = Memory(available_bytes=0, swap_free_bytes=100 * MiB, swap_total_bytes=1000 * MiB)
    budgets = Budgets(ram_bytes=2000 * MiB, swap_bytes=3000 * MiB, reserve_bytes=100 * MiB)
    residents = [res("g:1", 800, tier="ram", gpu=True), res("cpu:1", 1100)]
    # naive arithmetic would say 0 - 100 + 1100 freed >= 900; but only 200 MiB of RAM come back
    d = plan(req("big-gpu:1", 900, gpu=True), residents, budgets, mem)
    assert isinstance(d, Reject)
    d = plan(req("small-gpu:1", 100, gpu=True), residents, budgets, mem)
    assert isinstance(d, AdmitAfterEvicting) and d.victims == ("cpu:1",)


def test_unknown_swap_total_is_treated_conservatively() -> None:
    mem = Memory(available_bytes=0, swap_free_bytes=0)
    residents = [res("cpu:1", 500)]
    assert isinstance(plan(req("g:1", 100, gpu=True), residents, BUDGETS, mem), Reject)
    known = Memory(available_bytes=0, swap_free_bytes=0, swap_total_bytes=0)
    d = plan(req("g:1", 100, gpu=True), residents, BUDGETS, known)
    assert isinstance(d, AdmitAfterEvicting)


def test_gpu_victims_free_ram_for_gpu_requests() -> None:
    mem = Memory(available_bytes=100 * MiB, swap_free_bytes=0)
    residents = [res("g:1", 400, gpu=True)]
    d = plan(req("h:1", 400, gpu=True), residents, BUDGETS, mem)
    assert isinstance(d, AdmitAfterEvicting) and d.victims == ("g:1",)


def test_larger_than_the_budget_is_rejected_with_numbers() -> None:
    d = plan(req("huge:1", 1001), [res("a:1", 10)], BUDGETS, PLENTY)
    assert isinstance(d, Reject)
    assert d.numbers.needed_bytes == 1001 * MiB and d.numbers.budget_bytes == 1000 * MiB
    assert "whole swap budget" in d.reason


def test_custom_eviction_order_is_followed() -> None:
    residents = [res("a:1", 300), res("b:1", 300), res("c:1", 300)]
    d = plan(req("x:1", 200), residents, BUDGETS, PLENTY,
             eviction_order=lambda rs: list(reversed(rs)))
    assert isinstance(d, AdmitAfterEvicting) and d.victims == ("c:1",)
    # an order that leaves models out protects them
    d = plan(req("x:1", 200), residents, BUDGETS, PLENTY, eviction_order=lambda rs: [])
    assert isinstance(d, Reject)


def test_the_request_itself_is_never_its_own_victim() -> None:
    d = plan(req("a:1", 900), [res("a:1", 900)], BUDGETS, PLENTY)
    assert isinstance(d, Reject)


def test_storage_tier_is_not_plannable() -> None:
    with pytest.raises(ValueError, match="storage"):
        plan(req("s:1", 1, tier="storage"), [], BUDGETS, PLENTY)


def test_raise_if_rejected_carries_the_numbers() -> None:
    d = plan(req("huge:1", 2000), [], BUDGETS, PLENTY)
    with pytest.raises(CapacityExceeded) as info:
        raise_if_rejected(d)
    assert info.value.needed_bytes == 2000 * MiB
    assert info.value.budget_bytes == 1000 * MiB
    assert info.value.reserve_bytes == 100 * MiB
    assert "2000.0 MiB" not in str(info.value)  # describe() formats as GiB
    assert "needs 2.0 GiB" in str(info.value)
    ok = plan(req("x:1", 1), [], BUDGETS, PLENTY)
    assert raise_if_rejected(ok) is ok


def test_victim_cost_prefers_a_cheap_small_victim_to_a_big_one() -> None:
    budgets = Budgets(ram_bytes=0, swap_bytes=1250 * MiB, reserve_bytes=0)
    residents = [res("big:1", 1000), res("mid:1", 200), res("small:1", 50)]
    cost = {"big:1": 5.0, "mid:1": 1.0, "small:1": 0.5}
    d = plan(req("x:1", 150), residents, budgets, PLENTY)
    assert isinstance(d, AdmitAfterEvicting) and d.victims == ("big:1",)  # order only
    d = plan(req("x:1", 150), residents, budgets, PLENTY, victim_cost=lambda r: cost[r.key])
    assert isinstance(d, AdmitAfterEvicting) and d.victims == ("mid:1",)
    # when the big one is the cheapest way, it still goes
    cost["mid:1"] = 9.0
    d = plan(req("x:1", 150), residents, budgets, PLENTY, victim_cost=lambda r: cost[r.key])
    assert isinstance(d, AdmitAfterEvicting) and d.victims == ("big:1",)


def test_the_order_is_not_asked_for_when_nothing_must_go() -> None:
    calls: list[int] = []

    def order(rs: object) -> list[Resident]:
        calls.append(1)
        return list(rs)  # type: ignore[call-overload]

    plan(req("x:1", 10), [res("a:1", 10)], BUDGETS, PLENTY, eviction_order=order)
    plan(req("x:1", 995, preload=True), [res("a:1", 10)], BUDGETS, PLENTY,
         eviction_order=order)
    assert calls == []
    plan(req("x:1", 995), [res("a:1", 10)], BUDGETS, PLENTY, eviction_order=order)
    assert calls == [1]


def test_the_daemons_rss_counts_against_the_reserves_edge() -> None:
    """Rule 4: 1800 MiB for edged (memory_total 1900 - reserve 100). Models hold 700 (swap)
    + 600 (ram) MiB; a 300 MiB load fits beside a 100 MiB daemon (1700), but a daemon grown
    to 300 MiB takes the room (1900 > 1800): the idle 'a' (400 MiB) must go, and with it
    pinned, nothing can go and the load is rejected, naming the daemon."""
    budgets = Budgets(ram_bytes=1000 * MiB, swap_bytes=1000 * MiB, reserve_bytes=100 * MiB,
                      edged_bytes=1800 * MiB)
    residents = [res("a:1", 400), res("b:1", 300, in_flight=1), res("p:1", 600, tier="ram")]
    small = Memory(available_bytes=10_000 * MiB, swap_free_bytes=0, swap_total_bytes=0,
                   daemon_rss_bytes=100 * MiB)
    grown = Memory(available_bytes=10_000 * MiB, swap_free_bytes=0, swap_total_bytes=0,
                   daemon_rss_bytes=300 * MiB)
    assert isinstance(plan(req("new:1", 300), residents, budgets, small), Admit)
    d = plan(req("new:1", 300), residents, budgets, grown)
    assert isinstance(d, AdmitAfterEvicting) and d.victims == ("a:1",)
    d = plan(req("new:1", 300), [residents[1], residents[2]], Budgets(
        1000 * MiB, 1000 * MiB, 100 * MiB, edged_bytes=1100 * MiB), grown)
    assert isinstance(d, Reject)
    assert "the daemon itself holds" in d.reason
    # Without edged_bytes (a bare planner) the rule is off.
    assert isinstance(plan(req("new:1", 300), residents, BUDGETS, grown), Admit)


def test_a_discrete_gpus_memory_is_its_own_budget() -> None:
    """Rule 5: a 1000 MiB GPU budget; GPU residents hold 500 + 300 MiB of it (their RAM side
    is small and RAM is plentiful). A 300 MiB GPU load must evict the idle 300 MiB GPU model
    (the CPU model frees no device memory); a 1200 MiB one is rejected with the GPU's numbers."""
    budgets = Budgets(ram_bytes=10_000 * MiB, swap_bytes=10_000 * MiB, reserve_bytes=100 * MiB,
                      gpu_bytes=1000 * MiB)
    residents = [Resident("cpu:1", "swap", 400 * MiB, 0, False),
                 Resident("g1:1", "swap", 330 * MiB, 0, True, gpu_bytes=300 * MiB),
                 Resident("g2:1", "swap", 530 * MiB, 1, True, gpu_bytes=500 * MiB)]
    small = LoadRequest("new:1", "swap", 130 * MiB, gpu=True, gpu_bytes=100 * MiB)
    assert isinstance(plan(small, residents, budgets, PLENTY), Admit)
    mid = LoadRequest("new:1", "swap", 330 * MiB, gpu=True, gpu_bytes=300 * MiB)
    d = plan(mid, residents, budgets, PLENTY)
    assert isinstance(d, AdmitAfterEvicting) and d.victims == ("g1:1",)
    big = LoadRequest("new:1", "swap", 1230 * MiB, gpu=True, gpu_bytes=1200 * MiB)
    d = plan(big, residents, budgets, PLENTY)
    assert isinstance(d, Reject) and "GPU budget" in d.reason
    n = d.numbers
    assert (n.tier, n.needed_bytes, n.budget_bytes, n.used_bytes, n.free_bytes) == (
        "gpu", 1200 * MiB, 1000 * MiB, 800 * MiB, 200 * MiB)
    # g2 is busy: 700 MiB cannot be freed beside it (500 held)
    d = plan(LoadRequest("new:1", "swap", 730 * MiB, gpu=True, gpu_bytes=700 * MiB),
             residents, budgets, PLENTY)
    assert isinstance(d, Reject) and d.numbers.tier == "gpu"
    with pytest.raises(CapacityExceeded) as exc:
        raise_if_rejected(d)
    assert exc.value.numbers.budget_bytes == 1000 * MiB
    # No GPU budget (a Jetson, a CPU box): rule 5 is off.
    no_gpu = Budgets(ram_bytes=10_000 * MiB, swap_bytes=10_000 * MiB, reserve_bytes=100 * MiB)
    assert isinstance(plan(big, residents, no_gpu, PLENTY), Admit)

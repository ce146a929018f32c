"""Randomized capacity safety on a simulated 8 GB device (seeded, so failures reproduce).

The simulated kernel keeps models in RAM while it can and pushes CPU-executed swap-tier models
into swap when it must; GPU and ram-tier models can only live in RAM. Every decision the planner
makes is applied, and after each one the device must be sound: tiers within budget, unswappable
models within RAM minus the reserve, everything within RAM + swap minus the reserve. Every reject
is checked by brute force against the documented rules with all evictable models gone, and every
victim set is checked to be inclusion-minimal.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

import pytest

from edged.manager.memory.planner import (
    Admit,
    AdmitAfterEvicting,
    LoadRequest,
    Memory,
    Reject,
    Resident,
    admissible,
    evictable,
    plan,
)
from edged.values import Budgets

MiB, GiB = 1 << 20, 1 << 30
BUDGETS = Budgets(ram=3 * GiB, swap=3 * GiB, reserve=1 * GiB)
BUSY = (0, 0, 0, 0, 0, 1, 1, 3)  # in_flight drawn from this: mostly idle


@dataclass
class Device:
    ram_for_models: int  # physical RAM minus what the OS and the robot use
    swap_total: int

    def memory(self, residents: list[Resident]) -> Memory:
        visible = sum(r.bytes for r in residents if not r.loading)
        in_ram = min(visible, self.ram_for_models)
        swapped = visible - in_ram
        return Memory(available_bytes=self.ram_for_models - in_ram,
                      swap_free_bytes=self.swap_total - swapped,
                      swap_total_bytes=self.swap_total)

    def assert_sound(self, residents: list[Resident]) -> None:
        for tier in ("ram", "swap"):
            assert sum(r.bytes for r in residents if r.tier == tier) <= BUDGETS.of(tier)
        unswappable = sum(r.bytes for r in residents if r.gpu or r.tier == "ram")
        assert unswappable <= self.ram_for_models - BUDGETS.reserve
        total = sum(r.bytes for r in residents)
        assert total <= self.ram_for_models + self.swap_total - BUDGETS.reserve


def fits_by_the_rules(req: LoadRequest, after: list[Resident], before: list[Resident],
                      mem: Memory) -> bool:
    """The documented admission rules, written out independently of the planner's code."""
    kept = {r.key for r in after}
    freed = sum(r.bytes for r in before if r.key not in kept)
    if sum(r.bytes for r in after if r.tier == req.tier) + req.bytes > BUDGETS.of(req.tier):
        return False
    unswappable = req.gpu or req.tier == "ram"
    pending = sum(r.bytes for r in before if r.loading)
    credit = 0 if unswappable else mem.swap_free_bytes
    if req.bytes + pending - freed > mem.available_bytes - BUDGETS.reserve + credit:
        return False
    if not unswappable:
        return True
    visible = [r for r in before if not r.loading]
    swap_used = (mem.swap_total_bytes or 0) - mem.swap_free_bytes
    held = max(sum(r.bytes for r in visible if r.gpu or r.tier == "ram"),
               sum(r.bytes for r in visible) - swap_used)
    unswap_after = sum(r.bytes for r in after if r.gpu or r.tier == "ram") + req.bytes
    return unswap_after <= mem.available_bytes - BUDGETS.reserve + held


def random_request(rng: random.Random, n: int) -> LoadRequest:
    size = int(math.exp(rng.uniform(math.log(5 * MiB), math.log(2.5 * GiB))))
    return LoadRequest(key=f"m{n}:1", tier="ram" if rng.random() < 0.2 else "swap",
                       bytes=size, gpu=rng.random() < 0.3, preload=rng.random() < 0.2)


def check_decision(req: LoadRequest, residents: list[Resident], mem: Memory,
                   decision: object, loading: bool) -> list[Resident]:
    """Assert the decision is right; return the residents after applying it."""
    if isinstance(decision, Reject):
        if req.preload:
            assert not fits_by_the_rules(req, residents, residents, mem)
        else:
            keep = [r for r in residents if not evictable(r, req.key)]
            assert not fits_by_the_rules(req, keep, residents, mem), decision.reason
        return residents
    victims = decision.victims if isinstance(decision, AdmitAfterEvicting) else ()
    assert isinstance(decision, Admit | AdmitAfterEvicting)
    assert not (req.preload and victims), "a preload evicted"
    by_key = {r.key: r for r in residents}
    assert all(evictable(by_key[k], req.key) for k in victims)
    after = [r for r in residents if r.key not in victims]
    assert fits_by_the_rules(req, after, residents, mem)
    for k in victims:  # inclusion-minimal: keeping any one victim breaks the fit
        assert not fits_by_the_rules(req, [*after, by_key[k]], residents, mem)
    return [*after, Resident(req.key, req.tier, req.bytes, 0, req.gpu, loading=loading)]


def run_sequence(seed: int, steps: int = 30) -> None:
    rng = random.Random(seed)
    device = Device(ram_for_models=8 * GiB - rng.choice([1, 2]) * GiB // 2,
                    swap_total=rng.choice([0, 2 * GiB, 4 * GiB]))
    residents: list[Resident] = []
    for n in range(steps):
        # the world moves: loads finish, requests come and go, someone unloads a model
        residents = [Resident(r.key, r.tier, r.bytes, BUSY[rng.getrandbits(3)], r.gpu,
                              r.loading and rng.getrandbits(1) == 1) for r in residents]
        if residents and rng.random() < 0.1:
            residents.pop(rng.randrange(len(residents)))
        rng.shuffle(residents)  # any order is a valid eviction order
        req = random_request(rng, n)
        mem = device.memory(residents)
        decision = plan(req, residents, BUDGETS, mem)
        demand = LoadRequest(req.key, req.tier, req.bytes, req.gpu)
        others = [LoadRequest(f"x{i}:1", t, b, g) for i, (t, b, g) in enumerate(
            (rng.choice(("ram", "swap")), int(rng.uniform(1, 3000)) * MiB, rng.random() < 0.3)
            for _ in range(4))]
        # selection's one-pass answer agrees with the full plan for every request
        kinds = {Admit: "admit", AdmitAfterEvicting: "evict", Reject: "reject"}
        assert admissible([demand, *others], residents, BUDGETS, mem) == [
            kinds[type(plan(r, residents, BUDGETS, mem))] for r in [demand, *others]]
        residents = check_decision(req, residents, mem, decision, rng.random() < 0.3)
        device.assert_sound(residents)


@pytest.mark.slow
def test_random_sequences_are_safe_and_never_reject_what_would_fit() -> None:
    for seed in range(2000):
        run_sequence(seed)


def test_victims_are_a_prefix_choice_of_the_order_not_arbitrary() -> None:
    """Against brute force on small sets: the planner's victims come from the order's front."""
    rng = random.Random(7)
    mem = Memory(available_bytes=4 * GiB, swap_free_bytes=0, swap_total_bytes=0)
    for _ in range(500):
        residents = [Resident(f"r{i}:1", "swap", rng.randint(1, 1500) * MiB, 0, False)
                     for i in range(rng.randint(1, 6))]
        req = LoadRequest("x:1", "swap", rng.randint(1, 3000) * MiB)
        d = plan(req, residents, BUDGETS, mem)
        all_subsets = [set(c) for k in range(len(residents) + 1)
                       for c in itertools.combinations(residents, k)]
        feasible = [s for s in all_subsets
                    if fits_by_the_rules(req, [r for r in residents if r not in s], residents,
                                         mem)]
        if isinstance(d, Reject):
            assert not feasible
            continue
        victims = d.victims if isinstance(d, AdmitAfterEvicting) else ()
        last = max((i for i, r in enumerate(residents) if r.key in victims), default=-1)
        # no feasible set exists within a strictly shorter prefix of the order
        assert not any(s and all(residents.index(r) < last for r in s) for s in feasible) \
            or not victims

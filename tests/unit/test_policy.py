"""Cache policies: what each one evicts first, what EdgedPolicy learns, and the preload rule."""

from __future__ import annotations

import math
import random

import pytest

from edged.manager.memory import planner
from edged.manager.memory.capacity import plan_demand, plan_preload
from edged.manager.memory.planner import LoadRequest, Memory, Resident
from edged.manager.memory.policy import (
    EdgedPolicy,
    FrequencyPolicy,
    LruPolicy,
    make_policy,
    model_name,
)
from edged.values import Budgets

MiB = 1 << 20


def res(key: str, mib: int = 100, in_flight: int = 0) -> Resident:
    return Resident(key, "swap", mib * MiB, in_flight, False)


def feed(policy: object, events: list[tuple[str, float]]) -> None:
    for model, t in events:
        policy.observe(model, t)  # type: ignore[attr-defined]


def with_background(events: list[tuple[str, float]], until: float) -> list[tuple[str, float]]:
    """Add a VAD every second: the interleaving a real robot has."""
    vad = [("vad", float(t)) for t in range(int(until))]
    return sorted(events + vad, key=lambda e: e[1])


def test_model_name() -> None:
    assert model_name("asr:3") == "asr"
    assert model_name("ocr.det:12") == "ocr.det"
    assert model_name("asr") == "asr"


def test_lru_evicts_least_recently_used_first() -> None:
    p = LruPolicy()
    feed(p, [("a", 1), ("b", 2), ("c", 3), ("a", 4)])
    order = p.eviction_order([res("a:1"), res("b:1"), res("c:1"), res("new:1")], now=5)
    assert [r.key for r in order] == ["new:1", "b:1", "c:1", "a:1"]
    assert p.preload_candidates([], 5) == [] and p.predict_next(5) == []


def test_lfu_evicts_least_frequently_used_first() -> None:
    p = FrequencyPolicy()
    feed(p, [("a", 1), ("a", 2), ("a", 3), ("b", 4), ("c", 5), ("c", 6)])
    order = p.eviction_order([res("a:1"), res("b:1"), res("c:1")], now=7)
    assert [r.key for r in order] == ["b:1", "c:1", "a:1"]
    assert p.predict_next(7, k=2) == [("a", 0.5), ("c", 2 / 6)]


def test_make_policy() -> None:
    assert isinstance(make_policy("edged"), EdgedPolicy)
    assert isinstance(make_policy("lru"), LruPolicy)
    assert isinstance(make_policy("lfu"), FrequencyPolicy)
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("random")


def sequence_trace(rounds: int, follower: str = "asr", start: float = 0.0,
                   period: float = 40.0) -> list[tuple[str, float]]:
    """wake -> (1.5 s) follower, every ``period`` seconds."""
    events = []
    for i in range(rounds):
        t = start + i * period
        events += [("wake", t + 0.3), (follower, t + 1.8)]
    return events


def test_learns_a_sequence_through_background_noise() -> None:
    p = EdgedPolicy()
    events = sequence_trace(20)
    feed(p, with_background(events, 20 * 40 + 5))
    p.observe("wake", 805.3)
    top = dict(p.predict_next(805.4, k=3))
    assert top.get("asr", 0) > 0.8
    assert p.preload_candidates(["wake:1", "vad:1"], 805.4)[0] == "asr"
    assert "asr" not in p.preload_candidates(["asr:1", "wake:1"], 805.4)
    # a preload saves the cold load only if it is done before the request (1.5 s away); a
    # horizon shorter than the 40 s rounds leaves the next round out
    q = EdgedPolicy(horizon_s=20.0)
    feed(q, with_background(events, 20 * 40 + 5))
    q.observe("wake", 805.3)
    q.set_model("asr", 100 * MiB, 0.5)
    quick = q.preload_gain("asr", 805.4)
    q.set_model("asr", 100 * MiB, 10.0)
    slow = q.preload_gain("asr", 805.4)
    assert quick > 0.6 * q.miss_cost_s and slow < 0.5 * 10.0 + 1.0
    # once asr came, the context is spent: the next one is 40 s away
    p.observe("asr", 806.8)
    assert p.soon("asr", 806.9, 10) < 0.2


def test_periodic_model_is_expected_when_due() -> None:
    p = EdgedPolicy()
    feed(p, with_background([("localize", 30.0 * i) for i in range(30)], 900))
    last = 29 * 30.0
    assert p.soon("localize", last + 1, 10) < 0.2
    assert p.soon("localize", last + 25, 10) > 0.6
    assert "localize" in p.preload_candidates(["vad:1"], last + 25)


def test_eviction_prefers_big_unlikely_cheap_models() -> None:
    p = EdgedPolicy()
    for name, mib, load in (("llm", 1500, 7.0), ("detect", 90, 0.6), ("calib", 20, 0.3),
                            ("vad", 2, 0.05)):
        p.set_model(name, mib * MiB, load)
    events = [("detect", float(t)) for t in range(0, 600, 2)] + [("calib", 10.0),
                                                                  ("llm", 20.0)]
    feed(p, with_background(events, 600))
    order = p.eviction_order([res("detect:1", 90), res("vad:1", 2), res("llm:1", 1500),
                              res("calib:1", 20)], now=600)
    assert next(r.key for r in order) == "llm:1"
    assert [r.key for r in order][-1] == "vad:1"
    assert order.index(res("calib:1", 20)) < order.index(res("detect:1", 90))


def test_a_shift_is_learned() -> None:
    p = EdgedPolicy()
    before = sequence_trace(30, "asr", period=40.0)
    after = sequence_trace(30, "ocr", start=1200.0, period=40.0)
    feed(p, with_background(before, 1200))
    p.observe("wake", 1200.0 - 1.0)
    assert p.preload_candidates(["vad:1"], 1199.1)[0] == "asr"
    feed(p, with_background(after, 2400))
    p.observe("wake", 2400.3)
    ranked = p.preload_candidates(["vad:1"], 2400.4)
    assert ranked and ranked[0] == "ocr"
    assert p.soon("asr", 2400.4, 10) < 0.1 < 0.8 < p.soon("ocr", 2400.4, 10)


def test_time_of_day_from_previous_days() -> None:
    p = EdgedPolicy()
    day = 86400.0
    events = []
    for d in range(3):
        events += [("night", d * day + 22 * 3600 + 60.0 * i) for i in range(0, 60, 5)]
        events += [("vad", d * day + h * 3600.0) for h in range(24)]
    feed(p, sorted(events, key=lambda e: e[1]))
    day3 = 3 * day
    p.observe("vad", day3 + 21.9 * 3600)
    at_night = p.soon("night", day3 + 22.05 * 3600, 600)
    at_noon = p.soon("night", day3 + 12 * 3600, 600)
    assert at_night > 0.5 > at_noon


def test_deterministic() -> None:
    rng = random.Random(5)
    events = sorted(((rng.choice("abcdef"), rng.uniform(0, 500)) for _ in range(400)),
                    key=lambda e: e[1])
    a, b = EdgedPolicy(), EdgedPolicy()
    feed(a, events)
    feed(b, events)
    residents = [res(f"{m}:1") for m in "abcdef"]
    assert a.eviction_order(residents, 501) == b.eviction_order(residents, 501)
    assert a.predict_next(501, 6) == b.predict_next(501, 6)
    assert a.preload_candidates([], 501) == b.preload_candidates([], 501)
    for _, prob in a.predict_next(501, 6):
        assert 0.0 <= prob <= 1.0


BUDGETS = Budgets(ram=0, swap=1000 * MiB, reserve=0)


def mem(used_mib: int) -> Memory:
    return Memory((1000 - used_mib) * MiB, 0, swap_total_bytes=0)


def test_plan_preload_never_evicts_more_valuable_models() -> None:
    p = EdgedPolicy()
    for name in ("wake", "asr", "hot", "hot2", "cold"):
        p.set_model(name, 400 * MiB, 1.0)
    events = [*sequence_trace(20), ("cold", 5.0)]
    events += [(h, float(t)) for t in range(0, 800, 2) for h in ("hot", "hot2")]
    feed(p, with_background(events, 800))
    p.observe("wake", 798.3)
    req = LoadRequest("asr:1", "swap", 400 * MiB)
    free = plan_preload(p, req, [res("hot:1", 400)], BUDGETS, mem(400), 798.4)
    assert isinstance(free, planner.Admit)
    d = plan_preload(p, req, [res("hot:1", 400), res("cold:1", 400)], BUDGETS, mem(800), 798.4)
    assert isinstance(d, planner.AdmitAfterEvicting) and d.victims == ("cold:1",)
    d = plan_preload(p, req, [res("hot:1", 400), res("hot2:1", 400)], BUDGETS, mem(800), 798.4)
    assert isinstance(d, planner.Reject) and "preload" in d.reason
    busy = [res("hot:1", 400), res("cold:1", 400, in_flight=1)]
    assert isinstance(plan_preload(p, req, busy, BUDGETS, mem(800), 798.4), planner.Reject)


def test_victim_cost_is_value_times_bytes_and_only_for_edged() -> None:
    p = EdgedPolicy()
    p.set_model("a", 100 * MiB, 1.0)
    feed(p, [("a", float(t)) for t in range(0, 100, 5)])
    cost = p.victim_cost(100.0)
    assert cost is not None
    assert cost(res("a:1", 100)) == pytest.approx(p.value("a:1", 100.0) * 100 * MiB)
    assert EdgedPolicy(cost_aware=False).victim_cost(100.0) is None
    assert LruPolicy().victim_cost(1.0) is None and FrequencyPolicy().victim_cost(1.0) is None


def others(until: float) -> list[tuple[str, float]]:
    """Unrelated models every 6-9 s: the many onsets that keep a model's base rate low."""
    return [(f"x{k}", float(t)) for k, per in enumerate((6, 7, 8, 9))
            for t in range(per, int(until), per)]


def test_a_late_follower_is_still_expected_until_its_delay_has_passed() -> None:
    # b comes 3 s after a, every 200 s: with a normal delay, b is not written off after 1 s
    p = EdgedPolicy()
    events = others(4000)
    for i in range(20):
        t = 50.0 + 200.0 * i
        events += [("a", t), ("b", t + 3.0 + 0.1 * (i % 3))]
    feed(p, sorted(events, key=lambda e: e[1]))
    p.observe("a", 4050.0)
    assert p.soon("b", 4050.0, 5) > 0.8
    assert p.soon("b", 4052.0, 5) > 0.8
    assert p.soon("b", 4056.0, 5) < 0.2  # 3 s late: it is not coming


def test_a_run_of_requests_opens_one_episode() -> None:
    # a comes in runs (20 requests, 1 s apart, every 100 s) and b follows each run's start:
    # learned per onset, b is expected when a run starts; per request, b would look rare
    p = EdgedPolicy()
    events = others(3100)
    for c in range(30):
        t0 = 100.0 * c
        events += [("a", t0 + i) for i in range(20)] + [("b", t0 + 2.5)]
    feed(p, sorted(events, key=lambda e: e[1]))
    p.observe("a", 3000.0)
    assert p.soon("b", 3000.1, 5) > 0.7
    every = EdgedPolicy(onset_s=0.0)
    feed(every, sorted(events, key=lambda e: e[1]))
    every.observe("a", 3000.0)
    assert every.soon("b", 3000.1, 5) < 0.4


def test_eviction_loss_counts_victims_needed_before_the_preload() -> None:
    # at 1000: "fast" is due within a second, "slow" in ~58 s, "loc" (the preload) in ~18 s
    p = EdgedPolicy()
    events = [("fast", float(t)) for t in range(0, 1001)]
    events += [("loc", float(t)) for t in range(18, 1000, 20)]  # next at ~1018
    events += [("slow", float(t)) for t in range(38, 1000, 60)]  # next at ~1058
    feed(p, sorted(events, key=lambda e: e[1]))
    for name in ("fast", "slow", "loc"):
        p.set_model(name, 100 * MiB, 0.5)
    lost = p.eviction_loss("loc", 1000.0)
    full = p.miss_cost_s + 0.5
    assert lost(res("fast:1")) > 0.9 * full  # must come back before loc is used
    assert lost(res("slow:1")) < 0.1 * full  # would go at loc's demand load anyway
    assert p.eviction_loss("loc", 1000.0, at_least=1.0)(res("fast:1")) >= 1.0  # a bound


def test_eviction_loss_horizon_stretches_with_the_victims_own_load() -> None:
    # at 10000: "clip" and "cam" are due in ~140 s (every 300 s), the preload "loc" in ~300 s.
    # The loss horizon is keep_s (90 s), or 5 of the victim's own loads if longer: clip's
    # 30 s loads stretch it to 150 s (on a slow disk each wrong eviction costs a 30 s
    # reload), cam's 2 s loads do not, and without keep_loads neither does clip's. (predict
    # spreads gaps this long wide: P(clip within 90 s) is already about 0.4, within 150 s 0.6)
    events = [(m, float(t)) for m in ("clip", "cam") for t in range(240, 10000, 300)]
    events += [("loc", float(t)) for t in range(100, 10000, 600)]
    policies = {k: EdgedPolicy(keep_loads=k) for k in (5.0, 0.0)}
    for p in policies.values():
        feed(p, sorted(events, key=lambda e: (e[1], e[0])))
        p.set_model("clip", 600 * MiB, 30.0)
        p.set_model("cam", 600 * MiB, 2.0)
        p.set_model("loc", 100 * MiB, 1.0)
    stretched, fixed = (policies[k].eviction_loss("loc", 10000.0) for k in (5.0, 0.0))
    assert stretched(res("clip:1")) > 1.25 * fixed(res("clip:1")) > 0.0
    assert stretched(res("cam:1")) == fixed(res("cam:1")) > 0.0
    assert policies[5.0].eviction_loss("loc", 10000.0, at_least=1.0)(res("clip:1")) >= 1.0


def test_preload_horizon_stretches_with_the_candidates_own_load() -> None:
    # at 10000 "slow" (a 30 s load) and "fast" (2 s) are due in ~140 s (every 300 s). The
    # preload's horizon is horizon_s (40 s), or 3 of the candidate's own loads if longer: a
    # load that takes most of 40 s could only save requests in the seconds left after it
    # lands, so without the stretch the slow model was worth less than the fast one
    events = [(m, float(t)) for m in ("slow", "fast") for t in range(240, 10000, 300)]
    policies = {k: EdgedPolicy(horizon_loads=k) for k in (3.0, 0.0)}
    for p in policies.values():
        feed(p, sorted(events, key=lambda e: (e[1], e[0])))
        p.set_model("slow", 300 * MiB, 30.0)
        p.set_model("fast", 300 * MiB, 2.0)
    stretched, fixed = policies[3.0], policies[0.0]
    assert stretched.preload_gain("slow", 10000.0) > 2.0 * fixed.preload_gain("slow", 10000.0)
    assert stretched.preload_gain("fast", 10000.0) == fixed.preload_gain("fast", 10000.0) > 0.0
    assert stretched.preload_candidates(set(), 10000.0) == ["slow", "fast"]
    assert fixed.preload_candidates(set(), 10000.0) == ["fast", "slow"]


def test_plan_preload_evicts_nothing_for_a_small_gain() -> None:
    p = EdgedPolicy()
    for name in ("llm", "cold"):
        p.set_model(name, 400 * MiB, 7.5)
    # llm requested once in a long while: a small chance of coming within the horizon
    feed(p, with_background([("llm", 5.0), ("llm", 1500.0), ("cold", 6.0)], 1700))
    req = LoadRequest("llm:1", "swap", 400 * MiB)
    gain = p.preload_gain("llm", 1700.0)
    assert 0.0 < gain / 1.5 <= 2.0
    d = plan_preload(p, req, [res("cold:1", 400), res("vad:1", 400)], BUDGETS, mem(800), 1700.0)
    assert isinstance(d, planner.Reject)  # worth too little to push anything out ...
    d = plan_preload(p, req, [res("vad:1", 400)], BUDGETS, mem(400), 1700.0)
    assert isinstance(d, planner.Admit)  # ... but free memory may hold it


def test_plan_demand_weighs_a_few_small_victims_against_one_big_one() -> None:
    # by value per byte the LLM goes first, and alone makes room; but it is due in 5 s and
    # costs more to lose than the two small models that make room as well
    p = EdgedPolicy()
    p.set_model("llm", 1500 * MiB, 7.5)
    for name in ("s1", "s2", "s3"):
        p.set_model(name, 100 * MiB, 0.5)
    events = [("llm", 60.0 * i) for i in range(20)]
    events += [(n, float(t)) for n, off in (("s1", 0), ("s2", 7), ("s3", 14))
               for t in range(off, 1200, 120)]
    feed(p, sorted(events, key=lambda e: e[1]))
    now = 1195.0
    residents = [res("llm:1", 1500), res("s1:1", 100), res("s2:1", 100), res("s3:1", 100)]
    budgets, free = Budgets(0, 1800 * MiB, 0), Memory(0, 0, swap_total_bytes=0)
    req = LoadRequest("new:1", "swap", 150 * MiB)
    cost = p.victim_cost(now)
    assert cost is not None
    plain = planner.plan(req, residents, budgets, free,
                         eviction_order=lambda rs: p.eviction_order(rs, now), victim_cost=cost)
    assert isinstance(plain, planner.AdmitAfterEvicting) and plain.victims == ("llm:1",)
    d = plan_demand(p, req, residents, budgets, free, now)
    assert isinstance(d, planner.AdmitAfterEvicting) and set(d.victims) == {"s2:1", "s3:1"}
    by_key = {r.key: r for r in residents}
    assert sum(cost(by_key[v]) for v in d.victims) < cost(by_key["llm:1"])
    lru = LruPolicy()  # no victim costs: the policy's order only, as the planner alone does
    assert plan_demand(lru, req, residents, budgets, free, now) == planner.plan(
        req, residents, budgets, free, eviction_order=lambda rs: lru.eviction_order(rs, now))


def test_the_daemons_policy_counts_hours_in_local_time() -> None:
    # a robot's night is local: 22:00 UTC is 00:00 at UTC+2
    p = make_policy("edged", tz_offset_s=7200)
    assert isinstance(p, EdgedPolicy) and p._hour(22 * 3600.0) == 0
    assert make_policy("edged")._hour(22 * 3600.0) == 22  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown policy 'mru'"):
        make_policy("mru")


# -- experts and regret, scan resistance, partial preloads (issue 16) ------------------------
def test_regret_weights_move_towards_the_expert_the_trace_favours() -> None:
    # capacity for three of these equal models
    def run(events: list[tuple[str, float]]) -> dict[str, float]:
        p = EdgedPolicy()
        p.set_capacity(300 * MiB)
        for name in {m for m, _ in events}:
            p.set_model(name, 100 * MiB, 1.0)
        feed(p, events)
        return p.weights()

    # two hot models, and a scan of one-offs between their uses: LRU lets the scan push a
    # hot model out, a frequency count keeps both
    scan = [(m, 10.0 * i + off) for i in range(200) for m, off in (("h1", 0.0), ("h2", 1.0))]
    scan += [(f"x{i}-{k}", 10.0 * i + 2.0 + 2 * k) for i in range(200) for k in range(3)]
    w = run(sorted(scan, key=lambda e: e[1]))
    assert w["frequency"] > 0.4 and w["recency"] < 0.05, w
    # the working set moves on every 10 minutes: counts keep the old set, recency follows
    phases = [(f"p{k}m{j}", 600.0 * k + 4.0 * i + j)
              for k in range(4) for i in range(150) for j in range(3)]
    w = run(sorted(phases, key=lambda e: e[1]))
    assert w["recency"] > w["frequency"], w
    assert abs(sum(w.values()) - 1.0) < 1e-9 and min(w.values()) >= 0.0099


def test_regret_learns_nothing_without_pressure_and_is_deterministic() -> None:
    p = EdgedPolicy()
    p.set_capacity(10_000 * MiB)  # everything fits: no expert ever misses a second time
    for name in ("a", "b", "c"):
        p.set_model(name, 100 * MiB, 1.0)
    feed(p, [("abc"[i % 3], float(i)) for i in range(300)])
    assert p.regret == dict.fromkeys(p.experts, 0.0)
    with pytest.raises(ValueError, match="experts"):
        EdgedPolicy(experts=("predict", "mru"))


def test_a_one_off_model_does_not_flush_a_frequently_used_one() -> None:
    # h1 and h2 every 30 s for an hour; x is requested once, just now: the next demand load
    # pushes x out, not the hot model LRU would pick (the one used longest ago)
    events = [(h, float(t) + off) for t in range(0, 3600, 30) for h, off in (("h1", 0),
                                                                               ("h2", 5))]
    events.append(("x", 3596.0))
    residents = [res("h1:1"), res("h2:1"), res("x:1")]
    budgets, full = Budgets(0, 300 * MiB, 0), Memory(0, 0, swap_total_bytes=0)
    req = LoadRequest("new:1", "swap", 100 * MiB)
    p = EdgedPolicy()
    p.set_capacity(300 * MiB)
    for name in ("h1", "h2", "x", "new"):
        p.set_model(name, 100 * MiB, 1.0)
    feed(p, with_background(events, 3597))
    d = plan_demand(p, req, residents, budgets, full, 3597.0)
    assert isinstance(d, planner.AdmitAfterEvicting) and d.victims == ("x:1",)
    lru = LruPolicy()
    feed(lru, with_background(events, 3597))
    d = plan_demand(lru, req, residents, budgets, full, 3597.0)
    assert isinstance(d, planner.AdmitAfterEvicting) and d.victims == ("h1:1",)
    # probation: seen once, x is worth less than the same model seen many times
    assert EdgedPolicy(probation=1.0).probation == 1.0
    once = EdgedPolicy(experts=("predict",))
    once.set_model("y", 100 * MiB, 1.0)
    once.observe("y", 0.0)
    trusted = EdgedPolicy(experts=("predict",), probation=0.0)
    trusted.set_model("y", 100 * MiB, 1.0)
    trusted.observe("y", 0.0)
    assert once.value("y", 1.0) < 0.6 * trusted.value("y", 1.0)


def test_a_preload_does_not_swap_out_a_model_worth_as_much_as_it() -> None:
    # A conversation's turns, wake -> asr -> tts every 4 s, 1 s apart, in memory that holds
    # one of them. Just after a tts, wake is due in 1.8 s and asr in 2.8 s: a preload of wake
    # would push out asr, a model worth more than half as much per byte (the rule's bet: not
    # against a prediction almost as strong; when the turns stop, such preloads only swap the
    # models round, each swap a load: the recorded trace). A model worth less goes.
    p = EdgedPolicy()
    for name in ("wake", "asr", "tts", "old"):
        p.set_model(name, 900 * MiB, 0.5)
    feed(p, [("old", 0.0)] + [(m, 600.0 + 4.0 * i + k) for i in range(20)
                              for k, m in enumerate(("wake", "asr", "tts"))])
    now = 600.0 + 4.0 * 19 + 2.2  # just after the last tts
    req = LoadRequest("wake:1", "swap", 900 * MiB)
    assert p.preload_gain("wake", now) > 2.0
    assert p.value("asr", now) >= 0.5 * p.value("wake", now) > p.value("old", now)
    d = plan_preload(p, req, [res("asr:1", 900)], BUDGETS, mem(900), now)
    assert isinstance(d, planner.Reject)
    # without the rule (admit = inf) the preload would push asr out
    loose = plan_preload(p, req, [res("asr:1", 900)], BUDGETS, mem(900), now, admit=math.inf)
    assert isinstance(loose, planner.AdmitAfterEvicting) and loose.victims == ("asr:1",)
    # an old one-off is worth much less: it goes
    d = plan_preload(p, req, [res("old:1", 900)], BUDGETS, mem(900), now)
    assert isinstance(d, planner.AdmitAfterEvicting) and d.victims == ("old:1",)


def test_a_preload_does_not_push_out_a_large_model_worth_more_than_half_of_it() -> None:
    # The LLM (800 MiB, 7.5 s to load) is asked every 20-40 s; c (150 MiB) follows each wake
    # 3 s later; a (100 MiB) comes every 10-20 s. Just after a wake, a preload of c needs 50 MiB
    # freed. By value per byte the LLM is the cheapest resident by far (8x c's bytes), but what
    # keeping it saves (value x bytes) is more than half what keeping c would: the preload
    # waits, and c's demand load, if it comes, picks its victims. With no admit rule the
    # LLM would go, and its reload would come back as 7.5 s of stall (the 2 GiB budgets).
    p = EdgedPolicy()
    for name, mib, load in (("llm", 800, 7.5), ("wake", 10, 0.1), ("c", 150, 0.8),
                            ("a", 100, 0.6)):
        p.set_model(name, mib * MiB, load)
    rng = random.Random(3)
    events: list[tuple[str, float]] = []
    for name, start, lo, hi, follow in (("wake", 0.0, 30.0, 50.0, "c"),
                                        ("llm", 5.0, 20.0, 40.0, ""),
                                        ("a", 1.0, 10.0, 20.0, "")):
        t = start
        while t < 3000.0:
            events += [(name, t)] + ([(follow, t + 3.0)] if follow else [])
            t += rng.uniform(lo, hi)
    feed(p, sorted(e for e in events if e[1] < 3000.0))
    feed(p, [("llm", 2990.0), ("wake", 3000.0)])
    now = 3000.3
    req = LoadRequest("c:1", "swap", 150 * MiB)
    residents = [res("llm:1", 800), res("a:1", 100)]
    assert p.preload_gain("c", now) > 2.0
    assert p.value("llm", now) < 0.5 * p.value("c", now)  # per byte: the cheapest ...
    llm_keeps = p.value("llm", now) * 800 * MiB
    assert llm_keeps >= 0.5 * p.value("c", now) * 150 * MiB  # ... but not as a whole model
    d = plan_preload(p, req, residents, BUDGETS, mem(900), now)
    assert isinstance(d, planner.Reject)
    loose = plan_preload(p, req, residents, BUDGETS, mem(900), now, admit=math.inf)
    assert isinstance(loose, planner.AdmitAfterEvicting) and loose.victims == ("llm:1",)


def partial_setup(delay: float) -> tuple[EdgedPolicy, float]:
    """wake, then llm ``delay`` s later, every 2-5 minutes among unrelated models; the llm
    takes 7.5 s to load: a preload started at wake cannot finish before its request, it can
    only shorten the wait. Returns the policy just after a wake, and that instant."""
    p = EdgedPolicy()
    p.set_model("llm", 400 * MiB, 7.5)
    p.set_model("wake", 10 * MiB, 0.1)
    p.set_model("cold", 400 * MiB, 1.0)
    rng = random.Random(7)
    events, t = [("cold", 3.0)], 10.0
    while t < 6000.0:
        events += [("wake", t), ("llm", t + delay)]
        t += rng.uniform(120.0, 300.0)
    events = [e for e in events if e[1] < 6000.0] + others(6000)
    feed(p, with_background(events, 6000))
    p.observe("wake", 6000.0)
    return p, 6000.1


def test_a_partial_preload_starts_when_it_pays() -> None:
    # the llm comes 4 s after wake: a preload at wake saves ~4 s of its 7.5 s load (it comes
    # while loading, so not a cold load saved); the cold model is worth far less: evict it
    p, now = partial_setup(4.0)
    gain = p.preload_gain("llm", now)
    assert 3.0 < gain < 4.5, gain  # about the 4 s the request would wait less
    req = LoadRequest("llm:1", "swap", 400 * MiB)
    residents = [res("cold:1", 400), res("vad:1", 400)]
    d = plan_preload(p, req, residents, BUDGETS, mem(800), now)
    assert isinstance(d, planner.AdmitAfterEvicting) and d.victims == ("cold:1",)


def test_a_partial_preload_does_not_start_when_it_does_not_pay() -> None:
    # the llm comes 0.3 s after wake: a preload saves at most 0.3 s, too little to evict for
    p, now = partial_setup(0.3)
    assert p.preload_gain("llm", now) < 0.5
    req = LoadRequest("llm:1", "swap", 400 * MiB)
    d = plan_preload(p, req, [res("cold:1", 400), res("vad:1", 400)], BUDGETS, mem(800), now)
    assert isinstance(d, planner.Reject)
    # and a victim needed before the llm is never pushed out for a partial gain
    q, now = partial_setup(4.0)
    d = plan_preload(q, req, [res("vad:1", 800)], BUDGETS, mem(800), now)
    assert isinstance(d, planner.Reject)  # the VAD is due within a second


def test_a_preloads_victims_answer_to_the_regret_weights() -> None:
    # asr came twice, 4 s apart, 5 s ago: its one gap says it is done (predict), while it was
    # just used (recency). With no evidence the loss is predict's alone; once the trace has
    # shown recency to predict better, evicting asr to preload loc is priced as recency sees it
    # (the prior learned from the models' first gaps is off: with it, loc's and asr's short
    # first gaps would say asr comes back, which is not what this test is about)
    def setup() -> EdgedPolicy:
        p = EdgedPolicy(pool_fade=0.0)
        for name in ("asr", "loc"):
            p.set_model(name, 100 * MiB, 0.5)
        feed(p, [("loc", 0.0), ("loc", 20.0), ("asr", 30.0), ("asr", 34.0), ("loc", 35.0)])
        return p

    neutral, favoured = setup(), setup()
    favoured.regret.update(predict=20.0, recency=0.0, frequency=20.0)
    assert neutral.weights()["recency"] <= neutral.weights()["predict"]
    assert favoured.weights()["recency"] > 0.9
    full = neutral.miss_cost_s + 0.5
    calm = neutral.eviction_loss("loc", 39.0)(res("asr:1"))
    alarmed = favoured.eviction_loss("loc", 39.0)(res("asr:1"))
    assert calm < 0.25 * full < 0.5 * full < alarmed
    # the same numbers again: no hidden state
    assert favoured.eviction_loss("loc", 39.0)(res("asr:1")) == alarmed


def test_a_model_seen_once_is_expected_back_as_the_others_came_back() -> None:
    # The prior of a model with no gaps of its own is learned from the others' first gaps.
    # A robot whose models came back 2-4 s after their first request (a conversation's
    # turns): a new model seen once, 1 s ago, is likely back within 10 s. A robot whose new
    # models were one-offs (each silent for 10 min after its one request): it is not.
    def policy(pool_fade: float, returners: bool) -> EdgedPolicy:
        p = EdgedPolicy(pool_fade=pool_fade, experts=("predict",))
        events: list[tuple[str, float]] = []
        for i in range(8):
            t = 600.0 * i
            events.append((f"m{i}", t))
            if returners:
                events.append((f"m{i}", t + 2.0 + i % 3))
        events.append(("new", 4800.0))
        for name in {m for m, _ in events}:
            p.set_model(name, 100 * MiB, 1.0)
        feed(p, events)
        return p

    quick, scan, off = policy(0.2, True), policy(0.2, False), policy(0.0, True)
    assert quick.soon("new", 4801.0, 10.0) > 0.5
    assert scan.soon("new", 4801.0, 10.0) < 0.05
    assert off.soon("new", 4801.0, 10.0) < 0.05  # the fixed prior: a gap "between sessions"
    # so the new model outranks a resident that is not due for minutes, where models come back
    quick.set_model("idle", 100 * MiB, 1.0)
    feed(quick, [("idle", t) for t in (4000.0, 4300.0, 4600.0)])
    assert quick.value("new", 4801.0) > quick.value("idle", 4801.0)
    # a one-off that came back after its silence was counted once, as the long gap it was;
    # a model's first short gap is counted when its second request comes
    pool = scan._pool
    long_n, short = pool.long_n, sum(pool.hist)
    assert long_n > 1.0 and short == 0.0  # the one-offs' silences
    scan.observe("m7", 4900.0)
    assert (pool.long_n, sum(pool.hist)) == (long_n, short)
    scan.set_model("z", 100 * MiB, 1.0)
    feed(scan, [("z", 4901.0), ("z", 4903.0)])
    assert sum(pool.hist) > 0.0


def busy_setup() -> EdgedPolicy:
    """Two models due in 12 s (every 20 s), ``big`` (3 s to load) and ``small`` (0.5 s), and
    five others requested every 2 s: when those are not resident, demand loads keep coming."""
    p = EdgedPolicy()
    p.set_model("big", 100 * MiB, 3.0)
    p.set_model("small", 100 * MiB, 0.5)
    others = [f"o{i}" for i in range(5)]
    for name in others:
        p.set_model(name, 10 * MiB, 0.2)
    events = [(m, float(t)) for t in range(0, 588, 20) for m in ("big", "small")]
    events += [(o, t + 0.1 * i) for t in range(0, 588, 2) for i, o in enumerate(others)]
    feed(p, sorted(events, key=lambda e: e[1]))  # the last at 586.4, the next due at 588
    return p


def test_a_busy_loader_ranks_preloads_by_the_saving_that_will_land() -> None:
    # at 588 (+0.05): big and small are due at ~600. With the others resident (a quiet loader) big's
    # larger gain (its 3 s load) comes first; with them not resident, demand loads will cancel
    # a 3 s load before it ends: small first, big's gain discounted by its chance to finish
    now = 588.05
    p = busy_setup()
    quiet = p.preload_candidates([f"o{i}:1" for i in range(5)], now)
    assert quiet.index("big") < quiet.index("small")
    quiet_big = p.completes("big", now)
    gain_quiet = p.preload_gain("big", now)
    busy = p.preload_candidates([], now)
    assert busy.index("small") < busy.index("big")
    assert p.completes("big", now) < 0.05 * quiet_big
    assert p.completes("big", now) < 0.01 * p.completes("small", now)
    assert p.preload_gain("big", now) < 0.05 * gain_quiet
    # before any pass the policy knows nothing of the loader: no discount
    fresh = busy_setup()
    assert fresh.completes("big", now) == 1.0


def _reference_context(p: EdgedPolicy, now: float) -> dict[str, tuple[float, ...]]:
    """The context as it was computed for every model at once, before it went per model."""
    ctx: dict[str, tuple[float, ...]] = {}
    for s in p.stats.values():
        x = now - s.onset
        if x > p.window_s:
            continue
        m = min(float(s.closed), 1.0 / p.follow_alpha)
        for b, (q, delay, var) in s.follow.items():
            base = p._base.get(b, 0.0)
            q = (q * m + p.prior_n * base) / (m + p.prior_n)
            if b in s.since or q < p.lift * base:
                continue
            d = max(delay, 0.05)
            sd = max(math.sqrt(var), 0.25 * d, 0.05)
            late = q * (1.0 - 0.5 * (1.0 + math.erf((x - d) / sd / 2 ** 0.5)))
            still = late / (1.0 - q + late) if late > 0 else 0.0
            if still > ctx.get(b, (0.0,))[0]:
                ctx[b] = (still, d, sd, x)
    return ctx


def _reference_victims(req: LoadRequest, residents: list[Resident], budgets: Budgets,
                       memory: Memory, order: list[Resident],
                       cost: object) -> tuple[str, ...] | None:
    """The planner's victim search as first written (sums recomputed per prefix)."""
    need, _ = planner._need(req, planner._Totals.of(residents), budgets, memory)
    cands = [r for r in order if planner.evictable(r, req.key)]

    def freed(rs: list[Resident]) -> tuple[int, int, int, int]:
        return (sum(r.bytes for r in rs if r.tier == req.tier), sum(r.bytes for r in rs),
                sum(r.bytes for r in rs if r.gpu), sum(r.gpu_bytes for r in rs))
    prefix: list[Resident] = []
    options = []
    for i, r in enumerate(cands):
        t, lv, u, g = freed(prefix)
        enough = [x for x in cands[i:] if need.met(t + x.bytes, lv + x.bytes, u, g)]
        if enough:
            options.append([*prefix, min(enough, key=cost)])  # type: ignore[arg-type]
        prefix.append(r)
        if need.met(*freed(prefix)):
            options.append(prefix)
            break
    if not options:
        return None
    pruned = []
    for o in options:
        o = list(o)
        for i in range(len(o) - 2, -1, -1):
            if need.met(*freed(o[:i] + o[i + 1:])):
                del o[i]
        pruned.append(o)
    best = min(pruned, key=lambda o: (sum(cost(r) for r in o), len(o)))  # type: ignore[operator]
    return tuple(r.key for r in best)


def test_per_model_answers_are_the_all_model_ones() -> None:
    """A capacity check prices its 20 residents, not the 200 models seen (SPEC: under 1 ms):
    values, the transition context and the victim search are worked out per model and with
    running sums, and must give exactly (==, not approximately) what the whole computation
    gave, so no decision changed with the speed-up."""
    rng = random.Random(7)
    names = [f"m{i}" for i in range(40)]
    sizes = {n: rng.randint(5, 900) * MiB for n in names}
    p = EdgedPolicy()
    for n in names:
        p.set_model(n, sizes[n], rng.uniform(0.05, 3.5))
    p.set_capacity(2 << 30)
    budgets = Budgets(ram=8 << 30, swap=2 << 30, reserve=1 << 30)
    memory = Memory(3 << 30, 0, swap_total_bytes=0)
    t, checked = 0.0, 0
    for step in range(1500):
        t += rng.expovariate(1.0) * rng.choice([0.2, 1.0, 4.0])
        p.observe(rng.choice(names[:8]) if rng.random() < 0.6 else rng.choice(names), t)
        if step % 25:
            continue
        now = t + rng.choice([0.0, 1.0, 10.0])
        ctx = p._context(now)
        assert {b: ctx.get(b) for b in names if ctx.get(b)} == _reference_context(p, now)
        weights, logs = p.weights(), dict.fromkeys(p.stats, 0.0)
        for e, vals in p.expert_values(now).items():
            for n, v in vals.items():
                logs[n] = logs[n] + weights[e] * math.log(max(v, 1e-300))
        assert {n: p.value(n, now) for n in p.stats} == {
            n: math.exp(x) for n, x in logs.items()}
        rs = [res(f"{n}:1", sizes[n] // MiB) for n in rng.sample(names, 20)]
        new = rs.pop()
        req = LoadRequest(new.key, "swap", new.bytes)
        cost = p.victim_cost(now)
        order = p.eviction_order(rs, now)
        got = planner.plan(req, rs, budgets, memory, eviction_order=lambda _, o=order: o,
                           victim_cost=cost)
        want = _reference_victims(req, rs, budgets, memory, order, cost)
        assert getattr(got, "victims", None) == want
        checked += want is not None
    assert checked > 20


def test_a_bursting_model_is_kept_beside_a_large_one() -> None:
    """face comes in bursts of 50 requests at 10 Hz every 5 minutes; anomaly once every 20 s.
    Between bursts, face's next request is further off than anomaly's, but a cold face is
    felt by the whole burst queued behind the load (at a tight budget often behind the LLM's
    7.5 s): with the burst term the LLM's room comes from anomaly, without it from face."""
    def victims(**kw: float) -> tuple[str, ...]:
        p = EdgedPolicy(**kw)
        for n, mib, load_s in (("llm", 1500, 7.5), ("face", 30, 0.3), ("anomaly", 25, 0.25)):
            p.set_model(n, mib * MiB, load_s)
        p.set_capacity(1560 * MiB)
        events = [("face", 300.0 * k + 37.0 + 0.1 * i) for k in range(8) for i in range(50)]
        events += [("anomaly", 20.0 * k + 5.0) for k in range(125)]
        events += [("llm", 300.0 * k + 150.0) for k in range(8)]
        feed(p, sorted(events, key=lambda e: e[1]))
        d = plan_demand(p, LoadRequest("llm:1", "swap", 1500 * MiB),
                        [res("face:1", 30), res("anomaly:1", 25)],
                        Budgets(ram=1 << 30, swap=1540 * MiB, reserve=0),
                        Memory(8 << 30, 0, swap_total_bytes=0), 2500.0)
        assert isinstance(d, planner.AdmitAfterEvicting)
        return d.victims
    assert victims() == ("anomaly:1",)
    assert victims(burst_weight=0.0) == ("face:1",)

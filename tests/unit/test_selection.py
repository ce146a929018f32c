"""Selection: the rules of edged.manager.selection, one behaviour per test."""

from __future__ import annotations

import random

import pytest

from edged.manager.selection import MAX_RUNNERS_UP, Candidate, select

MiB = 1 << 20


def cand(name: str, quality: float = 0.5, latency_ms: float | None = 10.0, *,
         version: int = 1, tasks: tuple[str, ...] = ("asr",), loaded: bool = False,
         fits_now: bool = True, tier: str = "swap", mib: int = 100,
         fit: str | None = None) -> Candidate:
    return Candidate(name=name, version=version, tasks=tasks, quality=quality,
                     latency_ms=latency_ms, footprint_bytes=mib * MiB, loaded=loaded,
                     fit=fit or ("now" if fits_now else "no"), tier=tier)


def test_quality_picks_the_highest_quality() -> None:
    s = select("asr", "quality", [cand("small", 0.7, 5), cand("large", 0.9, 80)])
    assert s.choice is not None and s.choice.name == "large"
    assert any("highest quality (0.9)" in r for r in s.reasons)
    assert s.runners_up[0][0].name == "small"
    assert "lower quality (0.7 < 0.9)" in s.runners_up[0][1]


def test_speed_picks_the_fastest_and_unknown_latency_ranks_last() -> None:
    cs = [cand("unknown", 0.99, None), cand("slow", 0.9, 80), cand("fast", 0.7, 5)]
    s = select("asr", "speed", cs)
    assert s.choice is not None and s.choice.name == "fast"
    assert [c.name for c, _ in s.runners_up] == ["slow", "unknown"]
    assert "unknown latency" in s.runners_up[1][1]


def test_balanced_weighs_quality_against_latency() -> None:
    cs = [cand("tiny", 0.60, 2), cand("mid", 0.88, 12), cand("huge", 0.90, 900)]
    s = select("asr", "balanced", cs)
    assert s.choice is not None and s.choice.name == "mid"
    assert "worse balance" in dict((c.name, r) for c, r in s.runners_up)["huge"]


def test_only_models_that_do_the_task_are_considered() -> None:
    s = select("ocr.detect", "quality", [cand("a", tasks=("asr",))])
    assert s.choice is None
    assert s.reasons == ("no installed model can do task 'ocr.detect'",)
    assert s.runners_up == ()


def test_storage_tier_is_not_selectable_and_says_so() -> None:
    s = select("asr", "quality", [cand("best", 0.99, tier="storage"), cand("ok", 0.5)])
    assert s.choice is not None and s.choice.name == "ok"
    why = dict((c.name, r) for c, r in s.runners_up)["best"]
    assert "storage tier" in why and "promote" in why
    only = select("asr", "quality", [cand("best", tier="storage")])
    assert only.choice is None and "storage tier" in only.reasons[-1]


def test_a_loaded_model_wins_ties() -> None:
    cs = [cand("a", 0.8, 10), cand("b", 0.8, 10, loaded=True)]
    s = select("asr", "quality", cs)
    assert s.choice is not None and s.choice.name == "b"
    assert "already loaded" in s.reasons
    assert "already loaded" in s.runners_up[0][1]


def test_loaded_does_not_beat_a_better_model() -> None:
    s = select("asr", "quality", [cand("a", 0.9), cand("b", 0.8, loaded=True)])
    assert s.choice is not None and s.choice.name == "a"


def test_models_that_do_not_fit_rank_below_those_that_fit() -> None:
    s = select("asr", "quality", [cand("big", 0.95, fits_now=False), cand("ok", 0.6)])
    assert s.choice is not None and s.choice.name == "ok"
    assert s.runners_up[0][1] == "does not fit in memory now"
    alone = select("asr", "quality", [cand("big", 0.95, fits_now=False)])
    assert alone.choice is not None and alone.choice.name == "big"
    assert any("does not fit" in r for r in alone.reasons)


def test_pinned_model_wins_if_it_can_do_the_task() -> None:
    cs = [cand("best", 0.95), cand("mine", 0.5)]
    s = select("asr", "quality", cs, pinned="mine")
    assert s.choice is not None and s.choice.name == "mine"
    assert "is pinned for 'asr'" in s.reasons[0]
    assert "not pinned" in s.runners_up[0][1]
    by_key = select("asr", "quality", [cand("mine", version=2), cand("mine", version=3)],
                    pinned="mine:2")
    assert by_key.choice is not None and by_key.choice.version == 2


def test_pinned_model_that_cannot_do_the_task_is_ignored_with_a_reason() -> None:
    cs = [cand("best", 0.95), cand("vad", tasks=("vad",))]
    s = select("asr", "quality", cs, pinned="vad")
    assert s.choice is not None and s.choice.name == "best"
    assert "cannot do 'asr'" in s.reasons[0]
    missing = select("asr", "quality", cs, pinned="ghost")
    assert "not installed" in missing.reasons[0]
    stored = select("asr", "quality", [cand("best"), cand("old", tier="storage")], pinned="old")
    assert stored.choice is not None and stored.choice.name == "best"
    assert "storage tier" in stored.reasons[0]


def test_hard_limits_exclude_with_reasons() -> None:
    cs = [cand("huge", 0.99, 10, mib=2000), cand("slow", 0.9, 500), cand("ok", 0.5, 20)]
    s = select("asr", "quality", cs, max_bytes=1000 * MiB, max_latency_ms=100)
    assert s.choice is not None and s.choice.name == "ok"
    why = dict((c.name, r) for c, r in s.runners_up)
    assert why["huge"] == "needs 2.0 GiB, over the limit of 1000.0 MiB"  # human units
    assert "500 ms, over the limit of 100 ms" in why["slow"]


def test_unknown_latency_passes_a_latency_limit() -> None:
    s = select("asr", "quality", [cand("new", 0.9, None)], max_latency_ms=50)
    assert s.choice is not None and s.choice.name == "new"


def test_tie_on_the_priority_goes_to_the_faster_then_by_name_and_version() -> None:
    s = select("asr", "quality", [cand("a", 0.8, 30), cand("b", 0.8, 10)])
    assert s.choice is not None and s.choice.name == "b"
    assert "but slower" in s.runners_up[0][1]
    s = select("asr", "quality", [cand("x", version=1), cand("x", version=2)])
    assert s.choice is not None and s.choice.version == 2


def test_bad_priority_is_an_error() -> None:
    with pytest.raises(ValueError, match="priority"):
        select("asr", "fastest", [cand("a")])


def test_deterministic_and_complete_on_random_sets() -> None:
    rng = random.Random(3)
    for _ in range(300):
        cs = [cand(f"m{i}", round(rng.random(), 2), rng.choice([None, 5.0, 20.0, 80.0]),
                   loaded=rng.random() < 0.3, fit=rng.choice(["now", "now", "evict", "no"]),
                   tier=rng.choice(["ram", "swap", "swap", "storage"]),
                   tasks=rng.choice([("asr",), ("asr", "vad"), ("vad",)]))
              for i in range(rng.randint(1, 16))]
        prio = rng.choice(["speed", "quality", "balanced"])
        a, b = select("asr", prio, cs), select("asr", prio, list(reversed(cs)))
        assert a == b
        able = [c for c in cs if "asr" in c.tasks]
        listed = ([a.choice] if a.choice else []) + [c for c, _ in a.runners_up]
        assert {c.name for c in listed} <= {c.name for c in able}
        assert len(listed) == min(len(able), 1 + MAX_RUNNERS_UP) or a.choice is None
        if a.choice is not None:
            assert a.choice.tier != "storage"
            fitting = [c for c in able if c.fits_now and c.tier != "storage"]
            assert a.choice.fits_now or not fitting


def test_manual_mode_answers_only_with_the_pin() -> None:
    cs = [cand("best", 0.95), cand("mine", 0.5)]
    s = select("asr", "quality", cs, pinned="mine", mode="manual")
    assert s.choice is not None and s.choice.name == "mine" and s.mode == "manual"
    none = select("asr", "quality", cs, mode="manual")
    assert none.choice is None and "no model is pinned" in none.reasons[0]
    gone = select("asr", "quality", cs, pinned="ghost", mode="manual")
    assert gone.choice is None and "manual mode: no answer" in gone.reasons[0]
    stored = select("asr", "quality", [cand("best"), cand("old", tier="storage")],
                    pinned="old", mode="manual")
    assert stored.choice is None and "storage tier" in stored.reasons[0]


def test_hybrid_falls_back_and_auto_ignores_pins() -> None:
    cs = [cand("best", 0.95), cand("old", 0.5, tier="storage")]
    hybrid = select("asr", "quality", cs, pinned="old", mode="hybrid")
    assert hybrid.choice is not None and hybrid.choice.name == "best"
    assert "choosing automatically" in hybrid.reasons[0]
    auto = select("asr", "quality", [cand("best", 0.95), cand("mine", 0.5)], pinned="mine",
                  mode="auto")
    assert auto.choice is not None and auto.choice.name == "best"
    with pytest.raises(ValueError, match="mode"):
        select("asr", "quality", cs, mode="magic")


def test_fits_now_beats_fits_after_evicting_beats_does_not_fit() -> None:
    cs = [cand("nofit", 0.99, fit="no"), cand("evict", 0.9, fit="evict"),
          cand("now", 0.5, fit="now")]
    s = select("asr", "quality", cs)
    assert s.choice is not None and s.choice.name == "now"
    why = dict((c.name, r) for c, r in s.runners_up)
    assert why["evict"] == "fits only after evicting idle models"
    assert why["nofit"] == "does not fit in memory now"
    s2 = select("asr", "quality", cs[:2])
    assert s2.choice is not None and s2.choice.name == "evict"
    assert any("after evicting" in r for r in s2.reasons)


def test_unknown_latencies_tie_and_the_smaller_model_wins_for_speed() -> None:
    cs = [cand("big", 0.5, None, mib=300), cand("small", 0.5, None, mib=20)]
    s = select("asr", "speed", cs)
    assert s.choice is not None and s.choice.name == "small"
    assert "as fast as small:1" in s.runners_up[0][1] and "larger" in s.runners_up[0][1]
    assert dict(s.scores) == {"small:1": 0.0, "big:1": 0.0}


def test_a_model_that_cannot_load_is_never_chosen_and_says_why() -> None:
    broken = Candidate(name="best", version=1, tasks=("asr",), quality=0.99, latency_ms=1.0,
                       footprint_bytes=MiB, loaded=False, fit="now", tier="swap",
                       problem="its artifact is missing from the store")
    s = select("asr", "quality", [broken, cand("ok", 0.5)])
    assert s.choice is not None and s.choice.name == "ok"
    assert dict((c.name, r) for c, r in s.runners_up)["best"] == (
        "cannot load: its artifact is missing from the store")


def test_runners_up_are_capped_and_the_rest_counted() -> None:
    cs = [cand(f"m{i:02d}", quality=i / 100) for i in range(30)]
    s = select("asr", "quality", cs)
    assert s.choice is not None and s.choice.name == "m29"
    assert [c.name for c, _ in s.runners_up] == [f"m{i:02d}" for i in range(28, 18, -1)]
    assert "19 more models can do 'asr'" in s.reasons[-1]

"""The event bus: bounded history for late subscribers, following, filtering, falling behind."""

from __future__ import annotations

import threading
import time

from edged.manager.events import EventBus


def test_history_is_bounded_and_late_subscribers_see_the_newest() -> None:
    bus = EventBus(history=5)
    for i in range(12):
        bus.publish("load", f"m{i}", 1)
    recent = bus.recent()
    assert [e.seq for e in recent] == [8, 9, 10, 11, 12]
    assert [e.model for e in bus.recent(since_seq=10)] == ["m10", "m11"]
    assert list(bus.subscribe(follow=False)) == recent  # no "dropped" notice for history


def test_filter_by_kind_and_details_are_strings() -> None:
    bus = EventBus()
    bus.publish("load", "a", 1, "ok", pid=42)
    bus.publish("reject", "b", 2, "too big", needed_bytes=10, budget_bytes=5)
    rej = bus.recent(kinds=frozenset({"reject"}))
    assert [e.model for e in rej] == ["b"]
    assert rej[0].details == {"needed_bytes": "10", "budget_bytes": "5"}


def test_follow_sees_new_events_and_ends_on_close() -> None:
    bus = EventBus()
    bus.publish("install", "a", 1)
    got: list[str] = []

    def follow() -> None:
        for ev in bus.subscribe(since_seq=1, follow=True, poll_s=0.05):
            got.append(ev.kind)

    th = threading.Thread(target=follow)
    th.start()
    time.sleep(0.1)
    bus.publish("load", "a", 1)
    bus.publish("evict", "a", 1)
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    bus.close()
    th.join(5)
    assert not th.is_alive() and got == ["load", "evict"]


def test_a_subscriber_that_falls_behind_is_told_how_many_it_missed() -> None:
    bus = EventBus(history=3)
    bus.publish("load", "a", 1)
    stream = bus.subscribe(follow=False)
    assert next(stream).seq == 1
    for i in range(6):  # seq 2..7; the history now keeps 5, 6, 7
        bus.publish("load", f"m{i}", 1)
    rest = list(bus.subscribe(since_seq=1, follow=False))
    assert rest[0].kind == "events_dropped" and rest[0].details == {"dropped": "3"}
    assert [e.seq for e in rest[1:]] == [5, 6, 7]


def test_stream_stops_when_the_rpc_is_cancelled() -> None:
    bus = EventBus()
    active = [True]
    out: list[int] = []

    def follow() -> None:
        for ev in bus.subscribe(follow=True, is_active=lambda: active[0], poll_s=0.05):
            out.append(ev.seq)

    th = threading.Thread(target=follow)
    th.start()
    bus.publish("load", "a", 1)
    time.sleep(0.1)
    active[0] = False
    th.join(2)
    assert not th.is_alive() and out == [1]


def test_every_published_kind_is_a_known_kind() -> None:
    """``edgectl events --kind`` refuses kinds outside ``KINDS``: each kind the code publishes
    must be listed there (a literal first argument of ``.publish(``)."""
    import re
    from pathlib import Path

    from edged.manager import events

    root = Path(events.__file__).resolve().parent.parent
    found = set()
    for path in root.rglob("*.py"):
        text = path.read_text()
        found |= set(re.findall(r"\.publish\(\s*\"([a-z_]+)\"", text))
        found |= set(re.findall(r"\.publish\(\s*\"[a-z_]+\" if \w+ else \"([a-z_]+)\"", text))
    assert {"load", "preload", "reject", "repaired"} <= found
    assert found <= events.KINDS, found - events.KINDS


def test_unknown_kinds_are_refused() -> None:
    import pytest

    from edged import errors as e
    from edged.manager.events import EventBus

    bus = EventBus()
    with pytest.raises(e.InvalidArgument) as info:
        bus.subscribe(kinds=frozenset({"bogus"}), follow=False)
    assert "bogus" in str(info.value) and info.value.field == "kinds"
    with pytest.raises(e.InvalidArgument):
        bus.recent(kinds=frozenset({"lod"}))

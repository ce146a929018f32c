"""Traces: the JSONL reader's errors, the writer, the bounded recorder, and the generator."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edged.manager.memory.traces import (
    ModelCost,
    TraceEntry,
    TraceError,
    TraceRecorder,
    read_models,
    read_trace,
    write_models,
    write_trace,
)

REPO = Path(__file__).resolve().parents[2]


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    entries = [TraceEntry(1.0, "vad"), TraceEntry(1.5, "asr", 0.25, 3),
               TraceEntry(1.5, "ocr.det", None, 1)]
    path = tmp_path / "t.jsonl"
    assert write_trace(path, entries) == 3
    assert read_trace(path) == entries
    assert json.loads(path.read_text().splitlines()[1]) == {
        "t": 1.5, "model": "asr", "duration": 0.25, "version": 3}


@pytest.mark.parametrize(("line", "message"), [
    ("not json", "not JSON"),
    ("[1, 2]", "expected an object"),
    ('{"model": "a"}', "missing 't'"),
    ('{"t": "1", "model": "a"}', "'t' must be a finite number"),
    ('{"t": -1, "model": "a"}', "must not be negative"),
    ('{"t": 1, "model": "Bad Name"}', "'model' must be a model name"),
    ('{"t": 1, "model": "a", "duration": true}', "'duration' must be a finite number"),
    ('{"t": 1, "model": "a", "version": 0}', "'version' must be a positive integer"),
    ('{"t": 1, "model": "a", "extra": 1}', "unknown field(s) extra"),
    ('{"t": 0.5, "model": "a"}', "time goes backwards"),
])
def test_bad_lines_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"t": 1, "model": "a"}\n\n' + line + "\n")
    with pytest.raises(TraceError) as info:
        read_trace(path)
    assert f"{path} line 3" in str(info.value)
    assert message in str(info.value)


def test_models_file_round_trips_and_rejects_nonsense(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write_models(path, {"asr": ModelCost(300 << 20, 1.25), "vad": ModelCost(2 << 20, 0.04)})
    assert read_models(path) == {"asr": ModelCost(300 << 20, 1.25),
                                 "vad": ModelCost(2 << 20, 0.04)}
    path.write_text('{"asr": {"size_bytes": -1, "load_s": 1}}')
    with pytest.raises(TraceError, match="size_bytes must be a positive integer"):
        read_models(path)
    path.write_text('{"asr": {"size_bytes": 10}}')
    with pytest.raises(TraceError, match="load_s"):
        read_models(path)
    path.write_text("{\n  oops")
    with pytest.raises(TraceError, match="line 2"):
        read_models(path)


def test_recorder_appends_and_rotates_when_full(tmp_path: Path) -> None:
    path = tmp_path / "traces" / "live.jsonl"
    with TraceRecorder(path, max_bytes=200) as rec:
        for i in range(20):
            rec.record("asr", 2, 100.0 + i, 0.01)
    rotated = path.with_name("live.jsonl.1")
    assert rotated.exists() and path.exists()
    assert path.stat().st_size <= 200 and rotated.stat().st_size <= 200
    kept = read_trace(rotated) + read_trace(path)
    assert [e.t for e in kept] == sorted(e.t for e in kept)
    assert kept[-1] == TraceEntry(119.0, "asr", 0.01, 2)


def test_recorder_continues_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    with TraceRecorder(path, max_bytes=10_000) as rec:
        rec.record("vad", None, 1.0)
    with TraceRecorder(path, max_bytes=10_000) as rec:
        rec.record("vad", None, 2.0)
    assert [e.t for e in read_trace(path)] == [1.0, 2.0]
    with pytest.raises(ValueError):
        TraceRecorder(path, max_bytes=0)


def _generate(tmp_path: Path, name: str, *extra: str) -> tuple[Path, Path]:
    out, models = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.models.json"
    subprocess.run([sys.executable, str(REPO / "tools" / "gen_trace.py"), "--seed", "7",
                    "--duration", "1200", "--out", str(out), "--models-out", str(models),
                    *extra], check=True, capture_output=True, cwd=REPO)
    return out, models


def test_recorder_is_thread_safe_and_writes_in_arrival_order(tmp_path: Path) -> None:
    """Many request threads, overlapping requests that finish out of order, and rotation
    under them: every line lands whole, each file reads back in time order."""
    import random
    import threading

    path = tmp_path / "live.jsonl"
    rec = TraceRecorder(path, max_bytes=4000)
    clock = iter(range(1, 1_000_000))
    clock_lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(200):
            with clock_lock:
                t = float(next(clock))
            ticket = rec.start(t)
            for _ in range(rng.randint(0, 50)):
                pass  # a request of some length, so others overtake it
            rec.finish(ticket, f"m{seed}", 1, rng.random())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    rec.close()
    kept = read_trace(path.with_name("live.jsonl.1")) + read_trace(path)  # both in order
    assert kept and all(a.t <= b.t for a, b in itertools.pairwise(kept))
    assert path.stat().st_size <= 4000


def test_recorder_holds_back_until_earlier_requests_finish(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    with TraceRecorder(path, max_bytes=10_000) as rec:
        slow = rec.start(1.0)
        fast = rec.start(2.0)
        rec.finish(fast, "fast", 1, 0.01)
        assert not path.exists()  # the slow one that arrived first is still running
        rec.finish(slow, "slow", 1, 3.0)
        never = rec.start(3.0)
        assert [e.model for e in read_trace(path)] == ["slow", "fast"]
        del never  # a request that never finishes does not hold back close()


def test_generator_is_seeded_realistic_and_readable(tmp_path: Path) -> None:
    a, models = _generate(tmp_path, "a")
    b, _ = _generate(tmp_path, "b")
    assert a.read_bytes() == b.read_bytes()  # same seed, same trace
    trace, sizes = read_trace(a), read_models(models)
    assert len(trace) > 1000
    assert {e.model for e in trace} <= set(sizes)
    assert trace[0].t >= 9 * 3600  # the simulated clock starts at 09:00
    assert sizes["vad"].size_bytes == 2 << 20
    assert sizes["llm"].size_bytes == 1536 << 20 and sizes["llm"].load_s > 5
    seq = [e.model for e in trace if e.model in ("asr", "llm")]
    pairs = sum(1 for x, y in itertools.pairwise(seq) if (x, y) == ("asr", "llm"))
    assert pairs >= seq.count("asr") * 0.8  # the conversation sequence is there


def test_generator_shift_changes_the_routine(tmp_path: Path) -> None:
    path, _ = _generate(tmp_path, "s", "--shift", "--routine", "0.8")
    trace = read_trace(path)
    half = trace[0].t + 600

    def rate(model: str, second: bool) -> int:
        return sum(1 for e in trace if e.model == model and (e.t >= half) == second)

    assert rate("localize", True) > 2 * rate("localize", False)  # every 10 s instead of 30
    assert rate("ocr.det", True) > rate("ocr.det", False)


def test_generator_help_documents_the_knobs() -> None:
    out = subprocess.run([sys.executable, str(REPO / "tools" / "gen_trace.py"), "--help"],
                         check=True, capture_output=True, text=True, cwd=REPO).stdout
    for knob in ("--seed", "--shift", "--routine", "--bursts-per-hour", "--oneoffs-per-hour",
                 "--noise", "--start-hour", "--periodic-scale", "conversation"):
        assert knob in out

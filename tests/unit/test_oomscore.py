"""oom_score_adj is only ever raised: on a fake procfs tree, and on a real child process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edged.oomscore import raise_oom_score, read_oom_score


def _fake_proc(tmp_path: Path, pid: str, value: int) -> Path:
    (tmp_path / pid).mkdir()
    (tmp_path / pid / "oom_score_adj").write_text(f"{value}\n")
    return tmp_path


def test_raises_self_on_a_fake_proc(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, "self", -500)
    assert raise_oom_score(proc_root=proc) == 500
    assert read_oom_score(proc_root=proc) == 500


def test_never_lowers(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, "42", 800)
    assert raise_oom_score(42, 500, proc_root=proc) == 800
    assert (proc / "42" / "oom_score_adj").read_text() == "800\n"


@pytest.mark.parametrize("score", [-1001, 1001])
def test_out_of_range(tmp_path: Path, score: int) -> None:
    with pytest.raises(ValueError, match="oom_score_adj must be in"):
        raise_oom_score(proc_root=_fake_proc(tmp_path, "self", 0), score=score)


def test_real_child_process() -> None:
    """What the daemon would do for a worker it spawned: the kernel takes the new value."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        before = read_oom_score(child.pid)
        target = min(1000, max(before, 0) + 300)
        assert raise_oom_score(child.pid, target) == target
        assert read_oom_score(child.pid) == target
        assert raise_oom_score(child.pid, before) == target  # not lowered
    finally:
        child.kill()
        child.wait()


def test_real_self_in_a_subprocess() -> None:
    """A process raises its own score (as an engine worker does first thing)."""
    code = ("from edged.oomscore import raise_oom_score, read_oom_score; "
            "before = read_oom_score(); raise_oom_score(score=700); "
            "print(before, read_oom_score())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    before, after = map(int, out.split())
    assert after == max(before, 700)

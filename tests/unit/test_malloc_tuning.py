"""The daemon's malloc settings: set what the environment does not, through a fake libc; the
real glibc accepts them; the trimmer trims only after growth."""

from __future__ import annotations

import ctypes
from pathlib import Path

from edged import malloc_tuning as mt


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.trims = 0

    def mallopt(self, param: ctypes.c_int, value: ctypes.c_int) -> int:
        self.calls.append((param.value, value.value))
        return 1

    def gnu_get_libc_version(self) -> bytes:
        return b"2.36"

    def malloc_trim(self, pad: ctypes.c_size_t) -> int:
        self.trims += 1
        return 1


def test_sets_arena_max_and_a_fixed_mmap_threshold() -> None:
    libc = FakeLibc()
    done = mt.apply({}, libc)  # type: ignore[arg-type]
    assert libc.calls == [(mt.M_ARENA_MAX, 2), (mt.M_MMAP_THRESHOLD, 1 << 20)]
    assert done == {"MALLOC_ARENA_MAX": 2, "MALLOC_MMAP_THRESHOLD_": 1 << 20}


def test_the_environment_wins() -> None:
    libc = FakeLibc()
    done = mt.apply({"MALLOC_ARENA_MAX": "4"}, libc)  # type: ignore[arg-type]
    assert libc.calls == [(mt.M_MMAP_THRESHOLD, 1 << 20)]
    assert "MALLOC_ARENA_MAX" not in done


def test_real_glibc_accepts_them() -> None:
    assert mt.apply({}) == {"MALLOC_ARENA_MAX": 2, "MALLOC_MMAP_THRESHOLD_": 1 << 20}


def test_trimmer_trims_after_growth_only(tmp_path: Path) -> None:
    statm = tmp_path / "statm"
    statm.write_text("1000 1000 0 0 0 0 0\n")
    libc = FakeLibc()
    trim = mt.Trimmer(libc, min_growth=1 << 20, statm=str(statm))  # type: ignore[arg-type]
    assert trim() is False and libc.trims == 0
    statm.write_text(f"2000 {1000 + (2 << 20) // trim._page} 0 0 0 0 0\n")
    assert trim() is True and libc.trims == 1
    assert trim() is False  # no growth since that trim

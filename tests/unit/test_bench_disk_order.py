"""bench/disk_order.py reads real files both ways and reports what it measured; it says when
dropping the page cache did not work, since its numbers then measure memory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # bench/ is a package of the checkout, not installed
    sys.path.insert(0, str(REPO))

from bench import disk_order  # noqa: E402

MB = 1 << 20


def test_reads_every_file_both_ways_smallest_first_one_at_a_time(tmp_path: Path) -> None:
    sizes = [3 * MB, 1 * MB, 2 * MB + 5]  # one not a multiple of the read size
    r = disk_order.measure(tmp_path, sizes, repeats=2)
    assert len(r.side_by_side) == len(r.one_at_a_time) == 2
    for trial in (*r.side_by_side, *r.one_at_a_time):
        assert len(trial.done_s) == 3 and min(trial.done_s) > 0.0
        assert trial.all_s == max(trial.done_s)
    for trial in r.one_at_a_time:  # one after another, the smallest first: 1 MB, 2 MB, 3 MB
        assert trial.done_s[1] < trial.done_s[2] < trial.done_s[0]
    assert r.cold_s > 0.0 and r.warm_s > 0.0
    assert list(tmp_path.iterdir()) == []  # the files are gone


def test_the_section_says_when_the_cache_was_not_dropped(tmp_path: Path) -> None:
    trial = disk_order.Trial([0.1, 0.3], 0.3)
    r = disk_order.Result([MB, 2 * MB], cold_s=0.01, warm_s=0.01, side_by_side=[trial],
                          one_at_a_time=[disk_order.Trial([0.05, 0.2], 0.2)])
    text = disk_order.section(r, tmp_path).markdown()
    assert "measure memory, not the storage" in text
    assert "| mean completion, side by side | info | 0.200 s |" in text
    assert "0.125 s (0.62x side by side)" in text
    assert "0.200 s (15 MB/s; 0.67x side by side)" in text
    r.cold_s = 0.05
    assert "measure memory" not in disk_order.section(r, tmp_path).markdown()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        disk_order.main(["--dir", str(tmp_path), "--scale", "0"])
    assert e.value.code == 2

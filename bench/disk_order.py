"""The disk's order, measured on real storage: model files read side by side against one at a
time, the shortest first.

    .venv/bin/python -m bench.disk_order --dir /var/lib/edged [--scale 1] [--repeats 3]
    .venv/bin/python -m bench --only disk_order        # small files in the checkout's folder

``bench/replay_results.md``'s "disk's order" section replays the robot traces with the disk
given whole to the load most waited on (``tools/replay.py --loader ordered``) and finds 26-48%
less stall on a saturated disk, for every policy. That replay assumes loads side by side share
the disk's speed equally and add up to one load's speed. Real storage may differ: an NVMe
drive can read faster with several requests in flight, eMMC or an SD card may read slower
when two files are read at once (seeks, smaller requests). Whether the daemon should order its
disk reads (the reads ordered, the session building left parallel) turns on which: this
measures the read part on the storage it runs on, the session building not included.

Each trial writes the files once (sizes of the trace generator's largest models, times
``--scale``), then, ``--repeats`` times, alternating: drop them from the page cache
(``posix_fadvise(DONTNEED)`` after ``fsync``), read them all at once in a thread each, drop
again, read them one at a time, smallest first (with every load waited on by one request, the
order that minimizes the mean wait on one server). It reports the medians of the mean
completion time (what a request waiting on each load feels, on average) and of the time until
the last one is done (throughput), both ways. First it checks that dropping the cache works
here: a read after the drop must take clearly longer than one from the cache, or the numbers
say nothing about the storage (a virtual disk cached on its host, as on the dev machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import REPO, Section

MB = 1 << 20
# the trace generator's largest models (tools/gen_trace.py's CATALOG): clip, segment, asr,
# depth, tts, detect, reid; the 1.5 GiB LLM is left out, so that one trial reads 1.6 GB
SIZES_MB = (600, 380, 290, 200, 180, 90, 45)
CHUNK = 8 * MB  # one read call (the size ONNX Runtime's file reads are of the same order)
COLD_OVER_WARM = 1.5  # a cold read at least this much slower than a cached one: the drop works


@dataclass
class Trial:
    """One way of reading the files: seconds from the start until each file was read (in
    the order of ``sizes``), and until all were."""

    done_s: list[float]
    all_s: float

    @property
    def mean_s(self) -> float:
        return statistics.mean(self.done_s)


@dataclass
class Result:
    sizes: list[int]
    cold_s: float  # one file read after dropping it from the page cache
    warm_s: float  # the same file read again, from the cache
    side_by_side: list[Trial]
    one_at_a_time: list[Trial]

    @property
    def cache_dropped(self) -> bool:
        return self.cold_s >= COLD_OVER_WARM * self.warm_s

    def median(self, trials: Sequence[Trial], what: str) -> float:
        return statistics.median(t.mean_s if what == "mean" else t.all_s for t in trials)


def write_files(folder: Path, sizes: Sequence[int]) -> list[Path]:
    """Files of ``sizes`` bytes of random data (nothing a file system could compress or
    deduplicate), synced to the storage."""
    paths = []
    block = os.urandom(CHUNK)
    for i, size in enumerate(sizes):
        path = folder / f"model-{i}.bin"
        with path.open("wb") as f:
            left = size
            while left > 0:
                left -= f.write(block[:min(left, CHUNK)])
            f.flush()
            os.fsync(f.fileno())
        paths.append(path)
    return paths


def drop_cache(paths: Sequence[Path]) -> None:
    """Ask the kernel to forget the files' pages (clean after ``write_files``' fsync), so the
    next read comes from the storage: the way to do it without root (``drop_caches``)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_all(path: Path, buf: bytearray) -> None:
    with path.open("rb", buffering=0) as f:
        view = memoryview(buf)
        while f.readinto(view):
            pass


def side_by_side(paths: Sequence[Path]) -> Trial:
    """Every file read at once, a thread each, as the daemon's loads run today."""
    done = [0.0] * len(paths)
    start = threading.Barrier(len(paths) + 1)
    t0 = 0.0

    def reader(i: int) -> None:
        buf = bytearray(CHUNK)
        start.wait()
        read_all(paths[i], buf)
        done[i] = time.perf_counter() - t0

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    return Trial(done, max(done))


def one_at_a_time(paths: Sequence[Path], sizes: Sequence[int]) -> Trial:
    """The files read one after another, the smallest first."""
    buf = bytearray(CHUNK)
    done = [0.0] * len(paths)
    t0 = time.perf_counter()
    for i in sorted(range(len(paths)), key=lambda j: (sizes[j], j)):
        read_all(paths[i], buf)
        done[i] = time.perf_counter() - t0
    return Trial(done, max(done))


def measure(folder: Path, sizes: Sequence[int], repeats: int) -> Result:
    """Write the files under ``folder``, read them both ways ``repeats`` times, remove them."""
    with tempfile.TemporaryDirectory(dir=folder, prefix="edged-disk-order-") as tmp:
        paths = write_files(Path(tmp), sizes)
        buf = bytearray(CHUNK)
        biggest = paths[max(range(len(sizes)), key=lambda i: sizes[i])]
        drop_cache([biggest])
        t = time.perf_counter()
        read_all(biggest, buf)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        read_all(biggest, buf)
        warm = time.perf_counter() - t
        shared, ordered = [], []
        for _ in range(repeats):  # alternating, so that drift in the storage hits both
            drop_cache(paths)
            shared.append(side_by_side(paths))
            drop_cache(paths)
            ordered.append(one_at_a_time(paths, sizes))
    return Result(list(sizes), cold, warm, shared, ordered)


def section(r: Result, folder: Path) -> Section:
    total = sum(r.sizes) / MB
    sec = Section(
        "The disk's order: model files read side by side or one at a time",
        method=f"{len(r.sizes)} files of {', '.join(f'{s / MB:.0f}' for s in r.sizes)} MB "
               f"({total:.0f} MB) on the file system of `{folder}`, dropped from the page cache "
               f"before each read; medians of {len(r.side_by_side)} trials of each, "
               "alternating. Mean completion is what a request waiting on each file would "
               "wait on average; all done is the time until the last file is read. "
               "`bench/disk_order.py` says why (the replay's `--loader ordered`).")
    if not r.cache_dropped:
        sec.add("the page cache dropped", f"a cold read >= {COLD_OVER_WARM}x a cached one",
                f"cold {r.cold_s:.3f} s, cached {r.warm_s:.3f} s", None,
                "**no**: a cache below this kernel's (a host's?) answered, so the rows below "
                "measure memory, not the storage")
    shared_mean, ordered_mean = r.median(r.side_by_side, "mean"), r.median(r.one_at_a_time,
                                                                           "mean")
    shared_all, ordered_all = r.median(r.side_by_side, "all"), r.median(r.one_at_a_time, "all")
    sec.add("mean completion, side by side", "info", f"{shared_mean:.3f} s", None)
    sec.add("mean completion, one at a time, smallest first", "info",
            f"{ordered_mean:.3f} s ({ordered_mean / shared_mean:.2f}x side by side)", None)
    sec.add("all done, side by side", "info",
            f"{shared_all:.3f} s ({total / shared_all:.0f} MB/s)", None)
    sec.add("all done, one at a time", "info",
            f"{ordered_all:.3f} s ({total / ordered_all:.0f} MB/s; "
            f"{ordered_all / shared_all:.2f}x side by side)", None)
    sec.add("one file, cold / from the page cache", "info",
            f"{r.cold_s:.3f} s / {r.warm_s:.3f} s", None)
    return sec


def run(quick: bool) -> Section:
    """``python -m bench``'s section: the checkout's own file system, small files."""
    scale = 0.05 if quick else 0.25
    sizes = [int(s * MB * scale) for s in SIZES_MB]
    return section(measure(REPO, sizes, 1 if quick else 3), REPO)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=REPO,
                   help="a folder on the storage to measure (the daemon's state directory's)")
    p.add_argument("--scale", type=float, default=1.0, help="the files' sizes times this")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.scale <= 0 or args.repeats < 1:
        p.error("--scale must be > 0 and --repeats >= 1")
    sizes = [max(1, int(s * MB * args.scale)) for s in SIZES_MB]
    print(section(measure(args.dir, sizes, args.repeats), args.dir).markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())

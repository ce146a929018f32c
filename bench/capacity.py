"""Capacity safety under a simulated 8 GB device, and scale (200 installed, 20 loaded, 50 clients).

Why: the SPEC promises that edged refuses what does not fit instead of letting the kernel kill
the robot, and that it keeps serving many clients and models without failures or leaks. Both are
claims about sequences nobody wrote down, so part 1 drives the real daemon with a seeded random
mix of loads, inferences, unloads, tier moves and dry runs (in small concurrent bursts, as several
robot processes would) and compares two memories against the budget all along: what the daemon
accounts (tier used bytes from Status) and what the engine worker processes really hold (RSS
summed by psutil, sampled every 50 ms and after every step, so load-time transients count).
A refusal must be a clean ``RESOURCE_EXHAUSTED`` carrying the numbers; anything else is a failure.
Part 2 measures the scale row on the Unix socket (the local "loopback" a robot uses).
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.common import Section, ms, percentiles

MiB = 1 << 20
RAM, SWAP = "ram", "swap"  # the tiers whose budgets hold loaded models


def workers(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def memory_by_worker(pid: int) -> dict[int, tuple[int, int]]:
    """RSS and RssAnon + RssShmem of every process below the daemon (the engine workers). The
    second leaves out file-backed pages (shared libraries, mmapped weights) that the kernel can
    drop or shares: it is what cannot be reclaimed."""
    out = {}
    for p in workers(pid):
        try:
            fields = dict(line.split(":", 1) for line in
                          Path(f"/proc/{p.pid}/status").read_text().splitlines() if ":" in line)
            kb = {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "RssAnon", "RssShmem")}
            out[p.pid] = (kb["VmRSS"], kb["RssAnon"] + kb["RssShmem"])
        except (OSError, KeyError, ValueError):
            pass  # a worker that just ended holds nothing
    return out


def worker_memory(pid: int) -> int:
    return sum(rss for rss, _ in memory_by_worker(pid).values())


def first_exception(log: str) -> str:
    """The exception line of the first traceback after an 'unexpected error' in the daemon log
    (an Internal error's details say only 'see the daemon log', which the bench deletes)."""
    lines = log.splitlines()
    start = next((i for i, line in enumerate(lines) if "unexpected error" in line), None)
    if start is None:
        return ""
    for line in lines[start + 1:]:
        if line and not line[0].isspace() and not line.startswith("Traceback"):
            return line[:200]
    return lines[start][:200]


class Peaks:
    """Peak accounted and measured memory, from a 25 ms sampler and explicit ``sample()``s (a
    load's transient lasts ~100 ms: a slower sampler would miss it)."""

    def __init__(self, client: Any, pid: int) -> None:
        self.c, self.pid = client, pid
        self.accounted = self.rss = self.anon = 0
        self.tier_peak = {RAM: 0, SWAP: 0}
        self.tier_measured = {RAM: 0, SWAP: 0}  # anon+shmem of the tier's workers (swap: and
        # of workers not in Status's loaded list yet)
        self.over: list[str] = []  # Status snapshots where a tier's used bytes passed its budget
        self.samples = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        st = self.c.status()
        tiers = [t for t in st.tiers if t.tier in (RAM, SWAP)]
        mem = memory_by_worker(self.pid)
        rss, anon = sum(m[0] for m in mem.values()), sum(m[1] for m in mem.values())
        in_ram = {m.worker_pid for m in st.loaded if m.tier == RAM and m.worker_pid}
        ram = sum(m[1] for p, m in mem.items() if p in in_ram)
        with self._lock:
            self.tier_measured[RAM] = max(self.tier_measured[RAM], ram)
            self.tier_measured[SWAP] = max(self.tier_measured[SWAP], anon - ram)
            self.accounted = max(self.accounted, sum(t.used_bytes for t in tiers))
            self.rss, self.anon = max(self.rss, rss), max(self.anon, anon)
            for t in tiers:
                self.tier_peak[t.tier] = max(self.tier_peak[t.tier], t.used_bytes)
                if t.used_bytes > t.budget_bytes and len(self.over) < 3:
                    snap = (f"{t.tier} used {t.used_bytes / MiB:.0f} > "
                            f"{t.budget_bytes / MiB:.0f} MiB with " + ", ".join(
                                f"{m.name} {m.tier or '?'} {m.state or '?'} "
                                f"{m.footprint_bytes / MiB:.0f}" for m in st.loaded))
                    if snap not in self.over:
                        self.over.append(snap)
            self.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(0.025):
            self.sample()

    def __enter__(self) -> Peaks:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(10)


def safety(sec: Section, quick: bool) -> None:
    import modelgen
    from daemon_harness import DaemonProcess

    from edged import errors as e

    # quick: the same 8 GiB device with its model tiers scaled down ~6x, so that it runs in seconds
    sizes = [15, 30, 50, 80, 120] if quick else [50, 80, 120, 160, 200, 260, 320, 400, 500,
                                                600]
    ram_pct, swap_pct, steps = ("1%", "3.5%", 8) if quick else ("4%", "21%", 70)
    budgets = {"memory_total": "8GiB", "reserve": "1GiB", "ram": ram_pct, "swap": swap_pct}
    d = DaemonProcess({"budgets": budgets}).start()
    rng = random.Random(20261201)
    counts = {"requests": 0, "ok": 0, "rejected": 0}
    unclean: list[str] = []
    tier_of: dict[str, str] = {}  # model -> its tier (RAM, SWAP)
    t_start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(dir="/tmp") as tmp, d.client() as c, \
                ThreadPoolExecutor(3) as pool:
            for mb in sizes:
                p = modelgen.big_weights_model(Path(tmp) / f"w{mb}.onnx", mb * MiB)
                c.install(f"w{mb}", p, extra_files=[p.with_name(p.name + ".data")])
                tier_of[f"w{mb}"] = SWAP
            tiers = {t.tier: t.budget_bytes for t in c.status().tiers}
            budget = tiers[RAM] + tiers[SWAP]
            small = [n for n in tier_of if int(n[1:]) * MiB < tiers[RAM]]
            clients = [d.client() for _ in range(3)]
            x = np.ones((1, 64), np.float32)

            def op(k: int) -> Callable[[], Any]:
                cl, name = clients[k], rng.choice(list(tier_of))
                r = rng.random()
                if r < 0.45:
                    return lambda: cl.infer(name, {"x": x})
                if r < 0.65:
                    return lambda: cl.load(name)
                if r < 0.80:
                    swap = [n for n, t in tier_of.items() if t == SWAP]
                    name = rng.choice(swap)
                    return lambda: cl.unload(name)
                if r < 0.92 and small:
                    name = rng.choice(small)
                    to = "swap" if tier_of[name] == RAM else "ram"

                    def move() -> Any:
                        try:
                            tier_of[name] = cl.set_tier(name, to).tier
                        except e.CapacityExceeded:
                            now = cl.get_model(name).tier  # a refused move must change nothing
                            if now != tier_of[name]:
                                unclean.append(f"set_tier {name} -> {to} refused, yet tier "
                                               f"is now {now}")
                                tier_of[name] = now
                            raise
                    return move
                return lambda: cl.check(name)

            lock = threading.Lock()

            def tally(key: str) -> None:
                with lock:
                    counts[key] += 1

            def guarded(fn: Callable[[], Any]) -> None:
                tally("requests")
                try:
                    fn()
                    tally("ok")
                except e.CapacityExceeded as exc:
                    if exc.needed_bytes > 0 and exc.budget_bytes > 0:
                        tally("rejected")
                    else:
                        unclean.append(f"CapacityExceeded without numbers: {exc}")
                except Exception as exc:  # noqa: BLE001 - anything else is an unclean failure
                    unclean.append(f"{type(exc).__name__}: {exc}"[:200])

            with Peaks(c, d.proc.pid if d.proc else 0) as peaks:
                for _ in range(steps):
                    burst = [op(k) for k in range(rng.choice((1, 1, 2, 3)))]
                    for f in [pool.submit(guarded, fn) for fn in burst]:
                        f.result()
                    peaks.sample()
            for cl in clients:
                cl.close()
            events = [ev.kind for ev in c.events()]
    finally:
        d.stop()
        cause = first_exception(d.log_path.read_text(errors="replace")) if unclean else ""
        d.cleanup()
    took = time.perf_counter() - t_start
    sec.tables.append(
        f"Capacity safety setup: simulated device budgets.memory_total 8 GiB, reserve 1 GiB, ram "
        f"{ram_pct} / swap {swap_pct} of the remaining 7 GiB = ram {tiers[RAM] / MiB:.0f} MiB + "
        f"swap {tiers[SWAP] / MiB:.0f} MiB = {budget / MiB:.0f} MiB of model budget (scaled down "
        f"from the real 8 GB split so the box's other users keep their RAM). {len(sizes)} "
        f"generated models of {', '.join(map(str, sizes))} MB (sum {sum(sizes)} MB); seeded "
        f"random sequence of {steps} bursts of 1-3 concurrent requests (infer 45%, load 20%, "
        f"unload 15%, tier move ram<->swap for models under the ram budget 12%, check 8%) from "
        f"3 clients; preloading on (default). {peaks.samples} memory samples (every 25 ms and "
        f"after every burst) in {took:.0f} s "
        f"(total incl. generation and installs). Events: {events.count('load')} loads, "
        f"{events.count('evict')} evictions, {events.count('reject')} rejects, "
        f"{events.count('preload')} preloads.")
    sec.add("peak accounted memory (ram + swap tier used) vs model budget", "<= budget",
            f"{peaks.accounted / MiB:.0f} MiB of {budget / MiB:.0f} MiB", peaks.accounted <= budget,
            "Status tiers used_bytes, models in every load state")
    sec.add("peak accounted memory per tier vs its budget", "each <= its budget",
            f"ram {peaks.tier_peak[RAM] / MiB:.0f} of {tiers[RAM] / MiB:.0f} MiB, swap "
            f"{peaks.tier_peak[SWAP] / MiB:.0f} of {tiers[SWAP] / MiB:.0f} MiB", not peaks.over,
            "; ".join(peaks.over)[:700] + (" (model tier state MiB)" if peaks.over else ""))
    sec.add("peak measured worker memory, anonymous + shmem (unreclaimable)", "<= budget",
            f"{peaks.anon / MiB:.0f} MiB of {budget / MiB:.0f} MiB", peaks.anon <= budget,
            "sum of RssAnon + RssShmem of the engine workers")
    meas = peaks.tier_measured
    sec.add("peak measured memory per tier (anon + shmem of its workers)", "each <= its budget",
            f"ram {meas[RAM] / MiB:.0f} of {tiers[RAM] / MiB:.0f} MiB, swap "
            f"{meas[SWAP] / MiB:.0f} of {tiers[SWAP] / MiB:.0f} MiB",
            meas[RAM] <= tiers[RAM] and meas[SWAP] <= tiers[SWAP],
            "workers matched to tiers by Status's worker_pid; swap also counts workers not "
            "listed yet (starting)")
    sec.add("peak measured worker memory, sum of RSS", "info",
            f"{peaks.rss / MiB:.0f} MiB of {budget / MiB:.0f} MiB", None,
            "not a target: RSS adds file-backed pages the kernel can drop and re-read (shared "
            "libraries, counted once per worker though they are in RAM once, and the weights "
            "file ONNX Runtime maps while it loads); the budget holds the anonymous memory above")
    sec.add("requests / ok / clean capacity rejections / unclean errors", "0 unclean",
            f"{counts['requests']} / {counts['ok']} / {counts['rejected']} / {len(unclean)}",
            not unclean,
            (f"daemon log: {cause}; " if cause else "") + "; ".join(sorted(set(unclean)))[:400]
            or "rejections: CapacityExceeded with numbers")


def scale(sec: Section, quick: bool) -> None:
    import modelgen
    from daemon_harness import DaemonProcess

    installed, loaded, clients, secs = (10, 3, 10, 1.5) if quick else (200, 20, 50, 20.0)
    single_n = 200 if quick else 1500
    d = DaemonProcess({}).start()
    pid = d.proc.pid if d.proc else 0
    x = np.ones((1, 4), np.float32)
    try:
        with tempfile.TemporaryDirectory() as tmp, d.client() as c:
            for i in range(installed):
                c.install(f"m{i:03d}", modelgen.add_model(Path(tmp) / f"m{i}.onnx",
                                                          offset=float(i)), tasks=["demo"])
            names = [f"m{i:03d}" for i in range(loaded)]
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(c.load, names))
            rng = random.Random(1)
            single = [0.0] * single_n
            for i in range(single_n + 50):
                t = time.perf_counter()
                c.infer(rng.choice(names), {"x": x})
                if i >= 50:
                    single[i - 50] = time.perf_counter() - t
            lat: list[list[float]] = [[] for _ in range(clients)]
            fails: list[str] = []
            stop, measure = threading.Event(), threading.Event()
            period = [0.0]  # 0: back-to-back (closed loop); else each client's request period

            def client(k: int) -> None:
                r = random.Random(k)
                with d.client() as cl:
                    while not stop.is_set():
                        t = time.perf_counter()
                        try:
                            cl.infer(r.choice(names), {"x": x})
                            if measure.is_set():
                                lat[k].append(time.perf_counter() - t)
                        except Exception as exc:  # noqa: BLE001 - every one is a failed request
                            fails.append(f"{type(exc).__name__}: {exc}"[:160])
                        if period[0]:  # a robot's rate, jittered so clients do not align
                            time.sleep(max(0.0, period[0] * r.uniform(0.5, 1.5)
                                           - (time.perf_counter() - t)))

            threads = [threading.Thread(target=client, args=(k,), daemon=True)
                       for k in range(clients)]
            for th in threads:
                th.start()
            time.sleep(1.0)  # warm-up: channels connected, server thread pool grown
            daemon = psutil.Process(pid)
            rss0, wrk0 = daemon.memory_info().rss, worker_memory(pid)
            measure.set()
            t0 = time.perf_counter()
            time.sleep(secs)
            measure.clear()
            dt = time.perf_counter() - t0
            rss1, wrk1 = daemon.memory_info().rss, worker_memory(pid)
            closed = [v for per in lat for v in per]
            # the same clients at a robot's pace: 40% of what the box served back-to-back
            period[0] = clients / (0.4 * len(closed) / dt)
            for per in lat:
                per.clear()
            time.sleep(1.0)
            measure.set()
            time.sleep(secs)
            measure.clear()
            paced = [v for per in lat for v in per]
            stop.set()
            for th in threads:
                th.join(60)
            st = c.status()
    finally:
        d.stop()
        d.cleanup()
    s50, s99 = percentiles(single)
    flat = closed
    m50, m99 = percentiles(flat)
    p50, p99 = percentiles(paced)
    growth = (rss1 - rss0) / MiB
    sec.tables.append(
        f"Scale setup: {installed} tiny generated models installed ({st.models_installed} per "
        f"Status), {loaded} loaded in the swap tier (default budgets, {len(st.loaded)} loaded at "
        f"the end), preloading on (default). Single-client baseline: n={single_n} sequential "
        f"requests on random loaded models. Then {clients} client threads in one process, each "
        f"with its own channel to the Unix socket, back-to-back requests on random loaded models "
        f"for {dt:.1f} s after a 1 s warm-up. The box has {psutil.cpu_count()} cores, so 50 "
        f"clients queue and the 50-client p99 is mostly queueing (and the client process's GIL).")
    sec.add(f"failed requests, {clients} clients x {loaded} models", "0",
            f"{len(fails)} of {len(flat) + len(fails)}", not fails,
            "; ".join(sorted(set(fails)))[:400])
    sec.add(f"p99 {clients} clients vs single-client p99", "<= 3x single",
            f"{ms(m99)} vs {ms(s99)} = {m99 / s99:.2f}x", m99 <= 3 * s99,
            f"p50 {ms(m50)} vs {ms(s50)}; n={len(flat)} vs n={single_n}; "
            f"throughput {len(flat) / dt:.0f} req/s vs single {1 / np.mean(single):.0f} req/s; "
            f"Little's law: {clients} clients / throughput = {ms(clients * dt / len(flat))} "
            f"mean latency whatever the server does")
    sec.add(f"p99 {clients} clients at a robot's pace vs single-client p99", "<= 3x single",
            f"{ms(p99)} vs {ms(s99)} = {p99 / s99:.2f}x", p99 <= 3 * s99,
            f"each client every {period[0] * 1e3:.0f} ms (jittered 0.5-1.5x): "
            f"{len(paced) / secs:.0f} req/s in all, 40% of the back-to-back throughput; "
            f"p50 {ms(p50)}; n={len(paced)}")
    sec.add(f"daemon RSS growth over the {dt:.0f} s run", "< 10 MB",
            f"{growth:+.1f} MiB ({rss0 / MiB:.0f} -> {rss1 / MiB:.0f} MiB)", growth < 10,
            f"workers (sum of RSS) {wrk0 / MiB:.0f} -> {wrk1 / MiB:.0f} MiB")


def run(quick: bool) -> Section:
    sec = Section("Capacity safety (8 GB device budget) and scale (200 installed, 20 loaded, "
                  "50 clients)",
                  method="Real daemon over the Unix socket; setups below the table. "
                         "Quick mode scales the capacity part's tiers and models down ~3x, and "
                         "the scale part installs 50 models (not 200) and runs 5 s (not 20 s).")
    safety(sec, quick)
    scale(sec, quick)
    return sec

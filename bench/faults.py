"""Faults against the real daemon, counting what was tried and what was lost (target: nothing).

SPEC "faults": a SIGKILLed engine worker fails only its in-flight request and every other model
keeps serving; a daemon SIGKILLed at any point of an install or a switch restarts into the old
or the new store. The issue adds a full disk during install and a corrupt artifact in the store.
Counted against a case: lost models or data, failed requests on healthy models, files left
behind, and errors that are not the SPEC's status with a message (INTERNAL, a hang).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO, Section, ms, percentiles
from bench.latency import demo_inputs
from edged import errors as e
from edged.manager.catalog.fsck import fsck
from edged.manager.catalog.manifests import Manifests, render

# The crash-consistency test's mechanism (the store's and the manifests' crash hooks), armed in
# the real daemon: once the arm file exists, hook call number N SIGKILLs the daemon itself.
WRAPPER = """
import os, signal, sys
from edged.manager.catalog import manifests, store
calls, at = [0], int(os.environ["FAULTS_CRASH_AT"])
def hook(point):
    if os.path.exists(os.environ["FAULTS_ARM"]):
        calls[0] += 1
        with open(os.environ["FAULTS_TRACE"], "a") as f:
            f.write(point + "\\n")
        if calls[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)
for cls in (store.Store, manifests.Manifests):
    def init(self, *a, _orig=cls.__init__, **kw):
        _orig(self, *a, **kw)
        self.crash_hook = hook
    cls.__init__ = init
from edged.daemon import main
sys.exit(main(sys.argv[1:]))
"""
CFG: dict[str, Any] = {"preload": {"enabled": False}}  # no background loads: stable manifests
MODELS = REPO / "models"
FILES = {"vad": "silero-vad", "rec": "ppocr-rec", "cls": "ppocr-cls", "det": "ppocr-det"}
FEEDS = {n: demo_inputs()[f][0] for n, f in FILES.items()} | {"m": {"x": np.ones((1, 4),
                                                                              np.float32)}}
WARM = {n: demo_inputs()[f][1] for n, f in FILES.items()}  # dynamic dims need warm-up shapes


def daemons() -> tuple[Any, Any]:
    """The harness's DaemonProcess, and one that runs the daemon with armed crash hooks."""
    from daemon_harness import DaemonProcess

    class Armed(DaemonProcess):  # type: ignore[misc]
        def command(self) -> list[str]:
            return [sys.executable, "-c", WRAPPER, *super().command()[3:]]

    return DaemonProcess, Armed


def attempt(fn: Callable[[], object]) -> e.EdgedError | None:
    try:
        fn()
        return None
    except e.EdgedError as exc:
        return exc


def clean(err: e.EdgedError | None, *codes: e.Code) -> bool:
    """The status the SPEC names for this fault, with a message and no stack trace."""
    return err is not None and err.code in codes and bool(err.message) and \
        "Traceback" not in err.message


def view(c: Any) -> tuple[Any, ...]:
    """What a client sees of the store: models, tiers, versions with their sha256, active."""
    return tuple((m.name, m.active_version, m.tier, tuple((v.version, v.sha256, v.tier)
                                                          for v in m.versions))
                 for m in c.list_models())


def snapshot(c: Any, state: Path) -> tuple[Any, ...]:
    """The client's view plus the manifests as rendered on disk (install clock masked)."""
    texts = {t: re.sub(r"installed_at: '?[^,}\n]*'?", "installed_at: T", s)
             for t, s in render(Manifests(state).load()).items()}
    return view(c), tuple(sorted(texts.items()))


def leftovers(state: Path) -> set[str]:
    """Interrupted writes and orphan blobs a failed operation should not leave behind."""
    refs = {v.sha256 for m in Manifests(state).load().models.values() for v in m.versions.values()}
    return ({f"tmp/{p.name[:15]}" for p in (state / "tmp").iterdir() if p.name != "downloads"}
            | {f"tiers.d/{p.name}" for p in (state / "tiers.d").iterdir() if p.name[0] == "."}
            | {f"orphan {p.name[:12]}" for p in (state / "store").iterdir() if p.name not in refs})


def serve(c: Any, names: list[str], n: int = 1) -> list[str]:
    """Failures of n inferences on each model; m must answer with its active version."""
    out = []
    for name in [x for x in names for _ in range(n)]:
        try:
            y = c.infer(name, FEEDS[name])
            if name == "m" and not np.allclose(y["y"], 1 + c.get_model("m").active_version):
                out.append("m: wrong version served")
        except e.EdgedError as exc:
            out.append(f"{name}: {exc.code.value} {exc.message[:50]}")
    return out


def rec_loop(c: Any, box: dict[str, Any], ran: threading.Event, done: threading.Event) -> None:
    """Back-to-back ppocr-rec requests (~50 ms each) until told to stop or one fails."""
    while not done.is_set():
        if (err := attempt(lambda: c.infer("rec", FEEDS["rec"], timeout=25))) is not None:
            box["err"] = err
            return
        ran.set()


def worker_kills(sec: Section, c: Any, k: int) -> None:
    """SIGKILL ppocr-rec's worker with a rec request in flight, k times, while two threads
    hammer silero-vad (its own worker): one clean failure per kill, silero loses nothing."""
    stop, vad_ok, vad_fail = threading.Event(), [0], []

    def hammer() -> None:
        while not stop.is_set():
            err = attempt(lambda: c.infer("vad", FEEDS["vad"]))
            vad_ok.append(1) if err is None else vad_fail.append(f"{err.code.value}: {err}")

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    notes, hit, good, back_s = set(), 0, 0, []
    for _ in range(k + 3):  # a kill can fall between two requests: then try again
        pid, ran, done = c.get_model("rec").loaded.worker_pid, threading.Event(), threading.Event()
        box: dict[str, e.EdgedError] = {}
        th = threading.Thread(target=rec_loop, args=(c, box, ran, done))
        th.start()
        ran.wait(30)
        time.sleep(random.uniform(0.005, 0.03))
        os.kill(pid, signal.SIGKILL)
        done.set()
        th.join(30)
        if not th.is_alive() and "err" not in box:
            serve(c, ["rec"])  # nothing was in flight: restart it, then try again
            continue
        hit, err = hit + 1, box.get("err")
        good += clean(err, e.Code.UNAVAILABLE, e.Code.INTERNAL)
        notes.add("HANG" if err is None else re.sub(r"pid \d+", "pid N", err.message[:70]))
        t0 = time.perf_counter()
        back = c.get_model("rec").loaded if not serve(c, ["rec"]) else None
        if back is not None and back.worker_pid not in (0, pid):
            back_s.append(time.perf_counter() - t0)
        if hit == k:
            break
    stop.set()
    for t in threads:
        t.join()
    sec.add(f"worker SIGKILL mid-request (ppocr-rec), {hit} kills", "clean failure, restarts",
            f"{good}/{hit} failed cleanly, {len(back_s)}/{hit} served again (p50 "
            f"{ms(percentiles(back_s)[0])})", hit == good == len(back_s) == k, "; ".join(notes))
    sec.add("silero-vad during the kills (2 threads)", "0 failed",
            f"{len(vad_fail)} failed of {len(vad_ok) + len(vad_fail)}", not vad_fail,
            "; ".join(sorted(set(vad_fail)))[:200])


def fill(state: Path, leave: int) -> Path:
    """Fill the state dir's file system to ``leave`` bytes free (0: until a write fails)."""
    path, fd = state / "filler", os.open(state / "filler", os.O_CREAT | os.O_WRONLY)
    try:
        os.posix_fallocate(fd, 0, max(1, shutil.disk_usage(state).free - leave))
        os.lseek(fd, 0, os.SEEK_END)
        while leave == 0:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return path


def raw_install(c: Any, name: str, path: Path) -> None:
    """A streamed install that announces no size (the proto allows it): the daemon learns of
    the full disk only when a write fails."""
    import grpc

    from edged.hashing import sha256_file
    from edged.rpc_errors import from_rpc_error
    from edged.v1 import models_pb2 as mpb

    data, hdr = path.read_bytes(), c._header(name, warmup_shapes=WARM[name])  # noqa: SLF001
    reqs = [mpb.InstallRequest(header=hdr),
            mpb.InstallRequest(file=mpb.InstallFile(path=path.name, sha256=sha256_file(path)))]
    reqs += [mpb.InstallRequest(chunk=data[i:i + (1 << 20)]) for i in range(0, len(data), 1 << 20)]
    try:
        c.models.Install(iter(reqs), timeout=60)
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from None


def full_disk(sec: Section, c: Any, state: Path, tmpfs: bool, everyone: list[str]) -> None:
    """Installs and a switch on a full disk: a clean RESOURCE_EXHAUSTED, every installed model
    intact and serving (also while the disk is full, cls unloaded first so it must load), and
    nothing left behind."""
    det, before = MODELS / "ppocr-det.onnx", view(c)
    switched = tuple((n, 1 if n == "m" else a, t, vs) for n, a, t, vs in before)
    cases = [("streamed install, size announced", 2 << 20,
              lambda: c.install("det", det, warmup_shapes=WARM["det"])),
             ("install from a path on the device", 2 << 20,
              lambda: c.install_from("det", str(det), warmup_shapes=WARM["det"])),
             ("streamed install, no size announced", 2 << 20, lambda: raw_install(c, "det", det)),
             ("version switch, disk 100% full", 0, lambda: c.activate("m", 1))]
    rows = ["| full-disk case | error | while full | after freeing | left behind |",
            "| --- | --- | --- | --- | --- |"]
    unclean, failed, dirty, lost, seen = 0, 0, 0, 0, leftovers(state)
    for what, leave, action in cases if tmpfs else cases[:2]:
        filler = fill(state, leave) if tmpfs else None
        err = attempt(action)
        attempt(lambda: c.unload("cls"))
        during = serve(c, everyone)
        if filler is not None:
            filler.unlink()
        rep, after, now = fsck(state, deep=True), serve(c, everyone), leftovers(state)
        intact = view(c) in ((before, switched) if err is None else (before,)) and \
            not rep.corrupt and not rep.manifest_error
        if err is None and leave == 0:
            c.activate("m", 2)  # the switch fitted: back to the state the next case expects
        unclean += not (clean(err, e.Code.RESOURCE_EXHAUSTED) or (err is None and leave == 0))
        failed, dirty, lost = failed + len(during + after), dirty + bool(now - seen), \
            lost + (not intact)
        rows.append(f"| {what} | {err.code.value + ': ' + err.message[:60] if err else 'none'} "
                    f"| {'; '.join(during) or 'all serve'} | {'intact' if intact else 'LOST'}, "
                    f"{'; '.join(after) or 'all serve'} | {', '.join(sorted(now - seen)) or '-'} |")
        seen = now
    err = attempt(lambda: c.install("det", det, warmup_shapes=WARM["det"]))
    healed = "" if err is None and not (fails := serve(c, ["det"])) else \
        f"{err.code.value}: {err.message[:80]}" if err else fails[0]
    sec.add(f"full disk during install / switch, {len(rows) - 2} cases" +
            ("" if tmpfs else " (no tmpfs: the disk_reserve knob)"), "clean error, 0 lost",
            f"{unclean} unclean errors, {failed} failed requests, {dirty} left files, {lost} "
            "lost", unclean == failed == dirty == lost == 0 and not healed,
            f"after freeing, det {'fails: ' + healed if healed else 'installs and serves'}")
    sec.tables.append("\n".join(rows))


def flip(path: Path, keep_mtime: bool = False) -> None:
    """One bit in the middle of the weights: ONNX Runtime would load the file happily."""
    st, raw = path.stat(), bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 1
    with path.open("r+b") as f:
        f.write(raw)
    if keep_mtime:  # bit rot on flash does not touch the inode
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def corrupt(sec: Section, d: Any, state: Path, everyone: list[str]) -> Any:
    """Corrupt installed blobs, live and across a restart: each must be refused with DATA_LOSS
    on infer and on load, never served; the others keep serving; fsck names each one; and a
    reinstall (what the error tells the user to do) must serve again. Returns the daemon."""
    rows = ["| corrupt case | infer | load | others |", "| --- | --- | --- | --- |"]
    bad: list[str] = []
    got: list[tuple[bool, bool, int, int]] = []

    def blob(c: Any, name: str) -> Path:
        m = c.get_model(name)
        sha: str = next(v.sha256 for v in m.versions if v.version == m.active_version)
        return state / "store" / sha / "model.onnx"

    def probe(c: Any, name: str, what: str) -> None:
        err, lerr = attempt(lambda: c.infer(name, FEEDS[name])), attempt(lambda: c.load(name))
        others = serve(c, [x for x in everyone if x not in bad], 10)
        got.append((clean(err, e.Code.DATA_LOSS) and clean(lerr, e.Code.DATA_LOSS),
                    err is None, len(others), 10 * (len(everyone) - len(bad))))
        rows.append(f"| {name}: {what} | {err.code.value if err else 'SERVED'} | "
                    f"{lerr.code.value if lerr else 'LOADED'} | {'; '.join(others) or 'serve'} |")

    with d.client(timeout=60) as c:
        for name, what, keep in (("cls", "live, one bit flipped", False),
                                 ("rec", "live, bit rot (size and mtime kept)", True)):
            c.unload(name)  # a loaded engine runs from memory: corrupt what the next load reads
            flip(blob(c, name), keep_mtime=keep)
            bad.append(name)
            probe(c, name, what)
        m_blob = blob(c, "m")
    d.stop()
    os.truncate(m_blob, m_blob.stat().st_size - 100)
    bad.append("m")
    d = type(d)(d.config, root=d.root).start()
    with d.client(timeout=60) as c:
        for name in bad:
            probe(c, name, "after a restart" + (", truncated" if name == "m" else ""))
        res = subprocess.run([sys.executable, "-m", "edged", "--state-dir", str(state), "fsck",
                              "--json"], capture_output=True, text=True, check=False, cwd=REPO)
        named = [x for x in bad if any(f" {x}:" in y for y in json.loads(res.stdout)["corrupt"])]
        again = attempt(lambda: c.install("cls", MODELS / "ppocr-cls.onnx",
                                          warmup_shapes=WARM["cls"])) or attempt(
            lambda: c.infer("cls", FEEDS["cls"]))
    refused, served, other, calls = (sum(x) for x in zip(*got, strict=True))
    sec.add(f"corrupt artifact in the store, {len(got)} probes", "refused, never served",
            f"{refused}/{len(got)} refused with DATA_LOSS, {served} served corrupt",
            refused == len(got) and not served)
    sec.add("other models while corrupt ones are refused", "0 failed",
            f"{other} failed of {calls}", other == 0)
    sec.add("`edged fsck` on the corrupt store", "names each, exit 1",
            f"names {len(named)}/{len(bad)} ({', '.join(named)}), exit {res.returncode}",
            len(named) == len(bad) and res.returncode == 1)
    sec.add("reinstall of the corrupt model (its error says so)", "serves again",
            f"still refused: {again.code.value}" if again else "serves", again is None)
    sec.tables.append("\n".join(rows))
    return d


def on_one_daemon(sec: Section, work: Path, k: int) -> None:
    """Worker kills, full disk, corrupt store on one daemon whose state dir is a 40 MiB tmpfs
    (a real full disk; without mount rights the disk_reserve knob stands in for it)."""
    import modelgen

    state, setup = work / "main" / "state", [n for n in FILES if n != "det"]
    state.mkdir(parents=True)
    tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(state)],
                           capture_output=True, check=False).returncode == 0
    room = sum((MODELS / f"{FILES[n]}.onnx").stat().st_size for n in setup) + (3 << 20)
    reserve = 1 << 20 if tmpfs else shutil.disk_usage(state).free - room
    d = daemons()[0]({**CFG, "budgets": {"disk_reserve": reserve}}, root=state.parent)
    try:
        with d.start().client(timeout=60) as c:
            for name in setup:
                c.install(name, MODELS / f"{FILES[name]}.onnx", warmup_shapes=WARM[name])
            for i in (1, 2):
                c.install("m", modelgen.add_model(work / f"m{i}.onnx", offset=float(i)))
            everyone = [*setup, "m"]
            assert not (fails := serve(c, everyone)), f"setup does not serve: {fails}"
            worker_kills(sec, c, k)
            full_disk(sec, c, state, tmpfs, everyone)
        d = corrupt(sec, d, state, everyone)
        d.stop()
    finally:
        d.kill()
        if tmpfs:
            subprocess.run(["umount", str(state)], check=False)


def crash_sweep(sec: Section, work: Path, quick: bool) -> None:
    """SIGKILL the daemon at the crash points of an install and of a switch (quick: the middle
    one of each; full: every one, plus kills from outside through a streamed 10.9 MB install),
    restart it on the same state dir: exactly the old or the new state, fsck ok, and it serves
    the active version."""
    import modelgen

    from edged.engines.base import detect_format, inspect
    from edged.manager.catalog.catalog import Catalog
    from edged.manager.catalog.store import Store

    plain, armed = daemons()
    src = [modelgen.add_model(work / f"v{i}.onnx", offset=float(i)) for i in (1, 2, 3)]
    base = work / "base" / "state"  # built offline, as the crash-consistency test does
    store = Store(base, detect_format=detect_format)
    (manifests := Manifests(base, blob_exists=store.has)).load()
    cat = Catalog(store, manifests, inspect=lambda p, f: inspect(p, f))
    for p in src[:2]:
        cat.install("m", store.put_file(p))
    ops: dict[str, Callable[[Any], object]] = {
        "install": lambda c: c.install("m", src[2]), "switch": lambda c: c.activate("m", 1),
        "install-rec": lambda c: c.install("rec", MODELS / "ppocr-rec.onnx")}
    roots = iter(work / f"r{i}" for i in range(1000))

    def fresh() -> Path:
        shutil.copytree(base, (root := next(roots)) / "state", symlinks=True)
        return root

    def crash(op: str, at: int) -> tuple[Path, bool, tuple[Any, ...]]:
        """Run op in an armed daemon; at 0 (no crash) also return (old, new, seconds)."""
        root = fresh()
        d = armed(CFG, root=root, env={"FAULTS_CRASH_AT": str(at), "FAULTS_ARM": str(
            root / "arm"), "FAULTS_TRACE": str(root / "trace")}).start()
        with d.client() as c:
            old, t0 = snapshot(c, d.state_dir), time.perf_counter()
            (root / "arm").touch()
            err = attempt(lambda: ops[op](c))
            ref = (old, snapshot(c, d.state_dir), time.perf_counter() - t0) if not err else ()
        try:
            d.proc.wait(0 if err is None else 5)
        except subprocess.TimeoutExpired:
            d.stop()
            return root, False, ref
        d.stop(expect_clean=False)
        with contextlib.suppress(ProcessLookupError):  # workers it may have left in its group
            os.killpg(d.proc.pid, signal.SIGKILL)
        return root, True, ref

    def check(root: Path, old: Any, new: Any, tally: list[str]) -> str:
        """Restart on root; '' when it came up in the old or new state, else what is wrong."""
        try:
            (d := plain(CFG, root=root)).start()
        except (RuntimeError, TimeoutError) as exc:  # a daemon that cannot restart
            d.kill()
            tally.append("dead")
            return f"no restart: {str(exc).splitlines()[0][:80]}"
        with d.client() as c:
            seen, wrong = snapshot(c, d.state_dir), serve(c, ["m"])
        d.stop()
        rep, state = fsck(d.state_dir, deep=True), {old: "old", new: "new"}.get(seen)
        tally.append(state or "third")
        return (" ".join(wrong) + ("" if rep.ok else rep.describe().replace("\n", " ")) +
                ("" if state else " a third state")).strip()

    def row(what: str, tally: list[str], notes: list[str], extra: str) -> None:
        sec.add(f"daemon SIGKILL {what}, {len(tally)} kills", "old or new state",
                f"{len(tally) - len(notes)}/{len(tally)} consistent (fsck ok, serves)", not notes,
                "; ".join([extra, f"{tally.count('old')} old, {tally.count('new')} new", *notes]))

    tally: list[str] = []
    notes: list[str] = []
    extra: list[str] = []
    for op in ("install",) if quick else ("install", "switch"):  # --quick: one kill
        root, _, (old, new, _) = crash(op, 0)
        trace = (root / "trace").read_text().split()
        extra.append(f"{op}: {len(trace)} hook points")
        for at in [1 + len(trace) // 2] if quick else range(1, len(trace) + 1):
            root, died, _ = crash(op, at)
            if (why := check(root, old, new, tally)) or not died:
                notes.append(f"{op}@{trace[at - 1]}: {why or 'did not die'}")
    row("at crash points of install / switch", tally, notes, ", ".join(extra))
    if quick:
        return
    _, _, (old, new, took) = crash("install-rec", 0)
    tally, notes = [], []
    for frac in np.linspace(0.1, 1.1, 6):  # SIGKILL from outside, at a fraction of its time
        d = plain(CFG, root=fresh()).start()
        with d.client() as c:
            th = threading.Thread(target=attempt, args=(lambda c=c: ops["install-rec"](c),))
            th.start()
            time.sleep(frac * took)
            d.kill()
            th.join(30)
        if why := check(d.root, old, new, tally):
            notes.append(f"{frac:.1f}x: {why}")
    row("through a streamed 10.9 MB install", tally, notes, f"install took {ms(took)}")


def run(quick: bool) -> Section:
    started = time.perf_counter()
    sec = Section("Faults: SIGKILL, full disk, corrupt store")
    work = Path(tempfile.mkdtemp(prefix="edged-f-", dir="/tmp"))
    try:
        on_one_daemon(sec, work, 1 if quick else 5)
        crash_sweep(sec, work, quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sec.method = (f"Real daemons, {time.perf_counter() - started:.0f} s. Worker kills: SIGKILL "
                  "of ppocr-rec's worker with a request in flight while 2 threads call "
                  "silero-vad. Daemon kills: the crash-consistency test's store/manifest crash "
                  "hooks armed in the daemon (SIGKILL at hook N), restart on the same state "
                  "dir, client view and manifests compared with the old and the new state. "
                  "Full disk: the state dir is a 40 MiB tmpfs, filled with a file.")
    return sec

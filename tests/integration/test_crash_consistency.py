"""Kill -9 at every crash point of install, tier move, activate, rollback and remove: after a
restart the store and manifests are exactly the old state or the new one, and the daemon serves.

Two sweeps. In the first, each operation runs on ``Catalog`` in a child process on a copy of a
prepared state directory; the store's and the manifests' crash hooks ``os._exit(137)`` (what
SIGKILL leaves: no cleanup, no flush) at the Nth hook call, for N = 1, 2, ... until the
operation completes without reaching N. In the second, the real daemon runs with
``EDGED_CRASH_AT=POINT[:N]`` (``edged.manager.catalog.crashpoints``), so the same hooks SIGKILL the
daemon itself while a client drives install, activate, tier and remove over its socket; a
restarted daemon must come up in the old or the new state and serve the active version.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import modelgen
import pytest

from edged.engines.base import detect_format, inspect
from edged.manager.catalog.catalog import Catalog
from edged.manager.catalog.fsck import fsck
from edged.manager.catalog.manifests import Manifests, TierState, render
from edged.manager.catalog.store import Store

CHILD = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from edged.engines.base import detect_format, inspect
    from edged.manager.catalog.catalog import Catalog
    from edged.manager.catalog.manifests import Manifests
    from edged.manager.catalog.store import Store

    state, op = Path(sys.argv[1]), sys.argv[2]
    crash_at, model_dir = int(sys.argv[3]), Path(sys.argv[4])
    calls = [0]

    def hook(point):
        calls[0] += 1
        if calls[0] == crash_at:
            os._exit(137)

    store = Store(state, detect_format=detect_format, crash_hook=hook)
    manifests = Manifests(state, blob_exists=store.has, crash_hook=hook)
    manifests.load()
    cat = Catalog(store, manifests, inspect=lambda p, f: inspect(p, f))
    if op == "install":
        cat.install("m", store.put_file(model_dir / "v3.onnx"), tier="swap")
    elif op == "tier":
        cat.set_tier("m", "ram")
    elif op == "activate":
        cat.activate("m", 1)
    elif op == "rollback":
        cat.rollback("m")
    elif op == "remove":
        cat.remove("m", 1)
    print("completed")
""")

OPS = ["install", "tier", "activate", "rollback", "remove"]


def snapshot(state: Path) -> tuple[dict[str, str], frozenset[str]]:
    """What a restarted daemon sees: the manifests (rendered) and the verified blobs they use.

    Measurements (footprint, load time) are left out: the daemon records them after every
    load, which is bookkeeping, not the state an operation changes."""
    report = fsck(state, repair=True, deep=True, gc=True)  # an interrupted install's blob
    assert report.ok, report.describe()
    store = Store(state)
    current = Manifests(state, blob_exists=store.has).load()
    current = TierState({n: dataclasses.replace(m, versions={
        k: dataclasses.replace(v, measured_bytes=None, load_seconds=None)
        for k, v in m.versions.items()}) for n, m in current.models.items()})
    referenced = frozenset(v.store_id for m in current.models.values()
                           for v in m.versions.values())
    assert referenced == frozenset(store.blobs()), "orphan or missing artifacts after repair"
    # installed_at is the clock at install: equal states differ in it between two runs
    texts = {t: re.sub(r"installed_at: '?[^,}\n]*'?", "installed_at: T", text)
             for t, text in render(current).items()}
    return texts, referenced


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("crash")
    models = root / "models"
    for i in (1, 2, 3):
        modelgen.add_model(models / f"v{i}.onnx", offset=float(i))
    state = root / "base"
    store = Store(state, detect_format=detect_format)
    manifests = Manifests(state, blob_exists=store.has)
    manifests.load()
    cat = Catalog(store, manifests, inspect=lambda p, f: inspect(p, f))
    cat.install("m", store.put_file(models / "v1.onnx"), tier="swap")
    cat.install("m", store.put_file(models / "v2.onnx"), tier="swap")
    return state, models


def run_child(state: Path, op: str, crash_at: int, models: Path) -> bool:
    """True when the operation completed (no crash point left at this N)."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(state), op, str(crash_at),
                           str(models)], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode == 0:
        assert "completed" in proc.stdout
        return True
    assert proc.returncode == 137, proc.stderr
    return False


@pytest.mark.slow
def test_kill9_sweep_leaves_old_or_new_state(base: tuple[Path, Path], tmp_path: Path,
                                             daemon_factory) -> None:  # type: ignore[no-untyped-def]
    state0, models = base
    old = snapshot(_copy(state0, tmp_path / "old"))
    covered = 0
    for op in OPS:
        full = _copy(state0, tmp_path / f"{op}-full")
        assert run_child(full, op, 0, models)
        new = snapshot(full)
        assert new != old
        seen = set()
        for n in range(1, 30):
            work = _copy(state0, tmp_path / f"{op}-{n}")
            done = run_child(work, op, n, models)
            after = snapshot(work)
            assert after in (old, new), f"{op}: crash point {n} left a third state"
            seen.add(after == new)
            if done:
                break
            covered += 1
        assert seen == {False, True}, f"{op}: the sweep never saw both states"
    print(f"crash points covered: {covered}")
    assert covered >= 12
    # a daemon started on a crashed state directory serves it
    work = _copy(state0, tmp_path / "serve")
    run_child(work, "install", 2, models)
    d = daemon_factory()
    shutil.rmtree(d.state_dir, ignore_errors=True)
    shutil.copytree(work, d.state_dir, symlinks=True)
    d.start()
    with d.client() as c:
        assert [m.name for m in c.list_models()] == ["m"]
        assert c.infer("m", {"x": __import__("numpy").ones((1, 4), "float32")})["y"].shape == (1,
                                                                                              4)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


MANIFEST_POINTS = ["manifests.after_gen_write", "manifests.before_symlink_swap",
                   "manifests.after_symlink_swap"]
# op -> (what the client does, the crash points it passes, what the child does for "new").
# The tier move to ram loads the model before it commits, and that load records its
# measurement (a first commit): ":2" is the move's own commit.
DAEMON_OPS: dict[str, tuple[Callable[..., object], list[str]]] = {
    "install": (lambda c, models: c.install("m", models / "v3.onnx"),
                ["store.before_rename", "store.after_rename", *MANIFEST_POINTS]),
    "activate": (lambda c, models: c.activate("m", 1), MANIFEST_POINTS),
    "tier": (lambda c, models: c.set_tier("m", "ram"), [f"{p}:2" for p in MANIFEST_POINTS]),
    "remove": (lambda c, models: c.remove("m", 1), [*MANIFEST_POINTS, "store.before_remove"]),
}


@pytest.mark.slow
def test_sigkill_sweep_of_the_real_daemon(base: tuple[Path, Path], tmp_path: Path) -> None:
    """EDGED_CRASH_AT makes the daemon SIGKILL itself at each named point of an operation a
    client drives over the socket; a restart must show the old or the new state and serve."""
    import numpy as np
    from daemon_harness import DaemonProcess

    from edged.manager.catalog import crashpoints

    assert crashpoints.env_hook() is None  # inert without the variable
    state0, models = base
    old = snapshot(_copy(state0, tmp_path / "old"))
    started, covered = time.monotonic(), 0
    cfg = {"preload": {"enabled": False}}
    for op, (drive, points) in DAEMON_OPS.items():
        full = _copy(state0, tmp_path / f"d-{op}-full")
        assert run_child(full, op, 0, models)
        new = snapshot(full)
        seen = set()
        for i, point in enumerate(points):
            root = tmp_path / f"d-{op}-{i}"
            _copy(state0, root / "state")
            d = DaemonProcess(cfg, root=root, env={crashpoints.ENV: point}).start()
            try:
                with d.client(timeout=60) as c:
                    with pytest.raises(Exception):  # noqa: B017 - the daemon dies under it
                        drive(c, models)
                assert d.proc is not None and d.proc.wait(30) == -9, f"{op} at {point}"
            finally:
                d.kill()  # its workers too
            d2 = DaemonProcess(cfg, root=root).start()
            try:
                with d2.client() as c:
                    active = c.get_model("m").active_version
                    y = c.infer("m", {"x": np.ones((1, 4), np.float32)})["y"]
                    assert y[0, 0] == 1.0 + active, f"{op} at {point}: v{active} not served"
                d2.stop()
            finally:
                d2.kill()
            after = snapshot(root / "state")
            assert after in (old, new), f"{op}: crash at {point} left a third state"
            seen.add(after == new)
            covered += 1
        assert seen == {False, True}, f"{op}: the sweep never saw both states"
    print(f"daemon crash points covered: {covered} in {time.monotonic() - started:.1f}s")
    assert covered == sum(len(p) for _, p in DAEMON_OPS.values())

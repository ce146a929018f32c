"""Kill -9 at every crash point of install, tier move, activate, rollback and remove: after a
restart the store and manifests are exactly the old state or the new one, and the daemon serves.

Each operation runs in a child process on a copy of a prepared state directory; the store's
and the manifests' crash hooks ``os._exit(137)`` (what SIGKILL leaves: no cleanup, no flush) at
the Nth hook call, for N = 1, 2, ... until the operation completes without reaching N.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import modelgen
import pytest

from edged.engines.base import detect_format, inspect
from edged.manager.catalog import Catalog
from edged.manager.fsck import fsck
from edged.manager.manifests import Manifests, render
from edged.manager.store import Store

CHILD = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from edged.engines.base import detect_format, inspect
    from edged.manager.catalog import Catalog
    from edged.manager.manifests import Manifests
    from edged.manager.store import Store

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
    """What a restarted daemon sees: the manifests (rendered) and the verified blobs they use."""
    report = fsck(state, repair=True, deep=True)
    assert report.ok, report.describe()
    store = Store(state)
    current = Manifests(state, blob_exists=store.has).load()
    referenced = frozenset(v.sha256 for m in current.models.values()
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

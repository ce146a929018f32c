"""Nothing deletes a stored artifact implicitly (issue 14, items 1-3), through the real daemon:
an emptied or edited manifest and a restart lose no model file, a typo in a sha256 falls back,
an edit that drops models is reported and can be undone from the previous generation; version
numbers never leave their range; the storage budget is enforced."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import modelgen
import numpy as np
import pytest
import yaml

from edged import errors as e

MB = 1 << 20
X = {"x": np.zeros((1, 4), np.float32)}


def restart(d) -> None:  # type: ignore[no-untyped-def]
    d.stop()
    d._stopped = None  # noqa: SLF001 - start the same daemon again on its state dir
    d.start()


def blobs(d) -> set[str]:  # type: ignore[no-untyped-def]
    return {p.name for p in (d.state_dir / "store").iterdir() if p.is_dir()}


def edged_cmd(d, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "edged", "--config", str(d.config_path),
                           "--state-dir", str(d.state_dir), *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_an_emptied_manifest_loses_no_model(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        c.install("m", modelgen.add_model(tmp_path / "a.onnx", offset=3.0))
    before = blobs(daemon)
    (daemon.state_dir / "tiers" / "swap.yaml").write_text("")  # a truncated file
    restart(daemon)
    with daemon.client() as c:
        assert "the file is empty" in c.status().manifest_error
        assert c.infer("m", X)["y"][0, 0] == 3.0
    assert blobs(daemon) == before
    assert "removed" not in daemon.log()


def test_a_sha256_typo_falls_back_and_deletes_nothing(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        c.install("m", modelgen.add_model(tmp_path / "a.onnx", offset=4.0))
        sha = c.get_model("m").versions[0].sha256
    before = blobs(daemon)
    swap = daemon.state_dir / "tiers" / "swap.yaml"
    typo = sha[:-1] + ("0" if sha[-1] != "0" else "1")
    swap.write_text(swap.read_text().replace(sha, typo))
    restart(daemon)
    with daemon.client() as c:
        st = c.status()
        assert "rejected at start" in st.manifest_error and "swap.yaml" in st.manifest_error
        assert c.infer("m", X)["y"][0, 0] == 4.0
    assert blobs(daemon) == before
    assert list(daemon.state_dir.glob("swap.yaml.rejected-*"))


def test_an_edit_that_drops_a_model_is_reported_and_can_be_restored(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        c.install("keep", modelgen.add_model(tmp_path / "a.onnx", offset=1.0))
        c.install("gone", modelgen.add_model(tmp_path / "b.onnx", offset=2.0))
    before = blobs(daemon)
    swap = daemon.state_dir / "tiers" / "swap.yaml"
    doc = yaml.safe_load(swap.read_text())
    del doc["models"]["gone"]
    swap.write_text(yaml.safe_dump(doc))
    restart(daemon)
    with daemon.client() as c:
        assert [m.name for m in c.list_models()] == ["keep"]
        st = c.status()
        notes = " ".join(st.notes)
        assert "dropped 1 installed version(s) at start: gone:1" in notes, notes
        assert "artifact(s) that no manifest references are kept" in notes
        assert st.store.unreferenced_artifacts == 1 and st.store.unreferenced_bytes > 0
        assert any(ev.kind == "manifest_dropped" for ev in c.events())
    assert blobs(daemon) == before, "a start-up deleted an artifact"
    assert "dropped 1 installed version(s)" in daemon.log()
    status = subprocess.run([sys.executable, "-m", "edged.cli.main", "--target", daemon.target,
                             "status"], capture_output=True, text=True, timeout=60, check=False)
    assert "NOTE:" in status.stdout and "unreferenced artifact(s) kept" in status.stdout

    # the way back: the generation before the edit still lists it, even after more
    # commits than generations are kept for
    gen = int(re.search(r"generation (\d+) still lists them", st.notes[0]).group(1))
    with daemon.client() as c:
        for i in range(4):
            c.install(f"other{i}", modelgen.add_model(tmp_path / f"o{i}.onnx", offset=5.0 + i))
    gens = edged_cmd(daemon, "generations")
    assert gens.returncode == 0, gens.stdout + gens.stderr
    line = next(x for x in gens.stdout.splitlines() if x.strip().startswith(f"{gen}k"))
    assert "gone" in line, gens.stdout
    r = edged_cmd(daemon, "restore", str(gen))
    assert r.returncode == 0 and "put back gone:1" in r.stdout, r.stdout + r.stderr
    with daemon.client() as c:
        assert c.reload().ok
        assert sorted(m.name for m in c.list_models()) == [
            "gone", "keep", "other0", "other1", "other2", "other3"]  # later installs stay
        assert c.infer("gone", X)["y"][0, 0] == 2.0
        st = c.status()
        assert st.store.unreferenced_artifacts == 0 and not st.notes


def test_fsck_lists_unreferenced_artifacts_and_only_gc_deletes(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as c:
        c.install("gone", modelgen.add_model(tmp_path / "b.onnx", offset=2.0))
        art = c.get_model("gone").versions[0].sha256
    swap = daemon.state_dir / "tiers" / "swap.yaml"
    doc = yaml.safe_load(swap.read_text())
    del doc["models"]["gone"]
    swap.write_text(yaml.safe_dump(doc))
    restart(daemon)
    daemon.stop()
    for args in (("fsck",), ("fsck", "--repair")):
        r = edged_cmd(daemon, *args)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "kept 1 unreferenced artifact(s)" in r.stdout and art[:12] in r.stdout
        assert art in blobs(daemon)
    r = edged_cmd(daemon, "fsck", "--gc", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["collected"] and report["orphans"] == [art]
    assert art not in blobs(daemon)


def test_a_retention_the_operator_configured_deletes_old_unreferenced_artifacts(
        daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory({"install": {"unreferenced_retention_days": 1}}).start()
    with d.client() as c:
        c.install("gone", modelgen.add_model(tmp_path / "b.onnx", offset=2.0))
        art = c.get_model("gone").versions[0].sha256
    swap = d.state_dir / "tiers" / "swap.yaml"
    doc = yaml.safe_load(swap.read_text())
    del doc["models"]["gone"]
    swap.write_text(yaml.safe_dump(doc))
    restart(d)
    assert art in blobs(d)  # first seen now: kept for a day
    record = d.state_dir / "unreferenced.json"
    seen = json.loads(record.read_text())
    assert list(seen) == [art]
    record.write_text(json.dumps({art: seen[art] - 2 * 86400}))  # two days ago
    restart(d)
    assert art not in blobs(d)
    assert "unreferenced for more than 1 day(s)" in d.log()


def test_the_next_version_never_leaves_the_valid_range(client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    top = 2**31 - 1
    assert client.install("m", modelgen.add_model(tmp_path / "a.onnx"), version=top).version == top
    with pytest.raises(e.InvalidArgument, match="highest there can be") as info:
        client.install("m", modelgen.add_model(tmp_path / "b.onnx", offset=1.0))
    assert info.value.field == "version"
    assert [v.version for v in client.get_model("m").versions] == [top]
    assert client.install("m", modelgen.add_model(tmp_path / "b.onnx", offset=1.0),
                          version=7).version == 7


def test_installs_past_the_storage_budget_are_refused(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory({"budgets": {"storage": "12MiB"}, "preload": {"enabled": False}}).start()
    with d.client() as c:
        c.install("a", modelgen.weights_model(tmp_path / "a.onnx", 8 * MB, seed=1),
                  tier="storage")
        with pytest.raises(e.CapacityExceeded, match="storage budget") as info:
            c.install("b", modelgen.weights_model(tmp_path / "b.onnx", 8 * MB, seed=2))
        n = info.value.numbers
        assert n.tier == "storage" and n.budget_bytes == 12 * MB
        assert n.needed_bytes > 8 * MB and n.used_bytes > 8 * MB
        assert [m.name for m in c.list_models()] == ["a"]
        st = c.status()
        storage = next(t for t in st.tiers if t.tier == "storage")
        assert storage.used_bytes == st.store.installed_bytes > 8 * MB
        assert st.store.budget_bytes == 12 * MB
    assert len(blobs(d)) == 1  # the refused upload left nothing


def test_the_storage_tier_counts_what_it_holds(client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client.install("m", modelgen.weights_model(tmp_path / "a.onnx", 2 * MB, seed=1))
    st = client.status()
    storage = next(t for t in st.tiers if t.tier == "storage")
    assert storage.used_bytes == 0  # its only version is active in swap
    assert st.store.installed_bytes > 2 * MB
    client.install("m", modelgen.weights_model(tmp_path / "b.onnx", 2 * MB, seed=2))
    st = client.status()
    storage = next(t for t in st.tiers if t.tier == "storage")
    assert 2 * MB < storage.used_bytes < st.store.installed_bytes  # v1 is kept for rollback

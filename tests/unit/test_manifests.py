"""Tier manifests: atomic generations, hand edits validated with file, line and key, reloads
that keep the old state in force, and the store's refusal of bad artifacts."""

from __future__ import annotations

import os
from pathlib import Path

import modelgen
import pytest
import yaml

from edged import errors as e
from edged.engines.base import detect_format, inspect
from edged.manager.catalog.catalog import Catalog, budget_tier_check
from edged.manager.catalog.manifests import (
    TIERS,
    ManifestError,
    Manifests,
    TierState,
    parse,
    render,
)
from edged.manager.catalog.store import Store
from edged.manager.catalog.tier_yaml import _HEADER, _model_docs


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    store = Store(tmp_path / "state", detect_format=detect_format)
    manifests = Manifests(tmp_path / "state", blob_exists=store.has)
    manifests.load()
    cat = Catalog(store, manifests, inspect=lambda p, f: inspect(p, f),
                  tier_check=budget_tier_check(ram_budget=1 << 20, swap_budget=1 << 30))
    cat.install("adder", store.put_file(modelgen.add_model(tmp_path / "a.onnx")),
                quality=0.5, tasks=["demo"])
    return cat


def test_every_change_is_a_new_generation_behind_one_symlink(catalog: Catalog) -> None:
    state = catalog.store.root
    link = state / "tiers"
    assert link.is_symlink()
    before = os.readlink(link)
    catalog.set_tier("adder", "storage")
    after = os.readlink(link)
    assert before != after and after.startswith("tiers.d/gen-")
    assert "adder" in (link / "storage.yaml").read_text()
    assert "adder" not in (link / "swap.yaml").read_text()
    catalog.set_tier("adder", "swap")
    catalog.set_tier("adder", "storage")
    catalog.set_tier("adder", "swap")
    assert len(list((state / "tiers.d").iterdir())) <= 3  # old generations pruned


@pytest.mark.parametrize(("edit", "where"), [
    (lambda t: t.replace("quality: 0.5", "quality: lots"), "swap.yaml line"),
    (lambda t: t.replace("size_bytes:", "size_bites:"), "unknown key"),
    (lambda t: t.replace("sha256: ", "sha256: 0", 1), "must be 64 hex characters"),
    (lambda t: t.replace("active: 1", "active: 7"), "version 7 is not listed"),
    (lambda t: t.replace("tier: swap", "tier: ram"), "tier must be 'swap'"),
    (lambda t: t + "  bogus: [\n", "(yaml)"),
    (lambda t: t + "  ? [a, b]\n  : 1\n", "keys must be plain values"),
    (lambda t: t.replace("quality: 0.5", "quality: !!python/name:os.system"), "(yaml)"),
])
def test_bad_hand_edits_name_file_line_key(catalog: Catalog, edit, where: str) -> None:  # type: ignore[no-untyped-def]
    swap = catalog.store.root / "tiers" / "swap.yaml"
    good = swap.read_text()
    swap.write_text(edit(good))
    with pytest.raises(ManifestError) as info:
        catalog.reload()
    assert where in str(info.value)
    assert str(info.value).startswith("swap.yaml")
    assert catalog.get("adder").versions[1].quality == 0.5  # the old state stays in force


def test_line_numbers_are_exact(catalog: Catalog) -> None:
    swap = catalog.store.root / "tiers" / "swap.yaml"
    lines = swap.read_text().splitlines()
    n = next(i for i, line in enumerate(lines, 1) if "quality:" in line)
    swap.write_text(swap.read_text().replace("quality: 0.5", "quality: '0.5x'"))
    with pytest.raises(ManifestError) as info:
        catalog.reload()
    assert info.value.line == n and info.value.key.endswith("quality")


def test_a_valid_hand_edit_is_applied(catalog: Catalog) -> None:
    swap = catalog.store.root / "tiers" / "swap.yaml"
    swap.write_text(swap.read_text().replace("quality: 0.5", "quality: 0.9"))
    catalog.reload()
    assert catalog.get("adder").versions[1].quality == 0.9


def test_an_edit_pointing_at_a_missing_artifact_is_named(catalog: Catalog) -> None:
    sha = catalog.get("adder").versions[1].sha256
    swap = catalog.store.root / "tiers" / "swap.yaml"
    swap.write_text(swap.read_text().replace(sha, "ab" * 32))
    with pytest.raises(ManifestError) as info:
        catalog.reload()
    assert "abababababab" in str(info.value) and "not in the store" in str(info.value)
    assert catalog.get("adder").versions[1].sha256 == sha


def test_an_artifact_gone_behind_its_back_does_not_block_reloads(catalog: Catalog) -> None:
    """Not the edit's fault: reported by the manager (and refused at load), not a reload
    error that would block every other hand edit."""
    sha = catalog.get("adder").versions[1].sha256
    catalog.store.remove(sha)
    swap = catalog.store.root / "tiers" / "swap.yaml"
    swap.write_text(swap.read_text().replace("quality: 0.5", "quality: 0.6"))
    catalog.reload()
    assert catalog.get("adder").versions[1].quality == 0.6
    # and a start on that state does not fail either
    assert "adder" in Manifests(catalog.store.root, blob_exists=catalog.store.has).load().models


def test_ram_tier_must_fit_as_a_whole(catalog: Catalog, tmp_path: Path) -> None:
    big = catalog.store.put_file(modelgen.weights_model(tmp_path / "w.onnx", 2 << 20))
    with pytest.raises(e.CapacityExceeded) as info:
        catalog.install("big", big, tier="ram")
    assert info.value.numbers.tier == "ram"
    with pytest.raises(e.NotFound):
        catalog.get("big")
    assert big.sha256 not in catalog.store.blobs()  # nothing left behind


def test_store_refuses_disk_full_and_path_tricks(tmp_path: Path) -> None:
    class Usage:
        free = 100 << 20

    store = Store(tmp_path / "s", disk_reserve_bytes=96 << 20, disk_usage=lambda p: Usage())
    with pytest.raises(e.ResourceExhausted) as info:
        store.begin(None, 8 << 20)
    assert info.value.reason == "DISK_FULL"
    up = Store(tmp_path / "t").begin()
    with pytest.raises(e.InvalidArgument):
        up.add_file("../../etc/passwd")
    up.abort()
    assert list((tmp_path / "t" / "tmp").iterdir()) == []


def _whole_dump(state: TierState) -> dict[str, str]:
    """The files as dumping each whole document with pyyaml's pure-Python emitter gives."""
    docs: dict[str, dict] = {t: {} for t in TIERS}
    for name in sorted(state.models):
        for t, d in _model_docs(state.models[name]).items():
            docs[t][name] = d
    return {t: _HEADER + yaml.safe_dump({"version": 1, "tier": t, "models": docs[t]},
                                        sort_keys=False, default_flow_style=None, width=100)
            for t in TIERS}


def test_a_commit_dumps_only_the_model_that_changed(tmp_path: Path) -> None:
    """Dumping every model's YAML on every commit made an install with 200 models installed
    ~15x slower than with 10; the files are the same as dumping the whole documents."""
    store = Store(tmp_path / "state", detect_format=detect_format)
    manifests = Manifests(tmp_path / "state", blob_exists=store.has)
    manifests.load()
    cat = Catalog(store, manifests, inspect=lambda p, f, warm=None: inspect(p, f))
    src = modelgen.add_model(tmp_path / "a.onnx")
    for i in range(12):
        cat.install(f"m{i:02d}", store.put_file(src), tier=TIERS[i % 3],
                    notes="a long note " * (i * 3), warmup_shapes={"x": [1, 4]})
        if i % 4 == 0:
            cat.install(f"m{i:02d}", store.put_file(src), activate=False)  # a second version
    before = manifests.renderer.dumped
    cat.install("m05", store.put_file(src))
    cat.set_tier("m07", "storage")
    assert manifests.renderer.dumped - before == 2  # one model per commit, not all 12
    assert render(cat.state) == _whole_dump(cat.state)
    on_disk = {t: (tmp_path / "state" / "tiers" / f"{t}.yaml").read_text() for t in TIERS}
    assert on_disk == _whole_dump(cat.state)
    assert render(TierState({})) == _whole_dump(TierState({}))
    assert parse(on_disk).models == cat.state.models  # and it reads back the same

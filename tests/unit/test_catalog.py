"""The store and the catalog on a temp state dir with real ONNX models: artifact identity over
every file, refusals that leave nothing behind, rollback order, names, start-up fallback from
a rejected hand edit, and the tier budgets on reload."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import modelgen
import pytest

from edged import errors as e
from edged.engines.base import detect_format, inspect
from edged.manager.catalog.catalog import Catalog, budget_tier_check
from edged.manager.catalog.manifests import ManifestError, Manifests
from edged.manager.catalog.names import MAX_VERSION, check_name
from edged.manager.catalog.store import Store

MB = 1 << 20


def external_files(path: Path) -> list[str]:
    from edged.engines.onnx_inspect import summarize

    return sorted(summarize(path).external_files)


def make(state: Path, ram: int = 1 << 30, swap: int = 1 << 30, reserve: int = 0) -> Catalog:
    store = Store(state, detect_format=detect_format, external_files=external_files)
    manifests = Manifests(state, blob_exists=store.has)
    manifests.load()
    return Catalog(store, manifests, inspect=lambda p, f: inspect(p, f),
                   tier_check=budget_tier_check(ram_budget=ram, swap_budget=swap,
                                                reserve=reserve))


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and "tiers" not in p.parts[len(root.parts)]}


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_same_onnx_with_other_external_data_is_another_artifact(tmp_path: Path) -> None:
    """The .onnx of an external-data model holds only the graph: retrained weights leave it
    byte-identical. Deduplicating by its sha would serve the old weights."""
    a = modelgen.weights_model(tmp_path / "a" / "m.onnx", 64 << 10, external_data=True, seed=1)
    b = modelgen.weights_model(tmp_path / "b" / "m.onnx", 64 << 10, external_data=True, seed=2)
    assert sha(a) == sha(b)
    assert sha(a.with_name("m.onnx.data")) != sha(b.with_name("m.onnx.data"))
    cat = make(tmp_path / "state")
    ba = cat.store.put_file(a)
    bb = cat.store.put_file(b)
    assert ba.sha256 == bb.sha256 == sha(a)  # the user-facing sha stays the .onnx's
    assert ba.id != bb.id
    cat.install("m", ba)
    cat.install("m", bb)
    v1, v2 = cat.get("m").versions[1], cat.get("m").versions[2]
    assert v1.sha256 == v2.sha256 and v1.store_id != v2.store_id
    for v, src in ((v1, a), (v2, b)):
        stored = cat.store.blob(v.store_id).main.with_name("m.onnx.data")
        assert stored.read_bytes() == src.with_name("m.onnx.data").read_bytes()
        assert cat.store.verify(v.store_id) == []
    # the artifact id survives the manifests' round trip
    again = Manifests(cat.store.root, blob_exists=cat.store.has).load()
    assert again.models["m"].versions[2].store_id == bb.id
    # and the very same files are still deduplicated
    assert cat.store.put_file(b).id == bb.id


def test_a_plain_artifact_is_named_by_its_sha(tmp_path: Path) -> None:
    p = modelgen.add_model(tmp_path / "a.onnx")
    blob = make(tmp_path / "s").store.put_file(p)
    assert blob.id == blob.sha256 == sha(p)


@pytest.mark.parametrize("refusal", ["signature", "version", "taken"])
def test_refused_installs_leave_no_file(tmp_path: Path, refusal: str) -> None:
    cat = make(tmp_path / "state")
    cat.install("m", cat.store.put_file(modelgen.add_model(tmp_path / "v1.onnx", width=4)))
    before = files_under(cat.store.root)
    if refusal == "signature":
        blob = cat.store.put_file(modelgen.add_model(tmp_path / "v2.onnx", width=8))
        with pytest.raises(e.SignatureChanged):
            cat.install("m", blob, allow_signature_change=False)
    elif refusal == "version":
        blob = cat.store.put_file(modelgen.add_model(tmp_path / "v2.onnx", offset=2.0))
        with pytest.raises(e.InvalidArgument):
            cat.install("m", blob, version=MAX_VERSION + 1)
    else:
        blob = cat.store.put_file(modelgen.add_model(tmp_path / "v2.onnx", offset=2.0))
        with pytest.raises(e.AlreadyExists):
            cat.install("m", blob, version=1)
    assert files_under(cat.store.root) == before
    assert sorted(cat.get("m").versions) == [1]


def test_an_oversized_upload_leaves_no_directory(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", max_artifact_bytes=1 * MB)
    with pytest.raises(e.ResourceExhausted):
        store.begin(None, 2 * MB)
    assert list(store.tmp.iterdir()) == []


def test_a_name_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    with pytest.raises(e.InvalidArgument):
        check_name("abc\n")
    assert check_name("abc") == "abc"
    cat = make(tmp_path / "state")
    cat.install("abc", cat.store.put_file(modelgen.add_model(tmp_path / "a.onnx")))
    swap = cat.store.root / "tiers" / "swap.yaml"
    swap.write_text(swap.read_text().replace("  abc:", '  "abc\\n":'))
    with pytest.raises(ManifestError, match="not a valid model name"):
        cat.reload()


def test_rollback_goes_down_and_checks_the_signature(tmp_path: Path) -> None:
    cat = make(tmp_path / "state")
    for i, width in ((1, 4), (2, 4), (3, 4), (4, 8)):
        cat.install("m", cat.store.put_file(modelgen.add_model(tmp_path / f"v{i}.onnx",
                                                               width=width, offset=float(i))))
    assert cat.get("m").active == 4
    with pytest.raises(e.SignatureChanged, match="activate m 3 --allow-signature-change"):
        cat.rollback("m")
    assert cat.get("m").active == 4
    cat.activate("m", 3, allow_signature_change=True)
    # repeated rollbacks walk down instead of alternating between two versions
    assert [cat.rollback("m").active for _ in range(2)] == [2, 1]
    with pytest.raises(e.FailedPrecondition):
        cat.rollback("m")


def test_remove_version_zero_is_invalid(tmp_path: Path) -> None:
    cat = make(tmp_path / "state")
    cat.install("m", cat.store.put_file(modelgen.add_model(tmp_path / "a.onnx")))
    with pytest.raises(e.InvalidArgument):
        cat.remove("m", 0)
    assert sorted(cat.get("m").versions) == [1]


def test_tier_capacity_errors_carry_the_reserve(tmp_path: Path) -> None:
    cat = make(tmp_path / "state", ram=1 * MB, reserve=512 * MB)
    blob = cat.store.put_file(modelgen.weights_model(tmp_path / "w.onnx", 2 * MB))
    with pytest.raises(e.CapacityExceeded) as info:
        cat.install("big", blob, tier="ram")
    assert info.value.numbers.reserve_bytes == 512 * MB
    assert not cat.store.has(blob.id)


def test_before_commit_failure_commits_nothing(tmp_path: Path) -> None:
    cat = make(tmp_path / "state")
    cat.install("m", cat.store.put_file(modelgen.add_model(tmp_path / "v1.onnx")))
    cat.install("m", cat.store.put_file(modelgen.add_model(tmp_path / "v2.onnx", offset=2.0)),
                activate=False)
    gen = os.readlink(cat.store.root / "tiers")
    seen = []

    def refuse(planned):  # type: ignore[no-untyped-def]
        seen.append((planned.active, planned.tier))
        raise e.FailedPrecondition("warm-up failed")

    with pytest.raises(e.FailedPrecondition):
        cat.activate("m", 2, before_commit=refuse)
    with pytest.raises(e.FailedPrecondition):
        cat.set_tier("m", "ram", before_commit=refuse)
    assert seen == [(2, "swap"), (1, "ram")]
    assert cat.get("m").active == 1 and cat.get("m").tier == "swap"
    assert os.readlink(cat.store.root / "tiers") == gen


def test_a_bad_edit_left_on_disk_does_not_stop_the_next_start(tmp_path: Path) -> None:
    cat = make(tmp_path / "state")
    cat.install("m", cat.store.put_file(modelgen.add_model(tmp_path / "a.onnx")), quality=0.5)
    state = cat.store.root
    swap = state / "tiers" / "swap.yaml"
    bad = swap.read_text().replace("quality: 0.5", "quality: lots")
    swap.write_text(bad)
    with pytest.raises(ManifestError):
        cat.reload()  # rejected at SIGHUP: the file stays for the operator
    assert swap.read_text() == bad
    restarted = Manifests(state, blob_exists=cat.store.has)
    current = restarted.load()  # at the next start: falls back, does not raise
    assert current.models["m"].versions[1].quality == 0.5
    assert "swap.yaml line" in restarted.fallback_note and "rejected at start" in \
        restarted.fallback_note
    kept = [p for p in state.iterdir() if p.name.startswith("swap.yaml.rejected-")]
    assert len(kept) == 1 and kept[0].read_text() == bad  # nothing of the operator's is lost
    assert kept[0].name in restarted.fallback_note
    assert "quality: 0.5" in (state / "tiers" / "swap.yaml").read_text()
    third = Manifests(state, blob_exists=cat.store.has)
    third.load()
    assert third.fallback_note == ""  # the fallback was committed: the next start is clean


def test_the_fallback_keeps_the_last_change_edged_made(tmp_path: Path) -> None:
    """The edit is in place in the current generation: falling back to the previous one
    would lose the last install; edged's own copy of the current generation has it."""
    cat = make(tmp_path / "state")
    cat.install("a", cat.store.put_file(modelgen.add_model(tmp_path / "a.onnx")))
    cat.install("b", cat.store.put_file(modelgen.add_model(tmp_path / "b.onnx", offset=2.0)))
    storage = cat.store.root / "tiers" / "storage.yaml"
    storage.write_text("version: 1\ntier: storage\nmodels: [oops\n")
    m = Manifests(cat.store.root, blob_exists=cat.store.has)
    assert sorted(m.load().models) == ["a", "b"]
    assert "storage.yaml" in m.fallback_note


def test_reload_checks_the_tier_budgets(tmp_path: Path) -> None:
    cat = make(tmp_path / "state", ram=40 * MB)
    for n in ("a", "b"):
        cat.install(n, cat.store.put_file(modelgen.weights_model(tmp_path / f"{n}.onnx", 2 * MB,
                                                                  seed=ord(n))))
    tiers = cat.store.root / "tiers"

    def move_to_ram(*names: str) -> None:
        swap, ram = (tiers / "swap.yaml").read_text(), (tiers / "ram.yaml").read_text()
        import yaml

        sd, rd = yaml.safe_load(swap), yaml.safe_load(ram)
        rd["models"] = rd["models"] or {}
        for n in names:
            rd["models"][n] = sd["models"].pop(n)
        (tiers / "swap.yaml").write_text(yaml.safe_dump(sd))
        (tiers / "ram.yaml").write_text(yaml.safe_dump(rd))

    gen = os.readlink(tiers)
    move_to_ram("a", "b")
    with pytest.raises(e.CapacityExceeded) as info:
        cat.reload()
    n = info.value.numbers
    assert n.tier == "ram" and n.budget_bytes == 40 * MB and n.needed_bytes > 40 * MB
    assert str(info.value).startswith("ram.yaml")
    assert {m.tier for m in cat.list()} == {"swap"}  # the old state stays in force
    assert os.readlink(tiers) == gen
    # a hand edit that fits is accepted and committed as a new generation
    Manifests(cat.store.root)  # (nothing cached)
    for f in ("swap.yaml", "ram.yaml"):
        (tiers / f).write_text(__import__("json").loads(
            (tiers / ".committed.json").read_text())[f[:-5]])
    move_to_ram("a")
    cat.reload()
    assert cat.get("a").tier == "ram" and cat.get("b").tier == "swap"
    assert os.readlink(tiers) != gen


def test_a_pending_hand_edit_is_kept_when_edged_commits(tmp_path: Path) -> None:
    """An edit not reloaded yet lives in the current generation's files; edged's next commit
    (an install, a measurement) writes a new generation without it — so it is kept aside."""
    cat = make(tmp_path / "state")
    cat.install("a", cat.store.put_file(modelgen.add_model(tmp_path / "a.onnx")), quality=0.5)
    swap = cat.store.root / "tiers" / "swap.yaml"
    edited = swap.read_text().replace("quality: 0.5", "quality: 0.9")
    swap.write_text(edited)
    cat.install("b", cat.store.put_file(modelgen.add_model(tmp_path / "b.onnx", offset=2.0)))
    kept = list(cat.store.root.glob("swap.yaml.unapplied-*"))
    assert len(kept) == 1 and kept[0].read_text() == edited
    cat.install("c", cat.store.put_file(modelgen.add_model(tmp_path / "c.onnx", offset=3.0)))
    assert len(list(cat.store.root.glob("swap.yaml.unapplied-*"))) == 1  # once


def test_small_measurement_changes_stay_in_memory(tmp_path: Path) -> None:
    """Every load measures its footprint and time, and the time differs a little each load:
    only a first measurement or one > 5% (footprint) / > 20% (time) from the saved one is
    committed; the rest is kept in memory and written with the next commit."""
    cat = make(tmp_path / "state")
    cat.install("m", cat.store.put_file(modelgen.add_model(tmp_path / "a.onnx")))
    root, link = cat.store.root, cat.store.root / "tiers"

    def saved() -> tuple[int | None, float | None]:
        v = Manifests(root).load().models["m"].versions[1]
        return v.measured_bytes, v.load_seconds

    cat.record_measurement("m", 1, 1000, 0.5)  # the first one: committed
    gen = os.readlink(link)
    assert saved() == (1000, 0.5)
    for nbytes, secs in ((1040, 0.55), (960, 0.45), (1049, 0.59)):  # each near the saved one
        cat.record_measurement("m", 1, nbytes, secs)
        assert os.readlink(link) == gen
        v = cat.get("m").versions[1]
        assert (v.measured_bytes, v.load_seconds) == (nbytes, secs)  # used from now on
    assert saved() == (1000, 0.5)
    cat.record_measurement("m", 1, 1049, 0.61)  # 22% from the saved time: committed
    assert os.readlink(link) != gen and saved() == (1049, 0.61)
    gen = os.readlink(link)
    cat.record_measurement("m", 1, 1110, 0.61)  # 5.8% from the saved footprint
    assert os.readlink(link) != gen and saved() == (1110, 0.61)
    cat.record_measurement("m", 1, 1120, 0.62)  # in memory only...
    assert saved() == (1110, 0.61)
    cat.install("n", cat.store.put_file(modelgen.add_model(tmp_path / "b.onnx", offset=2.0)))
    assert saved() == (1120, 0.62)  # ...until the next commit writes it along


def test_warmup_shapes_are_checked_against_the_signature() -> None:
    from edged.engines.base import Signature, TensorSpec
    from edged.manager.catalog.catalog import check_warmup

    sig = Signature((TensorSpec("x", "FP32", (-1, 3, 64, -1)), TensorSpec("sr", "INT64", ())),
                    ())
    check_warmup({"x": (2, 3, 64, 100)}, sig)
    check_warmup({"sr": (1,)}, sig)  # a scalar input: no rank to hold it to
    for shapes, words in [({"z": (1,)}, "no such input (inputs: x, sr)"),
                          ({"x": (1, 3, 64)}, "has 4 dimensions (?x3x64x?)"),
                          ({"x": (1, 4, 64, 64)}, "dimension 1 is fixed at 3")]:
        with pytest.raises(e.InvalidArgument) as info:
            check_warmup(shapes, sig)
        assert words in str(info.value) and info.value.field.startswith("warmup_shapes[")


def test_inherit_metadata_takes_only_what_is_unsaid_and_fits() -> None:
    from edged.engines.base import Signature, TensorSpec
    from edged.manager.catalog.catalog import inherit_metadata
    from edged.manager.catalog.manifests import VersionEntry

    wide = Signature((TensorSpec("x", "FP32", (-1, 8)),), ())
    old = VersionEntry("a" * 64, 1, tasks=("vad",), quality=0.9, providers=("CPU",),
                       precision="fp16", warmup_shapes={"x": (1, 4)}, group="g",
                       signature=Signature((TensorSpec("x", "FP32", (-1, 4)),), ()))
    new = inherit_metadata(VersionEntry("b" * 64, 1, tasks=("asr",), precision="",
                                        signature=wide), old, 3)
    assert new.tasks == ("asr",) and new.quality == 0.9 and new.providers == ("CPU",)
    assert new.precision == "fp16" and new.group == "g"
    assert new.warmup_shapes == {}  # 1x4 does not fit [?, 8]: not inherited
    assert new.inherited == ("quality", "providers", "precision", "group")
    assert new.inherited_from == 3

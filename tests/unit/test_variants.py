"""The variant rules as pure functions (issue 17): which variant serves, the largest batch
within a budget, the one recommendation; and variants in the manifests' YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged import errors as e
from edged.errors import CapacityNumbers
from edged.manager.catalog.tier_yaml import (
    ManifestError,
    ModelEntry,
    TierState,
    VersionEntry,
    parse,
    render,
)
from edged.manager.memory import planner, variants
from edged.manager.memory.residency import LoadSpec

N = CapacityNumbers("swap", 1, 1, 0, 1, 0)


def spec(name: str, size: int) -> LoadSpec:
    return LoadSpec(name="m", version=1, tier="swap", artifact=Path("/x"), fmt="onnx",
                    options=None, group=None, bytes=size, variant=name)


def planned(decisions: dict[str, planner.Decision]):  # type: ignore[no-untyped-def]
    return lambda s: decisions[s.variant]


SPECS = {"fp32": spec("fp32", 100), "fp16": spec("fp16", 50), "int8": spec("int8", 25)}
Q = {"fp32": 0.9, "fp16": 0.89, "int8": 0.7}


def test_the_version_itself_when_it_fits_now() -> None:
    c = variants.choose(SPECS, Q, "fp32", planned({n: planner.Admit(N) for n in SPECS}))
    assert c.spec.variant == "fp32" and c.reason == "fp32 fits now"


def test_a_smaller_variant_instead_of_an_eviction_when_quality_allows() -> None:
    d = {"fp32": planner.AdmitAfterEvicting(("a:1",), N), "fp16": planner.Admit(N),
         "int8": planner.Admit(N)}
    assert variants.choose(SPECS, Q, "fp32", planned(d)).spec.variant == "fp16"
    low = {**Q, "fp16": 0.5}  # quality does not allow it: evict for the version itself
    assert variants.choose(SPECS, low, "fp32", planned(d)).spec.variant == "fp32"


def test_a_variant_within_the_quality_drop_when_nothing_else_fits() -> None:
    d = {"fp32": planner.Reject("no", N), "fp16": planner.AdmitAfterEvicting(("a:1",), N),
         "int8": planner.Admit(N)}
    c = variants.choose(SPECS, Q, "fp32", planned(d))
    assert c.spec.variant == "fp16" and "after evicting a:1" in c.reason
    c = variants.choose(SPECS, Q, "fp32", planned(d), max_quality_drop=0.3)
    assert c.spec.variant == "int8"  # allowed now, and it fits without evicting
    none = {n: planner.Reject("no", N) for n in SPECS}
    assert variants.choose(SPECS, Q, "fp32", planned(none)).spec.variant == "fp32"
    assert variants.choose(SPECS, Q, "fp32", planned(none), pinned="int8").spec.variant == "int8"


def test_the_largest_batch_within_a_budget() -> None:
    def estimate(shapes):  # type: ignore[no-untyped-def]
        return 1000 + 300 * shapes["x"][0]
    assert variants.max_batch(estimate, {"x": (1, 3, 8, 8)}, 1000 + 300 * 37, margin=0) == 37
    assert variants.max_batch(estimate, {"x": (1, 3, 8, 8)}, 1200, margin=0) == 0
    # with the default margin the estimate must fit with 15% to spare
    assert variants.max_batch(estimate, {"x": (1, 3, 8, 8)}, int((1000 + 300 * 37) * 1.15)) \
        == 37
    assert variants.max_batch(estimate, {"x": (1, 3)}, 1 << 60) == variants.MAX_BATCH
    assert variants.max_batch(estimate, {}, 1 << 30) is None


def test_variants_round_trip_and_old_manifests_read_unchanged() -> None:
    plain = VersionEntry(sha256="a" * 64, size_bytes=10)
    old = TierState({"m": ModelEntry("m", "swap", 1, {1: plain})})
    assert "variants" not in render(old)["swap"]  # nothing new in a manifest without them
    v = VersionEntry(sha256="a" * 64, size_bytes=10, quality=0.9, tasks=("ocr",),
                     variants={"int8": VersionEntry(sha256="b" * 64, size_bytes=3,
                                                    precision="int8", quality=0.8)},
                     serve="int8")
    st = TierState({"m": ModelEntry("m", "swap", 1, {1: v})})
    back = parse(render(st))
    assert back == st
    got = back.models["m"].versions[1]
    assert got.variant_names == ("fp32", "int8")
    served = got.variant("int8")
    assert (served.sha256, served.size_bytes, served.tasks, served.quality) == (
        "b" * 64, 3, ("ocr",), 0.8)
    assert st.artifacts() == {"a" * 64: 10, "b" * 64: 3}
    with pytest.raises(e.NotFound):
        got.variant("fp16")


def test_a_bad_variant_edit_names_the_key() -> None:
    v = VersionEntry(sha256="a" * 64, size_bytes=10, serve="int8")
    with pytest.raises(ManifestError, match="serve: no variant 'int8'"):
        parse(render(TierState({"m": ModelEntry("m", "swap", 1, {1: v})})))
    dup = VersionEntry(sha256="a" * 64, size_bytes=10,
                       variants={"fp32": VersionEntry(sha256="b" * 64, size_bytes=3)})
    with pytest.raises(ManifestError, match="the version's own precision"):
        parse(render(TierState({"m": ModelEntry("m", "swap", 1, {1: dup})})))

"""One contract, run twice: against ``ModelManager`` in process (built by the daemon's own
``build_parts`` on a temp dir) and against ``EdgedClient`` over a real Unix socket to a real
daemon. Same calls, same answers, same domain errors with the same fields — a difference is a
bug in the service layer, the error table or the client.

Both sides answer with the same view types (``edged.views``: ``ModelView``, ``LoadView``,
``CheckView``, ...), compared here as they are. The client is used as it is; the manager's call
shapes differ (it takes (file header, chunks) pairs and an ``InstallSpec``, returns tuples such
as (entry, loaded view)), and ``adapters.InProcess`` says how it calls them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import modelgen
import numpy as np
import pytest
from daemon_harness import DaemonProcess
from inprocess import parts_on

from contract.adapters import Api, InProcess
from edged import errors as e
from edged.views import ModelView

MiB = 1 << 20
CONFIG = {"version": 1, "preload": {"enabled": False}, "telemetry": {"interval_s": 0.5},
          "budgets": {"ram": "64MiB", "swap": "96MiB"}}


def _in_process(root: Path) -> Iterator[Api]:
    with parts_on(root / "state", CONFIG) as parts:
        yield InProcess(parts.manager)


def _over_socket() -> Iterator[Api]:
    d = DaemonProcess(CONFIG).start()
    try:
        with d.client(timeout=60) as c:
            yield c
    finally:
        try:
            d.stop()
        finally:
            d.cleanup()


@pytest.fixture(params=["in_process", "over_socket"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    if request.param == "in_process":
        yield from _in_process(tmp_path)
    else:
        yield from _over_socket()


@pytest.fixture
def adder(tmp_path: Path) -> Path:
    return modelgen.add_model(tmp_path / "adder.onnx")  # y = x + 1 over [batch, 4]


X = np.arange(8, dtype=np.float32).reshape(2, 4)


def ready(m: ModelView) -> bool:
    return m.loaded is not None and m.loaded.state == "ready"


def numbers(m: ModelView) -> list[int]:
    return [v.version for v in m.versions]


def test_install_list_show(api: Api, adder: Path) -> None:
    r = api.install("adder", adder, tier="swap")
    assert r.version == 1 and r.sha256 == hashlib.sha256(adder.read_bytes()).hexdigest()
    assert r.size_bytes == adder.stat().st_size
    assert api.list_models() == [api.get_model("adder")]
    info = api.get_model("adder")
    assert (info.name, info.active_version, info.tier, numbers(info), info.state,
            info.loaded) == ("adder", 1, "swap", [1], "unloaded", None)
    assert r.model == info
    assert api.list_models(tier="ram") == []


def test_infer_on_a_generated_model(api: Api, adder: Path) -> None:
    api.install("adder", adder)
    out = api.infer("adder", {"x": X})
    np.testing.assert_array_equal(out["y"], X + 1)
    with pytest.raises(e.InvalidArgument) as info:
        api.infer("adder", {"x": np.ones((1, 5), np.float32)})
    assert info.value.field and "x" in str(info.value)


def test_load_unload(api: Api, adder: Path) -> None:
    api.install("adder", adder)
    loaded = api.load("adder").model
    assert loaded.footprint_bytes > 0 and loaded.state == "ready" and loaded.worker_pid > 0
    assert ready(api.get_model("adder"))
    assert api.unload("adder") > 0
    assert not ready(api.get_model("adder"))
    assert api.unload("adder") == 0  # idempotent


def test_tier_moves(api: Api, adder: Path) -> None:
    api.install("adder", adder)
    assert api.set_tier("adder", "storage").tier == "storage"
    with pytest.raises(e.FailedPrecondition) as info:
        api.infer("adder", {"x": X})
    assert info.value.reason == "STORAGE_TIER"
    assert api.set_tier("adder", "ram").tier == "ram"
    assert ready(api.get_model("adder"))  # the ram tier is resident
    assert api.set_tier("adder", "swap").tier == "swap"
    np.testing.assert_array_equal(api.infer("adder", {"x": X})["y"], X + 1)


def test_activate_and_rollback(api: Api, adder: Path, tmp_path: Path) -> None:
    api.install("adder", adder)
    plus2 = modelgen.add_model(tmp_path / "plus2.onnx", offset=2.0)
    assert api.install("adder", plus2).version == 2
    assert api.get_model("adder").active_version == 2
    np.testing.assert_array_equal(api.infer("adder", {"x": X})["y"], X + 2)
    assert api.rollback("adder").active_version == 1
    np.testing.assert_array_equal(api.infer("adder", {"x": X})["y"], X + 1)
    assert api.activate("adder", 2).active_version == 2
    with pytest.raises(e.NotFound) as info:
        api.activate("adder", 9)
    assert info.value.field == "version"


def test_a_signature_change_needs_consent(api: Api, adder: Path, tmp_path: Path) -> None:
    api.install("adder", adder)
    renamed = modelgen.add_model(tmp_path / "r.onnx", input_name="image")
    with pytest.raises(e.SignatureChanged) as info:
        api.install("adder", renamed)
    assert info.value.reason == "SIGNATURE_CHANGED"
    assert info.value.diff and any("image" in d or "x" in d for d in info.value.diff)
    assert numbers(api.get_model("adder")) == [1]  # nothing half-installed


def test_check_and_capacity_rejection_with_numbers(api: Api, adder: Path,
                                                   tmp_path: Path) -> None:
    api.install("adder", adder)
    assert api.check("adder").decision == "admit"
    big = modelgen.big_weights_model(tmp_path / "big.onnx", 128 * MiB)
    data = big.with_name(big.name + ".data")
    api.install("big", big, extra_files=[data], tier="storage")  # storage: no memory budget
    c = api.check("big", tier="swap")
    assert c.decision == "reject"
    assert c.numbers.tier == "swap" and c.numbers.budget_bytes == 96 * MiB
    assert c.numbers.needed_bytes > c.numbers.budget_bytes
    with pytest.raises(e.CapacityExceeded) as info:
        api.set_tier("big", "swap")
    assert info.value.numbers.tier == "swap"
    assert info.value.budget_bytes == 96 * MiB
    assert info.value.needed_bytes > 128 * MiB
    assert api.get_model("big").tier == "storage"  # the refused move changed nothing


def test_errors_are_the_same_domain_errors(api: Api, adder: Path) -> None:
    with pytest.raises(e.NotFound) as missing:
        api.get_model("nope")
    assert missing.value.field == "name"
    with pytest.raises(e.InvalidArgument) as bad:
        api.install("Bad Name!", adder)
    assert (bad.value.field, bad.value.reason) == ("name", "BAD_NAME")
    with pytest.raises(e.DataLoss) as corrupt:
        api.install("adder", adder, sha256="0" * 64)
    assert corrupt.value.reason == "CHECKSUM_MISMATCH"
    assert api.list_models() == []  # a failed install leaves nothing
    api.install("adder", adder, version=3)
    with pytest.raises(e.AlreadyExists) as dup:
        api.install("adder", adder, version=3)
    assert dup.value.field == "version"


def test_remove(api: Api, adder: Path) -> None:
    api.install("adder", adder)
    api.load("adder")
    assert api.remove("adder") == [1]
    assert api.list_models() == []
    with pytest.raises(e.NotFound):
        api.remove("adder")

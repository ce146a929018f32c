"""Limits that must hold (issue 14, items 4-7): a world-accessible socket needs an explicit
opt-in, absurd shapes are the caller's error, an error never outgrows the client's metadata
limit, and `edged config check` reports every problem of a file in one run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import modelgen
import numpy as np
import pytest
import yaml

from edged import errors as e
from edged.oip import grpc_service_pb2 as oip


def config_check(tmp_path: Path, cfg: dict) -> subprocess.CompletedProcess[str]:  # type: ignore[type-arg]
    path = tmp_path / "edged.yaml"
    path.write_text(yaml.safe_dump({"version": 1, **cfg}))
    return subprocess.run([sys.executable, "-m", "edged", "config", "check", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_world_accessible_socket_needs_an_explicit_opt_in(tmp_path: Path) -> None:
    r = config_check(tmp_path, {"listen": {"unix_mode": "0666"}})
    assert r.returncode == 2
    assert "listen.unix_mode" in r.stderr and "every local user" in r.stderr
    r = config_check(tmp_path, {"listen": {"unix_mode": "0666", "allow_world_access": True}})
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "every local user may connect" in r.stderr
    assert config_check(tmp_path, {"listen": {"unix_mode": "0660"}}).stderr == ""


def test_the_daemon_warns_when_world_access_is_allowed(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory({"listen": {"unix_mode": "0666", "allow_world_access": True}}).start()
    assert (d.socket.stat().st_mode & 0o777) == 0o666
    assert "every local user may connect" in d.log()


def test_config_check_reports_every_problem_in_one_run(tmp_path: Path) -> None:
    r = config_check(tmp_path, {
        "listen": {"tcp": "host:99999", "unix_mode": "0777", "bogus": 1},
        "engines": {"queue_depth": "many"},
        "preload": {"interval_s": -1},
    })
    assert r.returncode == 2
    for needle in ("port 99999 is not a port number", "listen.unix_mode", "listen.bogus",
                   "engines.queue_depth", "preload.interval_s"):
        assert needle in r.stderr, (needle, r.stderr)


def test_config_check_measures_the_budgets_against_this_machine(tmp_path: Path) -> None:
    import psutil

    machine = psutil.virtual_memory().total
    r = config_check(tmp_path, {"budgets": {"ram": f"{2 * machine}", "swap": "1GiB"}})
    assert r.returncode == 2 and "budgets" in r.stderr and "more than" in r.stderr, r.stderr
    r = config_check(tmp_path, {"budgets": {"memory_total": f"{2 * machine}"}})
    assert r.returncode == 0 and "more than this machine has" in r.stderr, r.stderr


@pytest.mark.parametrize("shape", [[0, 2**63 - 1], [2**62, 2**62, 0], [2**41, 0]])
def test_absurd_shapes_are_invalid_argument(client, tmp_path: Path, shape: list[int]) -> None:  # type: ignore[no-untyped-def]
    client.install("m", modelgen.add_model(tmp_path / "a.onnx", offset=1.0))
    req = oip.ModelInferRequest(model_name="m")
    req.inputs.add(name="x", datatype="FP32", shape=shape)
    with pytest.raises(e.InvalidArgument, match="too large") as info:
        client._call(client.oip.ModelInfer, req)  # noqa: SLF001
    assert info.value.field == "inputs[0].shape"
    assert client.infer("m", {"x": np.zeros((1, 4), np.float32)})["y"][0, 0] == 1.0


def test_a_huge_model_name_gets_its_real_error(client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    name = "a" * 10_000
    with pytest.raises(e.NotFound) as info:
        client.infer(name, {"x": np.zeros((1, 4), np.float32)})
    assert "characters cut" in str(info.value) and len(str(info.value)) < 1200
    with pytest.raises(e.InvalidArgument, match="is not allowed") as info2:
        client.install(name, modelgen.add_model(tmp_path / "a.onnx"))
    assert "characters cut" in str(info2.value)
    assert client.health() == "SERVING"

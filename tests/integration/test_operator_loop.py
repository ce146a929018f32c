"""The operator's daily loop through `edgectl` on the real daemon (issue 14, items 8-16):
updates keep their metadata, reinstalls and removals say what happens, bad input is caught at
install and on the command line, and every message says what really happened."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import modelgen
import numpy as np
import pytest

from edged.cli import exitcodes, ota

FAILED_PRECONDITION, INVALID_ARGUMENT, RESOURCE_EXHAUSTED = 8, 4, 7


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged.cli.main", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def ctl(daemon, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return run("--target", daemon.target, *args)


def one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    """A user error is one line on stderr, no traceback."""
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def versions(daemon, name: str) -> dict[int, dict]:  # type: ignore[no-untyped-def, type-arg]
    d = json.loads(ctl(daemon, "show", name, "--json").stdout)
    return {v["version"]: v for v in d["versions"]}


# -- item 8: a new version inherits the active version's metadata --------------------------------
def test_new_version_inherits_metadata_and_show_says_so(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    v1 = modelgen.add_model(tmp_path / "v1.onnx", offset=1.0)
    v2 = modelgen.add_model(tmp_path / "v2.onnx", offset=2.0)
    v3 = modelgen.add_model(tmp_path / "v3.onnx", offset=3.0)
    v4 = modelgen.add_model(tmp_path / "v4.onnx", offset=4.0)
    res = ctl(daemon, "install", "adder", str(v1), "--task", "math.add", "--quality", "0.8",
              "--provider", "CPUExecutionProvider", "--precision", "fp16",
              "--warmup", "x=2x4")
    assert res.returncode == 0, res.stderr
    res = ctl(daemon, "install", "adder", str(v2))  # a routine update: only the file
    assert res.returncode == 0, res.stderr
    assert "inherited from v1: tasks, quality, providers, precision, warmup_shapes" in res.stdout
    v = versions(daemon, "adder")[2]
    assert v["tasks"] == ["math.add"] and v["quality"] == 0.8
    assert v["providers"] == ["CPUExecutionProvider"] and v["precision"] == "fp16"
    assert v["warmup_shapes"] == {"x": "2x4"} and v["active"]
    assert v["inherited"] == ["tasks", "quality", "providers", "precision", "warmup_shapes"]
    assert v["inherited_from"] == 1
    show = ctl(daemon, "show", "adder").stdout
    assert "inherited from v1: tasks, quality, providers, precision, warmup_shapes" in show
    sel = json.loads(ctl(daemon, "select", "--task", "math.add", "--json").stdout)
    assert (sel["choice"]["name"], sel["choice"]["version"]) == ("adder", 2)
    # what the install says wins; the rest is still inherited
    assert ctl(daemon, "install", "adder", str(v3), "--task", "math.sum").returncode == 0
    v = versions(daemon, "adder")[3]
    assert v["tasks"] == ["math.sum"] and v["quality"] == 0.8
    assert "tasks" not in v["inherited"] and "quality" in v["inherited"]
    # --no-inherit: nothing comes from the active version
    assert ctl(daemon, "install", "adder", str(v4), "--no-inherit").returncode == 0
    v = versions(daemon, "adder")[4]
    assert v["tasks"] == [] and v["quality"] == 0 and v["inherited"] == []
    assert v["warmup_shapes"] == {}


def test_an_update_keeps_the_model_in_its_tier(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    v1 = modelgen.add_model(tmp_path / "v1.onnx", offset=1.0)
    v2 = modelgen.add_model(tmp_path / "v2.onnx", offset=2.0)
    assert ctl(daemon, "install", "pinned", str(v1), "--tier", "ram").returncode == 0
    assert ctl(daemon, "install", "pinned", str(v2)).returncode == 0
    d = json.loads(ctl(daemon, "show", "pinned", "--json").stdout)
    assert d["tier"] == "ram" and d["active_version"] == 2


# -- item 9: the same file again ------------------------------------------------------------------
def test_installing_the_same_file_again_changes_nothing(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    v1 = modelgen.add_model(tmp_path / "v1.onnx")
    assert ctl(daemon, "install", "adder", str(v1)).returncode == 0
    res = ctl(daemon, "install", "adder", str(v1))
    assert res.returncode == 0, res.stderr
    assert "already installed as version 1" in res.stdout
    res = ctl(daemon, "install", "adder", str(v1), "--json")
    out = json.loads(res.stdout)
    assert res.returncode == 0 and out["already_installed"] and out["version"] == 1
    assert sorted(versions(daemon, "adder")) == [1]
    digest = hashlib.sha256(v1.read_bytes()).hexdigest()  # a path on the device, or a URL
    res = ctl(daemon, "install", "adder", str(v1), "--on-device", "--sha256", digest)
    assert res.returncode == 0 and "already installed as version 1" in res.stdout, res.stderr
    # --version asks for another version of the same file
    res = ctl(daemon, "install", "adder", str(v1), "--version", "7")
    assert res.returncode == 0 and "installed adder v7" in res.stdout
    assert sorted(versions(daemon, "adder")) == [1, 7]


# -- item 10: removing the active version ---------------------------------------------------------
def test_removing_the_active_version_needs_force_and_says_what_is_active(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    v1 = modelgen.add_model(tmp_path / "v1.onnx", offset=1.0)
    v2 = modelgen.add_model(tmp_path / "v2.onnx", offset=2.0)
    assert ctl(daemon, "install", "adder", str(v1)).returncode == 0
    assert ctl(daemon, "install", "adder", str(v2)).returncode == 0
    res = ctl(daemon, "remove", "adder", "2")
    assert res.returncode == FAILED_PRECONDITION
    line = one_line_error(res)
    assert "active version" in line and "--force" in line and "rollback" in line
    assert "would activate version 1" in line
    assert sorted(versions(daemon, "adder")) == [1, 2]
    res = ctl(daemon, "remove", "adder", "2", "--force")
    assert res.returncode == 0, res.stderr
    assert "removed adder version 2; v1 is active" in res.stdout
    assert versions(daemon, "adder")[1]["active"]


# -- item 11: warm-up shapes checked at install ---------------------------------------------------
def test_warmup_shapes_are_checked_against_the_signature(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    dyn = modelgen.add_model(tmp_path / "dyn.onnx", width=4)
    fixed = modelgen.add_model(tmp_path / "fixed.onnx", width=4, dynamic_batch=False)
    for model, warm, words in [(dyn, "z=1x4", "no such input"), (dyn, "x=1x4x4", "2 dimensions"),
                               (fixed, "x=2x4", "fixed at 1"), (dyn, "x=1x5", "fixed at 4")]:
        res = ctl(daemon, "install", "m", str(model), "--warmup", warm)
        assert res.returncode == INVALID_ARGUMENT, (warm, res.stderr)
        assert words in one_line_error(res), warm
    with daemon.client() as c:
        assert c.list_models() == []
    res = ctl(daemon, "install", "m", str(dyn), "--warmup", "x=3x4")
    assert res.returncode == 0, res.stderr
    assert ctl(daemon, "load", "m").returncode == 0


# -- item 12: check answers what load would do ----------------------------------------------------
def test_check_of_a_storage_model_answers_as_load_does(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    m = modelgen.add_model(tmp_path / "m.onnx")
    assert ctl(daemon, "install", "cold", str(m), "--tier", "storage").returncode == 0
    load = ctl(daemon, "load", "cold")
    check = ctl(daemon, "check", "cold")
    assert load.returncode == check.returncode == FAILED_PRECONDITION
    assert "storage tier" in one_line_error(check) and "admit" not in check.stdout
    promote = ctl(daemon, "check", "cold", "--tier", "swap")
    assert promote.returncode == 0 and "cold: admit" in promote.stdout


# -- item 13: command-line conventions -----------------------------------------------------------
def test_global_options_after_the_command(daemon) -> None:  # type: ignore[no-untyped-def]
    res = run("status", "--json", "--target", daemon.target, "--timeout", "20")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["state"] == "serving"
    res = run("--target", daemon.target, "models", "--json")
    assert res.returncode == 0 and json.loads(res.stdout) == {"models": []}
    # before the command still works, and a value before it is not reset by the default after
    res = run("--json", "--target", daemon.target, "status")
    assert res.returncode == 0 and json.loads(res.stdout)["state"] == "serving"


def test_user_errors_are_one_line_with_exit_2(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    m = modelgen.add_model(tmp_path / "m.onnx")
    with daemon.client() as c:
        c.install("adder", m)
    not_npy = tmp_path / "x.txt"
    not_npy.write_text("1 2 3 4\n")
    cases = [
        (["select", "--task", "t", "--max-bytes", "lots"], "--max-bytes"),
        (["infer", "adder", "--input", f"x={tmp_path / 'missing.npy'}"], "no such file"),
        (["infer", "adder", "--input", f"x={not_npy}"], "not a .npy file"),
        (["infer", "adder", "--input", "x"], "expected NAME=FILE.npy"),
        (["install", "b", str(tmp_path / "missing.onnx")], "no such file"),
        (["install", "b", str(m), "--warmup", "x=1xfour"], "--warmup"),
        (["install", "b", str(m), "--warmup", "x"], "--warmup"),
        (["--token-file", str(tmp_path / "no.token"), "status"], "--token-file"),
        (["status", "--timeout", "soon"], "--timeout"),
        (["tier", "adder", "attic"], "invalid choice"),
    ]
    for args, words in cases:
        res = ctl(daemon, *args)
        assert res.returncode == exitcodes.USAGE, (args, res.returncode, res.stderr)
        line = one_line_error(res)
        assert words in line, (args, line)
    np.save(tmp_path / "x.npy", np.ones((1, 4), np.float32))
    ok = ctl(daemon, "infer", "adder", "--input", f"x={tmp_path / 'x.npy'}")
    assert ok.returncode == 0, ok.stderr


def test_events_of_an_unknown_kind_is_an_error(daemon) -> None:  # type: ignore[no-untyped-def]
    res = ctl(daemon, "events", "--kind", "bogus")
    assert res.returncode == INVALID_ARGUMENT
    assert "unknown event kind 'bogus'" in one_line_error(res)
    assert ctl(daemon, "events", "--kind", "load").returncode == 0


# -- item 14: messages say what really happened ---------------------------------------------------
def test_unload_and_tier_messages_say_what_happened(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    m = modelgen.add_model(tmp_path / "m.onnx")
    assert ctl(daemon, "install", "adder", str(m)).returncode == 0
    res = ctl(daemon, "unload", "adder")
    assert res.returncode == 0 and "adder was not loaded; nothing to unload" in res.stdout
    assert "freed" not in res.stdout
    res = ctl(daemon, "tier", "adder", "swap")
    assert res.returncode == 0 and "already in swap; nothing changed" in res.stdout
    assert "moved" not in res.stdout
    with daemon.client() as c:
        assert not [ev for ev in c.events() if ev.kind == "tier"]  # no "swap -> swap"
    assert ctl(daemon, "load", "adder").returncode == 0
    res = ctl(daemon, "tier", "adder", "storage")
    assert res.returncode == 0, res.stderr
    assert "moved from swap to storage; unloaded (it was loaded" in res.stdout
    res = ctl(daemon, "unload", "adder")
    assert "was not loaded" in res.stdout
    with daemon.client() as c:
        assert [ev.message for ev in c.events() if ev.kind == "tier"] == ["swap -> storage"]


# -- item 15: a capacity rejection names its real cause --------------------------------------------
def test_a_ram_rejection_says_ram_and_the_reserve(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # a 2 GiB device whose reserve leaves 61 MiB for models: any host uses more than that, so
    # free memory is below the reserve; the ram tier's own budget (60 MiB) holds the model
    d = daemon_factory({"budgets": {"memory_total": "2GiB", "reserve": "1987MiB",
                                    "ram": "60MiB", "swap": "1MiB"}}).start()
    m = modelgen.weights_model(tmp_path / "w.onnx", 2 << 20)
    res = ctl(d, "install", "big", str(m), "--tier", "ram")
    assert res.returncode == RESOURCE_EXHAUSTED, res.stderr
    line = one_line_error(res)
    assert "big:1 (ram tier)" in line and "does not fit RAM" in line, line
    assert "idle swap models" not in line and "no idle swap-tier model can be evicted" in line
    assert "is below the reserve (1.9 GiB)" in line and "tier ram:" in line


# -- item 16: readable output ---------------------------------------------------------------------
def test_status_show_events_and_select_are_readable(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    m = modelgen.add_model(tmp_path / "m.onnx")
    assert ctl(daemon, "install", "adder", str(m), "--task", "math.add").returncode == 0
    show = ctl(daemon, "show", "adder").stdout
    assert "never loaded" in show and "load 0.000s" not in show
    st = json.loads(ctl(daemon, "status", "--json").stdout)
    text = ctl(daemon, "status").stdout
    if st["memory"]["swap_total_bytes"] == 0:
        assert "no swap" in text
    assert "swap - free of -" not in text
    assert ctl(daemon, "load", "adder").returncode == 0
    events = ctl(daemon, "events").stdout
    load = next(line for line in events.splitlines() if " load " in line)
    assert re.search(r"\d+(\.\d)? (B|KiB|MiB) in \d+\.\d\ds", load), load
    assert not re.search(r"\d{5,} bytes", events) and "evicted= " not in events + " "
    assert not re.search(r"\w+= ", events + " ")  # no empty fields
    raw = [json.loads(x) for x in ctl(daemon, "events", "--json").stdout.splitlines()]
    ld = next(x for x in raw if x["kind"] == "load")
    assert int(ld["details"]["footprint_bytes"]) > 0  # exact numbers stay in --json
    sel = ctl(daemon, "select", "--task", "math.add", "--json")
    assert "-0.0" not in sel.stdout
    sel = ctl(daemon, "select", "--task", "math.add", "--max-bytes", "1KiB")
    assert re.search(r"over the limit of 1\.0 KiB", sel.stdout), sel.stdout
    assert not re.search(r"\d{4,} bytes", sel.stdout)


def test_the_unreachable_message_names_the_path_once_with_a_hint(tmp_path) -> None:
    sock = tmp_path / "nobody.sock"
    res = run("--target", f"unix:{sock}", "status")
    assert res.returncode == exitcodes.UNREACHABLE
    line = one_line_error(res)
    assert line.count(str(sock)) == 1, line
    assert "is edged running?" in line and "EDGED_TARGET" in line


def test_ota_signature_diff_is_readable_and_printed_once(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    v1 = modelgen.add_model(tmp_path / "v1.onnx", width=4)
    v2 = modelgen.add_model(tmp_path / "v2.onnx", width=8)

    def sha(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    def edged_ota(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edged.cli.ota", "--target", daemon.target,
                               *args], capture_output=True, text=True, timeout=180, check=False)

    assert edged_ota("install", "adder", str(v1), "--sha256", sha(v1)).returncode == 0
    res = edged_ota("install", "adder", str(v2), "--sha256", sha(v2))
    assert res.returncode == ota.SIGNATURE
    assert "input x: FP32 [?x4] -> FP32 [?x8]" in res.stderr, res.stderr
    assert "output y: FP32 [?x4] -> FP32 [?x8]" in res.stderr
    assert res.stderr.count("input x:") == 1 and "('input'" not in res.stderr


@pytest.mark.parametrize("flag", ["--json", "--timeout"])
def test_flags_do_not_shadow_command_options(flag) -> None:  # type: ignore[no-untyped-def]
    # `install --version N` stays the version number (not edgectl's --version)
    res = run("install", "--help")
    assert "--version VERSION" in res.stdout and flag in res.stdout

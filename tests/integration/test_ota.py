"""`edged-ota` and the Mender Update Module against the real daemon: commit, every kind of
failure rolled back, and a real `mender-artifact` artifact driven through the module's states."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import modelgen
import pytest

from edged.cli import ota

REPO = Path(__file__).resolve().parents[2]


def run_ota(target: str, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    proc = subprocess.run([sys.executable, "-m", "edged.cli.ota", "--target", target, "--json",
                           *args], capture_output=True, text=True, timeout=180, check=False)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_ota_commits_a_good_version(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    v1 = modelgen.add_model(tmp_path / "v1.onnx", offset=1.0)
    v2 = modelgen.add_model(tmp_path / "v2.onnx", offset=2.0)
    code, out = run_ota(daemon.target, "install", "adder", str(v1), "--sha256", sha(v1))
    assert code == ota.COMMITTED and out["ok"] and out["version"] == 1
    with daemon.client() as c:  # a first version goes to swap (the default), loaded and probed
        m = c.get_model("adder")
        assert m.tier == "swap" and m.active_version == 1
        assert any(v.name == "adder" and v.version == 1 for v in c.status().loaded)
        assert any(ev.kind == "load" and ev.model == "adder" for ev in c.events())
    code, out = run_ota(daemon.target, "install", "adder", str(v2), "--sha256", sha(v2))
    assert code == ota.COMMITTED, out
    assert out["previous_version"] == 1 and out["version"] == 2
    with daemon.client() as c:
        m = c.get_model("adder")
        assert m.active_version == 2
        assert {v.version for v in m.versions} == {1, 2}  # previous kept for rollback


def test_ota_first_version_goes_to_the_requested_tier(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    v1 = modelgen.add_model(tmp_path / "v1.onnx", offset=1.0)
    code, out = run_ota(daemon.target, "install", "pinned", str(v1), "--sha256", sha(v1),
                        "--tier", "ram")
    assert code == ota.COMMITTED, out
    with daemon.client() as c:
        assert c.get_model("pinned").tier == "ram"
        assert any(v.name == "pinned" and v.tier == "ram" for v in c.status().loaded)


def test_ota_first_version_that_does_not_load_leaves_nothing(daemon, tmp_path,  # type: ignore[no-untyped-def]
                                                             demo_models) -> None:
    vad = demo_models["silero-vad"]  # its warm-up fails with the default input
    code, out = run_ota(daemon.target, "install", "vad", str(vad), "--sha256", sha(vad))
    assert code == ota.TEST_LOAD and out["stage"] == "test-load", out
    with daemon.client() as c:
        assert c.list_models() == []
    assert list((daemon.state_dir / "store").iterdir()) == []


def test_ota_of_the_active_file_again_changes_nothing(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    v1 = modelgen.add_model(tmp_path / "v1.onnx", offset=1.0)
    assert run_ota(daemon.target, "install", "adder", str(v1), "--sha256", sha(v1))[0] == 0
    code, out = run_ota(daemon.target, "install", "adder", str(v1), "--sha256", sha(v1))
    assert code == ota.COMMITTED and out["already_installed"] and out["version"] == 1
    assert any("already installed as version 1" in s for s in out["steps"])
    code, _ = run_ota(daemon.target, "rollback", "adder", "--version", "1", "--previous", "1")
    assert code == ota.COMMITTED
    with daemon.client() as c:
        assert [v.version for v in c.get_model("adder").versions] == [1]


def test_ota_checksum_mismatch_installs_nothing(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    v1 = modelgen.add_model(tmp_path / "v1.onnx")
    code, out = run_ota(daemon.target, "install", "adder", str(v1), "--sha256", "0" * 64)
    assert code == ota.VERIFY and not out["ok"]
    with daemon.client() as c:
        assert c.list_models() == []


def test_ota_signature_change_rolls_back(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    v1 = modelgen.add_model(tmp_path / "v1.onnx", width=4)
    v2 = modelgen.add_model(tmp_path / "v2.onnx", width=8)
    assert run_ota(daemon.target, "install", "adder", str(v1), "--sha256", sha(v1))[0] == 0
    code, out = run_ota(daemon.target, "install", "adder", str(v2), "--sha256", sha(v2))
    assert code == ota.SIGNATURE and out["stage"] == "signature"
    with daemon.client() as c:
        m = c.get_model("adder")
        assert m.active_version == 1 and [v.version for v in m.versions] == [1]


def test_ota_test_load_failure_rolls_back(daemon, tmp_path, demo_models) -> None:  # type: ignore[no-untyped-def]
    v1 = modelgen.add_model(tmp_path / "v1.onnx")
    assert run_ota(daemon.target, "install", "vad", str(v1), "--sha256", sha(v1))[0] == 0
    # silero-vad's warm-up fails with the default 64-sample input: a test-load failure
    vad = demo_models["silero-vad"]
    code, out = run_ota(daemon.target, "install", "vad", str(vad), "--sha256", sha(vad),
                        "--allow-signature-change")
    assert code == ota.TEST_LOAD, out
    with daemon.client() as c:
        m = c.get_model("vad")
        assert m.active_version == 1 and [v.version for v in m.versions] == [1]


@pytest.mark.skipif(shutil.which("mender-artifact") is None and os.environ.get("CI") != "true",
                    reason="mender-artifact (Debian package) is not installed")
@pytest.mark.slow
def test_mender_update_module_with_a_real_artifact(daemon, tmp_path, demo_models) -> None:  # type: ignore[no-untyped-def]
    model = demo_models["ppocr-cls"]
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"name": "ppocr-cls", "sha256": sha(model), "tier": "swap",
                                "tasks": ["ocr.classify"], "warmup": ["x=1x3x48x192"]}))
    artifact = tmp_path / "cls.mender"
    subprocess.run(["mender-artifact", "write", "module-image", "-T", "edged-model", "-n",
                    "cls-1", "-t", "jetson-orin-nano", "-o", str(artifact), "-f", str(model),
                    "-m", str(meta)], check=True, capture_output=True)
    files_dir = unpack_like_mender(artifact, tmp_path / "work")
    module = REPO / "tools/mender/edged-model"
    env = {**os.environ, "EDGED_TARGET": daemon.target, "EDGED_PYTHON": sys.executable}

    def state(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(module), name, str(files_dir)], env=env, text=True,
                              capture_output=True, timeout=180, check=False)

    assert state("SupportsRollback").stdout.strip() == "Yes"
    assert state("NeedsArtifactReboot").stdout.strip() == "No"
    assert state("Download").returncode == 0
    install = state("ArtifactInstall")
    assert install.returncode == 0, install.stderr
    with daemon.client() as c:
        m = c.get_model("ppocr-cls")
        assert m.active_version == 1 and m.tier == "swap"  # the meta-data's tier
        assert any(v.name == "ppocr-cls" for v in c.status().loaded)  # test-loaded, probed
    assert state("ArtifactCommit").returncode == 0
    assert state("Cleanup").returncode == 0
    # the same artifact again: already installed, and rolling that back changes nothing
    again = unpack_like_mender(artifact, tmp_path / "again")
    for step in ("ArtifactInstall", "ArtifactRollback"):
        assert subprocess.run([str(module), step, str(again)], env=env, capture_output=True,
                              timeout=180, check=False).returncode == 0
    with daemon.client() as c:
        assert [v.version for v in c.get_model("ppocr-cls").versions] == [1]
    # a second artifact, then Mender decides to roll back (e.g. its own health check failed)
    import onnx

    proto = onnx.load(str(model))
    proto.doc_string = "retrained"
    model2 = tmp_path / "cls-2.onnx"
    onnx.save(proto, str(model2))
    meta.write_text(json.dumps({"name": "ppocr-cls", "sha256": sha(model2), "tier": "swap",
                                "warmup": ["x=1x3x48x192"]}))
    artifact2 = tmp_path / "cls2.mender"
    subprocess.run(["mender-artifact", "write", "module-image", "-T", "edged-model", "-n",
                    "cls-2", "-t", "jetson-orin-nano", "-o", str(artifact2), "-f", str(model2),
                    "-m", str(meta)], check=True, capture_output=True)
    files2 = unpack_like_mender(artifact2, tmp_path / "work2")
    assert subprocess.run([str(module), "ArtifactInstall", str(files2)], env=env,
                          capture_output=True, timeout=180, check=False).returncode == 0
    with daemon.client() as c:
        assert c.get_model("ppocr-cls").active_version == 2
    rb = subprocess.run([str(module), "ArtifactRollback", str(files2)], env=env, text=True,
                        capture_output=True, timeout=180, check=False)
    assert rb.returncode == 0, rb.stderr
    with daemon.client() as c:
        m = c.get_model("ppocr-cls")
        assert m.active_version == 1 and [v.version for v in m.versions] == [1]


def unpack_like_mender(artifact: Path, work: Path) -> Path:
    """Lay the artifact out as the Mender client does for an Update Module (protocol v3):
    header/{meta-data,type-info,header-info}, files/<payload>, tmp/."""
    files_dir = work / "files_dir"
    (files_dir / "header").mkdir(parents=True)
    (files_dir / "files").mkdir()
    (files_dir / "tmp").mkdir()
    (files_dir / "version").write_text("3")
    with tarfile.open(artifact) as outer:
        outer.extractall(work / "raw", filter="data")
    with tarfile.open(work / "raw" / "header.tar.gz") as h:
        h.extractall(work / "hdr", filter="data")
    for name in ("meta-data", "type-info"):
        src = work / "hdr" / "headers" / "0000" / name
        if src.exists():
            shutil.copy(src, files_dir / "header" / name)
    shutil.copy(work / "hdr" / "header-info", files_dir / "header" / "header-info")
    with tarfile.open(work / "raw" / "data" / "0000.tar.gz") as d:
        d.extractall(files_dir / "files", filter="data")
    return files_dir


def _variant_of(src: Path, dst: Path) -> Path:
    """An fp16 variant made by the converter edged uses on the device."""
    from edged.engines import convert

    convert.convert("fp16", src, dst)
    return dst


@pytest.mark.slow
def test_ota_installs_a_version_with_its_variants(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    v1 = modelgen.weights_model(tmp_path / "v1.onnx", 1 << 20, seed=1)
    v2 = modelgen.weights_model(tmp_path / "v2.onnx", 1 << 20, seed=2)
    half = _variant_of(v2, tmp_path / "v2-fp16.onnx")
    assert run_ota(daemon.target, "install", "w", str(v1), "--sha256", sha(v1))[0] == 0
    code, out = run_ota(daemon.target, "install", "w", str(v2), "--sha256", sha(v2),
                        "--variant-file", f"fp16={half}:{sha(half)}")
    assert code == ota.COMMITTED, out
    assert any("added variant fp16 to v2" in step and "test-loaded" in step
               for step in out["steps"]), out
    with daemon.client() as c:
        m = c.get_model("w")
        v = next(x for x in m.versions if x.version == 2)
        assert m.active_version == 2 and [x.name for x in v.variants] == ["fp16"]
        assert v.serve == ""  # the test-load's pin is undone


def test_ota_with_a_bad_variant_rolls_everything_back(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    v1 = modelgen.weights_model(tmp_path / "v1.onnx", 1 << 20, seed=1)
    v2 = modelgen.weights_model(tmp_path / "v2.onnx", 1 << 20, seed=2)
    half = _variant_of(v2, tmp_path / "v2-fp16.onnx")
    other = modelgen.add_model(tmp_path / "other.onnx")  # another signature
    assert run_ota(daemon.target, "install", "w", str(v1), "--sha256", sha(v1))[0] == 0
    code, out = run_ota(daemon.target, "install", "w", str(v2), "--sha256", sha(v2),
                        "--variant-file", f"fp16={half}:{'0' * 64}")
    assert code == ota.VERIFY and "variant fp16" in out["message"], out
    code, out = run_ota(daemon.target, "install", "w", str(v2), "--sha256", sha(v2),
                        "--variant-file", f"odd={other}:{sha(other)}")
    assert code == ota.VERIFY and "signature" in out["message"], out
    with daemon.client() as c:
        m = c.get_model("w")
        assert m.active_version == 1 and [x.version for x in m.versions] == [1]


@pytest.mark.skipif(shutil.which("mender-artifact") is None and os.environ.get("CI") != "true",
                    reason="mender-artifact (Debian package) is not installed")
def test_mender_artifact_with_variants(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = modelgen.weights_model(tmp_path / "w.onnx", 1 << 20, seed=3)
    half = _variant_of(model, tmp_path / "w-fp16.onnx")
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"name": "w", "file": "w.onnx", "sha256": sha(model),
                                "variants": {"fp16": {"file": "w-fp16.onnx",
                                                      "sha256": sha(half)}}}))
    artifact = tmp_path / "w.mender"
    subprocess.run(["mender-artifact", "write", "module-image", "-T", "edged-model", "-n",
                    "w-1", "-t", "jetson-orin-nano", "-o", str(artifact), "-f", str(model),
                    "-f", str(half), "-m", str(meta)], check=True, capture_output=True)
    files_dir = unpack_like_mender(artifact, tmp_path / "work")
    env = {**os.environ, "EDGED_TARGET": daemon.target, "EDGED_PYTHON": sys.executable}
    install = subprocess.run([str(REPO / "tools/mender/edged-model"), "ArtifactInstall",
                              str(files_dir)], env=env, text=True, capture_output=True,
                             timeout=180, check=False)
    assert install.returncode == 0, install.stderr + install.stdout
    with daemon.client() as c:
        (v,) = c.get_model("w").versions
        assert [x.name for x in v.variants] == ["fp16"]

"""systemd/edged.service: verified by systemd's own ``systemd-analyze verify`` (alone and with each
drop-in example), its hardening checked directive by directive, every directive checked against
the oldest systemd we support (249, JetPack 6), and sysusers.d/tmpfiles.d applied to a temp root.

``systemd-analyze`` comes from Debian's ``systemd`` package (tools/test.sh installs it). Without
it these tests skip locally, and fail under CI=true, where a skip would hide a broken unit.

About the ``edged`` user: ``verify`` does not resolve User=/Group=, so the unit verifies on a
machine without that user; nothing here needs ``--root``. ``verify`` does require ExecStart's
program to exist and be executable, so the copy under test points ExecStart at this venv's
``edged`` console script (or, before ``pip install -e .``, a stub script).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edged import config as cfgmod

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "systemd"
UNIT = SYSTEMD / "edged.service"
EXAMPLES = sorted((SYSTEMD / "edged.service.d").glob("*.conf.example"))
OLDEST_SYSTEMD = 249

# The systemd version that introduced each directive we use (systemd's NEWS and man pages).
# A directive missing from this table fails the test: decide its version before using it.
# 1 stands for "older than any systemd still around".
INTRODUCED: dict[str, int] = {
    # [Unit] / [Install]
    "Description": 1, "After": 1, "Wants": 1, "WantedBy": 1, "StartLimitIntervalSec": 230,
    # [Service] lifecycle
    "Type": 1, "NotifyAccess": 1, "ExecStart": 1, "ExecStartPre": 1, "ExecReload": 1,
    "WatchdogSec": 1, "TimeoutStartSec": 188, "TimeoutStopSec": 188, "Restart": 1,
    "RestartSec": 1, "RestartPreventExitStatus": 189, "KillMode": 209,  # KillMode=mixed: 209
    "OOMPolicy": 243, "OOMScoreAdjust": 1,
    # identity, directories, environment
    "User": 1, "Group": 1, "SupplementaryGroups": 1, "StateDirectory": 235,
    "RuntimeDirectory": 211, "RuntimeDirectoryPreserve": 235, "ConfigurationDirectory": 235,
    "CacheDirectory": 235, "UMask": 1, "Environment": 1, "LoadCredential": 247,
    # sandboxing
    "NoNewPrivileges": 187, "CapabilityBoundingSet": 1, "ProtectSystem": 232,  # =strict: 232
    "ProtectHome": 214, "PrivateTmp": 1, "ProtectKernelTunables": 232,
    "ProtectKernelModules": 232, "ProtectKernelLogs": 244, "ProtectControlGroups": 232,
    "ProtectHostname": 242, "ProtectProc": 247, "RestrictSUIDSGID": 242, "LockPersonality": 235,
    "RestrictRealtime": 231, "RestrictNamespaces": 233, "RestrictAddressFamilies": 211,
    "SystemCallArchitectures": 187, "SystemCallFilter": 187, "SystemCallErrorNumber": 187,
    "IPAddressAllow": 235, "IPAddressDeny": 235,
    # resources
    "MemoryHigh": 231, "MemoryMax": 231, "MemorySwapMax": 232, "ManagedOOMPreference": 248,
}

REQUIRED = {
    "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30s", "Restart": "on-failure",
    "RestartSec": "2", "StateDirectory": "edged", "RuntimeDirectory": "edged",
    "RuntimeDirectoryPreserve": "no", "ConfigurationDirectory": "edged", "User": "edged",
    "Group": "edged", "SupplementaryGroups": "video render",
    "ExecStart": f"/usr/local/bin/edged --config {cfgmod.DEFAULT_PATH}",
    "ExecReload": "/bin/kill -HUP $MAINPID", "KillMode": "mixed", "OOMScoreAdjust": "-500",
    "OOMPolicy": "continue", "RestartPreventExitStatus": "2",
}
HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
    "RestrictRealtime": "yes", "RestrictNamespaces": "yes", "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "", "UMask": "0007",
}
# Each would break CUDA or the daemon (the unit's comments say why); each must stay documented.
FORBIDDEN = ("PrivateDevices", "MemoryDenyWriteExecute", "ProtectClock", "DevicePolicy",
             "DeviceAllow", "ProcSubset", "PrivateUsers", "SystemCallFilter", "RemoveIPC")


def parse(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) per assignment, repeats kept, as systemd reads a unit file."""
    out, section, pending = [], "", ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def directives(path: Path) -> dict[str, str]:
    """The last value of each key (what a single-valued setting ends up as)."""
    return {key: value for _, key, value in parse(path)}


def _tool(name: str) -> str:
    """A Debian systemd tool: skip without it locally, fail under CI (a skip would hide a bug)."""
    tool = shutil.which(name)
    if tool is None:
        message = f"{name} is missing: apt-get install -y systemd (tools/test.sh does)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return tool


@pytest.fixture(scope="module")
def analyze() -> str:
    return _tool("systemd-analyze")


def _executable(tmp_path: Path) -> str:
    installed = Path(sys.executable).parent / "edged"
    if installed.exists():
        return str(installed)
    stub = tmp_path / "edged-stub"  # before `pip install -e .`: verify only needs a program
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    return str(stub)


def _staged(tmp_path: Path, drop_in: Path | None = None, extra: str = "") -> Path:
    """A copy of the unit (ExecStart made runnable here), with an optional drop-in beside it."""
    text = UNIT.read_text().replace("ExecStart=/usr/local/bin/edged ",
                                    f"ExecStart={_executable(tmp_path)} ", 1)
    unit = tmp_path / "edged.service"
    unit.write_text(text.replace("[Service]\n", f"[Service]\n{extra}", 1))
    if drop_in is not None:
        (tmp_path / "edged.service.d").mkdir()
        shutil.copy(drop_in, tmp_path / "edged.service.d" / drop_in.name.removesuffix(".example"))
    return unit


def _verify(analyze: str, unit: Path) -> subprocess.CompletedProcess[str]:
    help_text = subprocess.run([analyze, "verify", "--help"], capture_output=True,
                               text=True, check=False).stdout
    flags = ["--man=no"]
    if "--recursive-errors" in help_text:  # systemd >= 250: only our unit's errors count
        flags.append("--recursive-errors=no")
    return subprocess.run([analyze, "verify", *flags, str(unit)], capture_output=True,
                          text=True, check=False, timeout=120, cwd=unit.parent,
                          env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})


def _ours(proc: subprocess.CompletedProcess[str], unit: Path) -> list[str]:
    """Output lines about our unit or its drop-ins (any warning there is a finding)."""
    text = proc.stdout + proc.stderr
    return [ln for ln in text.splitlines() if "edged.service" in ln or str(unit.parent) in ln]


def test_unit_verifies_without_warnings(analyze: str, tmp_path: Path) -> None:
    unit = _staged(tmp_path)
    proc = _verify(analyze, unit)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _ours(proc, unit) == []


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_unit_with_each_drop_in_example_verifies(analyze: str, tmp_path: Path,
                                                 example: Path) -> None:
    unit = _staged(tmp_path, example)
    proc = _verify(analyze, unit)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _ours(proc, unit) == []


def test_verify_does_catch_mistakes(analyze: str, tmp_path: Path) -> None:
    """The harness is not vacuous: an unknown key and a bad value both fail verification."""
    for extra, needle in (("ProtectSystm=strict\n", "Unknown key"),
                          ("OOMPolicy=sometimes\n", "OOM policy")):
        sub = tmp_path / needle.replace(" ", "-")
        sub.mkdir()
        proc = _verify(analyze, _staged(sub, extra=extra))
        assert proc.returncode != 0 and needle in proc.stdout + proc.stderr


def test_required_settings() -> None:
    got = directives(UNIT)
    for key, value in REQUIRED.items():
        assert got.get(key) == value, key
    assert ("Install", "WantedBy", "multi-user.target") in parse(UNIT)


def test_hardening_present() -> None:
    got = directives(UNIT)
    for key, value in HARDENING.items():
        assert got.get(key) == value, key


def test_cuda_breaking_options_absent_and_documented() -> None:
    keys = {key for _, key, _ in parse(UNIT)}
    comments = "\n".join(ln for ln in UNIT.read_text().splitlines() if ln.startswith("#"))
    for key in FORBIDDEN:
        assert key not in keys, key
        assert f"{key}=" in comments, f"{key}: say in the unit why it is left out"
    for example in EXAMPLES:  # the examples may add a syscall filter, never the GPU breakers
        ex_keys = {key for _, key, _ in parse(example)}
        assert not ex_keys & {"PrivateDevices", "MemoryDenyWriteExecute", "ProtectClock",
                              "DevicePolicy", "DeviceAllow", "ProcSubset"}, example.name


@pytest.mark.parametrize("path", [UNIT, *EXAMPLES], ids=lambda p: p.name)
def test_no_directive_newer_than_systemd_249(path: Path) -> None:
    for _, key, _ in parse(path):
        assert key in INTRODUCED, f"{path.name}: {key}= is not in the version table"
        assert INTRODUCED[key] <= OLDEST_SYSTEMD, f"{path.name}: {key}= needs a newer systemd"
    text = path.read_text()
    assert "notify-reload" not in text  # Type=notify-reload is systemd 253


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(s|min)?", value)
    assert m, value
    return int(m[1]) * (60 if m[2] == "min" else 1)


def test_stop_timeout_leaves_room_for_the_drain() -> None:
    """SIGKILL must not cut the graceful stop short: the drain plus the workers' exit fit."""
    got = directives(UNIT)
    assert _seconds(got["TimeoutStopSec"]) >= cfgmod.Config().stop_grace_s + 15
    assert _seconds(got["WatchdogSec"]) >= 10  # two heartbeats per period, with room for load


def test_sysusers_creates_user_and_gpu_groups(tmp_path: Path) -> None:
    """Applied to an empty temp root (``--root``): this machine's users are not touched."""
    (tmp_path / "etc").mkdir()
    subprocess.run([_tool("systemd-sysusers"), f"--root={tmp_path}",
                    str(SYSTEMD / "sysusers.d" / "edged.conf")],
                   check=True, capture_output=True, timeout=60)
    passwd = {ln.split(":")[0]: ln.split(":") for ln in
              (tmp_path / "etc/passwd").read_text().splitlines()}
    groups = {ln.split(":")[0]: ln.split(":") for ln in
              (tmp_path / "etc/group").read_text().splitlines()}
    assert passwd["edged"][5] == "/var/lib/edged"
    assert passwd["edged"][3] == groups["edged"][2]  # primary group edged
    for name in ("video", "render"):
        assert "edged" in groups[name][3].split(","), name


def test_tmpfiles_makes_a_root_only_credentials_dir(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating root-owned paths needs root")
    subprocess.run([_tool("systemd-tmpfiles"), f"--root={tmp_path}", "--create",
                    str(SYSTEMD / "tmpfiles.d" / "edged.conf")],
                   check=True, capture_output=True, timeout=60)
    st = (tmp_path / "etc/edged/credentials").stat()
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o700, 0, 0)


def test_config_error_exit_status_is_the_one_that_prevents_restarts(tmp_path: Path) -> None:
    """RestartPreventExitStatus= must match what ExecStart's command exits with on a bad config,
    or a broken config would restart forever (StartLimitIntervalSec=0)."""
    bad = tmp_path / "edged.yaml"
    bad.write_text("version: 1\nlisten:\n  no_such_key: 1\n")
    proc = subprocess.run([sys.executable, "-m", "edged", "--config", str(bad)],
                          capture_output=True, text=True, check=False, timeout=60)
    assert "config error" in proc.stderr
    assert str(proc.returncode) == directives(UNIT)["RestartPreventExitStatus"]

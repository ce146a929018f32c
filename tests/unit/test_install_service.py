"""tools/install_service.py, only ever as a plan: --dry-run on this machine (which must come out
unchanged), and the plan for made-up hosts. Never changes this machine's users or files."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "install_service.py"


@pytest.fixture(scope="module")
def inst() -> ModuleType:
    spec = importlib.util.spec_from_file_location("install_service", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["install_service"] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


def host(inst: ModuleType, *, sysusers: bool = False, groups: dict[str, set[str]] | None = None,
         users: set[str] | None = None, config_exists: bool = False,
         systemd: bool = True) -> object:
    return inst.Host(
        users=frozenset(users or {"root"}),
        members={g: frozenset(m) for g, m in (groups or {"root": set()}).items()},
        tools={"systemd-sysusers": "/usr/bin/systemd-sysusers" if sysusers else None,
               "systemd-tmpfiles": "/usr/bin/systemd-tmpfiles" if sysusers else None},
        systemd_running=systemd,
        existing=frozenset({inst.CONFIG_DEST} if config_exists else ()))


def texts(steps: list) -> list[str]:
    return [s.text for s in steps]


def test_plan_with_useradd_on_a_bare_host(inst: ModuleType) -> None:
    steps = inst.plan(host(inst), prefix=Path("/opt/edged"), config_src=None)
    assert texts(steps) == [
        "run: groupadd --system edged",
        "run: useradd --system --gid edged --home-dir /var/lib/edged --no-create-home "
        "--shell /usr/sbin/nologin --comment 'edged model daemon' edged",
        "run: groupadd --system video",
        "run: usermod --append --groups video edged",
        "run: groupadd --system render",
        "run: usermod --append --groups render edged",
        "mkdir: /etc/edged/credentials (mode 0700)",
        "write: /etc/systemd/system/edged.service (mode 0644; ExecStart=/opt/edged/bin/edged)",
        "write: /etc/edged/edged.yaml (mode 0644; from `/opt/edged/bin/edged config default`)",
        "run: systemctl daemon-reload",
    ]


def test_plan_skips_what_exists(inst: ModuleType) -> None:
    h = host(inst, users={"root", "edged"}, config_exists=True, systemd=False,
             groups={"edged": set(), "video": {"edged"}, "render": set()})
    got = texts(inst.plan(h, prefix=Path("/usr/local"), config_src=None))
    assert not any("useradd" in t or "groupadd" in t or "groups video" in t for t in got)
    assert "run: usermod --append --groups render edged" in got
    assert "keep: /etc/edged/edged.yaml exists" in got
    assert got[-1] == "skip: systemctl daemon-reload (systemd is not running here)"


def test_plan_with_sysusers_and_a_config_file(inst: ModuleType, tmp_path: Path) -> None:
    src = tmp_path / "my.yaml"
    src.write_text("version: 1\n")
    got = texts(inst.plan(host(inst, sysusers=True), prefix=Path("/usr/local"), config_src=src))
    assert got[:4] == [
        f"write: /etc/sysusers.d/edged.conf (mode 0644; from {REPO}/systemd/sysusers.d/edged.conf)",
        "run: /usr/bin/systemd-sysusers /etc/sysusers.d/edged.conf",
        f"write: /etc/tmpfiles.d/edged.conf (mode 0644; from {REPO}/systemd/tmpfiles.d/edged.conf)",
        "run: /usr/bin/systemd-tmpfiles --create /etc/tmpfiles.d/edged.conf",
    ]
    assert f"write: /etc/edged/edged.yaml (mode 0644; from {src})" in got
    assert not any("useradd" in t for t in got)


def test_installed_unit_runs_the_prefix_edged(inst: ModuleType) -> None:
    steps = inst.plan(host(inst), prefix=Path("/opt/edged"), config_src=None)
    (unit,) = [s for s in steps if "edged.service" in s.text]
    text = unit.preview.decode()
    assert "\nExecStart=/opt/edged/bin/edged --config /etc/edged/edged.yaml\n" in text
    assert "/usr/local/bin/edged" not in text
    assert text.replace("/opt/edged/bin/edged", "/usr/local/bin/edged") == (
        REPO / "systemd/edged.service").read_text()


def test_dry_run_on_this_machine_changes_nothing(tmp_path: Path) -> None:
    watched = [Path("/etc/systemd/system/edged.service"), Path("/etc/edged/edged.yaml"),
               Path("/etc/sysusers.d/edged.conf"), Path("/etc/tmpfiles.d/edged.conf")]
    before = [p.exists() for p in watched]
    passwd, group = Path("/etc/passwd").read_bytes(), Path("/etc/group").read_bytes()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("version: 1\n")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--prefix", str(tmp_path),
                           "--config-src", str(cfg)], capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "dry run: nothing is changed"
    assert lines[-1] == "next: systemctl enable --now edged"
    actions = lines[1:-1]
    assert all(ln.startswith(("would ", "keep: ", "skip: ")) for ln in actions), actions
    assert (f"would write: /etc/systemd/system/edged.service (mode 0644; "
            f"ExecStart={tmp_path}/bin/edged)") in actions
    assert any("daemon-reload" in ln for ln in actions)
    assert any("edged.yaml" in ln for ln in actions)
    assert f"{tmp_path}/bin/edged does not exist" in proc.stderr
    assert [p.exists() for p in watched] == before
    assert (Path("/etc/passwd").read_bytes(), Path("/etc/group").read_bytes()) == (passwd, group)


def test_missing_config_src_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--config-src",
                           str(tmp_path / "absent.yaml")], capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 1 and "is not a file" in proc.stderr

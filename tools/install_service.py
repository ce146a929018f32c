#!/usr/bin/env python3
"""Install edged as a systemd service on this machine.

    python tools/install_service.py [--dry-run] [--prefix /usr/local] [--config-src FILE]

Creates the ``edged`` system user and group (and the ``video``/``render`` groups its unit
names, when missing), installs ``systemd/edged.service`` to /etc/systemd/system with ExecStart
pointing at ``<prefix>/bin/edged``, the default config to /etc/edged/edged.yaml unless one
exists, and reloads systemd. It does not enable or start the service.

Every action is printed before it is done; ``--dry-run`` prints the same plan and does nothing.
The plan is computed from a ``Host`` snapshot (users, groups, tools, files), so it can be
checked without touching the machine. Users are created declaratively with systemd-sysusers
when available (idempotent, the same file a package would ship), else with useradd/groupadd.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNIT_DEST = Path("/etc/systemd/system/edged.service")
CONFIG_DEST = Path("/etc/edged/edged.yaml")
SYSUSERS_DEST = Path("/etc/sysusers.d/edged.conf")
TMPFILES_DEST = Path("/etc/tmpfiles.d/edged.conf")
GPU_GROUPS = ("video", "render")
USER = "edged"


@dataclass(frozen=True)
class Host:
    """What the plan depends on, read once from the machine (or made up by a test)."""

    users: frozenset[str]
    members: Mapping[str, frozenset[str]]  # every existing group -> its supplementary members
    tools: Mapping[str, str | None]  # name -> path, None when missing
    systemd_running: bool
    existing: frozenset[Path] = frozenset()

    @classmethod
    def probe(cls, paths: Sequence[Path] = (CONFIG_DEST,)) -> Host:
        return cls(
            users=frozenset(p.pw_name for p in pwd.getpwall()),
            members={g.gr_name: frozenset(g.gr_mem) for g in grp.getgrall()},
            tools={t: shutil.which(t) for t in ("systemd-sysusers", "systemd-tmpfiles")},
            systemd_running=Path("/run/systemd/system").is_dir(),
            existing=frozenset(p for p in paths if p.exists()))


@dataclass(frozen=True)
class Step:
    """One action: ``text`` is what gets printed; ``do`` carries it out (None: nothing to do)."""

    text: str
    do: Callable[[], None] | None = field(default=None, compare=False)
    preview: bytes | None = field(default=None, compare=False)  # a write's content, if static


def run(cmd: list[str]) -> Step:
    return Step("run: " + shlex.join(cmd), lambda: _check_call(cmd))


def write(dest: Path, mode: int, why: str, content: Callable[[], bytes],
          preview: bytes | None = None) -> Step:
    """Write atomically (temp file, rename); ``content`` is only called when it is done."""

    def do() -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.write_bytes(content())
        tmp.chmod(mode)
        tmp.replace(dest)

    return Step(f"write: {dest} (mode {mode:04o}; {why})", do, preview)


def note(text: str) -> Step:
    return Step(text)


def _check_call(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True)


def unit_text(prefix: Path) -> bytes:
    """The unit with ExecStart pointing at this prefix's ``edged``."""
    text = (SYSTEMD / "edged.service").read_text()
    return text.replace("ExecStart=/usr/local/bin/edged ", f"ExecStart={prefix}/bin/edged ",
                        1).encode()


def default_config(edged: Path) -> bytes:
    cmd = [str(edged)] if edged.exists() else [sys.executable, "-m", "edged"]
    return subprocess.run([*cmd, "config", "default"], check=True,
                          capture_output=True).stdout


def plan(host: Host, *, prefix: Path, config_src: Path | None) -> list[Step]:
    steps = _user_steps(host)
    if host.tools.get("systemd-tmpfiles"):
        src = SYSTEMD / "tmpfiles.d" / "edged.conf"
        steps += [write(TMPFILES_DEST, 0o644, f"from {src}", src.read_bytes),
                  run([str(host.tools["systemd-tmpfiles"]), "--create", str(TMPFILES_DEST)])]
    else:
        creds = CONFIG_DEST.parent / "credentials"
        steps.append(Step(f"mkdir: {creds} (mode 0700)",
                          lambda: creds.mkdir(mode=0o700, parents=True, exist_ok=True)))
    edged = prefix / "bin" / "edged"
    unit = unit_text(prefix)
    steps.append(write(UNIT_DEST, 0o644, f"ExecStart={edged}", lambda: unit, preview=unit))
    if CONFIG_DEST in host.existing:
        steps.append(note(f"keep: {CONFIG_DEST} exists"))
    elif config_src is not None:
        steps.append(write(CONFIG_DEST, 0o644, f"from {config_src}", config_src.read_bytes))
    else:
        steps.append(write(CONFIG_DEST, 0o644, f"from `{edged} config default`",
                           lambda: default_config(edged)))
    if host.systemd_running:
        steps.append(run(["systemctl", "daemon-reload"]))
    else:
        steps.append(note("skip: systemctl daemon-reload (systemd is not running here)"))
    return steps


def _user_steps(host: Host) -> list[Step]:
    sysusers = host.tools.get("systemd-sysusers")
    if sysusers:
        src = SYSTEMD / "sysusers.d" / "edged.conf"
        return [write(SYSUSERS_DEST, 0o644, f"from {src}", src.read_bytes),
                run([sysusers, str(SYSUSERS_DEST)])]
    steps = []
    if USER not in host.members:
        steps.append(run(["groupadd", "--system", USER]))
    if USER not in host.users:
        steps.append(run(["useradd", "--system", "--gid", USER, "--home-dir", "/var/lib/edged",
                          "--no-create-home", "--shell", "/usr/sbin/nologin",
                          "--comment", "edged model daemon", USER]))
    for group in GPU_GROUPS:  # the unit's SupplementaryGroups= fails the start if one is missing
        if group not in host.members:
            steps.append(run(["groupadd", "--system", group]))
        if USER not in host.members.get(group, frozenset()):
            steps.append(run(["usermod", "--append", "--groups", group, USER]))
    return steps


def main(argv: Sequence[str] | None = None, host: Host | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--prefix", type=Path, default=Path("/usr/local"),
                   help="where edged is installed: ExecStart runs PREFIX/bin/edged")
    p.add_argument("--config-src", type=Path, help="install this file as the config instead "
                   "of `edged config default` (only when none exists)")
    args = p.parse_args(argv)
    if not args.dry_run and os.geteuid() != 0:
        print("install_service: run as root (or with --dry-run)", file=sys.stderr)
        return 1
    if args.config_src is not None and not args.config_src.is_file():
        print(f"install_service: --config-src {args.config_src} is not a file", file=sys.stderr)
        return 1
    edged = args.prefix / "bin" / "edged"
    if not edged.exists():
        print(f"warning: {edged} does not exist (yet): install edged there before starting",
              file=sys.stderr)
    steps = plan(host or Host.probe(), prefix=args.prefix, config_src=args.config_src)
    if args.dry_run:
        print("dry run: nothing is changed")
    for step in steps:
        print(("would " if args.dry_run and step.do else "") + step.text, flush=True)
        if not args.dry_run and step.do is not None:
            step.do()
    print("next: systemctl enable --now edged")
    return 0


if __name__ == "__main__":
    sys.exit(main())

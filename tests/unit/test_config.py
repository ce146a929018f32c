"""Config: defaults, the commented default text, and errors naming key, line and reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edged import config as c


def test_default_text_parses_to_the_defaults() -> None:
    assert c.parse(c.default_text()) == c.Config()


def test_empty_file_is_all_defaults() -> None:
    assert c.parse("") == c.Config()
    assert c.parse("version: 1\n") == c.Config()


@pytest.mark.parametrize(("text", "expected"), [
    ("budgets:\n  ram: lots\n", "budgets.ram (line 2): cannot parse size 'lots'"),
    ("listen:\n  unix_mode: 999\n", "listen.unix_mode (line 2): must be a permission mode"),
    ("bogus: 1\n", "bogus (line 1): unknown key"),
    ("engines:\n  queue_depth: -1\n", "engines.queue_depth (line 2): must be between 1"),
    ("engines:\n  queue_depth: many\n", "engines.queue_depth (line 2): must be an integer"),
    ("version: 2\n", "version (line 1): unsupported config version 2"),
    ("listen:\n  tcp: '0.0.0.0:1'\n", "listen.tcp (line 2): TCP needs TLS"),
    ("listen: [1, 2]\n", "listen (line 1): must be a mapping"),
    ("auth:\n  tokens:\n    - {scope: admin}\n", "auth.tokens[0] (line 3): needs a file"),
    ("auth:\n  tokens:\n    - {file: /x, scope: root}\n",
     "auth.tokens[0].scope (line 3): must be one of admin, infer"),
    ("preload:\n  enabled: maybe\n", "preload.enabled (line 2): must be true or false"),
    ("budgets:\n  swap: 140%\n", "budgets.swap (line 2): percentage '140%' is over 100%"),
    ("a: [\n", "(yaml) (line 2)"),
    ("state_dir: 1\nstate_dir: 2\n", "state_dir (line 2): duplicate key"),
])
def test_errors_name_key_line_and_reason(text: str, expected: str) -> None:
    with pytest.raises(c.ConfigError) as info:
        c.parse(text, source="edged.yaml")
    assert str(info.value).startswith("edged.yaml: " + expected), str(info.value)


def test_sizes_and_budgets_resolve_against_a_simulated_8gb_device() -> None:
    cfg = c.parse("budgets:\n  memory_total: 8GiB\n  reserve: 1GiB\n  ram: 50%\n"
                  "  swap: 2GiB\n  storage: 10%\n")
    b = c.resolve_budgets(cfg.budgets, memory_total=24 << 30, disk_total=100 << 30)
    assert b.memory_total == 8 << 30
    assert b.reserve == 1 << 30
    assert b.ram == (7 << 30) // 2
    assert b.swap == 2 << 30
    assert b.storage == 10 << 30


def test_unix_mode_accepts_quoted_and_yaml_octal() -> None:
    assert c.parse('listen:\n  unix_mode: "0640"\n').listen.unix_mode == 0o640
    assert c.parse("listen:\n  unix_mode: 0600\n").listen.unix_mode == 0o600


def test_overrides_win_over_the_file() -> None:
    cfg = c.parse("state_dir: /a\nlisten:\n  unix: /b.sock\n")
    over = cfg.with_overrides(Path("/c"), Path("/d.sock"))
    assert over.state_dir == Path("/c") and over.listen.unix == Path("/d.sock")


def _edged(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True,
                          text=True, check=False)


def test_cli_config_default_and_check(tmp_path: Path) -> None:
    out = _edged("config", "default")
    assert out.returncode == 0 and out.stdout.startswith("# edged configuration")
    good = tmp_path / "good.yaml"
    good.write_text(out.stdout)
    assert _edged("config", "check", str(good)).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nbudgets:\n  ram: 12 parsecs\n")
    res = _edged("config", "check", str(bad))
    assert res.returncode == 2
    assert "budgets.ram (line 3)" in res.stderr and "Traceback" not in res.stderr


def test_daemon_refuses_a_bad_config_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nlisten:\n  threads: zero\n")
    res = _edged("--config", str(bad), "--state-dir", str(tmp_path / "s"), "--socket",
                 str(tmp_path / "s.sock"))
    assert res.returncode == 2
    assert "listen.threads (line 3): must be an integer" in res.stderr
    assert "Traceback" not in res.stderr

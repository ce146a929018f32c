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


@pytest.mark.parametrize(("text", "expected"), [
    # errors about a key point at the key's line, also when its value is a mapping or a list
    ("listen:\n  threads: 8\n  bogus:\n    a: 1\n", "listen.bogus (line 3): unknown key"),
    ("listen:\n  bogus:\n    - 1\n", "listen.bogus (line 2): unknown key"),
    ("telemetry:\n\n  extra:\n\n    deep: {x: 1}\n", "telemetry.extra (line 3): unknown key"),
    # complex YAML keys are an error, not a TypeError
    ("? [a, b]\n: 1\n", "(top level) (line 1): keys must be plain names"),
    ("listen:\n  {a: 1}: 2\n", "listen (line 2): keys must be plain names"),
    # budgets that cannot fit the (simulated) device
    ("budgets:\n  memory_total: 8GiB\n  reserve: 20GiB\n",
     "budgets.reserve (line 3): 20.0 GiB leaves nothing of memory_total (8.0 GiB)"),
    ("budgets:\n  memory_total: 8GiB\n  ram: 6GiB\n  swap: 4GiB\n",
     "budgets (line 4): ram 6.0 GiB + swap 4.0 GiB = 10.0 GiB is more than memory_total minus "
     "the reserve (8.0 GiB - 1.0 GiB = 7.0 GiB)"),
    ("budgets:\n  ram: 60%\n  swap: 50%\n",
     "budgets (line 3): ram 60% + swap 50% is more than 100%"),
    ("budgets:\n  memory_total: 0\n", "budgets.memory_total (line 2): must be more than 0"),
    # TCP with TLS but no token: every call would be UNAUTHENTICATED
    ("listen:\n  tcp: '0.0.0.0:8001'\n  tls_cert: /c.pem\n  tls_key: /k.pem\n",
     "listen.tcp (line 2): TCP needs a bearer token: add auth.tokens"),
])
def test_more_errors_name_key_line_and_reason(text: str, expected: str) -> None:
    with pytest.raises(c.ConfigError) as info:
        c.parse(text, source="edged.yaml")
    assert str(info.value).startswith("edged.yaml: " + expected), str(info.value)


def test_budgets_that_fit_still_parse() -> None:
    cfg = c.parse("budgets:\n  memory_total: 8GiB\n  reserve: 1GiB\n  ram: 4GiB\n  swap: 3GiB\n")
    b = c.resolve_budgets(cfg.budgets, memory_total=64 << 30, disk_total=100 << 30)
    assert (b.ram, b.swap) == (4 << 30, 3 << 30)
    assert c.parse("budgets:\n  ram: 70%\n  swap: 30%\n").budgets.ram == "70%"
    auth = "auth:\n  tokens: [{file: /t, scope: admin}]\n"
    tcp = "listen:\n  tcp: '0.0.0.0:8001'\n  tls_cert: /c.pem\n  tls_key: /k.pem\n"
    assert c.parse(tcp + auth).listen.tcp == "0.0.0.0:8001"


def test_budgets_are_checked_against_the_device_at_start() -> None:
    cfg = c.parse("budgets:\n  reserve: 2GiB\n  ram: 5GiB\n  swap: 2GiB\n")  # no memory_total
    with pytest.raises(c.ConfigError) as info:
        c.resolve_budgets(cfg.budgets, memory_total=8 << 30, disk_total=100 << 30)
    assert str(info.value) == ("budgets: ram 5.0 GiB + swap 2.0 GiB = 7.0 GiB is more than the "
                               "device's memory minus the reserve (8.0 GiB - 2.0 GiB = 6.0 GiB)")
    with pytest.raises(c.ConfigError, match=r"budgets.reserve: 2.0 GiB leaves nothing"):
        c.resolve_budgets(cfg.budgets, memory_total=2 << 30, disk_total=100 << 30)


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"version: 1\n# caf\xe9\nstate_dir: /x\n")
    with pytest.raises(c.ConfigError, match=r"\(file\) \(line 2\): not UTF-8 text"):
        c.load(bad)
    res = _edged("config", "check", str(bad))
    assert res.returncode == 2 and "not UTF-8" in res.stderr
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1


def _secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_config_check_checks_the_files_it_names(tmp_path: Path) -> None:
    from conftest_certs import make_pki

    pki = make_pki(tmp_path / "pki")
    token = _secret(tmp_path / "admin.token", "s3cret\n")
    good = (f"version: 1\nlisten:\n  tcp: '127.0.0.1:8001'\n  tls_cert: {pki.server_cert}\n"
            f"  tls_key: {pki.server_key}\nauth:\n  tokens:\n    - {{file: {token}, "
            f"scope: admin}}\n")
    cases = {
        "ok": (good, None),
        "token world-readable": (good, "auth.tokens[0].file: token file"),
        "tls key missing": (good.replace(str(pki.server_key), str(tmp_path / "no.key")),
                            "listen.tls_key: cannot read TLS key"),
        "tls cert not a cert": (good.replace(str(pki.server_cert), str(token)),
                                "listen.tls_cert: TLS certificate"),
    }
    for label, (text, expected) in cases.items():
        if label == "token world-readable":
            token.chmod(0o644)
        path = tmp_path / f"{label.replace(' ', '-')}.yaml"
        path.write_text(text)
        res = _edged("config", "check", str(path))
        token.chmod(0o600)
        if expected is None:
            assert res.returncode == 0, (label, res.stderr)
            continue
        assert res.returncode == 2, (label, res.stdout, res.stderr)
        assert expected in res.stderr, (label, res.stderr)
        assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1, res.stderr
    group = tmp_path / "group.yaml"
    group.write_text("version: 1\nlisten:\n  unix_group: no-such-group-edged\n")
    res = _edged("config", "check", str(group))
    assert res.returncode == 2 and "listen.unix_group: group 'no-such-group-edged' does not " \
        "exist" in res.stderr, res.stderr


def test_default_per_model_concurrency_is_twice_the_cores_from_2_to_8() -> None:
    assert [c.default_per_model_concurrency(n) for n in (1, 2, 3, 4, 6, 16, 64)] == \
        [2, 4, 6, 8, 8, 8, 8]
    assert c.Config().engines.per_model_concurrency == c.default_per_model_concurrency()
    assert c.parse("engines: {per_model_concurrency: 1}\n").engines.per_model_concurrency == 1


def test_a_models_request_bound_must_leave_rpc_threads_for_the_others() -> None:
    """queue_depth + per_model_concurrency requests of one model each hold an RPC thread: the
    bound must stay below listen.threads (defaults: 8 + at most 8 < 64)."""
    d = c.Config()
    assert d.engines.queue_depth + d.engines.per_model_concurrency < d.listen.threads
    assert c.parse("listen: {threads: 16}\nengines: {queue_depth: 13, per_model_concurrency: 2}\n"
                   ).engines.queue_depth == 13
    for text in ("engines:\n  queue_depth: 62\n", "listen: {threads: 10}\n",
                 "engines:\n  per_model_concurrency: 60\n  queue_depth: 4\n"):
        with pytest.raises(c.ConfigError, match=r"engines\.queue_depth.*must be below "
                                                r"listen\.threads"):
            c.parse(text)


def test_worker_sharing_settings() -> None:
    cfg = c.parse("engines:\n  share_worker: one\n  worker_groups:\n    ocr: [ppocr-det, "
                  "ppocr-rec]\n    vad: [silero-vad]\n")
    assert cfg.engines.share_worker == "one"
    assert cfg.engines.worker_groups == (("ocr", ("ppocr-det", "ppocr-rec")),
                                         ("vad", ("silero-vad",)))
    for text, expected in [
        ("engines:\n  share_worker: some\n", "engines.share_worker (line 2): must be one of"),
        ("engines:\n  worker_groups:\n    ocr: ppocr-det\n",
         "engines.worker_groups.ocr (line 3): must be a list of model names"),
        ("engines:\n  worker_groups:\n    a: [x]\n    b: [y,\n        x]\n",
         "engines.worker_groups.b (line 5): model 'x' is already in group 'a'"),
        ("engines:\n  worker_groups:\n    A!: [x]\n",
         "engines.worker_groups.A! (line 3): 'A!' is not a group name"),
    ]:
        with pytest.raises(c.ConfigError) as info:
            c.parse(text)
        assert str(info.value).startswith(expected), str(info.value)


def test_gpu_budget_is_a_fraction_of_a_discrete_gpus_memory() -> None:
    from types import SimpleNamespace

    from edged.telemetry.snapshot import discrete_gpu_memory

    cfg = c.Config()
    b = c.resolve_budgets(cfg.budgets, memory_total=64 << 30, disk_total=100 << 30,
                          gpu_total=140 << 30)
    assert b.gpu == int(0.9 * (140 << 30)) and b.gpu_total == 140 << 30
    none = c.resolve_budgets(cfg.budgets, memory_total=64 << 30, disk_total=100 << 30)
    assert none.gpu == 0
    gpu = SimpleNamespace(memory_total_bytes=140 << 30)
    assert discrete_gpu_memory(SimpleNamespace(kind="nvidia-gpu", gpus=(gpu,))) == 140 << 30
    # a Jetson's GPU allocates from RAM: no GPU budget of its own
    assert discrete_gpu_memory(SimpleNamespace(kind="jetson", gpus=(gpu,))) == 0

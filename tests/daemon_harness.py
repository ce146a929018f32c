"""Start the real daemon as a subprocess on a temp state dir and socket, for tests and benches.

It waits for health SERVING over the real socket, and on stop sends SIGTERM and checks that the
daemon exited cleanly (exit code 0) — a daemon that crashes or hangs on stop fails the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from edged.client import EdgedClient

REPO = Path(__file__).resolve().parent.parent


class DaemonProcess:
    def __init__(self, config: dict[str, Any] | None = None, *, root: Path | None = None,
                 env: dict[str, str] | None = None, extra_args: list[str] | None = None) -> None:
        # Unix socket paths are limited to ~107 bytes: keep the directory short.
        self.root = root or Path(tempfile.mkdtemp(prefix="edged-", dir="/tmp"))
        self.state_dir = self.root / "state"
        self.socket = self.root / "edged.sock"
        self.config_path = self.root / "edged.yaml"
        cfg: dict[str, Any] = {"version": 1, "telemetry": {"interval_s": 0.5}}
        for key, value in (config or {}).items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        self.config = cfg
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.log_path = self.root / "daemon.log"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.env.pop("NOTIFY_SOCKET", None) if "NOTIFY_SOCKET" not in (env or {}) else None
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopped: int | None = None

    @property
    def target(self) -> str:
        return f"unix:{self.socket}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "edged", "--config", str(self.config_path),
                "--state-dir", str(self.state_dir), "--socket", str(self.socket),
                *self.extra_args]

    def start(self, timeout: float = 60.0, wait: bool = True) -> DaemonProcess:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                     env=self.env, cwd=REPO, start_new_session=True)
        if wait:
            self.wait_serving(timeout)
        return self

    def wait_serving(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            if self.socket.exists():
                try:
                    with self.client(timeout=2.0) as c:
                        if c.health() == "SERVING":
                            return
                except Exception as exc:
                    last = exc
            time.sleep(0.05)
        raise TimeoutError(f"daemon not SERVING after {timeout}s ({last}):\n{self.log()}")

    def client(self, **kw: Any) -> EdgedClient:
        return EdgedClient(self.target, **kw)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60.0, expect_clean: bool = True) -> int:
        """SIGTERM and wait; returns the exit code (asserts 0 when ``expect_clean``)."""
        if self.proc is None:
            return 0
        if self._stopped is not None:
            return self._stopped
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"daemon did not stop within {timeout}s:\n{self.log()}") from None
        self._log.close()
        self._stopped = code
        if expect_clean:
            assert code == 0, f"daemon exited with {code}:\n{self.log()}"
        return code

    def kill(self) -> None:
        """SIGKILL the daemon's whole process group (workers included), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self._log.close()
            self._stopped = self.proc.returncode

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

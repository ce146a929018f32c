"""Logging set-up: one line per event, journald-friendly.

Under systemd (``JOURNAL_STREAM`` or ``INVOCATION_ID`` set) lines carry no timestamp (journald
adds its own) and start with a ``<N>`` syslog priority prefix, which journald turns into the
entry's level. Elsewhere: timestamped lines on stderr.
"""

from __future__ import annotations

import logging
import os
import sys

_SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                    logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = _SYSLOG_PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


def under_systemd(env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ) if env is None else env
    return bool(env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"))


def setup_logging(level: str = "info", env: dict[str, str] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if under_systemd(env):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

"""Logging set-up: one line per event, journald-friendly.

Under systemd (``JOURNAL_STREAM`` or ``INVOCATION_ID`` set) lines carry no timestamp (journald
adds its own) and start with a ``<N>`` syslog priority prefix, which journald turns into the
entry's level. Elsewhere: timestamped lines on stderr.

One event is one line, tracebacks included: journald makes every line on stdout/stderr an
entry of its own, so a multi-line traceback would become a dozen entries, interleaved with
other threads' and without the first one's priority. Newlines inside a record are written as
the two characters ``\\n`` (``journalctl -o cat | sed 's/\\\\n/\\n/g'`` gets them back).
"""

from __future__ import annotations

import logging
import os
import sys

_SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                    logging.CRITICAL: 2}


def one_line(text: str) -> str:
    """``text`` with its line breaks escaped, so that it stays one log line."""
    return text.rstrip("\n").replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


class OneLineFormatter(logging.Formatter):
    """The usual format, with the message and any traceback escaped onto one line."""

    def format(self, record: logging.LogRecord) -> str:
        return one_line(super().format(record))


class JournalFormatter(OneLineFormatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = _SYSLOG_PRIORITY.get(record.levelno, 6)
        return f"<{prio}>{super().format(record)}"


def under_systemd(env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ) if env is None else env
    return bool(env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"))


def setup_logging(level: str = "info", env: dict[str, str] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if under_systemd(env):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(OneLineFormatter(
            "%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

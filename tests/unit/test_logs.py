"""Log lines: one event is one line, tracebacks included (journald splits on newlines)."""

from __future__ import annotations

import io
import logging
import re

import pytest

from edged.logs import JournalFormatter, OneLineFormatter, one_line, setup_logging


def _record(msg: str, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            import sys

            exc_info = sys.exc_info()
    return logging.LogRecord("edged.test", logging.ERROR, __file__, 1, msg, None, exc_info)


@pytest.mark.parametrize("fmt", [OneLineFormatter("%(name)s: %(message)s"),
                                 JournalFormatter("%(name)s: %(message)s")])
def test_a_traceback_is_one_line(fmt: logging.Formatter) -> None:
    text = fmt.format(_record("failed [error_id=abc]", exc=True))
    assert "\n" not in text
    assert "failed [error_id=abc]\\nTraceback (most recent call last):\\n" in text
    assert text.endswith("ValueError: bad\\nvalue")


def test_journal_lines_keep_their_priority_prefix() -> None:
    assert JournalFormatter("%(message)s").format(_record("two\nlines")) == "<3>two\\nlines"


def test_escaping_is_reversible() -> None:
    text = "a\\nb\nc\r\n"
    escaped = one_line(text)
    assert "\n" not in escaped and "\r" not in escaped
    assert escaped == "a\\\\nb\\nc\\r"
    unescape = {"n": "\n", "r": "\r", "\\": "\\"}
    assert re.sub(r"\\(.)", lambda m: unescape[m.group(1)], escaped) == text.rstrip("\n")


def test_setup_logging_writes_one_line_per_event(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    setup_logging("info", env={"JOURNAL_STREAM": "8:1"})
    try:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("edged.x").exception("it broke")
        lines = stream.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("<3>edged.x: it broke\\nTraceback")
    finally:
        logging.getLogger().handlers.clear()

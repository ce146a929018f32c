"""Human tables, JSON output and progress bars for ``edgectl``.

``--json`` prints exactly one JSON document on stdout and nothing else (progress and messages go
to stderr), so scripts can pipe it to ``jq``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from edged.units import format_size


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO = sys.stdout) -> None:
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, r in enumerate(cells):
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


def emit_json(obj: Any, out: TextIO = sys.stdout) -> None:
    out.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def size(n: int) -> str:
    return format_size(n) if n else "-"


class ProgressBar:
    """A one-line progress bar on stderr; silent when stderr is not a terminal or disabled."""

    def __init__(self, label: str, enabled: bool, stream: TextIO = sys.stderr) -> None:
        self.label, self.stream = label, stream
        self.enabled = enabled and stream.isatty()
        self._last = 0.0
        self._started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done < total:
            return
        self._last = now
        frac = done / total if total else 0.0
        width = 30
        bar = "#" * int(frac * width)
        rate = done / max(now - self._started, 1e-6)
        self.stream.write(f"\r{self.label} [{bar:<{width}}] {frac * 100:5.1f}% "
                          f"{format_size(done)}/{format_size(total)} {format_size(rate)}/s")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()

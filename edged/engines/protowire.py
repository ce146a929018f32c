"""Protocol Buffers wire-format primitives over a read-only mmap (see onnx_inspect.py for why).

Only what a reader of ONNX files needs: varints, length-delimited payloads (returned as byte
spans, never copied), packed repeated varints and UTF-8 strings. A span that runs past the end
of the file means a truncated file; anything else malformed is ``Corrupt``.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edged import errors as e


class Corrupt(Exception):
    pass


class Incomplete(Corrupt):
    """The model file is fine but its external data is missing or short: a DataLoss."""


class Reader:
    """Protobuf wire-format primitives over a read-only mmap of the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._f = path.open("rb")
        except OSError as exc:
            raise e.InvalidArgument(f"artifact {path} cannot be read: {exc.strerror}",
                                    field="artifact") from None
        self.size = path.stat().st_size
        if self.size == 0:
            self._f.close()
            raise invalid(path, "the file is empty")
        self.buf = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.buf.close()
        self._f.close()
        if isinstance(exc, Incomplete):
            raise e.DataLoss(f"artifact {self.path.name}: {exc}", field="artifact",
                             reason="CORRUPT_ARTIFACT") from None
        if isinstance(exc, (Corrupt, IndexError)):
            why = "the file is truncated" if isinstance(exc, IndexError) else str(exc)
            raise invalid(self.path, why) from None

    def varint(self, pos: int) -> tuple[int, int]:
        buf = self.buf
        b = buf[pos]
        if b < 0x80:
            return b, pos + 1
        result, shift = b & 0x7F, 7
        while True:
            pos += 1
            b = buf[pos]
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result, pos + 1
            shift += 7
            if shift > 63:
                raise Corrupt(f"malformed varint at byte {pos}")

    def fields(self, start: int, end: int) -> Iterator[tuple[int, int, Any]]:
        """(field number, wire type, value): an int for varints, (start, end) for payloads."""
        pos = start
        while pos < end:
            key, pos = self.varint(pos)
            fno, wt = key >> 3, key & 7
            if wt == 0:
                val, pos = self.varint(pos)
                if val >= 1 << 63:
                    val -= 1 << 64
                yield fno, wt, val
                continue
            if wt == 2:
                n, pos = self.varint(pos)
                span = (pos, pos + n)
                pos += n
            elif wt in (1, 5):
                span = (pos, pos + (8 if wt == 1 else 4))
                pos = span[1]
            else:
                raise Corrupt(f"unsupported wire type {wt} at byte {pos}")
            if pos > end or fno == 0:
                if pos > self.size:
                    raise IndexError(pos)
                raise Corrupt(f"field {fno} overruns its message at byte {span[0]}")
            yield fno, wt, span

    def packed(self, span: tuple[int, int]) -> list[int]:
        out, pos = [], span[0]
        while pos < span[1]:
            v, pos = self.varint(pos)
            out.append(v - (1 << 64) if v >= 1 << 63 else v)
        return out

    def text(self, span: tuple[int, int]) -> str:
        s, t = span
        return self.buf[s:t].decode("utf-8", "replace")


def invalid(path: Path, why: str) -> e.InvalidArgument:
    return e.InvalidArgument(f"artifact {path.name} is not a valid ONNX model: {why}",
                             field="artifact", reason="CORRUPT_ARTIFACT")

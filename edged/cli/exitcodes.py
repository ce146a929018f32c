"""Exit codes of ``edgectl`` (and ``edged-ota``'s client errors): one per gRPC code.

Scripts branch on these, so they never change meaning; the README has the same table.
"""

from __future__ import annotations

from edged import errors as e

OK = 0
ERROR = 1          # anything not listed below
USAGE = 2          # bad command line (argparse)
UNREACHABLE = 3    # no daemon at the target

BY_CODE: dict[e.Code, int] = {
    e.Code.INVALID_ARGUMENT: 4,
    e.Code.NOT_FOUND: 5,
    e.Code.ALREADY_EXISTS: 6,
    e.Code.RESOURCE_EXHAUSTED: 7,
    e.Code.FAILED_PRECONDITION: 8,
    e.Code.DATA_LOSS: 9,
    e.Code.UNAVAILABLE: 10,
    e.Code.UNAUTHENTICATED: 11,
    e.Code.PERMISSION_DENIED: 12,
    e.Code.DEADLINE_EXCEEDED: 13,
    e.Code.UNIMPLEMENTED: 14,
    e.Code.INTERNAL: 15,
    e.Code.ABORTED: 16,
}


class LocalError(Exception):
    """A problem on this side, before any call (a missing input file, a malformed ``--warmup``,
    an unreadable ``--token-file``): exit 2 with a message in the user's terms."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def for_error(err: e.EdgedError) -> int:
    from edged.client import DaemonUnreachable

    if isinstance(err, DaemonUnreachable):
        return UNREACHABLE
    return BY_CODE.get(err.code, ERROR)

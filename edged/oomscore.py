"""Make engine workers, not the daemon, the kernel's first choice when memory runs out.

The unit gives the daemon ``OOMScoreAdjust=-500``; every engine worker raises its own
``oom_score_adj`` (to +500 by default). If the kernel has to kill something after all, it then
takes a worker — which the daemon notices, reports and reloads on demand — and not the process
that holds every client's connection. (``OOMPolicy=continue`` in the unit keeps systemd from
stopping the whole service when that happens.)

Only ever raised: any process may raise its own score, but lowering it below the minimum set by
a privileged writer needs ``CAP_SYS_RESOURCE``, which the service does not have, and a worker
must never end up better protected than the daemon.
"""

from __future__ import annotations

from pathlib import Path

OOM_SCORE_ADJ_MIN = -1000
OOM_SCORE_ADJ_MAX = 1000


def _path(pid: int | None, proc_root: Path) -> Path:
    return proc_root / ("self" if pid is None else str(pid)) / "oom_score_adj"


def read_oom_score(pid: int | None = None, *, proc_root: Path = Path("/proc")) -> int:
    """The current ``oom_score_adj`` of ``pid`` (this process when None)."""
    return int(_path(pid, proc_root).read_text().strip())


def raise_oom_score(pid: int | None = None, score: int = 500, *,
                    proc_root: Path = Path("/proc")) -> int:
    """Raise ``pid``'s ``oom_score_adj`` to ``score`` unless it is already that high.

    ``pid`` None means this process (what a worker calls first thing). Returns the value in
    effect afterwards. Raises ``ValueError`` for a score outside the kernel's range and
    ``OSError`` when the file cannot be written (another user's process, no procfs).
    """
    if not OOM_SCORE_ADJ_MIN <= score <= OOM_SCORE_ADJ_MAX:
        raise ValueError(f"oom_score_adj must be in [{OOM_SCORE_ADJ_MIN}, {OOM_SCORE_ADJ_MAX}], "
                         f"not {score}")
    current = read_oom_score(pid, proc_root=proc_root)
    if current >= score:
        return current
    _path(pid, proc_root).write_text(f"{score}\n")
    return read_oom_score(pid, proc_root=proc_root)

"""Process facts and knobs for the engine workers: /proc status, malloc_trim, hardening.

Plain /proc reads (a few microseconds), no psutil: the daemon reads its workers' RSS for
``stats`` and each worker measures itself around a load.
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal

PR_SET_PDEATHSIG = 1
_FIELDS = ("RssAnon:", "VmRSS:", "VmHWM:", "RssShmem:")


def read_status(pid: int | str = "self") -> dict[str, int]:
    """RssAnon / VmRSS / VmHWM / RssShmem of a process, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(_FIELDS):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0]) * 1024
    return out


def reset_peak() -> None:
    """Restart VmHWM from the current RSS (``/proc/self/clear_refs``: 5), so that after a load
    the high-water mark shows inferences' peaks, not the load's transient copies (the daemon
    samples it, see WorkerPool.remeasure)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # an old kernel or a locked-down /proc: VmHWM then includes the load
        pass


def anon_peak(status: dict[str, int]) -> int:
    """The anonymous high-water mark, approximately: VmHWM less today's file and shared pages
    (library pages and shared-memory lanes stay when a worker ends; they are not its own)."""
    return max(status["RssAnon"], status["VmHWM"] - (status["VmRSS"] - status["RssAnon"]))


def trim() -> None:
    """Give freed heap back to the kernel: ORT's load-time copies (the parsed protobuf, the
    tensors before pre-packing) are freed into glibc's heap and would otherwise stay resident,
    inflating the footprint by up to the weights' size (measured: ppocr-rec 48 -> 40 MiB)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def harden(parent: int, oom_score_adj: int | None) -> None:
    """A worker's own settings: die with the daemon, be the OOM killer's first choice, leave
    Ctrl-C to the daemon (it stops the workers itself)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # nudges (worker_main) before serving
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the daemon died before prctl took effect
        os._exit(0)
    if oom_score_adj is not None:
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(oom_score_adj))
        except OSError:  # EPERM/EACCES (lowering needs CAP_SYS_RESOURCE): keep going
            pass

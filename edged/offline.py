"""The ``edged`` subcommands that work on the state directory without a running daemon:
``config check`` (the budgets against this machine), ``generations`` and ``restore``,
``fsck``, ``calibrate``. The daemon itself is built in ``daemon.py``."""

from __future__ import annotations

import json
import shutil
import sys

from edged import config as cfgmod
from edged import errors as e
from edged.units import format_size


def check_machine(cfg: cfgmod.Config) -> list[str]:
    """The budgets against this machine, as a start would resolve them (``ConfigError`` when
    the daemon would refuse to start); returns the warnings."""
    import psutil

    memory = psutil.virtual_memory().total
    where = cfg.state_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    cfgmod.resolve_budgets(cfg.budgets, memory, shutil.disk_usage(where).total)
    return cfgmod.machine_warnings(cfg, memory)


def generations(cfg: cfgmod.Config, restore: int | None) -> int:
    """``edged generations`` and ``edged restore N`` (the way back from an edit that dropped
    models: their artifacts are kept, see ``manager.quarantine``)."""
    import datetime as dt

    from edged.manager.catalog.manifests import ManifestError, Manifests

    manifests = Manifests(cfg.state_dir)
    if not cfg.state_dir.is_dir():
        print(f"edged: {cfg.state_dir}: the state directory does not exist", file=sys.stderr)
        return 1
    if restore is None:
        print("* current, k kept until `edged fsck --gc` (it lists versions an edit dropped)")
        print(f"{'GEN':>8}  {'WRITTEN (UTC)':<20} {'VERSIONS':>8}  MODELS")
        for g in manifests.generations():
            when = dt.datetime.fromtimestamp(g.mtime, dt.timezone.utc).strftime(
                "%Y-%m-%d %H:%M:%S")
            count = "invalid" if g.versions is None else str(g.versions)
            mark = "*" if g.current else ("k" if g.kept else " ")
            print(f"{g.number:>7}{mark}  {when:<20} {count:>8}  {', '.join(g.models) or '-'}")
        return 0
    try:
        back = manifests.restore(restore)
    except (ManifestError, OSError) as exc:
        print(f"edged restore: generation {restore}: {exc}", file=sys.stderr)
        return 1
    if not back:
        print(f"generation {restore} lists nothing the current manifests lack: nothing to do")
        return 0
    print(f"put back {', '.join(back)} from generation {restore} into {manifests.link}/*.yaml; "
          "a running daemon applies it on reload (`systemctl reload edged` or `edgectl "
          "reload`), a stopped one at its next start")
    return 0


def fsck(cfg: cfgmod.Config, *, repair: bool, deep: bool, as_json: bool,
          gc: bool = False) -> int:
    from edged.manager.catalog.fsck import fsck
    from edged.statelock import StateDirBusy, lock_state_dir

    lock = None
    if repair:  # a repair deletes uploads in progress: never under a running daemon
        try:
            lock = lock_state_dir(cfg.state_dir)
        except StateDirBusy as exc:
            print(f"edged fsck: {exc}", file=sys.stderr)
            return 1
    try:
        report = fsck(cfg.state_dir, repair=repair, deep=deep, gc=gc)
    finally:
        if lock is not None:
            lock.release()
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.describe())
    return 0 if report.ok else 1


def calibrate(cfg: cfgmod.Config, as_json: bool) -> int:
    """``edged calibrate``: a probe model in fresh workers, on the CPU and (where the CUDA EP
    and a GPU are there) on the GPU; the costs go to the state dir, where the daemon (running
    or not) reads them for every later estimate."""
    from dataclasses import asdict

    from edged.engines import calibration
    from edged.engines.estimate import CUDA, installed_ort_providers
    from edged.engines.fixed_costs import device_key
    from edged.engines.gpumem import open_meter
    from edged.engines.workers import WorkerPool
    from edged.telemetry.sampler import Sampler

    sampler = Sampler(root=cfg.telemetry.root, interval_s=60,
                      memory_total_override=cfg.budgets.memory_total,
                      use_jtop=False, use_nvml=cfg.telemetry.nvml)
    # start() opens NVML as the daemon's sampler does: without it a GPU box reads as "cpu" and
    # the costs were kept under another device's key than the daemon's (seen on an H200)
    sampler.start()
    try:
        device = sampler.snapshot().device
    finally:
        sampler.stop()
    key, store = device_key(device), calibration.CalibrationStore(cfg.state_dir)
    meter = open_meter(cfg.telemetry.root, use_nvml=cfg.telemetry.nvml)
    gpu = CUDA in installed_ort_providers() and (meter is not None or device.kind == "jetson")
    pool = WorkerPool(start_timeout_s=cfg.engines.start_timeout_s, gpu_meter=meter)
    try:
        costs = calibration.measure(pool, key, gpu)
    except e.EdgedError as exc:
        print(f"edged: calibrate: {exc}", file=sys.stderr)
        return 1
    finally:
        pool.close()
    store.put(costs)
    if as_json:
        print(json.dumps(asdict(costs), indent=2))
    else:
        print(f"{costs.device}: worker {format_size(costs.worker_bytes)}, GPU context "
              f"{format_size(costs.gpu_context_bytes)}" + ("" if gpu else " (no GPU to measure)")
              + f"; kept in {store.path}")
    return 0

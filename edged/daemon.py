"""Composition root: config → telemetry → store → engines → manager → server; signals.

The only module that builds real things. Tests build the same graph on a temp dir by running
this as a subprocess with ``--state-dir`` and ``--socket``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from edged import __version__, malloc_tuning
from edged import config as cfgmod
from edged import errors as e
from edged.logs import setup_logging
from edged.sdnotify import Heartbeat, Liveness, Notifier, extending_start_timeout
from edged.units import format_size

log = logging.getLogger("edged")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edged", description="The model daemon of an edge device.")
    p.add_argument("--version", action="version", version=f"edged {__version__}")
    p.add_argument("--config", type=Path, help="config file (default /etc/edged/edged.yaml)")
    p.add_argument("--state-dir", type=Path, help="override state_dir from the config")
    p.add_argument("--socket", type=Path, help="override listen.unix from the config")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    sub = p.add_subparsers(dest="command")
    sub.add_parser("run", help="run the daemon (the default)")
    c = sub.add_parser("config", help="print or check configuration")
    csub = c.add_subparsers(dest="config_command", required=True)
    csub.add_parser("default", help="print the commented default config")
    chk = csub.add_parser("check", help="validate a config file")
    chk.add_argument("file", type=Path)
    csub.add_parser("show", help="print the effective config as JSON")
    f = sub.add_parser("fsck", help="verify the store and manifests offline")
    f.add_argument("--repair", action="store_true",
                   help="remove leftovers of interrupted writes (never an artifact)")
    f.add_argument("--gc", action="store_true",
                   help="also delete the artifacts no manifest references (they are kept "
                        "otherwise); implies --repair")
    f.add_argument("--quick", action="store_true", help="skip re-hashing artifacts")
    f.add_argument("--json", action="store_true", help="print the report as JSON")
    sub.add_parser("generations", help="list the kept generations of the tier manifests")
    r = sub.add_parser("restore", help="put back the models and versions a kept generation "
                                       "lists and the current manifests lack (then reload: "
                                       "SIGHUP, or the next start)")
    r.add_argument("generation", type=int, help="the generation number (`edged generations`)")
    cal = sub.add_parser("calibrate", help="measure this device's worker and GPU context costs "
                                          "for estimates (kept in the state dir)")
    cal.add_argument("--json", action="store_true", help="print the measurement as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    # First, before any thread allocates: the malloc settings that bound the daemon's RSS
    # under large plain requests (see malloc_tuning.py).
    tuned = malloc_tuning.apply(os.environ)
    args = build_parser().parse_args(argv)
    if args.command == "config" and args.config_command == "default":
        sys.stdout.write(cfgmod.default_text())
        return 0
    try:
        if args.command == "config" and args.config_command == "check":
            from edged.service.wiring import check_files

            checked = cfgmod.load(args.file, required=True)
            check_files(checked)
            for warning in _check_machine(checked):
                print(f"edged: warning: {warning}", file=sys.stderr)
            print(f"{args.file}: ok")
            return 0
        cfg = cfgmod.load(args.config).with_overrides(args.state_dir, args.socket)
    except cfgmod.ConfigError as exc:
        print(f"edged: config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        print(json.dumps(cfgmod.as_dict(cfg), indent=2))
        return 0
    if args.command == "calibrate":
        return _calibrate(cfg, as_json=args.json)
    if args.command == "fsck":
        return _fsck(cfg, repair=args.repair or args.gc, gc=args.gc, deep=not args.quick,
                     as_json=args.json)
    if args.command in ("generations", "restore"):
        return _generations(cfg, args.generation if args.command == "restore" else None)
    setup_logging(args.log_level or cfg.log_level)
    log.info("malloc: %s", ", ".join(f"{k}={v}" for k, v in tuned.items())
             or "as the environment sets it")
    import faulthandler

    faulthandler.enable()  # a watchdog kill (SIGABRT) leaves every thread's stack in the journal
    try:
        daemon = Daemon(cfg)
    except cfgmod.ConfigError as exc:  # exit 2: systemd does not restart (see the unit)
        log.error("config error: %s", exc)
        return 2
    except (e.EdgedError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    return daemon.run()


def _check_machine(cfg: cfgmod.Config) -> list[str]:
    """The budgets against this machine, as a start would resolve them (``ConfigError`` when
    the daemon would refuse to start); returns the warnings."""
    import psutil

    memory = psutil.virtual_memory().total
    where = cfg.state_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    cfgmod.resolve_budgets(cfg.budgets, memory, shutil.disk_usage(where).total)
    return cfgmod.machine_warnings(cfg, memory)


def _generations(cfg: cfgmod.Config, restore: int | None) -> int:
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


def _fsck(cfg: cfgmod.Config, *, repair: bool, deep: bool, as_json: bool,
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


class Daemon:
    """Builds the object graph; ``run()`` serves until SIGTERM/SIGINT."""

    def __init__(self, cfg: cfgmod.Config) -> None:
        from edged.service.server import prepare_unix_socket
        from edged.service.wiring import check_files
        from edged.statelock import lock_state_dir

        self.cfg = cfg
        # Before anything reads or repairs the state dir: a second daemon must leave the
        # first one's store (its uploads in progress above all) alone, whatever its socket.
        self._lock = lock_state_dir(cfg.state_dir)
        try:
            prepare_unix_socket(cfg.listen.unix)  # a live daemon there: refuse, repair nothing
            check_files(cfg)
            self._build()
        except BaseException:
            self._lock.release()
            raise

    def _build(self) -> None:
        from edged.manager.events import EventBus
        from edged.service.wiring import build_server
        from edged.telemetry.sampler import Sampler

        cfg = self.cfg
        self.sampler = Sampler(root=cfg.telemetry.root, interval_s=cfg.telemetry.interval_s,
                               memory_total_override=cfg.budgets.memory_total,
                               use_jtop=cfg.telemetry.jtop, use_nvml=cfg.telemetry.nvml)
        self.sampler.start()
        try:
            snap = self.sampler.snapshot()
            mem = snap.memory
            disk_total = shutil.disk_usage(cfg.state_dir).total
            self.budgets = cfgmod.resolve_budgets(cfg.budgets, mem.total_bytes, disk_total,
                                                  gpu_total=discrete_gpu_memory(snap.device))
            import psutil

            for warning in cfgmod.machine_warnings(cfg, psutil.virtual_memory().total):
                log.warning("config: %s", warning)
            self.events = EventBus(cfg.events_history)
            self.parts = build_parts(cfg, self.budgets, self.sampler, self.events)
        except BaseException:
            self.sampler.stop()
            raise
        self.manager = self.parts.manager
        try:
            self.server = build_server(cfg, self.manager, reload=self.reload,
                                       metrics=self.parts.metrics)
        except BaseException:
            self.parts.close()
            self.sampler.stop()
            raise
        self._stop = threading.Event()
        self._reload_requested = threading.Event()
        self.notifier = Notifier()
        # The main loop beats every 0.2 s; if it stalls for 5 s the watchdog pings stop and
        # systemd restarts the daemon. (What this proves: the main loop runs and the manager
        # is not stopping — not that an RPC would be answered.)
        self.liveness = Liveness(5.0)
        self.heartbeat = Heartbeat(self.notifier, self._alive)

    def reload(self) -> tuple[bool, str, int]:
        """SIGHUP / the Reload RPC: re-read the manifests without dropping loaded models."""
        self.notifier.reloading()
        try:
            return self.manager.reload()
        finally:
            self.notifier.ready(self._summary())

    def _alive(self) -> bool:
        return self.liveness() and self.manager.state in ("serving", "starting")

    def _summary(self) -> str:
        st = self.manager.status()
        loaded = len(st.loaded)
        return (f"serving {st.models_installed} models, {loaded} loaded; "
                f"{st.snapshot.memory.available_bytes >> 20} MiB available")

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            self._reload_requested.set()
        else:
            self._stop.set()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            self.server.start()
        except (e.EdgedError, OSError) as exc:  # the socket's group or mode: the config's
            log.error("config error: listen: %s", exc)
            self.server.stop(0)
            self._close()
            return 2
        with extending_start_timeout(self.notifier, "loading the ram tier"):
            for problem in self.manager.start():
                log.warning("ram tier: %s", problem)
        self.parts.start()
        self.manager.set_state("serving")
        self.server.set_serving(True)
        self.notifier.ready(self._summary())
        self.heartbeat.start()
        log.info("edged %s serving on unix:%s (state %s, budgets ram %d swap %d reserve %d)",
                 __version__, self.cfg.listen.unix, self.cfg.state_dir, self.budgets.ram,
                 self.budgets.swap, self.budgets.reserve)
        print(f"edged {__version__} ready: socket unix:{self.cfg.listen.unix}", flush=True)
        ticks = 0
        trim = malloc_tuning.Trimmer()
        while not self._stop.wait(0.2):
            self.liveness.beat()
            ticks += 1
            if ticks % 5 == 0:  # every second: freed heap pages back to the kernel
                trim()
            if ticks % 25 == 0:  # every 5 s: systemd's STATUS= line and the metric gauges
                self.notifier.status(self._summary())
                self.parts.update_gauges()
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                ok, err, _ = self.reload()
                if not ok:
                    log.warning("reload rejected, old manifests stay in force: %s", err)
        return self.shutdown()

    def shutdown(self) -> int:
        grace = self.cfg.stop_grace_s
        log.info("stopping: draining %d in-flight requests (grace %.1fs)",
                 self.server.in_flight, grace)
        self.notifier.stopping()
        self.notifier.extend_timeout(grace + 20)  # the drain, then the workers' exits
        self.heartbeat.stop()
        self.manager.set_state("stopping")
        started = time.monotonic()
        left = self.server.drain(grace)  # health NOT_SERVING, new calls STOPPING
        if left:
            log.warning("%d requests still running after %.1fs: cancelling them", left, grace)
        self.server.stop(0.5)
        self._close()
        log.info("stopped in %.2fs", time.monotonic() - started)
        return 0

    def _close(self) -> None:
        """Workers, preloader, metrics, telemetry, the state-dir lock: in that order."""
        self.parts.close()
        self.events.close()
        self.notifier.close()
        self.sampler.stop()
        self._lock.release()



class Parts:
    """The model manager and what runs beside it (worker pool, preloader, trace recorder)."""

    def __init__(self, manager: Any, pool: Any, preloader: Any, trace: Any,
                 metrics: Any = None, metrics_addr: tuple[str, int] | None = None) -> None:
        self.manager, self.pool, self.preloader, self.trace = manager, pool, preloader, trace
        self.metrics, self._metrics_addr = metrics, metrics_addr
        self._metrics_server: Any = None

    def start(self) -> None:
        if self.preloader is not None:
            self.preloader.start()
        if self.metrics is not None and self._metrics_addr is not None:
            self._metrics_server = self.metrics.serve(*self._metrics_addr)  # logs the address
            self.update_gauges()

    def update_gauges(self) -> None:
        if self.metrics is None:
            return
        st = self.manager.status()
        for t in st.tiers:
            self.metrics.set_memory(t.tier, t.budget_bytes, t.used_bytes)
        self.metrics.set_models_loaded(len(st.loaded))
        self.metrics.set_memory_available(st.snapshot.memory.available_bytes)

    def close(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.stop()
        if self.preloader is not None:
            self.preloader.stop()
        self.manager.close()
        self.pool.close()
        if self.trace is not None:
            self.trace.close()


def gpu_mem_limit(admitted: int, headroom: str | int) -> int:
    """A GPU model's CUDA arena cap: what it was admitted with plus the headroom (a size, or a
    percentage of the admitted bytes): never the tier's remainder."""
    return int(admitted) + cfgmod.parse_size(headroom, percent_of=int(admitted))


def discrete_gpu_memory(device: Any) -> int:
    """Device memory of a discrete GPU (the first NVML device; edged's CUDA sessions run on
    device 0), or 0 on a Jetson (its GPU allocates from RAM) and on CPU-only devices."""
    if device.kind != "nvidia-gpu":
        return 0
    totals = [g.memory_total_bytes for g in device.gpus if g.memory_total_bytes]
    return int(totals[0]) if totals else 0


def build_parts(cfg: cfgmod.Config, budgets: cfgmod.Budgets, sampler: Any,
                events: Any) -> Parts:
    """Store → manifests → catalog → engines → residency → serving → manager."""
    from dataclasses import replace

    from edged.engines.base import EngineOptions, detect_format, inspect
    from edged.engines.estimate import choose_providers, installed_ort_providers, runtime_cap
    from edged.engines.gpumem import open_meter
    from edged.engines.workers import WorkerPool
    from edged.manager.catalog import quarantine
    from edged.manager.catalog.catalog import Catalog, budget_tier_check
    from edged.manager.catalog.fsck import fsck
    from edged.manager.catalog.manifests import Manifests
    from edged.manager.catalog.store import Store
    from edged.manager.manager import ModelManager
    from edged.manager.memory import planner
    from edged.manager.memory.policy import make_policy
    from edged.manager.memory.preloader import LockedPolicy, Preloader
    from edged.manager.memory.residency import Residency
    from edged.manager.memory.traces import TraceRecorder
    from edged.manager.serving import Serving
    from edged.manager.shm import ShmRegistry

    report = fsck(cfg.state_dir, repair=True, deep=False)  # never deletes an artifact
    if not report.ok:
        log.warning("store check: %s", report.describe())
    store = Store(cfg.state_dir, disk_reserve_bytes=cfg.budgets.disk_reserve,
                  max_artifact_bytes=cfg.install.max_artifact_bytes,
                  external_files=_external_files, detect_format=detect_format)
    manifests = Manifests(cfg.state_dir, blob_exists=store.has)
    state = manifests.load()
    quarantine.collect_expired(cfg.state_dir, store, store.blobs() - set(state.artifacts()),
                               cfg.install.unreferenced_retention_days)
    costs = FixedCostsBook(cfg, sampler.snapshot().device, events)

    catalog = Catalog(store, manifests, inspect=lambda p, f, warm=None: inspect(
        p, f, costs.options(EngineOptions(warmup_shapes=warm or {}))),
                      tier_check=budget_tier_check(budgets.ram, budgets.swap, budgets.reserve),
                      storage_budget=budgets.storage)
    policy = LockedPolicy(make_policy(cfg.preload.policy,
                                      tz_offset_s=time.localtime().tm_gmtoff))
    metrics = None
    if cfg.metrics.port is not None:
        from edged.metrics import Metrics  # prometheus-client only when metrics are on

        metrics = Metrics()
    manager_ref: list[Any] = []

    def on_event(kind: str, details: Any) -> None:
        if kind == "worker_crash" and manager_ref:
            for key in details.get("keys", [details.get("key", "")]):
                manager_ref[0].residency.worker_died(key, str(details.get("message", "")))
        elif kind == "footprint" and manager_ref:
            grown(details["key"], int(details["bytes"]))
            name, _, version = str(details["key"]).rpartition(":")
            gpu = int(details.get("gpu_growth", 0) or 0)  # type: ignore[call-overload]
            growth = int(details.get("growth", 0) or 0)  # type: ignore[call-overload]
            events.publish("footprint", name, int(version or 0),
                           f"grew by {format_size(growth)} after real inferences"
                           + (f" ({format_size(gpu)} of it device memory)" if gpu else "")
                           + f": accounted {format_size(int(details['bytes']))}",
                           growth=growth, gpu_growth=gpu, bytes=int(details["bytes"]))
        elif kind == "lane_requests" and manager_ref:
            manager_ref[0].lane_requests(details["records"])
        elif kind == "worker_measured":
            costs.first_load(details, model_bytes)

    def model_bytes(key: str) -> int:
        """A loaded model's own estimated bytes (weights, activations, per-node costs): its
        CPU estimate less the worker's fixed term."""
        from edged.engines.estimate import worker_fixed

        name, _, version = key.rpartition(":")
        v = catalog.get(name).versions[int(version)]
        if v.format != "onnx":  # an engine's estimate is its own measurement: nothing to learn
            raise ValueError(f"{key} is not an ONNX model")
        opts = EngineOptions(warmup_shapes=dict(v.warmup_shapes or {}),
                             providers=("CPUExecutionProvider",))
        info = inspect(store.path(v.store_id), v.format, opts)
        return int(info.estimate_bytes) - worker_fixed(opts)

    def grown(key: str, footprint: int) -> None:
        """A loaded model's worker grew after real inferences (engines/footprint.py): account
        it. ``Residency.remeasured(key, bytes)`` grows the live slot and records it; until the
        manager has that, it is recorded in the catalog only (planned from the next load on)."""
        grow = getattr(manager_ref[0].residency, "remeasured", None)
        if grow is not None:
            grow(key, footprint)
            return
        name, _, version = key.rpartition(":")
        try:
            v = catalog.get(name).versions.get(int(version))
        except (e.EdgedError, ValueError):
            return
        if v is not None and footprint > (v.measured_bytes or 0):
            catalog.record_measurement(name, int(version), footprint, v.load_seconds or 0.0)

    def memory_cap(key: str) -> int:
        """The runtime cap of a load (estimate.runtime_cap): its tier's budget less what the
        other models in that tier account, at least its own accounted bytes."""
        views = residency.views()
        me = next((v for v in views if f"{v.name}:{v.version}" == key), None)
        if me is None:
            return 0
        budget = budgets.ram if me.tier == "ram" else budgets.swap
        others = sum(v.footprint_bytes for v in views if v.tier == me.tier and v is not me)
        return runtime_cap(budget, others, me.footprint_bytes)

    pool = WorkerPool(start_timeout_s=cfg.engines.start_timeout_s,
                      request_timeout_s=cfg.engines.request_timeout_s,
                      hang_timeout_s=cfg.engines.hang_timeout_s,
                      shm_threshold_bytes=cfg.engines.shm_threshold_bytes, on_event=on_event,
                      queue_depth=cfg.engines.queue_depth, memory_cap=memory_cap,
                      gpu_meter=open_meter(cfg.telemetry.root, use_nvml=cfg.telemetry.nvml),
                      worker_groups={m: g for g, ms in cfg.engines.worker_groups for m in ms},
                      share_worker=cfg.engines.share_worker,
                      spare_workers=cfg.engines.spare_workers,
                      lane_dir=(cfg.listen.unix.with_name(cfg.listen.unix.name + ".lanes")
                                if cfg.listen.unix else None),
                      lane_mode=cfg.listen.unix_mode, lane_gid=_gid_or_none(_socket_gid(cfg)))

    def memory() -> planner.Memory:
        snap = sampler.sample_now()
        m = snap.memory
        return planner.Memory(available_bytes=m.available_bytes,
                              swap_free_bytes=m.swap_free_bytes,
                              nvmap_used_bytes=m.nvmap_used_bytes,
                              swap_total_bytes=m.swap_total_bytes,
                              daemon_rss_bytes=snap.process_rss_bytes)

    residency = Residency(
        pool=pool, budgets=planner.Budgets(budgets.ram, budgets.swap, budgets.reserve,
                                           edged_bytes=budgets.memory_total - budgets.reserve,
                                           gpu_bytes=budgets.gpu),
        memory=memory, events=events, policy=policy,
        on_measured=lambda n, v, b, s, variant: catalog.record_measurement(n, v, b, s, variant),
        queue_limit=cfg.engines.queue_depth + cfg.engines.per_model_concurrency,
        concurrency=cfg.engines.per_model_concurrency, metrics=metrics,
        verify=ArtifactVerifier(store, events))

    ort_providers = installed_ort_providers()  # (from its files: onnxruntime stays out)

    def engine_options(v: Any) -> EngineOptions:
        opts = EngineOptions(
            providers=tuple(v.providers), precision=v.precision or "fp32",
            tensorrt_ep="TensorrtExecutionProvider" in v.providers,
            intra_op_threads=cfg.engines.intra_op_threads,
            inter_op_threads=cfg.engines.inter_op_threads,
            warmup_shapes={k: tuple(s) for k, s in (v.warmup_shapes or {}).items()},
            engine_info=dict(getattr(v, "engine_info", None) or {}),
            cudnn_conv_algo_search=cfg.engines.cudnn_conv_algo_search,
            cudnn_conv_use_max_workspace=cfg.engines.cudnn_conv_use_max_workspace)
        opts = costs.options(opts)
        gpu = v.format == "tensorrt" or any(
            p != "CPUExecutionProvider" for p in choose_providers(ort_providers, opts))
        return replace(opts, uses_gpu=gpu,
                       gpu_mem_limit_bytes=gpu_mem_limit(v.measured_bytes or v.estimated_bytes,
                                                         cfg.engines.gpu_mem_headroom)
                       if gpu else 0)

    trace = TraceRecorder(cfg.trace.path, cfg.trace.max_bytes) if cfg.trace.path else None
    manager = ModelManager(state_dir=cfg.state_dir, budgets=budgets, sampler=sampler,
                           events=events, catalog=catalog, residency=residency, store=store,
                           engine_options=engine_options, inspect=inspect,
                           allow_local_paths=cfg.install.allow_local_paths)
    manager_ref.append(manager)
    manager.fixed_costs = costs.status
    manager.serving = Serving(
        manager, residency=residency, pool=pool, shm=ShmRegistry(allowed_gid=_socket_gid(cfg)),
        inspect=lambda p, f: inspect(p, f, costs.options(EngineOptions())),
        observe=policy.observe,
        trace=trace,
        metrics=metrics, select_mode=cfg.selection.mode, pins=dict(cfg.selection.pins),
        estimate_at=lambda p, shapes: inspect(p, None, costs.options(EngineOptions(
            warmup_shapes={k: tuple(v) for k, v in shapes.items()}))).estimate_bytes)
    preloader = Preloader(manager=manager, policy=policy,
                          interval_s=cfg.preload.interval_s) if cfg.preload.enabled else None
    addr = (cfg.metrics.host, cfg.metrics.port) if cfg.metrics.port is not None else None
    return Parts(manager, pool, preloader, trace, metrics, addr)


class FixedCostsBook:
    """This device's measured worker costs (engines/calibration.py) for the daemon: the
    options every estimate is made with, the first load's measurement, status."""

    def __init__(self, cfg: cfgmod.Config, device: Any, events: Any) -> None:
        from edged.engines import calibration
        from edged.engines.gpumem import nvml_driver_version

        self._cal = calibration
        gpu = device.gpus[0].name if device.gpus else ""
        driver = device.l4t_release or (nvml_driver_version() if device.kind == "nvidia-gpu"
                                        else "")
        self.device = calibration.device_key(device.kind, gpu or (
            device.model if device.kind == "jetson" else ""), driver or "?", device.cpu_model)
        self.store = calibration.CalibrationStore(cfg.state_dir)
        self._override = cfg.engines.cuda_context_bytes
        self._events = events
        self._lock = threading.Lock()

    def options(self, opts: Any) -> Any:
        return self._cal.apply(opts, self.store.get(self.device), self._override)

    def first_load(self, details: Any, model_bytes: Any) -> None:
        """A fresh worker's first load on a device not calibrated yet (or its first GPU load
        when only the CPU was): measure from it. ``edged calibrate`` measures exactly."""
        from edged.engines.estimate import CPU_WORKER_BASE_BYTES, ORT_SESSION_FIXED_BYTES

        gpu = any(p != "CPUExecutionProvider" for p in details.get("providers", ()))
        with self._lock:
            prev = self.store.get(self.device)
            if prev is not None and (prev.gpu_context_bytes or not gpu):
                return
            try:
                own = model_bytes(str(details["key"]))
            except (e.EdgedError, KeyError, ValueError):
                return
            new = self._cal.from_load(self.device, int(details["footprint"]), own, gpu,
                                      CPU_WORKER_BASE_BYTES + ORT_SESSION_FIXED_BYTES, prev)
            try:
                self.store.put(new)
            except OSError as exc:
                log.warning("could not keep this device's calibration: %s", exc)
                return
        log.info("calibrated on %s from the first load: worker %d bytes, GPU context %d",
                 self.device, new.worker_bytes, new.gpu_context_bytes)
        self._events.publish("calibrated", "", 0,
                             f"worker {format_size(new.worker_bytes)}, GPU context "
                             f"{format_size(new.gpu_context_bytes)} (first load)",
                             worker_bytes=str(new.worker_bytes),
                             gpu_context_bytes=str(new.gpu_context_bytes))

    def status(self) -> dict[str, Any]:
        from edged.engines.base import EngineOptions

        c = self.store.get(self.device)
        used = self.options(EngineOptions()).cuda_context_bytes
        return {"device": self.device, "worker_bytes": c.worker_bytes if c else 0,
                "gpu_context_bytes": used, "source": c.source if c else "not measured",
                "measured_at": c.measured_at if c else 0.0,
                "gpu_context_override": self._override is not None}


class ArtifactVerifier:
    """Re-hash an artifact on every load, so a corrupt blob is never served.

    Start-up only checks that files exist with the right sizes (hashing a whole store would
    delay readiness by seconds per GB); the full check happens on each load, beside the load
    itself (residency runs it in parallel with the worker's mapping and warm-up, and the model
    is not ready until it passed). No cache keyed by size and mtime: bit rot on flash keeps
    both, and a cached "verified" would let such a blob be served after an unload."""

    def __init__(self, store: Any, events: Any) -> None:
        self._store, self._events = store, events

    def __call__(self, spec: Any) -> None:
        sha = spec.artifact.parent.name
        problems = self._store.verify(sha, deep=True)
        if problems:
            self._events.publish("corrupt", spec.name, spec.version, "; ".join(problems))
            raise e.DataLoss(f"model '{spec.key}' is corrupt in the store and will not be "
                             f"served: {'; '.join(problems)} (reinstall it; see `edged fsck`)",
                             reason="CORRUPT_ARTIFACT")


def _calibrate(cfg: cfgmod.Config, as_json: bool) -> int:
    """``edged calibrate``: a probe model in fresh workers, on the CPU and (where the CUDA EP
    and a GPU are there) on the GPU; the costs go to the state dir, where the daemon (running
    or not) reads them for every later estimate."""
    from dataclasses import asdict

    from edged.engines import calibration
    from edged.engines.estimate import CUDA, installed_ort_providers
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
    book = FixedCostsBook(cfg, device, None)
    meter = open_meter(cfg.telemetry.root, use_nvml=cfg.telemetry.nvml)
    gpu = CUDA in installed_ort_providers() and (meter is not None or device.kind == "jetson")
    pool = WorkerPool(start_timeout_s=cfg.engines.start_timeout_s, gpu_meter=meter)
    try:
        costs = calibration.measure(pool, book.device, gpu)
    except e.EdgedError as exc:
        print(f"edged: calibrate: {exc}", file=sys.stderr)
        return 1
    finally:
        pool.close()
    book.store.put(costs)
    if as_json:
        print(json.dumps(asdict(costs), indent=2))
    else:
        print(f"{costs.device}: worker {format_size(costs.worker_bytes)}, GPU context "
              f"{format_size(costs.gpu_context_bytes)}" + ("" if gpu else " (no GPU to measure)")
              + f"; kept in {book.store.path}")
    return 0


def _external_files(path: Path) -> list[str]:
    from edged.engines.onnx_inspect import summarize

    return sorted(summarize(path).external_files)


def _gid_or_none(gid: int | None) -> int:
    """-1 (leave the group as it is) for no group."""
    return -1 if gid is None else gid


def _socket_gid(cfg: cfgmod.Config) -> int | None:
    if not cfg.listen.unix_group:
        return None
    import grp

    try:
        return grp.getgrnam(cfg.listen.unix_group).gr_gid
    except KeyError:
        return None


# Last: `python -m edged.daemon` runs this, and main() needs every name above.
if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

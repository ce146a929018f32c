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
from typing import TYPE_CHECKING, Any

from edged import __version__, malloc_tuning, offline
from edged import config as cfgmod
from edged import errors as e
from edged.logs import setup_logging
from edged.sdnotify import Heartbeat, Liveness, Notifier, extending_start_timeout

if TYPE_CHECKING:
    from edged.engines.workers import WorkerPool
    from edged.manager.events import EventBus
    from edged.manager.manager import ModelManager
    from edged.manager.memory.preloader import Preloader
    from edged.manager.memory.traces import TraceRecorder
    from edged.metrics import Metrics
    from edged.telemetry.sampler import Sampler
    from edged.values import Budgets

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
            for warning in offline.check_machine(checked):
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
        return offline.calibrate(cfg, as_json=args.json)
    if args.command == "fsck":
        return offline.fsck(cfg, repair=args.repair or args.gc, gc=args.gc, deep=not args.quick,
                            as_json=args.json)
    if args.command in ("generations", "restore"):
        return offline.generations(cfg, args.generation if args.command == "restore" else None)
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
        from edged.telemetry.snapshot import discrete_gpu_memory

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

    def __init__(self, manager: ModelManager, pool: WorkerPool, preloader: Preloader | None,
                 trace: TraceRecorder | None, metrics: Metrics | None = None,
                 metrics_addr: tuple[str, int] | None = None) -> None:
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


def build_parts(cfg: cfgmod.Config, budgets: Budgets, sampler: Sampler,
                events: EventBus) -> Parts:
    """Store → manifests → catalog → pool → residency → specs → serving → installs → manager
    → preloader, each built once from what is built before it."""
    from edged.engines.base import EngineOptions, detect_format, inspect
    from edged.engines.estimate import installed_ort_providers, runtime_cap
    from edged.engines.fixed_costs import FixedCostsBook
    from edged.engines.gpumem import open_meter
    from edged.engines.workers import WorkerPool
    from edged.manager import pool_events
    from edged.manager.advice import Advice
    from edged.manager.catalog import quarantine
    from edged.manager.catalog.artifacts import ArtifactVerifier, MissingArtifacts
    from edged.manager.catalog.catalog import Catalog, budget_tier_check
    from edged.manager.catalog.fsck import fsck
    from edged.manager.catalog.manifests import Manifests
    from edged.manager.catalog.store import Store
    from edged.manager.installs import Installer
    from edged.manager.latency import Latencies
    from edged.manager.manager import ModelManager
    from edged.manager.memory.policy import make_policy
    from edged.manager.memory.preloader import LockedPolicy, Preloader
    from edged.manager.memory.residency import Residency, SampledMemory
    from edged.manager.memory.traces import TraceRecorder
    from edged.manager.serving import Serving
    from edged.manager.shm import ShmRegistry
    from edged.manager.specs import CatalogModels, Specs, VersionOptions

    # what is installed
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
    costs = FixedCostsBook(cfg.state_dir, sampler.snapshot().device,
                           cfg.engines.cuda_context_bytes, events)
    catalog = Catalog(store, manifests, inspect=lambda p, f, warm=None: inspect(
        p, f, costs.options(EngineOptions(warmup_shapes=warm or {}))),
                      tier_check=budget_tier_check(budgets),
                      storage_budget=budgets.storage)
    missing = MissingArtifacts(store)

    # the engines, and what is loaded on them
    on_pool_event = pool_events.PoolEvents()
    on_pool_event.subscribe("worker_measured", pool_events.first_loads(
        costs.first_load, pool_events.ModelBytes(catalog, store.path, inspect)))
    pool = WorkerPool(start_timeout_s=cfg.engines.start_timeout_s,
                      request_timeout_s=cfg.engines.request_timeout_s,
                      hang_timeout_s=cfg.engines.hang_timeout_s,
                      shm_threshold_bytes=cfg.engines.shm_threshold_bytes,
                      on_event=on_pool_event, queue_depth=cfg.engines.queue_depth,
                      gpu_meter=open_meter(cfg.telemetry.root, use_nvml=cfg.telemetry.nvml),
                      worker_groups={m: g for g, ms in cfg.engines.worker_groups for m in ms},
                      share_worker=cfg.engines.share_worker,
                      spare_workers=cfg.engines.spare_workers,
                      lane_dir=(cfg.listen.unix.with_name(cfg.listen.unix.name + ".lanes")
                                if cfg.listen.unix else None),
                      lane_mode=cfg.listen.unix_mode, lane_gid=_gid_or_none(_socket_gid(cfg)))
    policy = LockedPolicy(make_policy(cfg.preload.policy,
                                      tz_offset_s=time.localtime().tm_gmtoff))
    metrics = None
    if cfg.metrics.port is not None:
        from edged.metrics import Metrics  # prometheus-client only when metrics are on

        metrics = Metrics()

    residency = Residency(
        pool=pool, budgets=budgets,
        memory=SampledMemory(sampler), events=events, policy=policy,
        on_measured=catalog.record_measurement,
        queue_limit=cfg.engines.queue_depth + cfg.engines.per_model_concurrency,
        concurrency=cfg.engines.per_model_concurrency, metrics=metrics,
        verify=ArtifactVerifier(store, events), runtime_cap=runtime_cap)
    on_pool_event.subscribe("worker_crash", pool_events.crashes(residency))
    on_pool_event.subscribe("footprint", pool_events.growth(residency, events))

    # the bridge, and the parts the manager's facade forwards to
    specs = Specs(artifact_path=store.path,
                  engine_options=VersionOptions(cfg.engines, costs.options,
                                                installed_ort_providers()),
                  budgets=budgets, placement=residency, events=events, missing=missing)
    trace = TraceRecorder(cfg.trace.path, cfg.trace.max_bytes) if cfg.trace.path else None
    latencies = Latencies()
    serving = Serving(
        catalog=catalog, specs=specs, residency=residency, pool=pool,
        shm=ShmRegistry(allowed_gid=_socket_gid(cfg)), observe=policy.observe,
        latencies=latencies, trace=trace, metrics=metrics)
    advice = Advice(
        catalog=catalog, specs=specs, residency=residency,
        inspect=lambda p, f: inspect(p, f, costs.options(EngineOptions())),
        latencies=latencies, select_mode=cfg.selection.mode, pins=dict(cfg.selection.pins),
        estimate_at=lambda p, shapes: inspect(p, None, costs.options(EngineOptions(
            warmup_shapes={k: tuple(v) for k, v in shapes.items()}))).estimate_bytes)
    on_pool_event.subscribe("lane_requests", pool_events.lane_requests(serving))
    installer = Installer(store=store, catalog=catalog, residency=residency, specs=specs,
                          events=events, allow_local=cfg.install.allow_local_paths)
    manager = ModelManager(state_dir=cfg.state_dir, budgets=budgets, sampler=sampler,
                           events=events, store=store, catalog=catalog, missing=missing,
                           residency=residency, specs=specs, serving=serving,
                           advice=advice, installer=installer, fixed_costs=costs.status)
    preloader = Preloader(models=CatalogModels(catalog, specs), residency=residency,
                          policy=policy, interval_s=cfg.preload.interval_s) \
        if cfg.preload.enabled else None
    addr = (cfg.metrics.host, cfg.metrics.port) if cfg.metrics.port is not None else None
    return Parts(manager, pool, preloader, trace, metrics, addr)


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

"""The one place configuration is read and validated.

One YAML file (default ``/etc/edged/edged.yaml``); every key is optional and defaults work out of
the box. Errors name the key path, the line and the reason (``budgets.ram (line 9): cannot parse
size 'lots'``) so an operator can fix the file without reading code.

Why hand-written rather than pydantic: the daemon's idle budget is 80 MB RSS, the schema is small
and flat, and we need YAML line numbers for every error, which pydantic does not know about; a
few typed readers over the composed YAML node tree do both in ~250 lines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from edged.units import parse_size
from edged.values import Budgets

DEFAULT_PATH = Path("/etc/edged/edged.yaml")
CONFIG_VERSION = 1
SCOPES = ("admin", "infer")


class ConfigError(Exception):
    """A configuration problem: ``key (line N): reason``."""

    def __init__(self, key: str, reason: str, line: int | None = None, source: str = "") -> None:
        where = f" (line {line})" if line else ""
        prefix = f"{source}: " if source else ""
        super().__init__(f"{prefix}{key}{where}: {reason}")
        self.key, self.reason, self.line = key, reason, line


class ConfigErrors(ConfigError):
    """Several problems of one file, reported together; reads as the first one for code
    that looks at ``key``/``line``, and lists them all when printed."""

    def __init__(self, errors: list[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.key, first.reason, first.line)
        self.errors = list(errors)
        self.args = ("\n".join(str(x) for x in errors),)  # one line each


@dataclass(frozen=True)
class TokenConfig:
    file: Path
    scope: str


@dataclass(frozen=True)
class ListenConfig:
    unix: Path = Path("/run/edged/edged.sock")
    unix_mode: int = 0o660
    allow_world_access: bool = False  # a unix_mode that lets "other" connect needs this
    unix_group: str | None = None
    tcp: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    max_message_bytes: int = 64 << 20
    max_concurrent_rpcs: int = 256
    # Each request to a busy model holds one of these threads while it waits (the sync gRPC
    # server has no other way to wait), so there must be more of them than one model's bound
    # (engines.queue_depth + per_model_concurrency: 10 to 16 by default): 64 lets three models
    # be saturated at once and still serve the others at once. Threads start only when needed.
    threads: int = 64


@dataclass(frozen=True)
class AuthConfig:
    tokens: tuple[TokenConfig, ...] = ()
    require_admin_token_on_socket: bool = False


@dataclass(frozen=True)
class BudgetsConfig:
    """Sizes stay as written (percentages resolve against the device at start, into an
    ``edged.values.Budgets``: see ``resolve_budgets``)."""

    memory_total: int | None = None  # simulate a smaller device (e.g. 8GiB for an Orin Nano)
    reserve: str | int = 1 << 30
    ram: str | int = "40%"
    swap: str | int = "30%"
    storage: str | int = 20 << 30
    disk_reserve: int = 512 << 20
    # A discrete GPU's device memory for GPU models (a percentage is of the device's memory;
    # NVML says how much). On a Jetson the GPU allocates from RAM: the ram/swap budgets hold.
    gpu: str | int = "90%"


def default_per_model_concurrency(cores: int | None = None) -> int:
    """Twice the cores, at least 2 and at most 8.

    Measured with bench/grpc_path.py (8 gRPC clients on one model, 2 cores, bench/RESULTS.md):
    4 in flight served ppocr-cls at 653/s against 398-506/s at 2 and 416/s at 1, silero-vad at
    1067/s against 962/s at 2; 8 gained nothing more. A request spends part of its time in the
    daemon and the worker hop rather than in ONNX Runtime, so more than one per core keeps the
    cores busy; with intra_op_threads 1 (the default) each run takes one core, so twice the
    cores does not oversubscribe by more than the hops' share. At most 8: each run holds its
    own activations, and queue_depth (8) + 8 stays far below listen.threads (64), so several
    models can be saturated at once and the others still served."""
    n = cores if cores is not None else (len(os.sched_getaffinity(0))
                                         if hasattr(os, "sched_getaffinity") else os.cpu_count())
    return max(2, min(2 * (n or 1), 8))


@dataclass(frozen=True)
class EnginesConfig:
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    # Requests running at once on one model. Default: twice the cores, 2 to 8 (see
    # default_per_model_concurrency). Each run uses intra_op_threads threads of its own.
    per_model_concurrency: int = field(default_factory=default_per_model_concurrency)
    # Requests *waiting* per model, beyond the per_model_concurrency running: more get
    # RESOURCE_EXHAUSTED (QUEUE_FULL) at once. Validated below listen.threads (see there).
    queue_depth: int = 8
    shm_threshold_bytes: int = 64 << 10
    request_timeout_s: float = 30.0
    hang_timeout_s: float = 60.0
    start_timeout_s: float = 120.0
    # Overrides the measured GPU worker cost (engines/calibration.py); None: measured on this
    # device (at the first GPU load or by `edged calibrate`), 300 MiB until then.
    cuda_context_bytes: int | None = None
    # A GPU session's cap (gpu_mem_limit) is the model's admitted bytes plus this headroom.
    gpu_mem_headroom: str | int = "25%"
    cudnn_conv_algo_search: str = "HEURISTIC"  # EXHAUSTIVE | HEURISTIC | DEFAULT
    cudnn_conv_use_max_workspace: bool = False  # True: cuDNN may take up to the cap
    spare_workers: int = 0  # idle workers kept started with the runtime imported
    # Which models share a worker process (one CUDA context each: hundreds of MB on a Jetson),
    # unless a version names its own group at install: per_model (default) or one (all).
    share_worker: str = "per_model"
    worker_groups: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (group, model names)


@dataclass(frozen=True)
class InstallConfig:
    max_artifact_bytes: int = 8 << 30
    allow_local_paths: bool = True
    unreferenced_retention_days: float | None = None  # None: keep until `edged fsck --gc`


@dataclass(frozen=True)
class PreloadConfig:
    enabled: bool = True
    interval_s: float = 0.5
    policy: str = "edged"


@dataclass(frozen=True)
class SelectionConfig:
    """``select``: auto ranks every model; manual answers with the pinned model only;
    hybrid (the default) takes the pin when it can serve and ranks otherwise."""

    mode: str = "hybrid"
    pins: tuple[tuple[str, str], ...] = ()  # (task, model name)


@dataclass(frozen=True)
class TraceConfig:
    path: Path | None = None
    max_bytes: int = 64 << 20


@dataclass(frozen=True)
class TelemetryConfig:
    interval_s: float = 2.0
    root: Path = Path("/")
    jtop: bool = True
    nvml: bool = True


@dataclass(frozen=True)
class MetricsConfig:
    port: int | None = None
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class Config:
    version: int = CONFIG_VERSION
    state_dir: Path = Path("/var/lib/edged")
    listen: ListenConfig = field(default_factory=ListenConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    budgets: BudgetsConfig = field(default_factory=BudgetsConfig)
    engines: EnginesConfig = field(default_factory=EnginesConfig)
    install: InstallConfig = field(default_factory=InstallConfig)
    preload: PreloadConfig = field(default_factory=PreloadConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    trace: TraceConfig = field(default_factory=TraceConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log_level: str = "info"
    stop_grace_s: float = 10.0
    events_history: int = 1000

    def with_overrides(self, state_dir: Path | None = None, socket: Path | None = None) -> Config:
        """Command-line overrides (``--state-dir``, ``--socket``) win over the file."""
        cfg = self
        if state_dir is not None:
            cfg = replace(cfg, state_dir=state_dir)
        if socket is not None:
            cfg = replace(cfg, listen=replace(cfg.listen, unix=socket))
        return cfg


def resolve_budgets(b: BudgetsConfig, memory_total: int, disk_total: int,
                    gpu_total: int = 0) -> Budgets:
    """The budgets as written, in bytes against the device (or its simulated size): the one
    ``Budgets`` value the planner, the catalog's tier check and the status all use. A
    ``ConfigError`` (with the numbers) when they cannot all fit.

    Checked here as well as when the file is read, because without ``memory_total`` only the
    device tells how much there is."""
    total = b.memory_total or memory_total
    problem = budget_problem(b, total)
    if problem is not None:
        raise ConfigError(*problem)
    reserve = parse_size(b.reserve, percent_of=total)
    usable = max(0, total - reserve)
    return Budgets(
        memory_total=total,
        reserve=reserve,
        ram=parse_size(b.ram, percent_of=usable),
        swap=parse_size(b.swap, percent_of=usable),
        storage=parse_size(b.storage, percent_of=disk_total),
        gpu=min(parse_size(b.gpu, percent_of=gpu_total), gpu_total) if gpu_total else 0,
        gpu_total=gpu_total,
    )


def machine_warnings(cfg: Config, machine_memory: int) -> list[str]:
    """What is allowed but dangerous on this machine: said by `edged config check` and logged
    at every start."""
    from edged.units import format_size as fmt

    out = []
    if cfg.listen.unix_mode & 0o007 and cfg.listen.allow_world_access:
        out.append(f'listen.unix_mode "{cfg.listen.unix_mode:04o}": every local user may '
                   "connect to the socket, and calls on it need no token (allowed by "
                   "listen.allow_world_access)")
    total = cfg.budgets.memory_total
    if total is not None and total > machine_memory:
        out.append(f"budgets.memory_total {fmt(total)} is more than this machine has "
                   f"({fmt(machine_memory)}): the budgets may admit loads that end in the "
                   "kernel's OOM killer")
    return out


def budget_problem(b: BudgetsConfig, memory_total: int) -> tuple[str, str] | None:
    """``(key, reason)`` when the memory budgets cannot fit ``memory_total``, else None.

    The reserve must leave something, and the ram and swap tiers together must fit in what is
    left: a budget beyond the memory there is would let the planner admit loads that end in the
    kernel's OOM killer, which is what the budgets exist to prevent."""
    from edged.units import format_size as fmt

    where = "memory_total" if b.memory_total else "the device's memory"
    reserve = parse_size(b.reserve, percent_of=memory_total)
    if reserve >= memory_total:
        return ("budgets.reserve", f"{fmt(reserve)} leaves nothing of {where} "
                                   f"({fmt(memory_total)})")
    usable = memory_total - reserve
    ram = parse_size(b.ram, percent_of=usable)
    swap = parse_size(b.swap, percent_of=usable)
    if ram + swap > usable:
        return ("budgets", f"ram {fmt(ram)} + swap {fmt(swap)} = {fmt(ram + swap)} is more "
                           f"than {where} minus the reserve ({fmt(memory_total)} - "
                           f"{fmt(reserve)} = {fmt(usable)})")
    return None


def load(path: Path | None = None, *, required: bool = False) -> Config:
    """Read and validate the config file; a missing default file means all defaults."""
    target = path or Path(os.environ.get("EDGED_CONFIG", DEFAULT_PATH))
    if not target.exists():
        if required or path is not None:
            raise ConfigError("config", f"file {target} does not exist")
        return Config()
    try:
        text = target.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError("config", f"cannot read {target}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        line = target.read_bytes()[:exc.start].count(b"\n") + 1
        raise ConfigError("(file)", f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                          f"offset {exc.start})", line, str(target)) from None
    return parse(text, source=str(target))


def parse(text: str, source: str = "") -> Config:
    from edged.config_reader import read_config

    try:
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise ConfigError("(yaml)", str(getattr(exc, "problem", exc)), line, source) from exc
    return read_config(node, source)


def default_text() -> str:
    """The commented default config printed by ``edged config default``."""
    return _DEFAULT_TEXT.replace("@CONCURRENCY@", str(default_per_model_concurrency()))


def as_dict(cfg: Config) -> dict[str, Any]:
    """A plain, JSON-safe view (paths as strings) for ``edged config show``."""
    import dataclasses

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v

    return conv(cfg)  # type: ignore[no-any-return]


_DEFAULT_TEXT = """\
# edged configuration. Every key is optional; these are the defaults.
version: 1

# Installed artifacts, tier manifests (tiers/ram.yaml, tiers/swap.yaml, tiers/storage.yaml).
state_dir: /var/lib/edged

listen:
  unix: /run/edged/edged.sock   # robot processes connect here
  unix_mode: "0660"             # owner and group may connect
  allow_world_access: false     # a mode that lets "other" connect (e.g. "0666") needs true
  unix_group: null              # e.g. edged: the group robot processes run in
  tcp: null                     # e.g. "0.0.0.0:8001"; needs tls_cert/tls_key and a token
  tls_cert: null
  tls_key: null
  tls_client_ca: null           # set to require client certificates (mTLS)
  max_message_bytes: 64MiB
  max_concurrent_rpcs: 256      # beyond this, calls get RESOURCE_EXHAUSTED
  threads: 64                   # must exceed engines.queue_depth + per_model_concurrency

auth:
  tokens: []                    # - {file: /etc/edged/admin.token, scope: admin}
                                # - {file: /etc/edged/infer.token, scope: infer}
  require_admin_token_on_socket: false

budgets:                        # bytes, "512MiB", "2GB", or a percentage
  memory_total: null            # simulate a smaller device, e.g. 8GiB for an Orin Nano 8 GB
  reserve: 1GiB                 # kept free for the OS and the robot's own processes
  ram: 40%                      # of (memory_total - reserve): resident, pinned models
  swap: 30%                     # of (memory_total - reserve): on-demand, evictable models
  storage: 20GiB                # disk for installed artifacts (a percentage is of the disk)
  disk_reserve: 512MiB          # installs never fill the disk past this
  gpu: 90%                      # discrete GPU: device memory for GPU models (% of the GPU's);
                                # on a Jetson GPU memory is RAM and the ram/swap budgets hold

engines:
  intra_op_threads: 1
  inter_op_threads: 1
  per_model_concurrency: @CONCURRENCY@      # requests running at once on one model (default:
                                # twice this machine's cores, 2 to 8)
  queue_depth: 8                # requests waiting per model, beyond those running, before
                                # RESOURCE_EXHAUSTED (QUEUE_FULL); each holds an RPC thread,
                                # so queue_depth + per_model_concurrency < listen.threads
  shm_threshold_bytes: 64KiB    # larger tensors go to the engine worker through shared memory
  request_timeout_s: 30
  hang_timeout_s: 60            # a worker silent this long is killed and restarted
  start_timeout_s: 120
  cuda_context_bytes: null      # per GPU worker; null: measured on this device (first GPU
                                # load, `edged calibrate`), 300MiB until then; a size overrides
  gpu_mem_headroom: 25%         # a GPU model's gpu_mem_limit: its admitted bytes + this
  cudnn_conv_algo_search: HEURISTIC   # EXHAUSTIVE | HEURISTIC | DEFAULT
  cudnn_conv_use_max_workspace: false # true lets cuDNN's workspace grow to the model's cap
  spare_workers: 0              # keep N idle workers started, ONNX Runtime imported: a load
                                # then skips ~0.3-0.5 s of worker start (each costs ~30 MB)
  share_worker: per_model       # per_model | one (every model in one worker: one CUDA
                                # context, but one crash or hang takes them all down)
  worker_groups: {}             # e.g. {ocr: [ppocr-det, ppocr-rec]}: these share a worker

install:
  max_artifact_bytes: 8GiB
  allow_local_paths: true       # InstallFrom a path on the device
  unreferenced_retention_days: null  # delete artifacts no manifest uses after N days
                                # (null: keep them until `edged fsck --gc`)

preload:
  enabled: true
  interval_s: 0.5
  policy: edged                 # edged | lru | lfu

selection:
  mode: hybrid                  # auto | manual (the pin only) | hybrid (the pin if it can serve)
  pins: {}                      # task -> model, e.g. {ocr.detect: ppocr-det}

trace:
  path: null                    # record live traffic as JSONL for tools/replay.py
  max_bytes: 64MiB

telemetry:
  interval_s: 2.0
  root: /                       # tests point this at a recorded sysfs tree
  jtop: true                    # use jetson-stats when its service runs
  nvml: true

metrics:
  port: null                    # e.g. 9464 to serve Prometheus metrics
  host: 127.0.0.1

log_level: info                 # debug | info | warning | error
stop_grace_s: 10                # SIGTERM: in-flight requests get this long to finish
events_history: 1000
"""

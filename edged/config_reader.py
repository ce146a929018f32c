"""Typed readers over a composed YAML node tree, so every error knows its line.

Kept apart from ``config.py`` (which holds the schema as dataclasses and the defaults) so that
the schema reads top to bottom without the plumbing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from edged.config import (
    CONFIG_VERSION,
    SCOPES,
    AuthConfig,
    BudgetsConfig,
    Config,
    ConfigError,
    ConfigErrors,
    EnginesConfig,
    InstallConfig,
    ListenConfig,
    MetricsConfig,
    PreloadConfig,
    SelectionConfig,
    TelemetryConfig,
    TokenConfig,
    TraceConfig,
    budget_problem,
)
from edged.units import is_percent, parse_size

T = TypeVar("T")
_LEVELS = ("debug", "info", "warning", "error")


class Section:
    """One mapping node: typed getters that check types and remember which keys were read."""

    def __init__(self, node: yaml.Node | None, path: str, source: str,
                 problems: list[ConfigError] | None = None) -> None:
        self.path, self.source = path, source
        # every problem of the file, shared by all sections, so that one run reports them all
        self.problems: list[ConfigError] = problems if problems is not None else []
        self.line = node.start_mark.line + 1 if node is not None else None
        self.items: dict[str, yaml.Node] = {}
        self.key_lines: dict[str, int] = {}  # errors about a key point at the key, not its value
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
            return
        if not isinstance(node, yaml.MappingNode):
            self.fail(None, "must be a mapping", self.line)
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):  # `? [a, b]` or `{a: 1}: x`
                self.fail(None, "keys must be plain names, not a list or a mapping", line)
            key = str(key_node.value)
            if key in self.items:
                self.fail(key, "duplicate key", line)
            self.items[key] = value_node
            self.key_lines[key] = line

    def key(self, name: str | None) -> str:
        if not name:
            return self.path or "(top level)"
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str | None, reason: str, line: int | None = None) -> Any:
        if line is None and name in self.key_lines:
            line = self.key_lines[name]
        elif line is None:
            line = self.line
        raise ConfigError(self.key(name), reason, line, self.source)

    def check_known(self, known: set[str]) -> None:
        for name in self.items:
            if name not in known:
                hint = ", ".join(sorted(known))
                self.record(name, f"unknown key (known keys: {hint})")

    def record(self, name: str | None, reason: str, line: int | None = None) -> None:
        """Like ``fail``, but the reading goes on (the error is reported with the others)."""
        try:
            self.fail(name, reason, line)
        except ConfigError as exc:
            self.problems.append(exc)

    def scalar(self, name: str) -> Any:
        node = self.items.get(name)
        if node is None:
            return None
        if not isinstance(node, yaml.ScalarNode):
            self.fail(name, "must be a single value")
        return yaml.safe_load(yaml.serialize(node))

    def get(self, name: str, default: T, conv: Callable[[Any], T]) -> T:
        if name not in self.items:
            return default
        try:
            return conv(self.scalar(name))
        except (ValueError, TypeError) as exc:
            self.record(name, str(exc))
        except ConfigError as exc:
            self.problems.append(exc)
        return default

    def sub(self, name: str) -> Section:
        try:
            return Section(self.items.get(name), self.key(name), self.source, self.problems)
        except ConfigError as exc:  # not a mapping, a duplicate key: read as empty
            self.problems.append(exc)
            return Section(None, self.key(name), self.source, self.problems)


def _int(lo: int, hi: int = 1 << 62) -> Callable[[Any], int]:
    def conv(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"must be an integer, got {v!r}")
        if not lo <= v <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {v}")
        return v
    return conv


def _float(lo: float, hi: float = 1e9) -> Callable[[Any], float]:
    def conv(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"must be a number, got {v!r}")
        if not lo <= v <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {v}")
        return float(v)
    return conv


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, got {v!r}")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(f"must be a non-empty string, got {v!r}")
    return v


def _opt(conv: Callable[[Any], T]) -> Callable[[Any], T | None]:
    return lambda v: None if v is None else conv(v)


def _path(v: Any) -> Path:
    return Path(_str(v))


def _size(v: Any) -> int:
    return parse_size(v)


def _size_or_percent(v: Any) -> str | int:
    parse_size(v, percent_of=100)  # syntax check only; resolved against the device at start
    if isinstance(v, str) and not is_percent(v):
        return parse_size(v)
    return v  # type: ignore[no-any-return]


def _mode(v: Any) -> int:
    text = str(v) if not isinstance(v, int) else oct(v)[2:]
    try:
        mode = int(text, 8)
    except ValueError:
        raise ValueError(f'must be an octal mode like "0660", got {v!r}') from None
    if not 0 <= mode <= 0o777:
        raise ValueError(f"must be a permission mode between 0000 and 0777, got {v!r}")
    return mode


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def conv(v: Any) -> str:
        if v not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {v!r}")
        return str(v)
    return conv


def _listen(s: Section) -> ListenConfig:
    d = ListenConfig()
    s.check_known(set(ListenConfig.__dataclass_fields__))
    cfg = ListenConfig(
        unix=s.get("unix", d.unix, _path),
        unix_mode=s.get("unix_mode", d.unix_mode, _mode),
        allow_world_access=s.get("allow_world_access", d.allow_world_access, _bool),
        unix_group=s.get("unix_group", d.unix_group, _opt(_str)),
        tcp=s.get("tcp", d.tcp, _opt(_str)),
        tls_cert=s.get("tls_cert", d.tls_cert, _opt(_path)),
        tls_key=s.get("tls_key", d.tls_key, _opt(_path)),
        tls_client_ca=s.get("tls_client_ca", d.tls_client_ca, _opt(_path)),
        max_message_bytes=s.get("max_message_bytes", d.max_message_bytes, _size),
        max_concurrent_rpcs=s.get("max_concurrent_rpcs", d.max_concurrent_rpcs, _int(1, 100_000)),
        threads=s.get("threads", d.threads, _int(2, 1024)),
    )
    if cfg.unix_mode & 0o007 and not cfg.allow_world_access:
        s.record("unix_mode", f'"{cfg.unix_mode:04o}" lets every local user connect, and the '
               "socket needs no token: any user could install and remove models. Use "
               '"0660" with listen.unix_group, or set listen.allow_world_access: true')
    if cfg.tcp is not None:
        problem = _host_port_problem(cfg.tcp)
        if problem:
            s.record("tcp", problem)
        if cfg.tls_cert is None or cfg.tls_key is None:
            s.record("tcp", "TCP needs TLS: set listen.tls_cert and listen.tls_key")
    if cfg.max_message_bytes < 4096:
        s.record("max_message_bytes", "must be at least 4KiB")
    return cfg


def _host_port_problem(text: str) -> str:
    """Why ``text`` is not ``HOST:PORT`` with a port up to 65535 ("" when it is)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        return f'must be "HOST:PORT", e.g. "0.0.0.0:8001", got {text!r}'
    if int(port) > 65535:  # 0: the system picks a free port
        return f"port {port} is not a port number (0 to 65535)"
    return ""


def _check_tcp_has_tokens(listen: Section, cfg: ListenConfig, auth: AuthConfig) -> None:
    """TCP calls always need a bearer token (edged.service.auth): without one configured,
    every call on the port would fail UNAUTHENTICATED, so say so now."""
    if cfg.tcp is not None and not auth.tokens:
        listen.record("tcp", "TCP needs a bearer token: add auth.tokens "
                           "(e.g. [{file: /etc/edged/admin.token, scope: admin}])")


def _auth(s: Section) -> AuthConfig:
    s.check_known({"tokens", "require_admin_token_on_socket"})
    tokens: list[TokenConfig] = []
    node = s.items.get("tokens")
    if node is not None and not (isinstance(node, yaml.ScalarNode) and node.value in ("", "null")):
        if not isinstance(node, yaml.SequenceNode):
            s.fail("tokens", "must be a list of {file, scope}")
        for i, item in enumerate(node.value):
            t = Section(item, f"{s.key('tokens')}[{i}]", s.source, s.problems)
            t.check_known({"file", "scope"})
            if "file" not in t.items:
                t.fail(None, "needs a file")
            tokens.append(TokenConfig(
                file=t.get("file", Path(), _path),
                scope=t.get("scope", "infer", _choice(SCOPES)),
            ))
    return AuthConfig(
        tokens=tuple(tokens),
        require_admin_token_on_socket=s.get("require_admin_token_on_socket", False, _bool),
    )


def _budgets(s: Section) -> BudgetsConfig:
    d = BudgetsConfig()
    s.check_known({"memory_total", "reserve", "ram", "swap", "storage", "disk_reserve", "gpu"})
    b = BudgetsConfig(
        memory_total=s.get("memory_total", d.memory_total, _opt(_size)),
        reserve=s.get("reserve", d.reserve, _size_or_percent),
        ram=s.get("ram", d.ram, _size_or_percent),
        swap=s.get("swap", d.swap, _size_or_percent),
        storage=s.get("storage", d.storage, _size_or_percent),
        disk_reserve=s.get("disk_reserve", d.disk_reserve, _size),
        gpu=s.get("gpu", d.gpu, _size_or_percent),
    )
    if b.memory_total == 0:
        s.record("memory_total", "must be more than 0 (or null: the device's memory)")
        return b
    _check_budgets_fit(s, b)
    return b


def _check_budgets_fit(s: Section, b: BudgetsConfig) -> None:
    """The fit check of ``config.budget_problem``, with line numbers, where it can be made
    without the device: with ``memory_total``, or with ram and swap both percentages (of what
    the reserve leaves, so more than 100% together never fits). Otherwise the daemon makes it
    at start, against the device."""
    line = s.key_lines.get("swap") or s.key_lines.get("ram")
    if is_percent(b.ram) and is_percent(b.swap):
        ram, swap = (float(str(v).strip().rstrip("%")) for v in (b.ram, b.swap))
        if ram + swap > 100:
            s.record(None, f"ram {b.ram} + swap {b.swap} is more than 100% of the memory the "
                         "reserve leaves", line)
    if b.memory_total is None:
        return
    problem = budget_problem(b, b.memory_total)
    if problem is not None:
        key, reason = problem
        name = key.partition(".")[2] or None
        s.record(name, reason, None if name else line)


def _engines(s: Section, rpc_threads: int) -> EnginesConfig:
    d = EnginesConfig()
    s.check_known(set(EnginesConfig.__dataclass_fields__))
    cfg = EnginesConfig(
        intra_op_threads=s.get("intra_op_threads", d.intra_op_threads, _int(0, 256)),
        inter_op_threads=s.get("inter_op_threads", d.inter_op_threads, _int(0, 256)),
        per_model_concurrency=s.get("per_model_concurrency", d.per_model_concurrency,
                                    _int(1, 256)),
        queue_depth=s.get("queue_depth", d.queue_depth, _int(1, 100_000)),
        shm_threshold_bytes=s.get("shm_threshold_bytes", d.shm_threshold_bytes, _size),
        request_timeout_s=s.get("request_timeout_s", d.request_timeout_s, _float(0.001)),
        hang_timeout_s=s.get("hang_timeout_s", d.hang_timeout_s, _float(0.1)),
        start_timeout_s=s.get("start_timeout_s", d.start_timeout_s, _float(1)),
        cuda_context_bytes=s.get("cuda_context_bytes", d.cuda_context_bytes, _opt(_size)),
        gpu_mem_headroom=s.get("gpu_mem_headroom", d.gpu_mem_headroom, _size_or_percent),
        cudnn_conv_algo_search=s.get("cudnn_conv_algo_search", d.cudnn_conv_algo_search,
                                     _choice(("EXHAUSTIVE", "HEURISTIC", "DEFAULT"))),
        cudnn_conv_use_max_workspace=s.get("cudnn_conv_use_max_workspace",
                                           d.cudnn_conv_use_max_workspace, _bool),
        spare_workers=s.get("spare_workers", d.spare_workers, _int(0, 16)),
        share_worker=s.get("share_worker", d.share_worker, _choice(("per_model", "one"))),
        worker_groups=_worker_groups(s.sub("worker_groups")),
    )
    bound = cfg.queue_depth + cfg.per_model_concurrency
    if bound >= rpc_threads:  # one busy model would hold every RPC thread
        s.record("queue_depth", f"queue_depth {cfg.queue_depth} + per_model_concurrency "
               f"{cfg.per_model_concurrency} = {bound} requests per model, each holding an RPC "
               f"thread: must be below listen.threads ({rpc_threads}), or requests for one "
               "busy model make requests for every other model wait")
    return cfg


def _worker_groups(s: Section) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``{group: [model, ...]}``; a model may be in one group only."""
    out: list[tuple[str, tuple[str, ...]]] = []
    seen: dict[str, str] = {}
    for group, node in s.items.items():
        if not _MODEL_NAME.fullmatch(str(group)):
            s.fail(group, f"{group!r} is not a group name ([a-z0-9][a-z0-9._-]{{0,62}})")
        if not isinstance(node, yaml.SequenceNode):
            s.fail(group, "must be a list of model names")
        names: list[str] = []
        for item in node.value:
            name = item.value if isinstance(item, yaml.ScalarNode) else None
            line = item.start_mark.line + 1
            if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
                s.fail(group, f"{name!r} is not a model name", line)
                continue
            if name in seen:
                s.fail(group, f"model '{name}' is already in group '{seen[name]}'", line)
            seen[name] = group
            names.append(name)
        out.append((str(group), tuple(names)))
    return tuple(out)


_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")  # SPEC's model-name rule


def _selection(s: Section) -> SelectionConfig:
    d = SelectionConfig()
    s.check_known(set(SelectionConfig.__dataclass_fields__))
    pins = s.sub("pins")
    out = []
    for task in pins.items:
        model = pins.get(task, "", _str)
        if not _MODEL_NAME.fullmatch(model):
            pins.record(task, f"{model!r} is not a model name ([a-z0-9][a-z0-9._-]{{0,62}})")
        out.append((task, model))
    return SelectionConfig(mode=s.get("mode", d.mode, _choice(("auto", "manual", "hybrid"))),
                           pins=tuple(out))


def _each(problems: list[ConfigError], read: Callable[[], T], default: T) -> T:
    """One section's reader; a problem that stops it is recorded and its defaults stand in,
    so that the sections after it are still checked."""
    try:
        return read()
    except ConfigError as exc:
        problems.append(exc)
        return default


def read_config(root: yaml.Node | None, source: str) -> Config:
    """The validated config; raises ``ConfigError`` with every problem of the file (not the
    first only: an operator fixing a file should not have to run the check once per error)."""
    top = Section(root, "", source)
    config = _read_config(top)
    if len(top.problems) == 1:
        raise top.problems[0]
    if top.problems:
        raise ConfigErrors(top.problems)
    return config


def _read_config(top: Section) -> Config:
    top.check_known(set(Config.__dataclass_fields__))
    version = top.get("version", CONFIG_VERSION, _int(1, 1_000))
    if version != CONFIG_VERSION:
        top.record("version",
                   f"unsupported config version {version} (this edged reads {CONFIG_VERSION})")
    d = Config()
    inst, pre, tr, tel, met = (top.sub(k) for k in ("install", "preload", "trace", "telemetry",
                                                      "metrics"))
    for sec, cls in ((inst, InstallConfig), (pre, PreloadConfig), (tr, TraceConfig),
                     (tel, TelemetryConfig), (met, MetricsConfig)):
        sec.check_known(set(cls.__dataclass_fields__))
    problems = top.problems
    listen_section = top.sub("listen")
    listen = _each(problems, lambda: _listen(listen_section), d.listen)
    auth = _each(problems, lambda: _auth(top.sub("auth")), d.auth)
    _check_tcp_has_tokens(listen_section, listen, auth)
    return Config(
        version=version,
        state_dir=top.get("state_dir", d.state_dir, _path),
        listen=listen,
        auth=auth,
        budgets=_each(problems, lambda: _budgets(top.sub("budgets")), d.budgets),
        engines=_each(problems, lambda: _engines(top.sub("engines"), listen.threads),
                      d.engines),
        install=InstallConfig(
            max_artifact_bytes=inst.get("max_artifact_bytes", d.install.max_artifact_bytes, _size),
            allow_local_paths=inst.get("allow_local_paths", d.install.allow_local_paths, _bool),
            unreferenced_retention_days=inst.get(
                "unreferenced_retention_days", d.install.unreferenced_retention_days,
                _opt(_float(0, 36500))),
        ),
        preload=PreloadConfig(
            enabled=pre.get("enabled", d.preload.enabled, _bool),
            interval_s=pre.get("interval_s", d.preload.interval_s, _float(0.01, 3600)),
            policy=pre.get("policy", d.preload.policy, _choice(("edged", "lru", "lfu"))),
        ),
        selection=_each(problems, lambda: _selection(top.sub("selection")), d.selection),
        trace=TraceConfig(
            path=tr.get("path", d.trace.path, _opt(_path)),
            max_bytes=tr.get("max_bytes", d.trace.max_bytes, _size),
        ),
        telemetry=TelemetryConfig(
            interval_s=tel.get("interval_s", d.telemetry.interval_s, _float(0.05, 3600)),
            root=tel.get("root", d.telemetry.root, _path),
            jtop=tel.get("jtop", d.telemetry.jtop, _bool),
            nvml=tel.get("nvml", d.telemetry.nvml, _bool),
        ),
        metrics=MetricsConfig(
            port=met.get("port", d.metrics.port, _opt(_int(0, 65535))),
            host=met.get("host", d.metrics.host, _str),
        ),
        log_level=top.get("log_level", d.log_level, _choice(_LEVELS)),
        stop_grace_s=top.get("stop_grace_s", d.stop_grace_s, _float(0, 3600)),
        events_history=top.get("events_history", d.events_history, _int(0, 1_000_000)),
    )

"""The daemon's own parts, built in this process on a temp dir (``edged.daemon.build_parts``:
the same graph the daemon serves from, without the gRPC server), for tests that call the
manager facade or one of its parts directly."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from edged import config as cfgmod
from edged.daemon import Parts, build_parts
from edged.manager.events import EventBus
from edged.telemetry.sampler import Sampler


@contextmanager
def parts_on(state_dir: Path, config: dict[str, Any] | None = None,
             start: bool = True) -> Iterator[Parts]:
    """Build the parts on ``state_dir`` with ``config`` (the daemon's YAML, as a dict); with
    ``start`` the ram tier is loaded and the manager is serving. Everything is closed after."""
    cfg = cfgmod.parse(yaml.safe_dump(config or {"version": 1})).with_overrides(
        state_dir=state_dir)
    sampler = Sampler(root=cfg.telemetry.root, interval_s=cfg.telemetry.interval_s,
                      memory_total_override=cfg.budgets.memory_total, use_jtop=False,
                      use_nvml=False)
    sampler.start()
    try:
        where = state_dir if state_dir.exists() else state_dir.parent
        budgets = cfgmod.resolve_budgets(cfg.budgets, sampler.snapshot().memory.total_bytes,
                                         shutil.disk_usage(where).total)
        events = EventBus(cfg.events_history)
        parts = build_parts(cfg, budgets, sampler, events)
        try:
            if start:
                parts.manager.start()
                parts.manager.set_state("serving")
            yield parts
        finally:
            parts.close()
            events.close()
    finally:
        sampler.stop()

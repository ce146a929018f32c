"""Prometheus metrics for one daemon, in their own registry, served on an optional local port.

Why an own ``CollectorRegistry`` and not prometheus_client's global default: the global one is
process state that every ``Counter(...)`` call mutates at import or construction time, so two
daemons in one test process (or one test after another) would collide on metric names. Each
``Metrics`` owns its registry; nothing happens at import.

Label values are bounded: model names come from the installed set, ``outcome``/``kind``/
``reason``/``tier`` from small fixed vocabularies, never from request contents.

Derived numbers are left to PromQL, where they aggregate correctly across scrapes, e.g.
  cache hit rate  1 - rate(edged_loads_total{kind="demand"}[5m]) / rate(edged_requests_total[5m])
  preload hit rate  rate(edged_preload_hits_total[1h]) / rate(edged_loads_total{kind="preload"}[1h])
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from threading import Thread
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger("edged.metrics")

# 0.1 ms (a cached tiny model behind a Unix socket) up to 5 s (a large model on CPU).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0)
LOAD_KINDS = ("demand", "preload")
REJECTION_REASONS = ("capacity", "queue_full", "concurrency_limit")


@dataclass
class MetricsServer:
    """The HTTP endpoint serving ``/metrics``; ``stop()`` closes its socket and thread."""

    host: str
    port: int
    _httpd: Any
    _thread: Thread

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class Metrics:
    """The daemon's metrics. The manager calls the recording methods; they are cheap (a lock and
    an add) and raise only on a programming error (an unknown load kind)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter("edged_requests", "Inference requests by model and outcome.",
                                ("model", "outcome"), registry=r)
        self.request_seconds = Histogram(
            "edged_request_seconds", "Inference latency inside the daemon, by model.",
            ("model",), buckets=LATENCY_BUCKETS, registry=r)
        self.loads = Counter("edged_loads", "Model loads: on demand (a cold start) or preloads.",
                             ("model", "kind"), registry=r)
        self.evictions = Counter("edged_evictions", "Models unloaded to make room, by reason.",
                                 ("model", "reason"), registry=r)
        self.rejections = Counter(
            "edged_rejections",
            "Work refused, by reason: capacity (a load would not fit; by tier), queue_full (a "
            "model's queue is full; its tier), concurrency_limit (listen.max_concurrent_rpcs; "
            "no tier).", ("tier", "reason"), registry=r)
        self.preload_hits = Counter("edged_preload_hits",
                                    "Preloaded models that a request then used.", registry=r)
        self.preloads_wasted = Counter("edged_preload_wasted",
                                       "Preloaded models evicted before any request used them.",
                                       registry=r)
        self.worker_restarts = Counter("edged_worker_restarts",
                                       "Engine workers that died and were replaced, by model.",
                                       ("model",), registry=r)
        self.memory = Gauge("edged_memory_bytes", "Memory per tier: its budget and its use.",
                            ("tier", "kind"), registry=r)
        self.models_loaded = Gauge("edged_models_loaded", "Models loaded right now.", registry=r)
        self.memory_available = Gauge("edged_memory_available_bytes",
                                      "Memory the device has available (MemAvailable, with "
                                      "NvMap use accounted for on Jetson).", registry=r)

    # -- recording: the names the manager calls ------------------------------------------
    def observe_request(self, model: str, seconds: float, ok: bool,
                        outcome: str | None = None) -> None:
        """One finished request; ``outcome`` (e.g. a status code name) refines ok/error."""
        self.requests.labels(model, outcome or ("ok" if ok else "error")).inc()
        self.request_seconds.labels(model).observe(max(0.0, seconds))

    def count_load(self, model: str, kind: str) -> None:
        if kind not in LOAD_KINDS:
            raise ValueError(f"load kind must be one of {LOAD_KINDS}, not {kind!r}")
        self.loads.labels(model, kind).inc()

    def eviction(self, model: str, reason: str) -> None:
        self.evictions.labels(model, reason).inc()

    def rejection(self, tier: str, reason: str = "capacity") -> None:
        if reason not in REJECTION_REASONS:
            raise ValueError(f"rejection reason must be one of {REJECTION_REASONS}, "
                             f"not {reason!r}")
        self.rejections.labels(tier, reason).inc()

    def preload_hit(self) -> None:
        self.preload_hits.inc()

    def preload_wasted(self) -> None:
        self.preloads_wasted.inc()

    def worker_restart(self, model: str) -> None:
        self.worker_restarts.labels(model).inc()

    def set_memory(self, tier: str, budget_bytes: int, used_bytes: int) -> None:
        self.memory.labels(tier, "budget").set(budget_bytes)
        self.memory.labels(tier, "used").set(used_bytes)

    def set_models_loaded(self, count: int) -> None:
        self.models_loaded.set(count)

    def set_memory_available(self, available_bytes: int) -> None:
        self.memory_available.set(available_bytes)

    # -- exposition ------------------------------------------------------------------------
    def render(self) -> bytes:
        """The Prometheus text format of this registry (what ``/metrics`` returns)."""
        return generate_latest(self.registry)

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> MetricsServer:
        """Serve ``/metrics`` over HTTP on a background thread; port 0 picks a free port.

        Localhost by default: the metrics name the installed models, which is not for every
        network the device is on; scrape through an SSH tunnel or a local agent instead.
        """
        from prometheus_client import start_http_server

        started = start_http_server(port, addr=host, registry=self.registry)
        if not isinstance(started, tuple):  # prometheus-client < 0.20 returned None
            raise RuntimeError("prometheus-client >= 0.20 is needed to stop the metrics server")
        httpd, thread = started
        bound = int(httpd.server_address[1])
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return MetricsServer(host, bound, httpd, thread)

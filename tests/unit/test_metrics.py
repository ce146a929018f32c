"""Metrics scraped over real HTTP on 127.0.0.1 and parsed with prometheus_client's own parser."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from edged.metrics import LATENCY_BUCKETS, Metrics, MetricsServer

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: MetricsServer) -> Samples:
    url = f"http://{server.host}:{server.port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def metrics() -> Iterator[tuple[Metrics, MetricsServer]]:
    m = Metrics()
    server = m.serve("127.0.0.1", 0)
    yield m, server
    server.stop()


def test_every_metric_over_http(metrics: tuple[Metrics, MetricsServer]) -> None:
    m, server = metrics
    assert server.port > 0
    m.observe_request("silero-vad", 0.0003, True)
    m.observe_request("silero-vad", 0.002, True)
    m.observe_request("silero-vad", 0.004, False)
    m.observe_request("ppocr-det", 1.2, False, outcome="RESOURCE_EXHAUSTED")
    m.count_load("silero-vad", "demand")
    m.count_load("ppocr-det", "preload")
    m.count_load("ppocr-det", "preload")
    m.eviction("ppocr-rec", "capacity")
    m.rejection("swap")
    m.rejection("swap", "queue_full")
    m.rejection("", "concurrency_limit")
    m.rejection("", "concurrency_limit")
    m.preload_hit()
    m.preload_wasted()
    m.worker_restart("ppocr-det")
    m.set_memory("ram", 3 << 30, 1 << 30)
    m.set_memory("swap", 2 << 30, 512 << 20)
    m.set_models_loaded(3)
    m.set_memory_available(5 << 30)

    s = scrape(server)
    assert value(s, "edged_requests_total", model="silero-vad", outcome="ok") == 2
    assert value(s, "edged_requests_total", model="silero-vad", outcome="error") == 1
    assert value(s, "edged_requests_total", model="ppocr-det", outcome="RESOURCE_EXHAUSTED") == 1
    assert value(s, "edged_request_seconds_count", model="silero-vad") == 3
    assert value(s, "edged_request_seconds_sum", model="silero-vad") == pytest.approx(0.0063)
    assert value(s, "edged_request_seconds_bucket", model="silero-vad", le="0.0005") == 1
    assert value(s, "edged_request_seconds_bucket", model="silero-vad", le="0.0025") == 2
    assert value(s, "edged_request_seconds_bucket", model="silero-vad", le="0.005") == 3
    assert value(s, "edged_request_seconds_bucket", model="ppocr-det", le="1.0") == 0
    assert value(s, "edged_request_seconds_bucket", model="ppocr-det", le="+Inf") == 1
    assert value(s, "edged_loads_total", model="silero-vad", kind="demand") == 1
    assert value(s, "edged_loads_total", model="ppocr-det", kind="preload") == 2
    assert value(s, "edged_evictions_total", model="ppocr-rec", reason="capacity") == 1
    assert value(s, "edged_rejections_total", tier="swap", reason="capacity") == 1
    assert value(s, "edged_rejections_total", tier="swap", reason="queue_full") == 1
    assert value(s, "edged_rejections_total", tier="", reason="concurrency_limit") == 2
    assert value(s, "edged_preload_hits_total") == 1
    assert value(s, "edged_preload_wasted_total") == 1
    assert value(s, "edged_worker_restarts_total", model="ppocr-det") == 1
    assert value(s, "edged_memory_bytes", tier="ram", kind="budget") == 3 << 30
    assert value(s, "edged_memory_bytes", tier="ram", kind="used") == 1 << 30
    assert value(s, "edged_memory_bytes", tier="swap", kind="used") == 512 << 20
    assert value(s, "edged_models_loaded") == 3
    assert value(s, "edged_memory_available_bytes") == 5 << 30


def test_gauges_follow_the_latest_value(metrics: tuple[Metrics, MetricsServer]) -> None:
    m, server = metrics
    m.set_models_loaded(4)
    m.set_models_loaded(2)
    m.set_memory("ram", 100, 80)
    m.set_memory("ram", 100, 20)
    s = scrape(server)
    assert value(s, "edged_models_loaded") == 2
    assert value(s, "edged_memory_bytes", tier="ram", kind="used") == 20


def test_buckets_span_a_tenth_of_a_millisecond_to_five_seconds() -> None:
    assert LATENCY_BUCKETS[0] == 0.0001 and LATENCY_BUCKETS[-1] == 5.0
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)


def test_registries_are_independent_and_not_the_global_one() -> None:
    a, b = Metrics(), Metrics()  # a second daemon in the same process must not collide
    a.rejection("ram")
    assert a.registry is not REGISTRY and a.registry is not b.registry
    labels = {"tier": "ram", "reason": "capacity"}
    assert a.registry.get_sample_value("edged_rejections_total", labels) == 1
    assert b.registry.get_sample_value("edged_rejections_total", labels) is None
    assert REGISTRY.get_sample_value("edged_preload_hits_total") is None


def test_a_given_registry_is_used() -> None:
    registry = CollectorRegistry()
    m = Metrics(registry)
    m.preload_hit()
    assert registry.get_sample_value("edged_preload_hits_total") == 1
    assert b"edged_preload_hits_total 1.0" in m.render()


def test_unknown_load_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="load kind"):
        Metrics().count_load("m", "speculative")
    with pytest.raises(ValueError, match="rejection reason"):
        Metrics().rejection("swap", "because")


def test_serve_binds_localhost_by_default_and_stops() -> None:
    m = Metrics()
    server = m.serve()
    assert server.host == "127.0.0.1"
    assert "edged_models_loaded" in {n for n, _ in scrape(server)}
    server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=2)

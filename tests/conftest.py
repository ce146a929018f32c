"""Shared fixtures: the real daemon on a temp socket, a client, the demo models."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # tests/modelgen.py, tests/daemon_harness.py

from daemon_harness import REPO, DaemonProcess  # noqa: E402

from edged.client import EdgedClient  # noqa: E402

MODELS_DIR = REPO / "models"
DEMO_MODELS = ("silero-vad", "ppocr-det", "ppocr-rec", "ppocr-cls")


@pytest.fixture(scope="session")
def demo_models() -> dict[str, Path]:
    """The real demo models; fetched by the README's test command (tools/fetch_models.py)."""
    paths = {name: MODELS_DIR / f"{name}.onnx" for name in DEMO_MODELS}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        pytest.fail(f"demo models missing ({', '.join(missing)}): "
                    "run `python tools/fetch_models.py` first")
    return paths


@pytest.fixture
def daemon_factory() -> Iterator[object]:
    started: list[DaemonProcess] = []

    def make(config: dict | None = None, **kw: object) -> DaemonProcess:
        d = DaemonProcess(config, **kw)  # type: ignore[arg-type]
        started.append(d)
        return d

    yield make
    errors = []
    for d in started:
        try:
            d.stop()
        except AssertionError as exc:
            errors.append(str(exc))
        finally:
            d.cleanup()
    if errors:
        pytest.fail("\n".join(errors))


@pytest.fixture
def daemon(daemon_factory) -> DaemonProcess:  # type: ignore[no-untyped-def]
    return daemon_factory().start()


@pytest.fixture
def client(daemon: DaemonProcess) -> Iterator[EdgedClient]:
    with daemon.client() as c:
        yield c

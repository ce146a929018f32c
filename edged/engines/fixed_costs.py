"""This device's measured worker costs (``calibration``) as the daemon uses them: the options
every estimate is made with, the measurement taken from a first load when the device was never
calibrated, and the line of status that shows them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from edged import errors as e
from edged.engines import calibration
from edged.engines.base import EngineOptions
from edged.units import format_size

log = logging.getLogger("edged.calibration")


class _Gpu(Protocol):
    @property
    def name(self) -> str: ...


class Device(Protocol):
    """What a calibration is keyed by (``telemetry.snapshot.DeviceInfo``)."""

    @property
    def kind(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def l4t_release(self) -> str | None: ...

    @property
    def cpu_model(self) -> str: ...

    @property
    def gpus(self) -> Sequence[_Gpu]: ...


class Publisher(Protocol):
    """Where the book says it calibrated (``manager.events.EventBus``)."""

    def publish(self, kind: str, model: str = "", version: int = 0, message: str = "",
                **details: object) -> object: ...


def device_key(device: Device) -> str:
    """The calibration key of ``device``: its GPU and driver (L4T on a Jetson) or its CPU."""
    from edged.engines.gpumem import nvml_driver_version

    gpu = device.gpus[0].name if device.gpus else ""
    driver = device.l4t_release or (nvml_driver_version() if device.kind == "nvidia-gpu"
                                    else "")
    return calibration.device_key(device.kind, gpu or (
        device.model if device.kind == "jetson" else ""), driver or "?", device.cpu_model)


class FixedCostsBook:
    """This device's measured worker costs (calibration.py) for the daemon: the options
    every estimate is made with, the first load's measurement, status."""

    def __init__(self, state_dir: Path, device: Device, cuda_context_override: int | None,
                 events: Publisher) -> None:
        self.device = device_key(device)
        self.store = calibration.CalibrationStore(state_dir)
        self._override = cuda_context_override
        self._events = events
        self._lock = threading.Lock()

    def options(self, opts: EngineOptions) -> EngineOptions:
        return calibration.apply(opts, self.store.get(self.device), self._override)

    def first_load(self, details: Mapping[str, object],
                   model_bytes: Callable[[str], int]) -> None:
        """A fresh worker's first load on a device not calibrated yet (or its first GPU load
        when only the CPU was): measure from it. ``edged calibrate`` measures exactly."""
        from edged.engines.estimate import CPU_WORKER_BASE_BYTES, ORT_SESSION_FIXED_BYTES

        providers = details.get("providers", ())
        gpu = any(p != "CPUExecutionProvider"
                  for p in (providers if isinstance(providers, (list, tuple)) else ()))
        with self._lock:
            prev = self.store.get(self.device)
            if prev is not None and (prev.gpu_context_bytes or not gpu):
                return
            try:
                own = model_bytes(str(details["key"]))
            except (e.EdgedError, KeyError, ValueError):
                return
            new = calibration.from_load(self.device, int(str(details["footprint"])), own, gpu,
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

    def status(self) -> dict[str, object]:
        c = self.store.get(self.device)
        used = self.options(EngineOptions()).cuda_context_bytes
        return {"device": self.device, "worker_bytes": c.worker_bytes if c else 0,
                "gpu_context_bytes": used, "source": c.source if c else "not measured",
                "measured_at": c.measured_at if c else 0.0,
                "gpu_context_override": self._override is not None}

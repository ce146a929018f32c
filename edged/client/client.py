"""``EdgedClient``: the typed Python client; everything ``edgectl`` does is a call of it.

Failed calls raise the domain errors of ``edged.errors`` (rebuilt from the status details by the
one error table), so ``except CapacityExceeded as e: e.needed_bytes`` works across the socket.
A daemon that cannot be reached raises ``DaemonUnreachable`` naming the target.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edged import errors as e
from edged.client import convert, tensors
from edged.client.lane import LaneHandle, LaneRevoked, Lanes, LaneTooSmall, lent
from edged.client.shm import DEFAULT_THRESHOLD, ShmTransport, message_size_hint
from edged.client.target import Target, parse_target
from edged.hashing import sha256_file
from edged.oip import grpc_service_pb2 as oip
from edged.oip import grpc_service_pb2_grpc as oip_grpc
from edged.rpc_errors import from_rpc_error
from edged.v1 import models_pb2 as mpb
from edged.v1 import models_pb2_grpc, system_pb2, system_pb2_grpc
from edged.views import (
    CheckView,
    EventView,
    InstallView,
    LoadView,
    ModelView,
    RecommendView,
    ReloadView,
    SelectView,
    StatusView,
    VariantJobView,
)

T = TypeVar("T")
CHUNK = 1 << 20
TIERS: dict[str, mpb.Tier] = {"ram": mpb.TIER_RAM, "swap": mpb.TIER_SWAP,
                         "storage": mpb.TIER_STORAGE}
PRIORITIES = {"balanced": mpb.PRIORITY_BALANCED, "speed": mpb.PRIORITY_SPEED,
              "quality": mpb.PRIORITY_QUALITY}
Progress = Callable[[int, int], None]


class DaemonUnreachable(e.Unavailable):
    """No daemon answers at the target (not running, wrong path, no permission)."""

    default_reason = "UNREACHABLE"


class EdgedClient:
    def __init__(self, target: str | None = None, *, timeout: float = 30.0,
                 token: str | None = None, tls_ca: Path | None = None,
                 tls_cert: Path | None = None, tls_key: Path | None = None,
                 max_message_bytes: int = 64 << 20,
                 shm_threshold: int | None = DEFAULT_THRESHOLD, lanes: bool = True) -> None:
        """``shm_threshold``: on a local socket, requests whose inputs total at least this many
        bytes go through shared memory (see ``edged.client.shm``); None turns that off.
        ``lanes``: on a local socket, ``infer`` goes through direct lanes to the engine
        workers (``edged.client.lane``), falling back to gRPC where none can be had."""
        self.target: Target = parse_target(target)
        self.timeout = timeout
        opts = [("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes)]
        if self.target.is_local or (tls_ca is None and token is None):
            self._channel = grpc.insecure_channel(self.target.grpc_target, options=opts)
            self._tls = False
        else:
            creds = grpc.ssl_channel_credentials(
                root_certificates=tls_ca.read_bytes() if tls_ca else None,
                private_key=tls_key.read_bytes() if tls_key else None,
                certificate_chain=tls_cert.read_bytes() if tls_cert else None)
            self._channel = grpc.secure_channel(self.target.grpc_target, creds, options=opts)
            self._tls = True
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ())
        self.models = models_pb2_grpc.ModelsStub(self._channel)
        self.system = system_pb2_grpc.SystemStub(self._channel)
        self.oip = oip_grpc.GRPCInferenceServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._shm: ShmTransport | None = None
        if self.target.is_local and shm_threshold is not None:
            self._shm = ShmTransport(self._shm_register, self.shm_unregister, shm_threshold,
                                     socket_path=self.target.unix_path)
        self.lanes: Lanes | None = (Lanes(self._open_lane)
                                    if self.target.is_local and lanes else None)

    def close(self) -> None:
        if self.lanes is not None:
            self.lanes.close()
        if self._shm is not None:
            self._shm.close()
        self._channel.close()

    def __enter__(self) -> EdgedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------
    def _call(self, fn: Callable[..., T], request: Any, timeout: float | None = None) -> T:
        try:
            return fn(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def _error(self, exc: grpc.RpcError) -> e.EdgedError:
        """The domain error of a failed call; ``DaemonUnreachable`` when no daemon answered.

        An error that carries edged's ErrorInfo came from the daemon, whatever its code (a
        failed download is UNAVAILABLE too). Without one, UNAVAILABLE is the transport's, and
        so is DEADLINE_EXCEEDED on a channel that never got READY: something accepted the
        connection (a listener that never answers, a socket nobody accepts on) but no gRPC
        server ever spoke on it."""
        err = from_rpc_error(exc)
        if _has_error_info(exc):
            return err
        code, details = exc.code(), exc.details() or ""
        where = f"cannot reach edged at {self.target.text}"
        if code == grpc.StatusCode.UNAVAILABLE and _looks_tls_failure(
                details, plaintext_tcp=not self._tls and not self.target.is_local):
            return DaemonUnreachable(f"{where}: TLS handshake failed: check --tls-ca "
                                     f"(the daemon's CA certificate; TCP targets need TLS): "
                                     f"{details}")
        if code == grpc.StatusCode.UNAVAILABLE and _looks_unreachable(exc):
            return DaemonUnreachable(f"{where}: {_unreachable_cause(details, self.target)}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and not self._channel_ready():
            return DaemonUnreachable(
                f"{where}: no gRPC answer before the deadline (the connection never became "
                f"ready: is it edged listening there, and is it stuck?)")
        return err

    def _channel_ready(self) -> bool:
        """Whether the channel is connected now (subscribing reports the current state at
        once; nothing is kept subscribed, so idle clients cost no polling thread)."""
        states: queue.Queue[grpc.ChannelConnectivity] = queue.Queue()
        self._channel.subscribe(states.put, try_to_connect=False)
        try:
            return bool(states.get(timeout=1.0) == grpc.ChannelConnectivity.READY)
        except queue.Empty:
            return False
        finally:
            self._channel.unsubscribe(states.put)

    def _stream(self, it: Iterator[T]) -> Iterator[T]:
        try:
            yield from it
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    # -- system --------------------------------------------------------------------------
    def health(self, service: str = "") -> str:
        resp = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service))
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))

    def status(self) -> StatusView:
        return convert.status(self._call(self.system.Status, system_pb2.StatusRequest()))

    def reload(self) -> ReloadView:
        return convert.reload(self._call(self.system.Reload, system_pb2.ReloadRequest()))

    def events(self, follow: bool = False, since_seq: int = 0,
               kinds: Sequence[str] = ()) -> Iterator[EventView]:
        req = system_pb2.EventsRequest(follow=follow, since_seq=since_seq, kinds=list(kinds))
        it = self.system.Events(req, timeout=None if follow else self.timeout,
                                metadata=self._metadata)
        return (convert.event(ev) for ev in self._stream(it))

    # -- models --------------------------------------------------------------------------
    def list_models(self, tier: str | None = None, task: str = "") -> list[ModelView]:
        req = mpb.ListModelsRequest(tier=TIERS.get(tier or "", mpb.TIER_UNSPECIFIED), task=task)
        return [convert.model(m) for m in self._call(self.models.ListModels, req).models]

    def get_model(self, name: str) -> ModelView:
        return convert.model(self._call(self.models.GetModel, mpb.GetModelRequest(name=name)))

    def install(self, name: str, path: Path, *, sha256: str | None = None,
                extra_files: Sequence[Path] = (), progress: Progress | None = None,
                timeout: float | None = None, **header: Any) -> InstallView:
        """Stream ``path`` (and ONNX external-data ``extra_files``) to the daemon in chunks."""
        files = [Path(path), *map(Path, extra_files)]
        for f in files:
            if not f.is_file():
                raise e.InvalidArgument(f"{f} is not a file", field="path")
        total = sum(f.stat().st_size for f in files)
        hdr = self._header(name, **header)

        def requests() -> Iterator[mpb.InstallRequest]:
            yield mpb.InstallRequest(header=hdr)
            done = 0
            for i, f in enumerate(files):
                digest = sha256 if i == 0 and sha256 else sha256_file(f)
                yield mpb.InstallRequest(file=mpb.InstallFile(
                    path=f.name, size_bytes=f.stat().st_size, sha256=digest))
                with f.open("rb") as fh:
                    while chunk := fh.read(CHUNK):
                        done += len(chunk)
                        yield mpb.InstallRequest(chunk=chunk)
                        if progress:
                            progress(done, total)

        return convert.install(self._call(self.models.Install, requests(),
                                          timeout=timeout or max(self.timeout, 600.0)))

    def install_from(self, name: str, source: str, *, sha256: str = "", size_bytes: int = 0,
                     progress: Progress | None = None, timeout: float | None = None,
                     **header: Any) -> InstallView:
        """Install from a path on the device or an http(s) URL the daemon downloads."""
        req = mpb.InstallFromRequest(header=self._header(name, **header), source=source,
                                     sha256=sha256, size_bytes=size_bytes)
        it = self.models.InstallFrom(req, timeout=timeout or max(self.timeout, 3600.0),
                                     metadata=self._metadata)
        result: mpb.InstallResponse | None = None
        for msg in self._stream(it):
            if progress and msg.bytes_total:
                progress(msg.bytes_done, msg.bytes_total)
            if msg.HasField("result"):
                result = msg.result
        if result is None:
            raise e.Internal("install stream ended without a result")
        return convert.install(result)

    @staticmethod
    def _header(name: str, *, version: int = 0, tier: str = "", tasks: Sequence[str] = (),
                quality: float = 0.0, providers: Sequence[str] = (), precision: str = "",
                notes: str = "", warmup_shapes: Mapping[str, Sequence[int]] | None = None,
                group: str = "", activate: bool = True,
                engine_info: Mapping[str, str] | None = None,
                allow_signature_change: bool = False, inherit: bool = True,
                variant: str = "") -> mpb.InstallHeader:
        """``tier`` "": the model's own tier (swap for a new model). ``inherit``: what is left
        unsaid (tasks, quality, providers, precision, warm-up shapes, group) comes from the
        active version; ``show`` lists what was inherited."""
        if tier and tier not in TIERS:
            raise e.InvalidArgument(f"unknown tier {tier!r} (ram, swap, storage)", field="tier")
        return mpb.InstallHeader(
            name=name, version=version, tier=TIERS[tier] if tier else mpb.TIER_UNSPECIFIED,
            tasks=list(tasks), quality=quality, no_inherit=not inherit,
            providers=list(providers), precision=precision, notes=notes,
            warmup_shapes={k: "x".join(map(str, v)) for k, v in (warmup_shapes or {}).items()},
            group=group, activate=activate, engine_info=dict(engine_info or {}),
            allow_signature_change=allow_signature_change, variant=variant)

    # -- variants ------------------------------------------------------------------------
    def make_variant(self, name: str, kind: str, *, version: int = 0,
                     accept_change: float | None = None, quality: float = 0.0,
                     progress: Callable[[str], None] | None = None,
                     timeout: float | None = None) -> VariantJobView:
        """Make the ``kind`` variant (int8, fp16) on the device; installed only when its
        relative output change is at most ``accept_change`` (None: report only). Returns the
        last message: the report (and the model when installed)."""
        req = mpb.MakeVariantRequest(name=name, version=version, kind=kind,
                                     accept=accept_change is not None,
                                     accept_change=accept_change or 0.0, quality=quality)
        it = self.models.MakeVariant(req, timeout=timeout or max(self.timeout, 3600.0),
                                     metadata=self._metadata)
        last: mpb.MakeVariantProgress | None = None
        for msg in self._stream(it):
            if progress and msg.stage:
                progress(msg.stage)
            last = msg
        if last is None:
            raise e.Internal("the daemon ended the variant job without a report")
        return convert.variant_job(last)

    def set_variant(self, name: str, variant: str, version: int = 0) -> ModelView:
        return convert.model(self._call(self.models.SetVariant, mpb.SetVariantRequest(
            name=name, version=version, variant=variant)))

    def remove_variant(self, name: str, variant: str, version: int = 0) -> ModelView:
        return convert.model(self._call(self.models.RemoveVariant, mpb.RemoveVariantRequest(
            name=name, version=version, variant=variant)))

    def recommend(self, name: str | None = None, *, artifact_path: str | None = None,
                  warmup_shapes: Mapping[str, Sequence[int]] | None = None
                  ) -> RecommendView:
        return convert.recommend(self._call(self.models.Recommend, mpb.RecommendRequest(
            name=name or "", artifact_path=artifact_path or "",
            warmup_shapes={k: "x".join(map(str, v)) for k, v in (warmup_shapes or {}).items()})))

    def remove(self, name: str, version: int = 0, force: bool = False) -> list[int]:
        req = mpb.RemoveRequest(name=name, version=version, force=force)
        return list(self._call(self.models.Remove, req).removed_versions)

    def set_tier(self, name: str, tier: str) -> ModelView:
        if tier not in TIERS:
            raise e.InvalidArgument(f"unknown tier {tier!r} (ram, swap, storage)", field="tier")
        return convert.model(self._call(self.models.SetTier,
                                        mpb.SetTierRequest(name=name, tier=TIERS[tier])))

    def activate(self, name: str, version: int,
                 allow_signature_change: bool = False) -> ModelView:
        req = mpb.ActivateRequest(name=name, version=version,
                                  allow_signature_change=allow_signature_change)
        return convert.model(self._call(self.models.Activate, req))

    def rollback(self, name: str) -> ModelView:
        return convert.model(self._call(self.models.Rollback, mpb.RollbackRequest(name=name)))

    def load(self, name: str, version: int = 0, timeout: float | None = None) -> LoadView:
        return convert.load(self._call(self.models.Load,
                                       mpb.LoadRequest(name=name, version=version),
                                       timeout=timeout or max(self.timeout, 120.0)))

    def unload(self, name: str) -> int:
        """The bytes freed (0: it was not loaded), as the manager's ``unload`` answers."""
        return int(self._call(self.models.Unload, mpb.UnloadRequest(name=name)).freed_bytes)

    def unload_version(self, name: str, version: int) -> int:
        return int(self._call(self.models.Unload,
                              mpb.UnloadRequest(name=name, version=version)).freed_bytes)

    def check(self, name: str | None = None, *, artifact_path: str | None = None,
              tier: str | None = None) -> CheckView:
        req = mpb.CheckRequest(tier=TIERS.get(tier or "", mpb.TIER_UNSPECIFIED))
        if artifact_path:
            req.artifact_path = artifact_path
        elif name:
            req.name = name
        else:
            raise e.InvalidArgument("give a model name or an artifact path", field="target")
        return convert.check(self._call(self.models.Check, req))

    def select(self, task: str, priority: str = "balanced", max_bytes: int = 0,
               max_latency_ms: float = 0.0, *, mode: str = "",
               pinned: str = "") -> SelectView:
        """The model to use for ``task``; ``mode`` (auto|manual|hybrid) and ``pinned``
        override the daemon's ``selection`` config for this call."""
        if priority not in PRIORITIES:
            raise e.InvalidArgument(f"unknown priority {priority!r} (speed, quality, balanced)",
                                    field="priority")
        req = mpb.SelectRequest(task=task, priority=PRIORITIES[priority], max_bytes=max_bytes,
                                max_latency_ms=max_latency_ms, mode=mode, pinned=pinned)
        return convert.select(self._call(self.models.Select, req))

    # -- inference (Open Inference Protocol) --------------------------------------------
    def infer(self, name: str, inputs: Mapping[str, np.ndarray],
              outputs: Sequence[str] | None = None, version: str = "",
              timeout: float | None = None) -> dict[str, np.ndarray]:
        if self.lanes is not None and not version:
            lane = self.lanes.borrow(name, sum(np.asarray(v).nbytes + 64
                                               for v in inputs.values()))
            if lane is not None:
                try:
                    return lane.infer({k: np.asarray(v) for k, v in inputs.items()}, outputs,
                                      timeout or self.timeout)
                except LaneRevoked:
                    self.lanes.fallbacks += 1  # nothing ran: gRPC routes it (new version...)
                except LaneTooSmall as exc:
                    self.lanes.fallbacks += 1
                    self.lanes.grow(name, exc.needed)
                finally:
                    self.lanes.give_back(lane)
        return self._infer_grpc(name, inputs, outputs, version, timeout)

    def lane(self, name: str) -> AbstractContextManager[LaneHandle]:
        """A lane to ``name`` for zero-copy inference::

            with client.lane("ppocr-det") as lane:
                x = lane.inputs({"x": ((1, 3, 640, 640), np.float32)})["x"]
                x[...] = frame                  # written once, into the lane
                out = lane.run()                # read-only arrays in the lane

        Without a lane (remote target, lanes off, none granted) it works the same through
        gRPC."""
        if self.lanes is None:
            return lent(Lanes(self._no_lane), name, self._grpc_for(name))
        return lent(self.lanes, name, self._grpc_for(name))

    def _grpc_for(self, name: str) -> Callable[..., dict[str, np.ndarray]]:
        return lambda inputs, outputs, timeout: self._infer_grpc(name, inputs, outputs, "",
                                                                 timeout)

    def _open_lane(self, name: str, size: int) -> tuple[str, int]:
        resp = self._call(self.models.OpenLane, mpb.OpenLaneRequest(
            name=name, client_pid=os.getpid(), size_bytes=size))
        return resp.path, resp.version

    @staticmethod
    def _no_lane(name: str, size: int) -> tuple[str, int]:
        raise e.FailedPrecondition("lanes are off for this client", reason="NOT_LOCAL")

    def _infer_grpc(self, name: str, inputs: Mapping[str, np.ndarray],
                    outputs: Sequence[str] | None = None, version: str = "",
                    timeout: float | None = None) -> dict[str, np.ndarray]:
        if self._shm is not None and self._shm.wants(inputs):
            got = self._shm.infer(
                lambda r: self._call(self.oip.ModelInfer, r, timeout=timeout), name, inputs,
                outputs, version, lambda: [o.name for o in self.model_metadata(
                    name, version).outputs])
            if got is not None:  # (None: shared memory refused; plain gRPC from now on)
                return got
        req = tensors.infer_request(name, inputs, outputs, version)
        try:
            resp = self._call(self.oip.ModelInfer, req, timeout=timeout)
        except e.ResourceExhausted as exc:
            hint = message_size_hint(exc, req.ByteSize(), self.target.is_local)
            raise hint or exc from None
        return tensors.infer_outputs(resp)

    def _shm_register(self, region: str, key: str, byte_size: int) -> None:
        self._call(self.oip.SystemSharedMemoryRegister, oip.SystemSharedMemoryRegisterRequest(
            name=region, key=key, offset=0, byte_size=byte_size))

    def shm_unregister(self, region: str) -> None:
        self._call(self.oip.SystemSharedMemoryUnregister,
                   oip.SystemSharedMemoryUnregisterRequest(name=region))

    def model_metadata(self, name: str, version: str = "") -> oip.ModelMetadataResponse:
        reply: oip.ModelMetadataResponse = self._call(
            self.oip.ModelMetadata, oip.ModelMetadataRequest(name=name, version=version))
        return reply



def _has_error_info(exc: grpc.RpcError) -> bool:
    """Whether the status carries details (edged's ErrorInfo): only the daemon sends them."""
    try:
        trailers = exc.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 - not every RpcError is a call
        return False
    return any(k == "grpc-status-details-bin" for k, _ in trailers)


def _looks_tls_failure(details: str, *, plaintext_tcp: bool) -> bool:
    """A failed handshake: a certificate the client cannot verify, or (a plaintext client on
    TCP, where edged always speaks TLS) the port closing a connection it could not parse."""
    text = details.lower()
    if "handshake" in text or "ssl" in text or "certificate" in text:
        return True
    return plaintext_tcp and ("socket closed" in text or "connection reset" in text)


def _unreachable_cause(details: str, target: Target) -> str:
    """gRPC's text names the address three times; the user needs the cause and what to check."""
    text = details.lower()
    hint = "is edged running? is EDGED_TARGET (or --target) set to where it listens?"
    if "no such file" in text:
        return f"no socket there ({hint})"
    if "permission denied" in text:
        return ("permission denied (is this user in the socket's group, e.g. edged? "
                f"{hint})" if target.is_local else f"permission denied ({hint})")
    if "connection refused" in text:
        return f"connection refused ({hint})"
    return f"{details.rsplit(': ', 1)[-1] or 'no answer'} ({hint})"


def _looks_unreachable(exc: grpc.RpcError) -> bool:
    text = (exc.details() or "").lower()
    return any(s in text for s in ("failed to connect", "connect failed", "no such file",
                                   "connection refused", "permission denied", "unavailable",
                                   "deadline", "socket closed", "connections to all backends"))

"""What a backend's ``open`` returns inside a worker, and the warm-up every load runs.

Sessions live only in worker processes; the daemon sees their signature and providers through
the worker channel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from edged import errors as e
from edged.engines.base import Signature, numpy_of_datatype

WARMUP_FIRST_DIM = 1
WARMUP_OTHER_DIM = 64


class RunHandle(Protocol):
    """Lets another thread abandon a running inference (a request whose deadline passed).
    A worker thread reuses its handle for the next inference unless it was cancelled."""

    cancelled: bool

    def cancel(self) -> None: ...


class Shaped(Protocol):
    """What the warm-up's shapes are made from (a session, or activations.py's reading of
    the graph's declared inputs)."""

    @property
    def signature(self) -> Signature: ...

    # Symbolic dimension names per input (None where fixed or anonymous), for the warm-up.
    @property
    def dim_names(self) -> Mapping[str, tuple[str | None, ...]]: ...

    # Warm-up shapes the backend knows better than the defaults (TensorRT: its optimization
    # profile's "opt" shapes); the load's own warmup_shapes still win.
    @property
    def preferred_shapes(self) -> Mapping[str, tuple[int, ...]]: ...


class BoundRun(Protocol):
    """An inference bound to fixed memory: each ``run`` reads the inputs from the arrays it
    was bound to, as they are now, and writes the outputs into the arrays given for them."""

    def run(self, handle: RunHandle | None) -> None: ...


class Session(Shaped, Protocol):
    providers: tuple[str, ...]

    def run_handle(self) -> RunHandle | None: ...

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None,
            handle: RunHandle | None = None) -> dict[str, np.ndarray]: ...

    # Bind inputs and outputs to these arrays' memory (a lane's, shared with its client), so
    # that repeated runs copy nothing on the host; the output arrays have the shapes the
    # outputs had last time: a run whose outputs come out otherwise raises. None: the
    # session cannot bind (the caller runs ``run`` and copies).
    def bind(self, feeds: Mapping[str, np.ndarray],
             outputs: Mapping[str, np.ndarray]) -> BoundRun | None: ...

    def close(self) -> None: ...


def warmup_shapes(session: Shaped,
                  overrides: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Concrete shapes for the warm-up: the overrides, else 1 for a first dynamic dimension and
    for every dimension that shares its symbolic name (``batch`` in both ``input`` and ``state``
    of silero-vad must agree), 64 for the other dynamic ones."""
    overrides = {**session.preferred_shapes, **overrides}
    named: dict[str, int] = {}
    for name, shape in overrides.items():
        for size, sym in zip(shape, session.dim_names.get(name, ()), strict=False):
            if sym:
                named.setdefault(sym, size)
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in session.signature.inputs:
        if spec.name in overrides:
            shapes[spec.name] = tuple(overrides[spec.name])
            continue
        syms = session.dim_names.get(spec.name, ())
        dims = []
        for i, d in enumerate(spec.shape):
            sym = syms[i] if i < len(syms) else None
            if d >= 0:
                dims.append(d)
            elif sym and sym in named:
                dims.append(named[sym])
            else:
                size = WARMUP_FIRST_DIM if i == 0 else WARMUP_OTHER_DIM
                if sym:
                    named[sym] = size
                dims.append(size)
        shapes[spec.name] = tuple(dims)
    unknown = set(overrides) - {t.name for t in session.signature.inputs}
    if unknown:
        raise e.InvalidArgument(f"warmup_shapes names unknown inputs: {sorted(unknown)}",
                                field="warmup_shapes")
    return shapes


def warmup_feeds(session: Session, shapes: Mapping[str, tuple[int, ...]]
                 ) -> dict[str, np.ndarray]:
    """Zeros, except integer inputs get ones (a zero index/length/rate is often invalid)."""
    feeds = {}
    for spec in session.signature.inputs:
        dtype = numpy_of_datatype(spec.datatype)
        fill = 1 if dtype.kind in "iu" else 0
        feeds[spec.name] = np.full(shapes[spec.name], fill, dtype=dtype)
    return feeds


def warm_up(session: Session, overrides: Mapping[str, tuple[int, ...]]) -> None:
    """Run one inference so the first real request does not pay for lazy initialisation; a
    model that cannot run on the warm-up inputs fails its load here, with the shapes used."""
    shapes = warmup_shapes(session, overrides)
    try:
        session.run(warmup_feeds(session, shapes), None)
    except e.EdgedError as exc:
        raise e.FailedPrecondition(
            f"warm-up inference failed with input shapes "
            f"{ {k: list(v) for k, v in shapes.items()} }: {exc.message}; set warmup_shapes "
            "for this model", field="warmup_shapes") from None

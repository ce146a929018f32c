"""The two ways to drive edged behind one interface, so that one suite runs against both:
``EdgedClient`` to a real daemon on a real Unix socket, as it is (``Api`` is the part of its
interface the suite uses), and ``InProcess``: a ``ModelManager`` built by
``edged.daemon.build_parts`` (the daemon's own composition), answering with the same view types
(``edged.views``).

Both sides return the views; what ``InProcess`` still adapts is the manager's call shapes, which
are not the client's:

- install takes (file header, chunks) pairs and an ``InstallSpec``, not a path and keywords,
  and returns the catalog entry (made a ``ModelView`` by the service layer's ``model_view``);
- the model calls return (catalog entry, loaded view or None): ``model_view`` again, the one
  function the service layer builds its protos from;
- load returns (loaded view, evicted, seconds), the client a ``LoadView`` of the same;
- infer takes a version and output/shared-memory arguments and returns (version, outputs);
- "no version" is None for the manager, 0 for the client.

``check`` (a ``CheckView``) and ``unload`` (freed bytes) pass through as they are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edged.service.messages import model_view
from edged.views import CheckView, InstallSpec, InstallView, LoadView, ModelView

CHUNK = 64 << 10


class Api(Protocol):
    def install(self, name: str, path: Path, *, extra_files: Sequence[Path] = (),
                tier: str = "", version: int = 0, sha256: str | None = None,
                activate: bool = True) -> InstallView: ...
    def list_models(self, tier: str | None = None) -> list[ModelView]: ...
    def get_model(self, name: str) -> ModelView: ...
    def set_tier(self, name: str, tier: str) -> ModelView: ...
    def activate(self, name: str, version: int) -> ModelView: ...
    def rollback(self, name: str) -> ModelView: ...
    def load(self, name: str) -> LoadView: ...
    def unload(self, name: str) -> int: ...
    def check(self, name: str, *, tier: str | None = None) -> CheckView: ...
    def infer(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...
    def remove(self, name: str, version: int = 0) -> list[int]: ...


@dataclass(frozen=True)
class _FileHeader:
    """What the manager reads of a file header (the servicer hands it the proto)."""

    path: str
    sha256: str
    size_bytes: int


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


class InProcess:
    """The manager, called as the client is (see the module's docstring for what differs)."""

    def __init__(self, manager: Any) -> None:
        self.m = manager

    def install(self, name: str, path: Path, *, extra_files: Sequence[Path] = (),
                tier: str = "", version: int = 0, sha256: str | None = None,
                activate: bool = True) -> InstallView:
        files = [path, *extra_files]
        parts = ((_FileHeader(f.name, (sha256 or _sha(f)) if i == 0 else _sha(f),
                              f.stat().st_size), _chunks(f))
                 for i, f in enumerate(files))
        r = self.m.install_stream(InstallSpec(name=name, version=version or None, tier=tier,
                                              activate=activate), parts)
        return InstallView(model_view(r.entry, None), r.version, r.sha256, r.size_bytes,
                           r.seconds)

    def list_models(self, tier: str | None = None) -> list[ModelView]:
        return [model_view(*row) for row in self.m.list_models(tier=tier)]

    def get_model(self, name: str) -> ModelView:
        return model_view(*self.m.get_model(name))

    def set_tier(self, name: str, tier: str) -> ModelView:
        return model_view(*self.m.set_tier(name, tier))

    def activate(self, name: str, version: int) -> ModelView:
        return model_view(*self.m.activate(name, version))

    def rollback(self, name: str) -> ModelView:
        return model_view(*self.m.rollback(name))

    def load(self, name: str) -> LoadView:
        view, evicted, seconds = self.m.load(name)
        return LoadView(view, tuple(evicted), seconds)

    def unload(self, name: str) -> int:
        return int(self.m.unload(name))

    def check(self, name: str, *, tier: str | None = None) -> CheckView:
        view: CheckView = self.m.check(name=name, artifact_path=None, tier=tier)
        return view

    def infer(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        _version, outputs = self.m.infer(name, None, dict(inputs), None, {})
        return dict(outputs)

    def remove(self, name: str, version: int = 0) -> list[int]:
        return list(self.m.remove(name, version or None))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()

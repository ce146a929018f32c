"""The tier manifests: ``ram.yaml``, ``swap.yaml``, ``storage.yaml`` — human-editable, validated.

They live in ``STATE/tiers``, a symlink to ``STATE/tiers.d/gen-NNNNNNNN/``. The daemon never
edits a generation in place: a change writes a new generation directory (every file fsynced),
then swaps the symlink with one ``rename`` — so every change to any tier (install, tier move,
activate, rollback, remove) is a single atomic switch, and a crash at any instant leaves the old
generation or the new one. Operators edit ``STATE/tiers/*.yaml`` and send SIGHUP: ``reload``
validates the files; an invalid edit raises ``ManifestError`` (file, line, key, reason) and the
in-memory state stays in force. An accepted edit is committed as a new generation, and every
generation also keeps the three files exactly as edged wrote them (``.committed.json``), so a
hand edit in place never destroys the last good state.

At start (``load``), current files that do not validate — a rejected edit left on disk, a
damaged file — do not stop the daemon: it falls back to the newest generation that validates
(the current one as edged wrote it, else older ones), copies the operator's files aside as
``STATE/<tier>.yaml.rejected-<time>``, commits the fallback as a new generation, logs it as an
error and keeps the reason in ``fallback_note`` (shown by ``edgectl status``).

An artifact missing from the store is reported, not fatal: at start it is tolerated (the daemon
starts and refuses to serve that version, see the manager); a reload only rejects an edit that
introduces a reference to an artifact that is not in the store.

A model's *active* version is in the file of its tier (with ``active: N``); its other versions
are kept in ``storage.yaml`` for rollback.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from edged.manager.catalog import crashpoints, diskfull
from edged.manager.catalog.store import fsync_dir
from edged.manager.catalog.tier_yaml import (  # re-exported: the manager's modules import them here
    TIERS,
    ManifestError,
    ModelEntry,
    Renderer,
    TierState,
    Tolerate,
    VersionEntry,
    parse,
    render,
)

log = logging.getLogger("edged.manifests")

__all__ = ["TIERS", "ManifestError", "Manifests", "ModelEntry", "TierState", "VersionEntry",
           "parse", "render"]

KEEP_GENERATIONS = 3
KEEP_MARK = ".keep"  # in a generation that still lists versions an edit dropped (see _prune)
COMMITTED = ".committed.json"  # in each generation: the three files as edged wrote them
_GEN_RE = re.compile(r"^gen-(\d{8})$")


class Manifests:
    def __init__(self, state_dir: Path, blob_exists: Callable[[str], bool] | None = None,
                 crash_hook: Callable[[str], None] | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.link = self.state_dir / "tiers"
        self.gens = self.state_dir / "tiers.d"
        self._blob_exists = blob_exists
        self.crash_hook = crash_hook if crash_hook is not None else crashpoints.env_hook()
        self._current: TierState | None = None
        self._saved: TierState | None = None  # what the current generation holds
        self.renderer = Renderer()  # keeps each model's YAML between commits
        self.fallback_note = ""  # why start-up did not use the current files ("" if it did)
        self.dropped_note = ""  # an accepted edit that dropped installed versions ("" if none)

    @property
    def current(self) -> TierState:
        if self._current is None:
            self._current = self.load()
        return self._current

    @property
    def saved(self) -> TierState:
        """The state as the current generation holds it (``current`` less any
        ``keep_unsaved`` changes since)."""
        current = self.current
        return self._saved if self._saved is not None else current

    def keep_unsaved(self, new: TierState) -> TierState:
        """Put ``new`` in force without writing a generation: for bookkeeping that is not
        worth an fsync'd commit on its own (a load time that moved a little). The next commit
        writes it along; a restart or a reload (SIGHUP) goes back to what was last saved."""
        self._current = replace(new, generation=self.current.generation)
        return self._current

    def _generation(self) -> int:
        try:
            target = os.readlink(self.link)
        except (FileNotFoundError, OSError):
            return 0
        m = _GEN_RE.match(Path(target).name)
        return int(m.group(1)) if m else 0

    def _exists(self) -> bool:
        return self.link.is_symlink() or self.link.exists()

    def _files(self, gdir: Path) -> dict[str, str]:
        if not gdir.is_dir():
            raise ManifestError("tiers", None, "(generation)",
                                f"{gdir.name} is not a directory of manifests")
        files = {}
        for t in TIERS:
            try:
                files[t] = (gdir / f"{t}.yaml").read_text()
            except FileNotFoundError:
                raise ManifestError(f"{t}.yaml", None, "(file)", "missing") from None
        return files

    def _parse(self, files: Mapping[str, str], gen: int, tolerate: Tolerate) -> TierState:
        return parse(files, gen, self._blob_exists, tolerate)

    def read_current(self) -> TierState:
        """The current generation as it is on disk, validated; changes nothing (``fsck``)."""
        if not self._exists():
            return TierState({}, 0)
        return self._parse(self._files(self.link), self._generation(), _always)

    def load(self) -> TierState:
        """At start: the current generation, or the newest one that validates (see above).

        A hand edit is held to what a reload would accept: it may not point a version at an
        artifact that is not in the store unless edged's own copy of the generation already
        did (a typo in a sha256 falls back, it does not orphan the real artifact). An edit that
        drops installed versions is accepted, committed as a new generation (so the previous
        one still has them for ``restore``) and reported loudly in ``dropped_note``."""
        self.gens.mkdir(parents=True, exist_ok=True)
        if not self._exists():
            self._current = TierState({}, 0)
            self._current = self.commit(self._current)
            return self._current
        gen = self._generation()
        ours = self._committed_state(gen)
        tolerate = _always if ours is None else _known_to(ours)
        try:
            self._current = self._parse(self._files(self.link), gen, tolerate)
        except (ManifestError, OSError, UnicodeDecodeError) as exc:
            self._current = self._fall_back(exc)
        else:
            lost = dropped(ours, self._current) if ours is not None else []
            if lost:
                self._current = self.commit(self._current, keep_edits=False)
                self._note_dropped(lost, gen, "at start")
        self._saved = self._current
        return self._current

    def _committed_state(self, gen: int) -> TierState | None:
        """Generation ``gen`` as edged wrote it, or None where that copy is unreadable."""
        try:
            texts = json.loads((self.gens / f"gen-{gen:08d}" / COMMITTED).read_text())
            return self._parse(texts, gen, _always)
        except (OSError, ValueError, ManifestError):
            return None

    def _note_dropped(self, lost: list[str], gen: int, when: str) -> None:
        """Report an edit that dropped versions, and keep generation ``gen`` (which still
        lists them) from being pruned until the operator's gc: the way back must outlive
        the next few commits."""
        try:
            (self.gens / f"gen-{gen:08d}" / KEEP_MARK).write_text(" ".join(lost) + "\n")
        except OSError as exc:
            log.warning("manifests: cannot mark generation %d to keep: %s", gen, exc)
        self.dropped_note = (
            f"the edited manifests dropped {len(lost)} installed version(s) {when}: "
            f"{', '.join(lost)}. Their artifacts are kept (unreferenced, see `edged fsck`); "
            f"generation {gen} still lists them: `edged restore {gen}` puts its files back, "
            "then reload (SIGHUP)")
        log.warning("manifests: %s", self.dropped_note)

    def read(self, known: TierState) -> TierState:
        """The hand-edited files, validated (raises ManifestError); changes nothing. A missing
        artifact is an error only where the edit differs from ``known`` (what is in force)."""

        def unchanged(name: str, num: int, artifact: str) -> bool:
            old = known.models.get(name)
            ov = old.versions.get(num) if old is not None else None
            return ov is not None and ov.store_id == artifact

        try:
            return self._parse(self._files(self.link), self._generation(), unchanged)
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError("tiers", None, "(files)", f"cannot be read: {exc}") from None

    def accept(self, new: TierState) -> TierState:
        """Put a validated state in force, committed as a new generation: the files on disk
        are again exactly what edged wrote (what a later start falls back to). Versions the
        edit dropped are reported (``dropped_note``): the generation before still has them."""
        lost, before = dropped(self.current, new), self._generation()
        state = self.commit(new, keep_edits=False)
        self.dropped_note = ""
        if lost:
            self._note_dropped(lost, before, "at reload")
        return state

    # -- generations: listing and restoring ------------------------------------------------
    def generations(self) -> list[GenerationInfo]:
        """The kept generations, newest first, with what each lists (``edged generations``)."""
        current = self._generation()
        out = []
        nums = sorted((int(m.group(1)) for p in self.gens.iterdir()
                       if (m := _GEN_RE.match(p.name))), reverse=True) \
            if self.gens.is_dir() else []
        for n in nums:
            gdir = self.gens / f"gen-{n:08d}"
            state = self._committed_state(n)
            if state is None:
                try:
                    state = self._parse(self._files(gdir), n, _always)
                except (ManifestError, OSError, UnicodeDecodeError):
                    state = None
            out.append(GenerationInfo(
                n, n == current, gdir.stat().st_mtime,
                None if state is None else sum(len(m.versions) for m in state.models.values()),
                () if state is None else tuple(sorted(state.models)),
                (gdir / KEEP_MARK).exists()))
        return out

    def restore(self, gen: int) -> list[str]:
        """Bring back what generation ``gen`` lists and the current manifests lack (whole
        models, or versions of a model kept since, as inactive versions in storage); what
        was installed since stays. Written over the current files as a hand edit: a running
        daemon applies it on reload (SIGHUP), a stopped one at its next start. Returns the
        ``name:version`` put back; the files it replaces are copied aside first when they
        differ from edged's copy."""
        old = self._committed_state(gen)
        if old is None:
            gdir = self.gens / f"gen-{gen:08d}"
            old = self._parse(self._files(gdir), gen, _always)  # ManifestError: not one
        try:  # the files as they are now (a hand edit not reloaded yet included)
            current = self.read_current()
        except (ManifestError, OSError, UnicodeDecodeError):
            current = self._committed_state(self._generation()) or TierState({}, 0)
        back = dropped(old, current)  # what the generation has and current lacks
        if not back:
            return []
        models = dict(current.models)
        for name, m in old.models.items():
            have = models.get(name)
            if have is None:
                models[name] = m
                continue
            extra = {n: v for n, v in m.versions.items() if n not in have.versions}
            if extra:
                models[name] = replace(have, versions={**have.versions, **extra})
        texts = render(TierState(models, current.generation))
        here = self.gens / f"gen-{self._generation():08d}"
        try:
            ours = json.loads((here / COMMITTED).read_text())
        except (OSError, ValueError):
            ours = {}
        self._copy_aside(here, ours, "replaced", failed="")
        for t in TIERS:
            tmp = self.link / f".{t}.yaml.restore"
            with tmp.open("w") as f:
                f.write(texts[t])
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.link / f"{t}.yaml")
        fsync_dir(here)
        return back

    def _hook(self, point: str) -> None:
        if self.crash_hook is not None:
            self.crash_hook(point)

    def commit(self, new: TierState, *, keep_edits: bool = True) -> TierState:
        """Write ``new`` as the next generation and switch to it. ``keep_edits``: copy aside a
        hand edit of the current files that was never reloaded (they are being applied or
        set aside already when False).

        A failure before the switch (a full disk: ``ResourceExhausted`` ``DISK_FULL``) changes
        nothing: the old generation stays in force and the temporary one is removed at once."""
        with diskfull.guard(self.state_dir, "the tier manifests"):
            if keep_edits:
                self._keep_pending_edits()
            gen = max(self._generation(), self._newest_gen()) + 1
            self._switch(replace(new, generation=gen))
        self._prune(gen)
        return self.current

    def _switch(self, new: TierState) -> None:
        """Write generation ``new.generation`` and swap the symlink to it; in force from the
        swap on (``current``), cleaned up when anything fails before it."""
        gen, texts = new.generation, self.renderer(new)
        gdir = self.gens / f"gen-{gen:08d}"
        tmpdir = self.gens / f".tmp-gen-{gen:08d}"
        tmp_link = self.state_dir / ".tiers.tmp"
        try:
            shutil.rmtree(tmpdir, ignore_errors=True)
            tmpdir.mkdir(parents=True)
            for name, text in [*((f"{t}.yaml", x) for t, x in texts.items()),
                               (COMMITTED, json.dumps(texts))]:
                with (tmpdir / name).open("w") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
            fsync_dir(tmpdir)
            os.rename(tmpdir, gdir)
            fsync_dir(self.gens)
            self._hook("manifests.after_gen_write")
            tmp_link.unlink(missing_ok=True)
            os.symlink(os.path.join("tiers.d", gdir.name), tmp_link)
            self._hook("manifests.before_symlink_swap")
            os.replace(tmp_link, self.link)
            self._current = self._saved = new
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            if self._current is not new:  # not swapped: not in force
                shutil.rmtree(gdir, ignore_errors=True)
            tmp_link.unlink(missing_ok=True)
            raise
        fsync_dir(self.state_dir)
        self._hook("manifests.after_symlink_swap")

    def _keep_pending_edits(self) -> None:
        """A hand edit not reloaded yet would be replaced by this commit's files: copy it to
        ``STATE/<tier>.yaml.unapplied-<time>`` (and say so) instead of losing it."""
        try:
            current = self.gens / f"gen-{self._generation():08d}"
            ours = json.loads((current / COMMITTED).read_text())
        except (OSError, ValueError):
            return
        kept = self._copy_aside(current, ours, "unapplied", failed="")
        if kept:
            log.warning("manifests: a hand edit that was not reloaded (SIGHUP) is replaced by "
                        "edged's change; kept as %s", ", ".join(map(str, kept)))

    # -- start-up fallback ---------------------------------------------------------------
    def _fall_back(self, exc: Exception) -> TierState:
        current = self._generation()
        for gen, files in self._candidates(current):
            try:
                state = self._parse(files, gen, _always)
            except (ManifestError, OSError, UnicodeDecodeError):
                continue
            kept = self._set_aside(exc, current)
            which = "the current one as edged wrote it" if gen == current else "an older one"
            self.fallback_note = (
                f"{exc} -- rejected at start: edged runs on generation {gen} ({which})"
                + (f"; the rejected file(s) are kept as {', '.join(map(str, kept))}"
                   if kept else ""))
            log.error("manifests: %s", self.fallback_note)
            return self.commit(state, keep_edits=False)
        if isinstance(exc, ManifestError):
            raise exc
        raise ManifestError("tiers", None, "(files)", f"cannot be read: {exc}") from None

    def _candidates(self, current: int) -> Iterator[tuple[int, dict[str, str]]]:
        """Generations to fall back to, newest first: edged's own copy of the current one,
        then the older ones (their own copy if they have one, else their files)."""
        nums = sorted((int(m.group(1)) for p in self.gens.iterdir()
                       if (m := _GEN_RE.match(p.name))), reverse=True)
        for n in [current] + [n for n in nums if n < current or not current]:
            gdir = self.gens / f"gen-{n:08d}"
            try:
                yield n, json.loads((gdir / COMMITTED).read_text())
                continue
            except (OSError, ValueError):
                pass
            if n != current:
                try:
                    yield n, self._files(gdir)
                except (ManifestError, OSError, UnicodeDecodeError):
                    continue

    def _set_aside(self, exc: Exception, current: int) -> list[Path]:
        """Copy the operator's files that differ from what edged wrote (at least the one that
        failed) to ``STATE/<tier>.yaml.rejected-<time>``: the fallback commit must lose
        nothing of theirs."""
        gdir = self.gens / f"gen-{current:08d}"
        try:
            ours = json.loads((gdir / COMMITTED).read_text())
        except (OSError, ValueError):
            ours = {}
        return self._copy_aside(gdir, ours, "rejected", failed=str(getattr(exc, "file", "")))

    def _copy_aside(self, gdir: Path, ours: Mapping[str, str], label: str,
                    failed: str) -> list[Path]:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        kept = []
        for t in TIERS:
            src = gdir / f"{t}.yaml"
            try:
                text = src.read_bytes()
            except OSError:
                continue
            if src.name != failed and ours.get(t, "").encode() == text:
                continue
            dst = self.state_dir / f"{src.name}.{label}-{stamp}"
            try:
                with dst.open("wb") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:
                dst.unlink(missing_ok=True)  # no half copy (the edit itself stays in place)
                raise
            kept.append(dst)
        if kept:
            fsync_dir(self.state_dir)
        return kept

    def _newest_gen(self) -> int:
        nums = [int(m.group(1)) for p in self.gens.iterdir() if (m := _GEN_RE.match(p.name))]
        return max(nums, default=0)

    def _prune(self, current: int) -> None:
        for p in self.gens.iterdir():
            m = _GEN_RE.match(p.name)
            if p.name.startswith(".tmp-gen-") or (m and int(m.group(1)) <= current -
                                                  KEEP_GENERATIONS and
                                                  not (p / KEEP_MARK).exists()):
                shutil.rmtree(p, ignore_errors=True)

    def release_kept(self) -> int:
        """Let the generations kept for dropped versions be pruned again (``edged fsck
        --gc``: the operator let those versions go); returns how many were kept."""
        marks = list(self.gens.glob(f"gen-*/{KEEP_MARK}")) if self.gens.is_dir() else []
        for mark in marks:
            mark.unlink(missing_ok=True)
        if marks and self._exists():
            self._prune(self._generation())
        return len(marks)


def _always(name: str, num: int, artifact: str) -> bool:
    return True


def _known_to(state: TierState) -> Tolerate:
    """Tolerate a missing artifact only where ``state`` already had that very reference."""
    def known(name: str, num: int, artifact: str) -> bool:
        m = state.models.get(name)
        v = m.versions.get(num) if m is not None else None
        return v is not None and v.store_id == artifact
    return known


def dropped(old: TierState, new: TierState) -> list[str]:
    """``name:version`` of every version ``old`` has and ``new`` does not."""
    return [f"{name}:{num}" for name, m in sorted(old.models.items())
            for num in sorted(m.versions)
            if name not in new.models or num not in new.models[name].versions]


@dataclass(frozen=True)
class GenerationInfo:
    number: int
    current: bool
    mtime: float
    versions: int | None  # None: the generation does not validate any more
    models: tuple[str, ...]
    kept: bool = False  # kept past pruning: it lists versions an edit dropped

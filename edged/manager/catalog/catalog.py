"""What is installed and where: install, tier moves, activate, rollback, remove, reload.

Every operation computes the next ``TierState`` from the current one and commits it with one
atomic manifest switch; blobs that no manifest references any more are deleted only after that
commit, so a crash never leaves a manifest pointing at a missing artifact. One lock serialises
the operations. The one exception to "every change is a commit" is a load's measurement that
moved only a little: it is kept in memory until the next commit (``record_measurement``). The
capacity rule for tiers is injected (``tier_check``), so the daemon plugs in its budgets (and
the reserve its errors report) and tests their own.

Install, tier moves, activate and rollback take ``before_commit``: it receives the model's
entry as it is about to be committed, after every check (name, version, signature, tier budget)
and before the commit, under the lock. The manager loads the version there, so a version that
does not load is never committed and the old one stays active. When it raises nothing is
committed (and an install's blob is removed).

Every refused install leaves nothing behind: after the upload, any refusal (an artifact that
does not inspect, a bad or taken version number, a signature change without consent, a full
tier, a failed load) removes the blob unless another version uses it.

Rollback goes to the highest installed version below the active one — not to "the previous"
one, which would alternate between two versions on repeated calls — with the same signature
guard as activate (``activate N --allow-signature-change`` is the way past it).
"""

from __future__ import annotations

import builtins
import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from edged import errors as e
from edged.manager.catalog import engine_compat, quarantine
from edged.manager.catalog.manifests import Manifests, ModelEntry, TierState, VersionEntry
from edged.manager.catalog.names import MAX_VERSION, check_name, check_version
from edged.manager.catalog.store import Blob, Store
from edged.manager.catalog.tier_yaml import VARIANT_NAME_RE
from edged.units import format_size
from edged.values import TIERS, Budgets, ModelKey, Tier

log = logging.getLogger("edged.catalog")

TierCheck = Callable[[str, TierState, str, VersionEntry], None]
BeforeCommit = Callable[[ModelEntry], None]


def footprint(v: VersionEntry) -> int:
    """What the version takes loaded: its smallest variant's (a tier takes a model when any
    of its variants fits; which one serves is chosen at load, see ``manager.variants``)."""
    own = v.measured_bytes or v.estimated_bytes
    return min([own, *(x.measured_bytes or x.estimated_bytes for x in v.variants.values())])


@dataclass(frozen=True)
class BudgetTierCheck:
    """ram: the whole ram tier must fit at once (it is all loaded); swap: the model alone must
    fit (swap models load on demand and are evicted, so their sum may exceed the budget)."""

    budgets: Budgets  # the reserve is only reported in the numbers

    def __call__(self, name: str, state: TierState, tier: str, entry: VersionEntry) -> None:
        ram, swap, reserve = self.budgets.ram, self.budgets.swap, self.budgets.reserve
        if tier == Tier.RAM:
            total = sum(footprint(m.versions[m.active]) for m in state.models.values()
                        if m.tier == Tier.RAM)
            if total > ram:
                others = total - footprint(entry)
                raise e.CapacityExceeded(
                    f"putting '{name}' in the ram tier would need {total} bytes for the whole "
                    "tier (ram models are all loaded at once)",
                    e.CapacityNumbers(Tier.RAM, total, ram, others, ram - others, reserve))
        elif tier == Tier.SWAP and footprint(entry) > swap:
            raise e.CapacityExceeded(
                f"'{name}' alone needs more than the whole swap budget",
                e.CapacityNumbers(Tier.SWAP, footprint(entry), swap, 0, swap, reserve))


def budget_tier_check(budgets: Budgets) -> BudgetTierCheck:
    return BudgetTierCheck(budgets)


FOOTPRINT_CHANGE = 0.05  # a measured footprint this far from the saved one is committed
LOAD_TIME_CHANGE = 0.20  # likewise for the load time (it varies more from load to load)


def _worth_saving(saved: VersionEntry, new: VersionEntry) -> bool:
    """A first measurement, or one far enough from the saved one (see record_measurement)."""
    if saved.measured_bytes is None or saved.load_seconds is None:
        return True
    assert new.measured_bytes is not None and new.load_seconds is not None
    return (abs(new.measured_bytes - saved.measured_bytes) > FOOTPRINT_CHANGE *
            saved.measured_bytes or abs(new.load_seconds - saved.load_seconds) >
            LOAD_TIME_CHANGE * saved.load_seconds)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace(
        "+00:00", "Z")


class Catalog:
    def __init__(self, store: Store, manifests: Manifests, *,
                 inspect: Callable[..., Any],  # (path, format[, warm-up shapes])
                 tier_check: TierCheck | None = None,
                 storage_budget: int | None = None,
                 clock: Callable[[], str] = _now) -> None:
        self.store = store
        self.manifests = manifests
        self._inspect = inspect
        self._tier_check = tier_check
        self._storage_budget = storage_budget
        self._loose: tuple[TierState, dict[str, int]] | None = None
        self._clock = clock
        self._lock = threading.RLock()
        self._listed: tuple[TierState, list[ModelEntry]] | None = None

    # -- reads ---------------------------------------------------------------------------
    @property
    def state(self) -> TierState:
        return self.manifests.current

    def get(self, name: str) -> ModelEntry:
        m = self.state.models.get(name)
        if m is None:
            raise e.NotFound(f"model '{name}' is not installed", field="name")
        return m

    def list(self) -> list[ModelEntry]:
        """Every model, by name. Cached per manifest state (states are immutable: a change
        makes a new one), because status and selection ask on every call."""
        state = self.state
        cached = self._listed
        if cached is None or cached[0] is not state:
            cached = self._listed = (state, [state.models[n] for n in sorted(state.models)])
        return list(cached[1])

    def reload(self, before_commit: Callable[[TierState], None] | None = None) -> TierState:
        """Re-read the hand-edited manifests: validated as files (``ManifestError``) and
        against the tier budgets as ``tier`` would (``CapacityExceeded``, with the numbers);
        a rejected edit changes nothing and the old state stays in force. ``before_commit``
        sees the validated state first and may still refuse it."""
        with self._lock:
            current = self.state
            new = self.manifests.read(current)
            for name, m in sorted(new.models.items()):
                old = current.models.get(name)
                v = m.versions[m.active]
                if m.tier == Tier.STORAGE or self._tier_check is None or (
                        old is not None and (old.tier, old.active) == (m.tier, m.active)
                        and footprint(old.versions[old.active]) == footprint(v)):
                    continue
                try:
                    self._tier_check(name, new, m.tier, v)
                except e.CapacityExceeded as exc:
                    exc.message = f"{m.tier}.yaml: {exc.message}"
                    exc.args = (exc.message,)
                    raise
            if before_commit is not None:
                before_commit(new)
            return self.manifests.accept(new)

    # -- writes --------------------------------------------------------------------------
    def _change(self, name: str, derive: Callable[[TierState], ModelEntry], *,
                check_tier: bool, before_commit: BeforeCommit | None) -> ModelEntry:
        """Check and commit ``derive(state)`` as the model's next entry; ``before_commit`` runs
        in between. ``derive`` runs again on the state after it (a load it ran may have
        recorded a measurement), so nothing committed meanwhile is lost."""
        planned = derive(self.state)
        if check_tier and self._tier_check is not None:
            self._tier_check(name, TierState({**self.state.models, name: planned}),
                             planned.tier, planned.versions[planned.active])
        if before_commit is not None:
            before_commit(planned)
            planned = derive(self.state)
        self.manifests.commit(TierState({**self.state.models, name: planned},
                                        self.state.generation))
        return self.get(name)

    def install(self, name: str, blob: Blob, *, version: int | None = None, tier: str = "",
                tasks: Sequence[str] = (), quality: float = 0.0, providers: Sequence[str] = (),
                precision: str = "", notes: str = "",
                warmup_shapes: Mapping[str, Sequence[int]] | None = None,
                group: str | None = None, activate: bool = True,
                engine_info: Mapping[str, str] | None = None,
                allow_signature_change: bool = True, inherit: bool = True,
                before_commit: BeforeCommit | None = None) -> ModelEntry:
        """Add a verified blob as a version (``version`` None or 0: the next number).

        A routine update says only the file: what it leaves unsaid (tasks, quality, providers,
        precision, warm-up shapes, group) comes from the active version unless ``inherit`` is
        False, so that ``select --task`` still finds the model afterwards; the new version
        records what it inherited. ``tier`` "" keeps the model's tier (swap for a new model).
        """
        with self._lock:
            try:
                check_name(name)
                if tier and tier not in TIERS:
                    raise e.InvalidArgument(f"unknown tier {tier!r}", field="tier")
                if version:
                    check_version(version)
                # Declared warm-up shapes size the activations in the estimate (engines'
                # activations.py); without them the warm-up's defaults do.
                warm = {k: tuple(v) for k, v in (warmup_shapes or {}).items()}
                info = (self._inspect(blob.main, None, warm) if warm
                        else self._inspect(blob.main, None))
                old = self.state.models.get(name)
                tier = Tier(tier) if tier else (old.tier if old is not None else Tier.SWAP)
                number = version or (max(old.versions) + 1 if old else 1)
                if not version and number > MAX_VERSION:
                    raise e.InvalidArgument(
                        f"model '{name}' already has version {MAX_VERSION}, the highest there "
                        f"can be: give the new one a free number with --version", field="version")
                self._storage_check(name, blob)
                if old is not None and number in old.versions:
                    raise e.AlreadyExists(f"model '{name}' already has version {number}",
                                          field="version")
                warm = {k: tuple(v) for k, v in (warmup_shapes or {}).items()}
                check_warmup(warm, info.signature)
                entry = VersionEntry(
                    sha256=blob.sha256, size_bytes=blob.size_bytes, format=info.format,
                    tasks=tuple(tasks), quality=float(quality), providers=tuple(providers),
                    precision=precision, notes=notes, signature=info.signature,
                    estimated_bytes=int(info.estimate_bytes), installed_at=self._clock(),
                    warmup_shapes=warm, group=group or None,
                    engine_info=engine_compat.install_info(info.format, info.details,
                                                           engine_info),
                    artifact=blob.id if blob.id != blob.sha256 else "")
                if inherit and old is not None:
                    entry = inherit_metadata(entry, old.versions[old.active], old.active)
                entry = replace(entry, precision=entry.precision or "fp32")

                def derive(state: TierState) -> ModelEntry:
                    cur = state.models.get(name)
                    if cur is None:
                        return ModelEntry(name, tier if activate else Tier.STORAGE, number,
                                          {number: entry})
                    versions = {**cur.versions, number: entry}
                    if not activate:
                        return replace(cur, versions=versions)
                    if not allow_signature_change:
                        self._signature_guard(name, cur.versions[cur.active], entry)
                    return ModelEntry(name, tier, number, versions, cur.active)

                return self._change(name, derive, check_tier=activate,
                                    before_commit=before_commit)
            except BaseException:
                self._drop_if_unreferenced(blob.id)
                raise

    # -- variants: other forms of one version (see tier_yaml.VersionEntry.variants) ---------
    def version_of(self, name: str, version: int | None) -> tuple[int, VersionEntry]:
        """``(number, entry)`` of one version of ``name`` (None or 0: the active one);
        ``NotFound`` for an unknown model or version."""
        m = self.get(name)
        number = version or m.active
        v = m.versions.get(number)
        if v is None:
            raise e.NotFound(f"model '{name}' has no version {number}", field="version")
        return number, v

    def add_variant(self, name: str, version: int | None, variant: str, blob: Blob, *,
                    precision: str, quality: float | None = None,
                    notes: str = "") -> ModelEntry:
        """Add ``blob`` as variant ``variant`` of a version (None: the active one). Its
        signature must be the version's: a client sends the same tensors to every variant."""
        with self._lock:
            try:
                number, v = self.version_of(name, version)
                if not VARIANT_NAME_RE.fullmatch(variant):
                    raise e.InvalidArgument(
                        f"variant name {variant!r} is not allowed: 1-31 characters of a-z, 0-9, "
                        "'.', '_', '-'", field="variant")
                if variant in v.variant_names:
                    raise e.AlreadyExists(f"model '{name}' version {number} already has a "
                                          f"variant {variant!r}", field="variant")
                info = (self._inspect(blob.main, None, dict(v.warmup_shapes))
                        if v.warmup_shapes else self._inspect(blob.main, None))
                diff = v.signature.diff(info.signature)
                if diff:
                    raise e.SignatureChanged(
                        f"variant {variant!r} of '{name}' v{number} has another signature than "
                        "the version: a variant must take and give the same tensors", diff)
                entry = VersionEntry(
                    sha256=blob.sha256, size_bytes=blob.size_bytes, format=info.format,
                    precision=precision, quality=v.quality if quality is None else quality,
                    notes=notes, estimated_bytes=int(info.estimate_bytes),
                    installed_at=self._clock(),
                    artifact=blob.id if blob.id != blob.sha256 else "")
                self._storage_check(name, blob)

                def derive(state: TierState) -> ModelEntry:
                    cur = state.models[name]
                    cv = cur.versions[number]
                    return replace(cur, versions={**cur.versions, number: replace(
                        cv, variants={**cv.variants, variant: entry})})

                return self._change(name, derive, check_tier=False, before_commit=None)
            except BaseException:
                self._drop_if_unreferenced(blob.id)
                raise

    def remove_variant(self, name: str, version: int | None, variant: str) -> ModelEntry:
        with self._lock:
            number, v = self.version_of(name, version)
            if variant == v.variant_name:
                raise e.FailedPrecondition(
                    f"{variant!r} is the version itself: remove the version (`edgectl remove "
                    f"{name} {number}`) to remove it", field="variant")
            gone = v.variant(variant)  # NotFound for an unknown name
            nv = replace(v, variants={k: x for k, x in v.variants.items() if k != variant},
                         serve="" if v.serve == variant else v.serve)
            entry = self._change(name, lambda st: replace(st.models[name], versions={
                **st.models[name].versions, number: nv}), check_tier=False, before_commit=None)
            self._drop_if_unreferenced(gone.store_id)
            return entry

    def set_serve(self, name: str, version: int | None, variant: str) -> ModelEntry:
        """Pin the variant a version is served in ("" or "auto": edged chooses)."""
        with self._lock:
            number, v = self.version_of(name, version)
            pin = "" if variant in ("", "auto") else variant
            if pin:
                v.variant(pin)  # NotFound for an unknown name
            if v.serve == pin:
                return self.get(name)
            return self._change(name, lambda st: replace(st.models[name], versions={
                **st.models[name].versions, number: replace(v, serve=pin)}), check_tier=False,
                before_commit=None)

    def _signature_guard(self, name: str, old: VersionEntry, new: VersionEntry,
                         hint: str = "allow it explicitly") -> None:
        diff = old.signature.diff(new.signature)
        if diff:
            raise e.SignatureChanged(f"model '{name}': the new version changes the signature "
                                     f"({hint})", diff)

    def set_tier(self, name: str, tier: str, *,
                 before_commit: BeforeCommit | None = None) -> ModelEntry:
        if tier not in TIERS:
            raise e.InvalidArgument(f"unknown tier {tier!r} (ram, swap, storage)", field="tier")
        tier = Tier(tier)
        with self._lock:
            m = self.get(name)
            if m.tier == tier:
                return m
            return self._change(name, lambda st: replace(st.models[name], tier=tier),
                                check_tier=True, before_commit=before_commit)

    def activate(self, name: str, version: int, *, allow_signature_change: bool = False,
                 before_commit: BeforeCommit | None = None,
                 hint: str = "allow it explicitly") -> ModelEntry:
        with self._lock:
            m = self.get(name)
            check_version(version)
            if version not in m.versions:
                raise e.NotFound(f"model '{name}' has no version {version}", field="version")
            if version == m.active:
                return m
            if not allow_signature_change:
                self._signature_guard(name, m.versions[m.active], m.versions[version], hint)

            def derive(state: TierState) -> ModelEntry:
                cur = state.models[name]
                return replace(cur, active=version, previous=cur.active)

            return self._change(name, derive, check_tier=True, before_commit=before_commit)

    def rollback(self, name: str, *, allow_signature_change: bool = False,
                 before_commit: BeforeCommit | None = None) -> ModelEntry:
        """To the highest installed version below the active one (see the module docstring)."""
        with self._lock:
            m = self.get(name)
            target = max((v for v in m.versions if v < m.active), default=None)
            if target is None:
                raise e.FailedPrecondition(f"model '{name}' has no version below the active "
                                           f"v{m.active} to roll back to")
            return self.activate(
                name, target, allow_signature_change=allow_signature_change,
                before_commit=before_commit,
                hint=f"use `edgectl activate {name} {target} --allow-signature-change`")

    def remove(self, name: str, version: int | None = None, *, force: bool = False,
               in_use: Callable[[str], bool] = lambda k: False) -> builtins.list[int]:
        """Remove one version, or every version when ``version`` is None. Removing the active
        version activates the highest one below it (else the highest left), as a rollback
        would."""
        with self._lock:
            m = self.get(name)
            if version is not None:
                check_version(version)
            targets = [version] if version is not None else sorted(m.versions)
            for v in targets:
                if v not in m.versions:
                    raise e.NotFound(f"model '{name}' has no version {v}", field="version")
            if m.active in targets and in_use(ModelKey(name, m.active)) and not force:
                raise e.FailedPrecondition(f"model '{name}' version {m.active} is active and in "
                                           "use: pass --force to remove it")
            models = dict(self.state.models)
            left = {n: v for n, v in m.versions.items() if n not in targets}
            if version is not None and m.active == version and left and not force:
                below = [n for n in left if n < m.active]
                raise e.FailedPrecondition(
                    f"model '{name}' version {version} is the active version: removing it "
                    f"would activate version {max(below) if below else max(left)}; roll back "
                    f"first (edgectl rollback {name}) or pass --force", field="version")
            if not left:
                del models[name]
            elif m.active in targets:
                below = [n for n in left if n < m.active]
                new_active = max(below) if below else max(left)
                models[name] = ModelEntry(name, m.tier, new_active, left, None)
            else:
                models[name] = replace(m, versions=left,
                                       previous=None if m.previous in targets else m.previous)
            self.manifests.commit(TierState(models, self.state.generation))
            for v in targets:
                for artifact in m.versions[v].artifacts:
                    self._drop_if_unreferenced(artifact)
            return targets

    def record_measurement(self, name: str, version: int, measured_bytes: int,
                           load_seconds: float, variant: str = "") -> None:
        """Record a load's footprint and time.

        Every load measures both, and the load time differs a little each time: committing
        each one (a new generation, fsync'd) cost 30-100 ms on every load's response path.
        So only a change worth planning differently is committed — a first measurement, a
        footprint more than 5% or a load time more than 20% away from the saved one (the
        saved one, not the last one, so a slow drift is committed too once it adds up);
        anything smaller is kept in memory only (``Manifests.keep_unsaved``), used from
        then on, and written with the next commit. A restart or reload may thus go back to
        a saved measurement within those margins. On a full disk it is kept in memory too: it
        is bookkeeping and must not fail the install or load that measured it."""
        with self._lock:
            m = self.state.models.get(name)
            if m is None or version not in m.versions:
                return
            top = m.versions[version]
            if variant and variant != top.variant_name and variant not in top.variants:
                return  # removed meanwhile
            own = variant and variant != top.variant_name
            v = top.variants[variant] if own else top
            nv = replace(v, measured_bytes=int(measured_bytes),
                         load_seconds=round(float(load_seconds), 4))
            if (v.measured_bytes, v.load_seconds) == (nv.measured_bytes, nv.load_seconds):
                return
            ntop = replace(top, variants={**top.variants, variant: nv}) if own else nv
            models = {**self.state.models, name: replace(m, versions={**m.versions,
                                                                       version: ntop})}
            new = TierState(models, self.state.generation)
            sm = self.manifests.saved.models.get(name)
            saved = sm.versions.get(version) if sm is not None else None
            if saved is not None and own:
                saved = saved.variants.get(variant)
            if saved is None or _worth_saving(saved, nv):
                try:
                    self.manifests.commit(new)
                    return
                except e.ResourceExhausted as exc:  # a full disk: bookkeeping waits for room
                    log.warning("measurement of %s:%d kept in memory only: %s", name, version,
                                exc)
            self.manifests.keep_unsaved(new)

    # -- the disk: the storage budget and what no manifest references -------------------------
    def stored_bytes(self) -> int:
        """Bytes of every artifact the manifests reference, each counted once (what the
        storage budget caps: every installed version lives on disk, whatever its tier)."""
        return sum(self.state.artifacts().values())

    def _storage_check(self, name: str, blob: Blob) -> None:
        if self._storage_budget is None:
            return
        used = self.stored_bytes()
        known = blob.id in self.state.artifacts()
        needed = 0 if known else blob.size_bytes
        if used + needed > self._storage_budget:
            loose = self.unreferenced()
            hint = (f"; {len(loose)} artifact(s) that no manifest uses take "
                    f"{format_size(sum(loose.values()))} more (`edged fsck --gc` deletes them)"
                    if loose else "")
            raise e.CapacityExceeded(
                f"installing '{name}' would take the installed artifacts past the storage "
                f"budget: remove old versions (`edgectl remove`) or raise budgets.storage{hint}",
                e.CapacityNumbers(Tier.STORAGE, needed, self._storage_budget, used,
                                  self._storage_budget - used, 0))

    def unreferenced(self) -> dict[str, int]:
        """Stored artifacts no manifest references, with their bytes: kept on purpose (see
        ``quarantine``), shown by status. Cached per manifest state, as ``list`` is."""
        state = self.state
        cached = self._loose
        if cached is None or cached[0] is not state:
            refs = set(state.artifacts())
            loose = {a: quarantine.blob_bytes(self.store, a) for a in
                     sorted(self.store.blobs() - refs)}
            cached = self._loose = (state, loose)
        return dict(cached[1])

    def _drop_if_unreferenced(self, artifact: str) -> None:
        refs = set(self.state.artifacts())
        if artifact not in refs:
            self.store.remove(artifact)


INHERITABLE = ("tasks", "quality", "providers", "precision", "warmup_shapes", "group")


def inherit_metadata(new: VersionEntry, active: VersionEntry, number: int) -> VersionEntry:
    """``new`` with the fields it leaves empty taken from ``active`` (version ``number``).
    Warm-up shapes are taken only when they still fit the new signature."""
    taken: dict[str, Any] = {}
    for f in INHERITABLE:
        mine, theirs = getattr(new, f), getattr(active, f)
        if mine or not theirs:
            continue
        if f == "warmup_shapes":
            try:
                check_warmup(theirs, new.signature)
            except e.InvalidArgument:
                continue
        taken[f] = theirs
    if not taken:
        return new
    return replace(new, **taken, inherited=tuple(taken), inherited_from=number)


def check_warmup(shapes: Mapping[str, Sequence[int]], signature: Any) -> None:
    """Warm-up shapes must name inputs of the model, with its rank and its fixed dimensions:
    a shape that cannot run would fail every load of the version, so it is refused at install.
    """
    inputs = {t.name: tuple(t.shape) for t in signature.inputs}
    for name, shape in shapes.items():
        field = f"warmup_shapes[{name}]"
        if name not in inputs:
            raise e.InvalidArgument(f"warm-up shape for {name!r}: the model has no such input "
                                    f"(inputs: {', '.join(inputs) or 'none'})", field=field)
        want = inputs[name]
        text = "x".join(map(str, shape))
        model = "x".join("?" if d <= 0 else str(d) for d in want) or "a scalar"
        if want and len(shape) != len(want):
            raise e.InvalidArgument(f"warm-up shape {name}={text}: input {name!r} has "
                                    f"{len(want)} dimensions ({model})", field=field)
        bad = [i for i, (d, w) in enumerate(zip(shape, want, strict=False)) if w > 0 and d != w]
        if bad:
            raise e.InvalidArgument(f"warm-up shape {name}={text}: input {name!r} is {model} "
                                    f"(dimension {bad[0]} is fixed at {want[bad[0]]})",
                                    field=field)

"""``edged-ota``: install a model version the way an OTA framework needs it — all or nothing.

install → test-load the new version in its own worker → compare its signature with the active
version's → switch atomically → probe health (and one inference when a probe input is given)
→ commit; any failure after the install rolls back to the previous state: the previous version
is re-activated and the new one removed. Exit codes (stable, for Mender/RAUC/SWUpdate hooks):

  0  committed                       5  test-load failed (rolled back)
  1  other failure (rolled back)     6  signature differs from the active version (rolled back)
  2  usage error                     7  health probe failed after the switch (rolled back)
  3  daemon unreachable              8  ROLLBACK FAILED: the device needs attention
  4  verification failed: checksum, corrupt or unfit artifact (nothing installed)

A model's first version goes straight to the requested tier (``--tier``, default swap) and is
test-loaded and probed like any other (a first version bound for ram is installed in swap,
test-loaded, then promoted, so a load failure is exit 5 and leaves nothing installed); later
versions keep the model's tier (move it with ``edgectl tier``). Installing the file whose
sha256 the active version already has changes nothing: "already installed as version N",
exit 0, and ``"already_installed": true`` in the JSON (a rollback of that run is a no-op).

``--json`` prints one JSON object: {"ok", "exit_code", "stage", "name", "version",
"previous_version", "already_installed", "message", "steps": [...]}.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edged import errors as e
from edged.cli.installed import installed_as
from edged.client import DaemonUnreachable, EdgedClient
from edged.values import TIERS
from edged.views import ModelView

COMMITTED, FAILED, USAGE, UNREACHABLE, VERIFY, TEST_LOAD, SIGNATURE, HEALTH, ROLLBACK_FAILED = (
    0, 1, 2, 3, 4, 5, 6, 7, 8)


class Step(Exception):
    def __init__(self, code: int, stage: str, message: str) -> None:
        super().__init__(message)
        self.code, self.stage = code, stage


@dataclass
class Outcome:
    name: str
    version: int = 0
    previous_version: int = 0
    stage: str = "start"
    already_installed: bool = False
    steps: list[str] = field(default_factory=list)

    def log(self, text: str, quiet: bool) -> None:
        self.steps.append(text)
        if not quiet:
            print(f"edged-ota: {text}", file=sys.stderr)


def _signature(model: ModelView, version: int) -> list[tuple[str, str, str, tuple[int, ...]]]:
    for v in model.versions:
        if v.version == version:
            return sorted([(kind, t.name, t.datatype, tuple(t.shape))
                           for kind, ts in (("input", v.signature.inputs),
                                            ("output", v.signature.outputs)) for t in ts])
    return []


def signature_diff(old: Sequence[tuple[str, str, str, tuple[int, ...]]],
                   new: Sequence[tuple[str, str, str, tuple[int, ...]]]) -> str:
    """``input x: FP32 [1x3x?x?] -> FP32 [1x3x64x64]; output y: removed``, for people."""
    def text(dtype: str, shape: tuple[int, ...]) -> str:
        return f"{dtype} [{'x'.join('?' if d < 0 else str(d) for d in shape)}]"

    was = {(k, n): text(t, s) for k, n, t, s in old}
    now = {(k, n): text(t, s) for k, n, t, s in new}
    parts = []
    for key in sorted(was.keys() | now.keys()):
        a, b = was.get(key), now.get(key)
        if a == b:
            continue
        change = (f"added ({b})" if a is None else f"removed (was {a})" if b is None
                  else f"{a} -> {b}")
        parts.append(f"{key[0]} {key[1]}: {change}")
    return "; ".join(parts)


def _already_active(prev: ModelView, args: argparse.Namespace) -> int:
    """The active version when it is this very file (same sha256 and size), else 0."""
    path = Path(args.file)
    if not path.is_file():
        return 0
    return installed_as(prev, args.sha256, path.stat().st_size, active_only=True)


def run_install(client: EdgedClient, args: argparse.Namespace, out: Outcome) -> None:
    q = args.json
    try:
        prev = client.get_model(args.name)
        out.previous_version = prev.active_version
        tier = args.tier or prev.tier or "swap"
    except e.NotFound:
        prev, tier = None, args.tier or "swap"
    if prev is not None and (same := _already_active(prev, args)):
        out.version, out.already_installed, out.stage = same, True, "done"
        out.log(f"{args.name}: already installed as version {same} (active); nothing changed",
                q)
        return
    first = prev is None
    out.stage = "install"
    try:
        res = client.install(args.name, Path(args.file), sha256=args.sha256, version=args.version,
                             tier="swap" if first and tier == "ram" else tier,
                             tasks=args.task, quality=args.quality, activate=first,
                             warmup_shapes=_warmup(args.warmup),
                             engine_info=_engine_info(args.engine_info))
    except (e.DataLoss, e.InvalidArgument, e.ResourceExhausted, e.AlreadyExists) as exc:
        raise Step(VERIFY, "install", str(exc)) from None
    out.version = res.version
    out.log(f"installed {args.name} v{res.version} (sha256 {res.sha256[:12]}, verified)", q)
    _install_variants(client, args, res.version, out,
                      test_load=not (first and tier == "storage"))
    try:
        out.stage = "test-load"
        if first:
            if tier != "storage":
                client.load(args.name, version=res.version)
                out.log(f"test-loaded v{res.version} (the model's first version)", q)
            out.stage = "switch"
            if tier == "ram":
                client.set_tier(args.name, "ram")
            out.log(f"{args.name} v{res.version} is active in the {tier} tier", q)
        else:
            assert prev is not None
            client.load(args.name, version=res.version)
            client.unload_version(args.name, res.version)
            out.log(f"test-loaded v{res.version} in its own worker and unloaded it", q)
            out.stage = "signature"
            old, new = _signature(prev, prev.active_version), _signature(
                client.get_model(args.name), res.version)
            if old != new and not args.allow_signature_change:
                raise Step(SIGNATURE, "signature",
                           f"signature of v{res.version} differs from active "
                           f"v{prev.active_version}: {signature_diff(old, new)} "
                           "(pass --allow-signature-change to accept it)")
            out.log("signature matches the active version" if old == new
                    else "signature differs (allowed)", q)
            out.stage = "switch"
            client.activate(args.name, res.version,
                            allow_signature_change=args.allow_signature_change)
            out.log(f"switched {args.name} to v{res.version}", q)
        out.stage = "health"
        _probe(client, args)
        out.log("health probe passed", q)
    except Step:
        raise
    except e.EdgedError as exc:
        code = {"test-load": TEST_LOAD, "health": HEALTH}.get(out.stage, FAILED)
        raise Step(code, out.stage, str(exc)) from None


def variant_files(specs: Sequence[str]) -> list[tuple[str, Path, str]]:
    """``NAME=FILE:SHA256`` -> (name, file, sha256)."""
    out = []
    for spec in specs:
        name, sep, rest = spec.partition("=")
        path, sep2, sha = rest.rpartition(":")
        if not (sep and sep2 and name and path and len(sha) == 64):
            raise e.InvalidArgument(f"--variant-file {spec!r}: expected NAME=FILE:SHA256",
                                    field="variant_file")
        out.append((name, Path(path), sha.lower()))
    return out


def _install_variants(client: EdgedClient, args: argparse.Namespace, version: int,
                      out: Outcome, test_load: bool) -> None:
    """The version's variants, verified (sha256, same signature) and test-loaded in the new
    version before anything switches; any failure rolls the whole install back."""
    q = args.json
    for name, path, sha in variant_files(args.variant_file):
        out.stage = "install"
        try:
            client.install(args.name, path, sha256=sha, version=version, variant=name)
        except (e.DataLoss, e.InvalidArgument, e.ResourceExhausted, e.AlreadyExists,
                e.FailedPrecondition, e.NotFound) as exc:
            raise Step(VERIFY, "install", f"variant {name}: {exc}") from None
        if not test_load:  # a first version in the storage tier: nothing of it loads
            out.log(f"added variant {name} to v{version} (sha256 {sha[:12]}, verified)", q)
            continue
        out.stage = "test-load"
        try:
            client.set_variant(args.name, name, version)
            client.unload_version(args.name, version)
            client.load(args.name, version=version)
            client.unload_version(args.name, version)
            client.set_variant(args.name, "auto", version)
        except e.EdgedError as exc:
            raise Step(TEST_LOAD, "test-load", f"variant {name}: {exc}") from None
        out.log(f"added variant {name} to v{version} (sha256 {sha[:12]}, verified, "
                "test-loaded)", q)


def _probe(client: EdgedClient, args: argparse.Namespace) -> None:
    if client.health() != "SERVING":
        raise Step(HEALTH, "health", "daemon is not SERVING")
    model = client.get_model(args.name)
    if model.tier in ("ram", "swap"):  # it must load and answer
        client.load(args.name)
        if args.probe_input:
            inputs = {}
            for spec in args.probe_input:
                name, _, file = spec.partition("=")
                inputs[name] = np.load(file, allow_pickle=False)
            client.infer(args.name, inputs)


def rollback(client: EdgedClient, out: Outcome, quiet: bool) -> bool:
    """Back to the previous state; True when that worked."""
    try:
        model = client.get_model(out.name)
    except e.NotFound:
        return True
    if out.version and out.version == out.previous_version:
        return True  # an "already installed" run: it changed nothing
    try:
        if out.previous_version and model.active_version != out.previous_version:
            client.activate(out.name, out.previous_version, allow_signature_change=True)
            out.log(f"re-activated v{out.previous_version}", quiet)
        if out.version and any(v.version == out.version for v in model.versions):
            client.remove(out.name, out.version, force=True)
            out.log(f"removed v{out.version}", quiet)
        return True
    except e.EdgedError as exc:
        out.log(f"rollback failed: {exc}", quiet)
        return False


def _warmup(specs: Sequence[str]) -> dict[str, list[int]]:
    out = {}
    for spec in specs:
        name, _, dims = spec.partition("=")
        try:
            out[name] = [int(x) for x in dims.split("x")]
        except ValueError:
            raise Step(USAGE, "start", f"--warmup {spec!r}: expected INPUT=DIMS, e.g. "
                                       "x=1x3x64x64") from None
    return out


def _engine_info(specs: Sequence[str]) -> dict[str, str]:
    return {k: v for k, _, v in (s.partition("=") for s in specs) if k}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edged-ota", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--target", default=None,
                   help="unix:PATH or HOST:PORT of the daemon (default: env EDGED_TARGET, then "
                        "the default socket)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per call (default 120)")
    p.add_argument("--token-file", type=Path, help="bearer token (TCP targets, admin calls)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object with the outcome and the steps, nothing else")
    sub = p.add_subparsers(dest="command", required=True)
    i = sub.add_parser("install", help="install, verify, test-load, switch, probe, commit")
    i.add_argument("name", help="the model's name")
    i.add_argument("file", help="the artifact (ONNX file or TensorRT engine)")
    i.add_argument("--sha256", required=True, help="expected sha256 of FILE")
    i.add_argument("--version", type=int, default=0,
                   help="the version number (default: the next one)")
    i.add_argument("--tier", choices=TIERS,
                   help="a first version's tier (default swap); later versions keep the model's")
    i.add_argument("--task", action="append", default=[],
                   help="a task it can do (repeatable; default: the active version's)")
    i.add_argument("--quality", type=float, default=0.0,
                   help="a quality score for select (default: the active version's)")
    i.add_argument("--warmup", action="append", default=[], metavar="INPUT=1x3x64x64",
                   help="warm-up shape of an input (repeatable; default: the active version's)")
    i.add_argument("--probe-input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="run one inference on this input as the health probe (repeatable)")
    i.add_argument("--allow-signature-change", action="store_true",
                   help="accept inputs/outputs that differ from the active version's")
    i.add_argument("--engine-info", action="append", default=[], metavar="KEY=VALUE",
                   help="what a TensorRT engine was built for, e.g. gpu=NAME")
    i.add_argument("--variant-file", action="append", default=[],
                   metavar="NAME=FILE:SHA256",
                   help="another form of the same version (e.g. int8=rec-int8.onnx:<sha256>), "
                        "installed with it, checked and test-loaded before the switch "
                        "(repeatable)")
    r = sub.add_parser("rollback", help="re-activate PREVIOUS and remove VERSION")
    r.add_argument("name", help="the model's name")
    r.add_argument("--version", type=int, required=True, help="the version to remove")
    r.add_argument("--previous", type=int, default=0, help="the version to re-activate")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        token = args.token_file.read_text().strip() if args.token_file else None
    except OSError as exc:
        print(f"edged-ota: --token-file {args.token_file}: {exc.strerror or exc}",
              file=sys.stderr)
        return USAGE
    out = Outcome(args.name)
    code, message = COMMITTED, "committed"
    logged = False  # the failure is already on stderr as a step: the last line does not repeat it
    with EdgedClient(args.target, timeout=args.timeout, token=token) as client:
        try:
            if args.command == "rollback":
                out.version, out.previous_version = args.version, args.previous
                out.stage = "rollback"
                code = COMMITTED if rollback(client, out, args.json) else ROLLBACK_FAILED
                message = "rolled back" if code == COMMITTED else "rollback failed"
            else:
                run_install(client, args, out)
        except DaemonUnreachable as exc:
            code, message = UNREACHABLE, str(exc)
        except Step as step:
            code, message = step.code, str(step)
            out.log(f"{step.stage} failed: {step}", args.json)
            logged = True
            # a verify failure before the version exists left nothing; one of a variant
            # (after the version was installed) takes the version back out too
            if (step.code != VERIFY or out.version) and not rollback(client, out, args.json):
                code = ROLLBACK_FAILED
        except e.EdgedError as exc:
            code, message = FAILED, str(exc)
            if not rollback(client, out, args.json):
                code = ROLLBACK_FAILED
    if args.json:
        print(json.dumps({"ok": code == COMMITTED, "exit_code": code, "stage": out.stage,
                          "name": out.name, "version": out.version,
                          "previous_version": out.previous_version,
                          "already_installed": out.already_installed, "message": message,
                          "steps": out.steps}))
    elif code != COMMITTED:
        outcome = ("nothing installed" if code in (VERIFY, USAGE)
                   else "ROLLBACK FAILED: the device needs attention"
                   if code == ROLLBACK_FAILED else "rolled back")
        print(f"edged-ota: {outcome} (exit {code})" if logged
              else f"edged-ota: {message} (exit {code})", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

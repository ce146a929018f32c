"""``edgectl`` model commands: models, show, install, remove, tier, activate, rollback, load,
unload, check, select, infer."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edged import errors as e
from edged.cli import output
from edged.cli.exitcodes import LocalError
from edged.cli.installed import installed_as
from edged.cli.viewjson import check_dict, loaded_dict, model_dict, select_dict
from edged.client import EdgedClient
from edged.hashing import sha256_file
from edged.units import format_size, parse_size
from edged.values import TIERS


def register(sub: Any) -> None:
    p = sub.add_parser("models", help="every model: versions, active, tier, format, size")
    p.add_argument("--tier", choices=TIERS, help="only the models of this tier")
    p.add_argument("--task", default="", help="only the models that can do this task")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("show", help="one model in full, with its signature")
    p.add_argument("name", help="the model's name")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("install", help="install a version from a file or an http(s) URL")
    p.add_argument("name", help="the model's name, e.g. ppocr-det")
    p.add_argument("source", help="a local file (streamed), or http(s):// URL (needs --sha256)")
    p.add_argument("--tier", choices=TIERS, default="",
                   help="the model's tier (default: the model's current tier; swap for a new "
                        "model)")
    p.add_argument("--version", type=int, default=0,
                   help="the version number (default: the next one; also installs a file that "
                        "is already installed, under this number)")
    p.add_argument("--sha256", default="", help="expected sha256 of the artifact")
    p.add_argument("--task", action="append", default=[], dest="tasks",
                   help="a task it can do, e.g. ocr.detect (repeatable)")
    p.add_argument("--quality", type=float, default=0.0,
                   help="a quality score used by select (higher is better)")
    p.add_argument("--provider", action="append", default=[], dest="providers",
                   help="preferred execution provider, e.g. CUDAExecutionProvider (repeatable)")
    p.add_argument("--precision", default="", help="fp32, fp16 or int8 (informational)")
    p.add_argument("--notes", default="", help="free text kept with the version")
    p.add_argument("--warmup", action="append", default=[], metavar="INPUT=1x3x64x64",
                   help="the shape of an input for the warm-up inference of every load "
                        "(repeatable; checked against the model's signature)")
    p.add_argument("--group", default="", help="worker group shared with other models")
    p.add_argument("--data", action="append", default=[], type=Path,
                   help="ONNX external data file (repeatable; NAME.data is found on its own)")
    p.add_argument("--no-activate", action="store_true", help="keep the current version active")
    p.add_argument("--no-inherit", action="store_true",
                   help="do not take tasks, quality, providers, precision, warm-up shapes and "
                        "group from the active version when they are not given")
    p.add_argument("--on-device", action="store_true",
                   help="the daemon reads SOURCE from its own filesystem (no streaming)")
    p.add_argument("--allow-signature-change", action="store_true",
                   help="activate it even if its inputs/outputs differ from the active version")
    p.add_argument("--variant", default="", metavar="NAME",
                   help="add the file as this variant (e.g. int8) of --version (default: the "
                        "active one) instead of as a new version")
    p.add_argument("--engine-info", action="append", default=[], metavar="KEY=VALUE",
                   help="what a TensorRT engine was built for, e.g. gpu=\"Orin (sm_87)\" "
                        "(the TensorRT version is recorded on its own)")
    p.set_defaults(func=cmd_install)
    p = sub.add_parser("remove", help="remove a model or one version")
    p.add_argument("name", help="the model's name")
    p.add_argument("version", nargs="?", type=int, default=None,
                   help="the version to remove (default: every version)")
    p.add_argument("--force", action="store_true",
                   help="remove the active version too (the previous one becomes active)")
    p.set_defaults(func=cmd_remove)
    p = sub.add_parser("tier", help="move a model to ram, swap or storage")
    p.add_argument("name", help="the model's name")
    p.add_argument("tier", choices=TIERS, help="the tier to move it to")
    p.set_defaults(func=cmd_tier)
    p = sub.add_parser("activate", help="switch a model to another installed version")
    p.add_argument("name", help="the model's name")
    p.add_argument("version", type=int, help="the installed version to make active")
    p.add_argument("--allow-signature-change", action="store_true",
                   help="switch even if its inputs/outputs differ from the active version")
    p.set_defaults(func=cmd_activate)
    p = sub.add_parser("rollback", help="switch back to the previous version")
    p.add_argument("name", help="the model's name")
    p.set_defaults(func=cmd_rollback)
    p = sub.add_parser("load", help="load a model now (if it fits)")
    p.add_argument("name", help="the model's name")
    p.add_argument("--version", type=int, default=0,
                   help="an inactive version to test-load (default: the active one)")
    p.set_defaults(func=cmd_load)
    p = sub.add_parser("unload", help="unload a model and end its worker")
    p.add_argument("name", help="the model's name")
    p.set_defaults(func=cmd_unload)
    p = sub.add_parser("check", help="would it fit? admit / admit after evicting / reject")
    p.add_argument("name", nargs="?", help="an installed model (or use --file)")
    p.add_argument("--file", help="an artifact not installed yet (a path on the device)")
    p.add_argument("--tier", choices=TIERS,
                   help="check it as if in this tier (default: its own tier; swap for --file)")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("select", help="the best installed model for a task, and why")
    p.add_argument("--task", required=True, help="the task, e.g. ocr.detect")
    p.add_argument("--priority", choices=("speed", "quality", "balanced"), default="balanced",
                   help="what matters most (default balanced)")
    p.add_argument("--max-bytes", type=size_arg, default=0,
                   help="only models whose footprint is at most this, e.g. 512MiB")
    p.add_argument("--max-latency-ms", type=float, default=0.0,
                   help="only models measured at most this fast (milliseconds)")
    p.add_argument("--mode", choices=("auto", "manual", "hybrid"),
                   help="default: the daemon's selection.mode")
    p.add_argument("--pin", default="", metavar="MODEL",
                   help="use this model if it can serve (default: selection.pins)")
    p.set_defaults(func=cmd_select)
    p = sub.add_parser("infer", help="run a model on .npy inputs")
    p.add_argument("name", help="the model's name")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy", dest="inputs",
                   help="an input tensor from a .npy file (repeatable)")
    p.add_argument("--output", action="append", default=[], dest="outputs",
                   help="an output to return (repeatable; default: all)")
    p.add_argument("--save", type=Path, help="write outputs to DIR/<output>.npy")
    p.set_defaults(func=cmd_infer)


def cmd_models(client: EdgedClient, args: argparse.Namespace) -> int:
    models = client.list_models(tier=args.tier, task=args.task)
    if args.json:
        output.emit_json({"models": [model_dict(m) for m in models]})
        return 0
    rows = []
    for m in models:
        d = model_dict(m)
        active = next((v for v in d["versions"] if v["active"]), None)
        rows.append([m.name, ",".join(str(v["version"]) for v in d["versions"]),
                     m.active_version, d["tier"], active["format"] if active else "-",
                     output.size(active["size_bytes"]) if active else "-",
                     active["sha256"][:12] if active else "-", d["state"] or "unloaded",
                     ",".join(active["tasks"]) if active else "",
                     ",".join([active["precision"] or "fp32",
                               *(x["name"] for x in active.get("variants") or [])])
                     if active and active.get("variants") else "-"])
    output.table(["NAME", "VERSIONS", "ACTIVE", "TIER", "FORMAT", "SIZE", "SHA256", "STATE",
                  "TASKS", "VARIANTS"], rows)
    return 0


def cmd_show(client: EdgedClient, args: argparse.Namespace) -> int:
    m = client.get_model(args.name)
    d = model_dict(m)
    if args.json:
        output.emit_json(d)
        return 0
    print(f"{m.name}  active v{m.active_version}  tier {d['tier']}  {d['state'] or 'unloaded'}")
    if d["loaded"]:
        x = d["loaded"]
        print(f"loaded   pid {x['worker_pid']}  footprint {output.size(x['footprint_bytes'])}  "
              f"requests {x['requests']}  providers {','.join(x['providers'])}")
    for v in d["versions"]:
        print(f"\nversion {v['version']}{' (active)' if v['active'] else ''}  tier {v['tier']}  "
              f"{v['format']}  {output.size(v['size_bytes'])}  sha256 {v['sha256']}")
        print(f"  tasks {','.join(v['tasks']) or '-'}  quality {v['quality']:g}  precision "
              f"{v['precision'] or '-'}  providers {','.join(v['providers']) or 'auto'}")
        if v["warmup_shapes"]:
            print("  warm-up " + ", ".join(f"{k}={s}" for k, s in
                                           sorted(v["warmup_shapes"].items())))
        if v["inherited"]:
            print(f"  inherited from v{v['inherited_from']}: {', '.join(v['inherited'])}")
        measured = (f"measured {output.size(v['measured_bytes'])}  load "
                    f"{v['load_seconds']:.2f}s" if v["load_seconds"] else "never loaded")
        print(f"  memory estimated {output.size(v['estimated_bytes'])}  {measured}  "
              f"installed {v['installed_at']}")
        sig = v.get("signature") or {}
        for kind in ("inputs", "outputs"):
            for t in sig.get(kind, []):
                shape = "x".join("?" if s < 0 else str(s) for s in t["shape"])
                print(f"  {kind[:-1]:<6} {t['name']:<24} {t['datatype']:<6} [{shape}]")
        if v["notes"]:
            print(f"  notes: {v['notes']}")
        for x in v.get("variants") or []:
            print(f"  variant {x['name']:<8} {output.size(x['size_bytes'])}  quality "
                  f"{x['quality']:g}  estimated {output.size(x['estimated_bytes'])}"
                  + (f"  measured {output.size(x['measured_bytes'])}" if x["measured_bytes"]
                     else "") + (f"  ({x['notes']})" if x["notes"] else ""))
        if v.get("variants"):
            print(f"  serves   {v.get('serve') or 'auto (edged chooses what fits)'}")
    if d["loaded"] and d["loaded"].get("variant"):
        print(f"\nloaded variant: {d['loaded']['variant']}")
    return 0


def size_arg(text: str) -> int:
    """An argparse type: ``512MiB``, ``2GB``, ``1048576``; a bad size is a one-line usage error."""
    try:
        return parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 512MiB, 2GB or 1048576, got {text!r}") from None


def _warmup(specs: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for spec in specs:
        name, sep, dims = spec.partition("=")
        try:
            shape = [int(x) for x in dims.lower().split("x")]
        except ValueError:
            shape = []
        if not sep or not name or not shape or any(d < 1 for d in shape):
            raise LocalError(f"--warmup {spec!r}: expected INPUT=DIMS with positive dimensions, "
                             "e.g. x=1x3x64x64", field="warmup")
        out[name] = shape
    return out


def _engine_info(specs: list[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not key:
            raise LocalError(f"--engine-info {spec!r}: expected KEY=VALUE", field="engine_info")
        out[key] = value
    return out


def local_file(path: Path, label: str, field: str) -> Path:
    """``path`` when it is a readable file here, else a ``LocalError`` in the user's terms
    (``label`` says which argument it came from, e.g. ``--input x=in.npy``)."""
    if not path.exists():
        raise LocalError(f"{label}: no such file", field=field)
    if not path.is_file():
        raise LocalError(f"{label}: not a file", field=field)
    if not os.access(path, os.R_OK):
        raise LocalError(f"{label}: not readable by this user", field=field)
    return path


def _already_installed(client: EdgedClient, args: argparse.Namespace, sha256: str,
                       size: int | None) -> int:
    """The version that already holds this file, else 0 (``--version`` asks for a new one)."""
    if args.version or not sha256:
        return 0
    try:
        model = client.get_model(args.name)
    except e.NotFound:
        return 0
    same = installed_as(model, sha256, size)
    if not same:
        return 0
    active = model.active_version == same
    held = next(v for v in model.versions if v.version == same)
    if args.json:
        output.emit_json({"name": args.name, "version": same, "sha256": held.sha256,
                          "size_bytes": held.size_bytes, "already_installed": True,
                          "active": active,
                          "model": model_dict(model)})
    else:
        hint = "" if active else f" (not active: edgectl activate {args.name} {same})"
        print(f"{args.name}: already installed as version {same}{hint}; nothing changed")
    return same


def _inherited(version: Any) -> str:
    if not version.inherited:
        return ""
    return f"inherited from v{version.inherited_from}: {', '.join(version.inherited)}"


def cmd_install(client: EdgedClient, args: argparse.Namespace) -> int:
    header = dict(version=args.version, tier=args.tier, tasks=args.tasks, quality=args.quality,
                  providers=args.providers, precision=args.precision, notes=args.notes,
                  warmup_shapes=_warmup(args.warmup), group=args.group,
                  activate=not args.no_activate, inherit=not args.no_inherit,
                  allow_signature_change=args.allow_signature_change,
                  engine_info=_engine_info(args.engine_info), variant=args.variant)
    bar = output.ProgressBar(f"install {args.name}", enabled=not args.json)
    remote = args.source.startswith(("http://", "https://"))
    if remote and not args.sha256:
        raise LocalError("installing from a URL needs --sha256", field="sha256")
    if remote or args.on_device:
        source = args.source if remote else str(Path(args.source).absolute())
        if _already_installed(client, args, args.sha256, None):
            return 0
        r = client.install_from(args.name, source, sha256=args.sha256, progress=bar, **header)
    else:
        path = local_file(Path(args.source), f"model file {args.source}", "source")
        extra = [local_file(d, f"--data {d}", "data") for d in args.data]
        auto = path.with_name(path.name + ".data")
        if auto.exists() and auto not in extra:
            extra.append(auto)
        digest = args.sha256 or (sha256_file(path) if not args.version else "")
        if _already_installed(client, args, digest, path.stat().st_size):
            return 0
        r = client.install(args.name, path, sha256=digest or None, extra_files=extra,
                           progress=bar, **header)
    bar.finish()
    new = next((v for v in r.model.versions if v.version == r.version), None)
    if args.json:
        output.emit_json({"name": args.name, "version": r.version, "sha256": r.sha256,
                          "size_bytes": r.size_bytes, "seconds": r.seconds,
                          "already_installed": False,
                          "inherited": list(new.inherited) if new else [],
                          "model": model_dict(r.model)})
    else:
        print(f"installed {args.name} v{r.version} ({output.size(r.size_bytes)}, sha256 "
              f"{r.sha256[:12]}) in {r.seconds:.2f}s")
        if new is not None and new.inherited:
            print(f"  {_inherited(new)}")
    return 0


def cmd_remove(client: EdgedClient, args: argparse.Namespace) -> int:
    if args.version is not None and args.version < 1:  # on the wire 0 means "every version"
        raise e.InvalidArgument(f"version must be 1 or more, got {args.version} (leave it out "
                                "to remove every version)", field="version")
    removed = client.remove(args.name, args.version or 0, args.force)
    try:
        active = client.get_model(args.name).active_version
    except e.NotFound:
        active = 0
    if args.json:
        output.emit_json({"name": args.name, "removed_versions": removed,
                          "active_version": active})
        return 0
    print(f"removed {args.name} version{'s' if len(removed) > 1 else ''} "
          f"{', '.join(map(str, removed))}"
          + (f"; v{active} is active" if active else "; the model is gone"))
    return 0


def _model_result(args: argparse.Namespace, m: Any, verb: str) -> int:
    if args.json:
        output.emit_json(model_dict(m))
    else:
        print(f"{m.name}: {verb}; active v{m.active_version}, tier {model_dict(m)['tier']}")
    return 0


def cmd_tier(client: EdgedClient, args: argparse.Namespace) -> int:
    before = client.get_model(args.name)
    was = model_dict(before)["tier"]
    after = client.set_tier(args.name, args.tier)
    if was == args.tier:
        verb = f"already in {args.tier}; nothing changed"
    else:
        verb = f"moved from {was} to {args.tier}"
        if before.loaded is not None and after.loaded is None:
            verb += (f"; unloaded (it was loaded, {output.size(before.loaded.footprint_bytes)}"
                     ": the storage tier holds nothing in memory)")
        elif after.loaded is not None and before.loaded is None:
            verb += f"; loaded ({output.size(after.loaded.footprint_bytes)})"
    return _model_result(args, after, verb)


def cmd_activate(client: EdgedClient, args: argparse.Namespace) -> int:
    m = client.activate(args.name, args.version, args.allow_signature_change)
    return _model_result(args, m, f"activated v{args.version}")


def cmd_rollback(client: EdgedClient, args: argparse.Namespace) -> int:
    return _model_result(args, client.rollback(args.name), "rolled back")


def cmd_load(client: EdgedClient, args: argparse.Namespace) -> int:
    r = client.load(args.name, args.version)
    if args.json:
        output.emit_json({"model": loaded_dict(r.model), "evicted": list(r.evicted),
                          "seconds": r.seconds})
    else:
        ev = f", evicted {', '.join(r.evicted)}" if r.evicted else ""
        print(f"loaded {r.model.name} v{r.model.version} in {r.seconds:.2f}s "
              f"({output.size(r.model.footprint_bytes)}, pid {r.model.worker_pid}){ev}")
    return 0


def cmd_unload(client: EdgedClient, args: argparse.Namespace) -> int:
    was_loaded = client.get_model(args.name).loaded is not None
    freed = client.unload(args.name)
    if args.json:
        output.emit_json({"name": args.name, "was_loaded": was_loaded,
                          "freed_bytes": freed})
    elif not was_loaded and not freed:
        print(f"{args.name} was not loaded; nothing to unload")
    else:
        print(f"unloaded {args.name}, its worker ended (freed {output.size(freed)})")
    return 0


def cmd_check(client: EdgedClient, args: argparse.Namespace) -> int:
    path = str(Path(args.file).absolute()) if args.file else None
    r = client.check(args.name, artifact_path=path, tier=args.tier)
    decision = r.decision
    if args.json:
        output.emit_json(check_dict(r))
    else:
        n = r.numbers
        what = args.name or args.file
        verdict = {"admit": "admit", "admit_after_evicting":
                   f"admit after evicting {', '.join(r.evict)}", "reject": "reject"}[decision]
        print(f"{what}: {verdict}")
        print(f"  tier {n.tier}: needs {format_size(n.needed_bytes)}, budget "
              f"{format_size(n.budget_bytes)}, used {format_size(n.used_bytes)}, free "
              f"{format_size(n.free_bytes)}, reserve {format_size(n.reserve_bytes)}")
        if r.reason:
            print(f"  {r.reason}")
    return 7 if decision == "reject" else 0


def cmd_select(client: EdgedClient, args: argparse.Namespace) -> int:
    r = client.select(args.task, args.priority, args.max_bytes, args.max_latency_ms,
                      mode=args.mode or "", pinned=args.pin)
    found = r.choice is not None and r.choice.name
    if args.json:
        output.emit_json(select_dict(r))
        return 0 if found else 5
    if r.choice is None or not r.choice.name:
        print(f"no installed model can do {args.task!r} now")
    else:
        print(f"{r.choice.name} v{r.choice.version}: {r.choice.reason} ({r.mode} mode)")
    for reason in r.reasons:
        print(f"  - {reason}")
    for c in r.runners_up:
        print(f"  runner-up {c.name} v{c.version}: {c.reason}")
    return 0 if found else 5


def cmd_infer(client: EdgedClient, args: argparse.Namespace) -> int:
    inputs: dict[str, np.ndarray] = {}
    for spec in args.inputs:
        name, _, file = spec.partition("=")
        if not name or not file:
            raise LocalError(f"--input {spec!r}: expected NAME=FILE.npy", field="input")
        local_file(Path(file), f"--input {spec}", "input")
        try:
            inputs[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError):
            raise LocalError(f"--input {name}={file}: not a .npy file (write one with "
                             "numpy.save)", field="input") from None
    outs = client.infer(args.name, inputs, args.outputs or None)
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for name, arr in outs.items():
            np.save(args.save / (name.replace("/", "_") + ".npy"), arr)
    if args.json:
        output.emit_json({name: {"datatype": str(a.dtype), "shape": list(a.shape),
                                 "data": a.tolist() if a.size <= 4096 else None}
                          for name, a in outs.items()})
    else:
        for name, a in outs.items():
            preview = np.array2string(a.ravel()[:8], precision=4, separator=", ")
            print(f"{name}: {a.dtype} {list(a.shape)} {preview}{' ...' if a.size > 8 else ''}")
    sys.stdout.flush()
    return 0

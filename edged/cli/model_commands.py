"""``edgectl`` model commands: models, show, install, remove, tier, activate, rollback, load,
unload, check, select, infer."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edged import errors as e
from edged.cli import output
from edged.cli.pbjson import DECISIONS, loaded_dict, model_dict, plain
from edged.client import EdgedClient
from edged.units import parse_size

TIERS = ("ram", "swap", "storage")


def register(sub: Any) -> None:
    p = sub.add_parser("models", help="every model: versions, active, tier, format, size")
    p.add_argument("--tier", choices=TIERS)
    p.add_argument("--task", default="")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("show", help="one model in full, with its signature")
    p.add_argument("name")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("install", help="install a version from a file or an http(s) URL")
    p.add_argument("name")
    p.add_argument("source", help="a local file (streamed), or http(s):// URL (needs --sha256)")
    p.add_argument("--tier", choices=TIERS, default="swap")
    p.add_argument("--version", type=int, default=0, help="default: next version")
    p.add_argument("--sha256", default="", help="expected sha256 of the artifact")
    p.add_argument("--task", action="append", default=[], dest="tasks")
    p.add_argument("--quality", type=float, default=0.0)
    p.add_argument("--provider", action="append", default=[], dest="providers")
    p.add_argument("--precision", default="")
    p.add_argument("--notes", default="")
    p.add_argument("--warmup", action="append", default=[], metavar="INPUT=1x3x64x64")
    p.add_argument("--group", default="", help="worker group shared with other models")
    p.add_argument("--data", action="append", default=[], type=Path,
                   help="ONNX external data file (repeatable; NAME.data is found on its own)")
    p.add_argument("--no-activate", action="store_true", help="keep the current version active")
    p.add_argument("--on-device", action="store_true",
                   help="the daemon reads SOURCE from its own filesystem (no streaming)")
    p.add_argument("--allow-signature-change", action="store_true")
    p.add_argument("--variant", default="", metavar="NAME",
                   help="add the file as this variant (e.g. int8) of --version (default: the "
                        "active one) instead of as a new version")
    p.add_argument("--engine-info", action="append", default=[], metavar="KEY=VALUE",
                   help="what a TensorRT engine was built for, e.g. gpu=\"Orin (sm_87)\" "
                        "(the TensorRT version is recorded on its own)")
    p.set_defaults(func=cmd_install)
    p = sub.add_parser("remove", help="remove a model or one version")
    p.add_argument("name")
    p.add_argument("version", nargs="?", type=int, default=None,
                   help="the version to remove (default: every version)")
    p.add_argument("--force", action="store_true", help="even the active version of a model in use")
    p.set_defaults(func=cmd_remove)
    p = sub.add_parser("tier", help="move a model to ram, swap or storage")
    p.add_argument("name")
    p.add_argument("tier", choices=TIERS)
    p.set_defaults(func=cmd_tier)
    p = sub.add_parser("activate", help="switch a model to another installed version")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("--allow-signature-change", action="store_true")
    p.set_defaults(func=cmd_activate)
    p = sub.add_parser("rollback", help="switch back to the previous version")
    p.add_argument("name")
    p.set_defaults(func=cmd_rollback)
    p = sub.add_parser("load", help="load a model now (if it fits)")
    p.add_argument("name")
    p.add_argument("--version", type=int, default=0)
    p.set_defaults(func=cmd_load)
    p = sub.add_parser("unload", help="unload a model and end its worker")
    p.add_argument("name")
    p.set_defaults(func=cmd_unload)
    p = sub.add_parser("check", help="would it fit? admit / admit after evicting / reject")
    p.add_argument("name", nargs="?")
    p.add_argument("--file", help="an artifact not installed yet (a path on the device)")
    p.add_argument("--tier", choices=TIERS)
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("select", help="the best installed model for a task, and why")
    p.add_argument("--task", required=True)
    p.add_argument("--priority", choices=("speed", "quality", "balanced"), default="balanced")
    p.add_argument("--max-bytes", default="0", help="e.g. 512MiB")
    p.add_argument("--max-latency-ms", type=float, default=0.0)
    p.add_argument("--mode", choices=("auto", "manual", "hybrid"),
                   help="default: the daemon's selection.mode")
    p.add_argument("--pin", default="", metavar="MODEL",
                   help="use this model if it can serve (default: selection.pins)")
    p.set_defaults(func=cmd_select)
    p = sub.add_parser("infer", help="run a model on .npy inputs")
    p.add_argument("name")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy", dest="inputs")
    p.add_argument("--output", action="append", default=[], dest="outputs")
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
                     ",".join(active["tasks"]) if active else ""])
    output.table(["NAME", "VERSIONS", "ACTIVE", "TIER", "FORMAT", "SIZE", "SHA256", "STATE",
                  "TASKS"], rows)
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
        print(f"  tasks {','.join(v['tasks']) or '-'}  quality {v['quality']}  precision "
              f"{v['precision'] or '-'}  providers {','.join(v['providers']) or 'auto'}")
        print(f"  memory estimated {output.size(v['estimated_bytes'])}  measured "
              f"{output.size(v['measured_bytes'])}  load {v['load_seconds']:.3f}s  installed "
              f"{v['installed_at']}")
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


def _warmup(specs: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for spec in specs:
        name, _, dims = spec.partition("=")
        try:
            out[name] = [int(x) for x in dims.lower().split("x")]
        except ValueError:
            raise e.InvalidArgument(f"--warmup {spec!r}: expected NAME=1x3x64x64",
                                    field="warmup") from None
    return out


def _engine_info(specs: list[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not key:
            raise e.InvalidArgument(f"--engine-info {spec!r}: expected KEY=VALUE",
                                    field="engine_info")
        out[key] = value
    return out


def cmd_install(client: EdgedClient, args: argparse.Namespace) -> int:
    header = dict(version=args.version, tier=args.tier, tasks=args.tasks, quality=args.quality,
                  providers=args.providers, precision=args.precision, notes=args.notes,
                  warmup_shapes=_warmup(args.warmup), group=args.group,
                  activate=not args.no_activate,
                  allow_signature_change=args.allow_signature_change,
                  engine_info=_engine_info(args.engine_info), variant=args.variant)
    bar = output.ProgressBar(f"install {args.name}", enabled=not args.json)
    remote = args.source.startswith(("http://", "https://"))
    if remote and not args.sha256:
        raise e.InvalidArgument("installing from a URL needs --sha256", field="sha256")
    if remote or args.on_device:
        source = args.source if remote else str(Path(args.source).absolute())
        r = client.install_from(args.name, source, sha256=args.sha256, progress=bar, **header)
    else:
        path = Path(args.source)
        extra = list(args.data)
        auto = path.with_name(path.name + ".data")
        if auto.exists() and auto not in extra:
            extra.append(auto)
        r = client.install(args.name, path, sha256=args.sha256 or None, extra_files=extra,
                           progress=bar, **header)
    bar.finish()
    if args.json:
        output.emit_json({"name": args.name, "version": r.version, "sha256": r.sha256,
                          "size_bytes": r.size_bytes, "seconds": r.seconds,
                          "model": model_dict(r.model)})
    else:
        print(f"installed {args.name} v{r.version} ({output.size(r.size_bytes)}, sha256 "
              f"{r.sha256[:12]}) in {r.seconds:.2f}s")
    return 0


def cmd_remove(client: EdgedClient, args: argparse.Namespace) -> int:
    if args.version is not None and args.version < 1:  # on the wire 0 means "every version"
        raise e.InvalidArgument(f"version must be 1 or more, got {args.version} (leave it out "
                                "to remove every version)", field="version")
    removed = client.remove(args.name, args.version or 0, args.force)
    if args.json:
        output.emit_json({"name": args.name, "removed_versions": removed})
    else:
        print(f"removed {args.name} version(s) {', '.join(map(str, removed))}")
    return 0


def _model_result(args: argparse.Namespace, m: Any, verb: str) -> int:
    if args.json:
        output.emit_json(model_dict(m))
    else:
        print(f"{m.name}: {verb}; active v{m.active_version}, tier {model_dict(m)['tier']}")
    return 0


def cmd_tier(client: EdgedClient, args: argparse.Namespace) -> int:
    return _model_result(args, client.set_tier(args.name, args.tier), f"moved to {args.tier}")


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
    r = client.unload(args.name)
    if args.json:
        output.emit_json({"name": args.name, "freed_bytes": r.freed_bytes})
    else:
        print(f"unloaded {args.name} (freed {output.size(r.freed_bytes)})")
    return 0


def cmd_check(client: EdgedClient, args: argparse.Namespace) -> int:
    path = str(Path(args.file).absolute()) if args.file else None
    r = client.check(args.name, artifact_path=path, tier=args.tier)
    decision = DECISIONS.get(r.decision, "")
    if args.json:
        d = plain(r)
        d["decision"] = decision
        output.emit_json(d)
    else:
        n = r.numbers
        what = args.name or args.file
        verdict = {"admit": "admit", "admit_after_evicting":
                   f"admit after evicting {', '.join(r.evict)}", "reject": "reject"}[decision]
        print(f"{what}: {verdict}")
        print(f"  tier {n.tier}: needs {output.size(n.needed_bytes)}, budget "
              f"{output.size(n.budget_bytes)}, used {output.size(n.used_bytes)}, free "
              f"{output.size(n.free_bytes)}, reserve {output.size(n.reserve_bytes)}")
        if r.reason:
            print(f"  {r.reason}")
    return 7 if decision == "reject" else 0


def cmd_select(client: EdgedClient, args: argparse.Namespace) -> int:
    r = client.select(args.task, args.priority, parse_size(args.max_bytes), args.max_latency_ms,
                      mode=args.mode or "", pinned=args.pin)
    if args.json:
        output.emit_json(plain(r))
        return 0 if r.choice.name else 5
    if not r.choice.name:
        print(f"no installed model can do {args.task!r} now")
    else:
        print(f"{r.choice.name} v{r.choice.version}: {r.choice.reason} ({r.mode} mode)")
    for reason in r.reasons:
        print(f"  - {reason}")
    for c in r.runners_up:
        print(f"  runner-up {c.name} v{c.version}: {c.reason}")
    return 0 if r.choice.name else 5


def cmd_infer(client: EdgedClient, args: argparse.Namespace) -> int:
    inputs: dict[str, np.ndarray] = {}
    for spec in args.inputs:
        name, _, file = spec.partition("=")
        if not name or not file:
            raise e.InvalidArgument(f"--input {spec!r}: expected NAME=FILE.npy", field="input")
        try:
            inputs[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise e.InvalidArgument(f"--input {spec!r}: {exc}", field="input") from None
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

"""``edgectl variant ...`` and ``edgectl recommend``: other forms of a model, and what fits.

    edgectl variant make ppocr-rec int8                 # report only: how far outputs move
    edgectl variant make ppocr-rec int8 --accept 0.05   # install it if they move at most 5%
    edgectl variant use ppocr-rec int8 | auto           # pin the one to serve, or let edged pick
    edgectl variant remove ppocr-rec int8
    edgectl recommend ppocr-rec                         # every variant x tier: fits? batch?
    edgectl recommend --file /data/det.onnx --warmup x=1x3x640x640
"""

from __future__ import annotations

import argparse
from typing import Any

from edged import errors as e
from edged.cli import output
from edged.cli.viewjson import recommend_dict, variant_job_dict
from edged.client import EdgedClient


def register(sub: Any) -> None:
    v = sub.add_parser("variant", help="make, pin or remove variants (int8, fp16, ...) of a "
                                       "model's version")
    vsub = v.add_subparsers(dest="variant_command", required=True, metavar="ACTION")
    p = vsub.add_parser("make", help="make a variant on the device and report how far its "
                                     "outputs move from the original")
    p.add_argument("name", help="the model")
    p.add_argument("kind", choices=("int8", "fp16"), help="int8: ONNX Runtime dynamic "
                   "quantization; fp16: float16 weights and compute, float32 inputs/outputs")
    p.add_argument("--version", type=int, default=0, help="default: the active version")
    p.add_argument("--accept", type=float, default=None, metavar="CHANGE",
                   help="install it when the largest relative output change on the warm-up "
                        "inputs is at most CHANGE (e.g. 0.05); without it: report only")
    p.add_argument("--quality", type=float, default=0.0,
                   help="its quality score (default: the version's, less the output change)")
    p.set_defaults(func=cmd_make)
    p = vsub.add_parser("use", help="pin the variant requests use ('auto': edged chooses what "
                                    "fits)")
    p.add_argument("name", help="the model")
    p.add_argument("variant", help="a variant name, or auto")
    p.add_argument("--version", type=int, default=0, help="default: the active version")
    p.set_defaults(func=cmd_use)
    p = vsub.add_parser("remove", help="remove one variant (and its artifact)")
    p.add_argument("name", help="the model")
    p.add_argument("variant", help="the variant name")
    p.add_argument("--version", type=int, default=0, help="default: the active version")
    p.set_defaults(func=cmd_remove)
    r = sub.add_parser("recommend", help="which variant fits this device, in which tier, at "
                                         "what batch size")
    r.add_argument("name", nargs="?", help="an installed model")
    r.add_argument("--file", help="a model file on the device, not installed yet")
    r.add_argument("--warmup", action="append", default=[], metavar="INPUT=1x3x64x64",
                   help="the input shapes to plan for (with --file)")
    r.set_defaults(func=cmd_recommend)


def cmd_make(client: EdgedClient, args: argparse.Namespace) -> int:
    last = client.make_variant(
        args.name, args.kind, version=args.version, accept_change=args.accept,
        quality=args.quality,
        progress=None if args.json else lambda stage: print(f"  {stage} ...", flush=True))
    if args.json:
        output.emit_json(variant_job_dict(last))
        return 0
    print(f"{args.kind} variant of {args.name}: {output.size(last.size_bytes)} "
          f"(from {output.size(last.source_bytes)}) in {last.seconds:.1f}s")
    rows = [[c.output, f"{c.max_abs:.4g}", f"{c.mean_abs:.4g}", f"{c.max_rel:.4g}",
             "-" if c.argmax_agreement < 0 else f"{c.argmax_agreement:.3f}"]
            for c in last.changes]
    output.table(["OUTPUT", "MAX |DIFF|", "MEAN |DIFF|", "MAX REL", "ARGMAX AGREE"], rows)
    if last.installed:
        print(f"installed as variant {args.kind} (output change {last.worst_change:.4g})")
    else:
        print(f"not installed: {last.message}")
    return 0


def cmd_use(client: EdgedClient, args: argparse.Namespace) -> int:
    m = client.set_variant(args.name, args.variant, args.version)
    if args.json:
        output.emit_json({"name": m.name, "variant": args.variant})
    else:
        print(f"{args.name}: " + ("edged chooses the variant" if args.variant == "auto"
                                  else f"serves variant {args.variant}")
              + " (from its next load)")
    return 0


def cmd_remove(client: EdgedClient, args: argparse.Namespace) -> int:
    client.remove_variant(args.name, args.variant, args.version)
    if args.json:
        output.emit_json({"name": args.name, "removed_variant": args.variant})
    else:
        print(f"removed variant {args.variant} of {args.name}")
    return 0


def _warmup(items: list[str]) -> dict[str, list[int]]:
    out = {}
    for item in items:
        name, sep, dims = item.partition("=")
        try:
            out[name] = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            sep = ""
        if not sep or not name:
            raise e.InvalidArgument(f"--warmup {item!r}: expected INPUT=1x3x64x64",
                                    field="warmup")
    return out


def cmd_recommend(client: EdgedClient, args: argparse.Namespace) -> int:
    if bool(args.name) == bool(args.file):
        raise e.InvalidArgument("give a model name or --file", field="name")
    r = client.recommend(args.name, artifact_path=args.file, warmup_shapes=_warmup(args.warmup))
    if args.json:
        output.emit_json(recommend_dict(r))
        return 0
    rows = [[f.variant, f.tier, f.decision.replace("_", " ")
             + (f" {', '.join(f.evict)}" if f.evict else ""),
             output.size(f.estimated_bytes), output.size(f.measured_bytes) if f.measured_bytes
             else "-", f"{f.latency_ms:.2f} ms" if f.latency_ms else "-", f"{f.quality:g}",
             "-" if f.max_batch < 0 else str(f.max_batch)]
            for f in r.fits]
    output.table(["VARIANT", "TIER", "FITS", "ESTIMATED", "MEASURED", "LATENCY", "QUALITY",
                  "MAX BATCH"], rows)
    print(f"\nrecommended: {r.reason}")
    return 0

"""``edgectl`` system commands (status, events, reload) and the command registry."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from edged import errors as e
from edged.cli import model_commands, output
from edged.cli.pbjson import event_dict, status_dict
from edged.client import EdgedClient


def register(sub: Any) -> None:
    s = sub.add_parser("status", help="the device, memory, tiers and loaded models at a glance")
    s.set_defaults(func=cmd_status)
    ev = sub.add_parser("events", help="loads, evictions, preloads, rejections, switches")
    ev.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    ev.add_argument("--since", type=int, default=0, help="only events after this sequence no.")
    ev.add_argument("--kind", action="append", default=[], help="filter by kind (repeatable)")
    ev.set_defaults(func=cmd_events)
    r = sub.add_parser("reload", help="re-read the tier manifests (like SIGHUP)")
    r.set_defaults(func=cmd_reload)
    model_commands.register(sub)


def emit_error(err: e.EdgedError, exit_code: int) -> None:
    body: dict[str, Any] = {"error": {"code": err.code.value, "reason": err.reason,
                                      "message": str(err), "field": err.field or "",
                                      "exit_code": exit_code}}
    numbers = getattr(err, "numbers", None)
    if numbers is not None:
        body["error"]["capacity"] = {
            "tier": numbers.tier, "needed_bytes": numbers.needed_bytes,
            "budget_bytes": numbers.budget_bytes, "used_bytes": numbers.used_bytes,
            "free_bytes": numbers.free_bytes, "reserve_bytes": numbers.reserve_bytes,
            "evict_candidates": list(numbers.evict_candidates)}
    output.emit_json(body)


def cmd_status(client: EdgedClient, args: argparse.Namespace) -> int:
    st = status_dict(client.status())
    if args.json:
        output.emit_json(st)
        return 0
    d, m = st["device"], st["memory"]
    print(f"edged {st['version']}  {st['state']}  up {_duration(st['uptime_s'])}  "
          f"state {st['state_dir']}")
    line = f"device   {d['kind']}: {d['model']}"
    if d.get("l4t_release"):
        line += f"  (L4T {d['l4t_release']}" + (f", JetPack {d['jetpack']})" if d.get(
            "jetpack") else ")")
    print(line)
    print(f"cpu      {d['cpu_model']} x{d['cpu_count']}  {d['cpu_percent']:.0f}% busy")
    for g in d["gpus"]:
        load = "" if g["load_percent"] < 0 else f"  {g['load_percent']:.0f}% load"
        print(f"gpu      {g['name']}{load}  [{g['source']}]")
    sim = "  (simulated)" if m["simulated"] else ""
    print(f"memory   {output.size(m['available_bytes'])} available of "
          f"{output.size(m['total_bytes'])}{sim}, reserve {output.size(m['reserve_bytes'])}, "
          f"swap {output.size(m['swap_free_bytes'])} free of {output.size(m['swap_total_bytes'])}"
          + (f", NvMap {output.size(m['nvmap_used_bytes'])}" if m["nvmap_used_bytes"] else ""))
    if d["temperatures_c"]:
        temps = ", ".join(f"{k} {v:.0f}C" for k, v in sorted(d["temperatures_c"].items()))
        print(f"thermal  {temps}")
    if d["power_mw"]:
        print("power    " + ", ".join(f"{k} {v / 1000:.2f}W" for k, v in
                                      sorted(d["power_mw"].items())))
    print()
    output.table(["TIER", "BUDGET", "USED", "MODELS", "LOADED"],
                 [[name, output.size(t["budget_bytes"]), output.size(t["used_bytes"]),
                   t["models"], t["loaded"]] for name, t in st["tiers"].items()])
    if st["loaded"]:
        print()
        output.table(["LOADED", "VERSION", "TIER", "STATE", "FOOTPRINT", "IN FLIGHT", "REQUESTS",
                      "LANES", "PID"],
                     [[x["name"], x["version"], x["tier"], x["state"],
                       output.size(x["footprint_bytes"]), x["in_flight"], x["requests"],
                       x.get("lanes", 0), x["worker_pid"]] for x in st["loaded"]])
    if st["manifest_error"]:
        print(f"\nmanifest edit rejected (old manifests in force): {st['manifest_error']}")
    print(f"\ntelemetry: {', '.join(st['telemetry_sources']) or 'none'}"
          + (f"; errors: {'; '.join(st['telemetry_errors'])}" if st["telemetry_errors"] else ""))
    return 0


def cmd_events(client: EdgedClient, args: argparse.Namespace) -> int:
    for ev in client.events(follow=args.follow, since_seq=args.since, kinds=args.kind):
        d = event_dict(ev)
        if args.json:
            sys.stdout.write(json.dumps(d) + "\n")
        else:
            when = dt.datetime.fromtimestamp(ev.time).strftime("%H:%M:%S.%f")[:-3]
            model = f" {ev.model}:{ev.version}" if ev.model else ""
            extra = " ".join(f"{k}={v}" for k, v in sorted(ev.details.items()))
            print(f"{ev.seq:>6} {when} {ev.kind:<15}{model} {ev.message} {extra}".rstrip())
        sys.stdout.flush()
    return 0


def cmd_reload(client: EdgedClient, args: argparse.Namespace) -> int:
    r = client.reload()
    if args.json:
        output.emit_json({"ok": r.ok, "error": r.error, "models": r.models})
    elif r.ok:
        print(f"manifests reloaded: {r.models} models")
    else:
        print(f"reload rejected, old manifests stay in force: {r.error}", file=sys.stderr)
    return 0 if r.ok else 8


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"

"""``edgectl`` system commands (status, events, reload) and the command registry."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from edged import errors as e
from edged.cli import model_commands, output, variant_commands
from edged.cli.viewjson import event_dict, status_dict
from edged.client import EdgedClient
from edged.units import format_size


def register(sub: Any) -> None:
    s = sub.add_parser("status", help="the device, memory, tiers and loaded models at a glance")
    s.set_defaults(func=cmd_status)
    ev = sub.add_parser("events", help="loads, evictions, preloads, rejections, switches")
    ev.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    ev.add_argument("--since", type=int, default=0, help="only events after this sequence no.")
    ev.add_argument("--kind", action="append", default=[],
                    help="only events of this kind, e.g. load, evict, reject (repeatable; an "
                         "unknown kind is an error)")
    ev.set_defaults(func=cmd_events)
    r = sub.add_parser("reload", help="re-read the tier manifests (like SIGHUP)")
    r.set_defaults(func=cmd_reload)
    model_commands.register(sub)
    variant_commands.register(sub)


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
    swap = (f"swap {output.size(m['swap_free_bytes'])} free of "
            f"{output.size(m['swap_total_bytes'])}" if m["swap_total_bytes"] else "no swap")
    print(f"memory   {output.size(m['available_bytes'])} available of "
          f"{output.size(m['total_bytes'])}{sim}, reserve {output.size(m['reserve_bytes'])}"
          f" (daemon {output.size(m['daemon_rss_bytes'])} of it), "
          f"{swap}"
          + (f", NvMap {output.size(m['nvmap_used_bytes'])}" if m["nvmap_used_bytes"] else ""))
    fc = st.get("fixed_costs") or {}
    if fc:
        override = " (config override)" if fc.get("gpu_context_override") else ""
        worker = (output.size(fc["worker_bytes"]) if fc.get("worker_bytes")
                  else "not measured")
        print(f"workers  {worker} per worker, GPU context "
              f"{output.size(fc.get('gpu_context_bytes', 0))}{override}  "
              f"[{fc.get('source', 'not measured')}: {fc.get('device', '')}]")
    gb = st.get("gpu_budget") or {}
    if gb.get("budget_bytes"):
        print(f"gpu mem  budget {output.size(gb['budget_bytes'])} of "
              f"{output.size(gb.get('device_total_bytes', 0))}, used "
              f"{output.size(gb.get('used_bytes', 0))}")
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
        output.table(["LOADED", "VERSION", "VARIANT", "TIER", "STATE", "FOOTPRINT",
                      "IN FLIGHT", "REQUESTS", "LANES", "PID"],
                     [[x["name"], x["version"], x.get("variant") or "-", x["tier"], x["state"],
                       output.size(x["footprint_bytes"]), x["in_flight"], x["requests"],
                       x.get("lanes", 0), x["worker_pid"]] for x in st["loaded"]])
        for x in st["loaded"]:
            if x.get("variant_reason"):
                print(f"  {x['name']}:{x['version']} serves {x['variant']}: "
                      f"{x['variant_reason']}")
    store = st.get("store") or {}
    if store:
        loose = (f", {store['unreferenced_artifacts']} unreferenced artifact(s) kept "
                 f"({output.size(store['unreferenced_bytes'])})"
                 if store.get("unreferenced_artifacts") else "")
        print(f"\nstore    {output.size(store['installed_bytes'])} installed of "
              f"{output.size(store['budget_bytes'])} (budgets.storage){loose}")
    if st["manifest_error"]:
        print(f"\nmanifest edit rejected (old manifests in force): {st['manifest_error']}")
    for note in st.get("notes") or ():
        print(f"\nNOTE: {note}")
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
            model = f" {ev.model}" + (f":{ev.version}" if ev.version else "") if ev.model else ""
            message = "" if ev.message == ev.kind else f" {ev.message}"
            extra = "".join(f" {k}={v}" for k, v in _details(ev.details))
            print(f"{ev.seq:>6} {when} {ev.kind:<15}{model}{message}{extra}".rstrip())
        sys.stdout.flush()
    return 0


def _details(details: Any) -> list[tuple[str, str]]:
    """An event's details for people: empty ones left out, byte counts in human units
    (``freed=29.3 MiB``); ``--json`` keeps the exact numbers. Details the message already
    says in human units (a load's footprint, an install's size) are not repeated."""
    out = []
    for k, v in sorted(details.items()):
        if not v or k in ("footprint_bytes", "size_bytes"):
            continue
        if k.endswith("_bytes") and v.isdigit():
            k, v = k[: -len("_bytes")], format_size(int(v))
        out.append((k, v))
    return out


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

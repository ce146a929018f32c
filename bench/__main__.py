"""Run the benchmarks and write bench/RESULTS.md.

    python -m bench            # everything (a few minutes on 2 cores)
    python -m bench --quick    # fewer samples (under a minute)
    python -m bench --only idle
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from bench.common import REPO, environment

SECTIONS = ["idle", "daemon_rss", "latency", "lane", "grpc_path", "install", "control", "engines",
            "switch", "capacity", "faults", "variants", "disk_order"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", action="append", choices=SECTIONS)
    p.add_argument("--out", default=str(REPO / "bench" / "RESULTS.md"))
    args = p.parse_args(argv)
    started = time.time()
    parts = []
    for name in args.only or SECTIONS:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        t0 = time.time()
        sec = importlib.import_module(f"bench.{name}").run(args.quick)
        print(f"bench: {name} took {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        parts.append(sec.markdown())
        print(sec.markdown(), flush=True)
    cmd = "python -m bench" + (" --quick" if args.quick else "") + "".join(
        f" --only {o}" for o in args.only or [])
    header = (f"# edged benchmark results\n\nCommand: `{cmd}` (took {time.time() - started:.0f} s)"
              f"\n\n{environment()}\n")
    with open(args.out, "w") as f:
        f.write(header + "\n" + "\n".join(parts))
    print(f"bench: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``edgectl`` entry point: argument parsing and error → exit code; commands live apart."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

# gRPC core logs through absl to stderr (e.g. "I1201 ... Handshake failed ..." at INFO) and
# reads this once, when it loads: set before anything imports grpc. The user's setting wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from edged import __version__  # noqa: E402
from edged import errors as e  # noqa: E402
from edged.cli import commands, exitcodes  # noqa: E402
from edged.client import EdgedClient, default_target  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgectl", description="Operate an edged model daemon.")
    p.add_argument("--version", action="version", version=f"edgectl {__version__}")
    p.add_argument("--target", default=None,
                   help=f"unix:PATH or HOST:PORT (default {default_target()}; env EDGED_TARGET)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default 30)")
    p.add_argument("--json", action="store_true", help="print one JSON document, nothing else")
    p.add_argument("--token-file", type=Path, help="bearer token (TCP targets, admin calls)")
    p.add_argument("--tls-ca", type=Path, help="CA certificate of the daemon (TCP targets)")
    p.add_argument("--tls-cert", type=Path, help="client certificate (mTLS)")
    p.add_argument("--tls-key", type=Path, help="client key (mTLS)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    token = None
    token_file = args.token_file or (Path(os.environ["EDGED_TOKEN_FILE"])
                                     if os.environ.get("EDGED_TOKEN_FILE") else None)
    try:
        if token_file is not None:
            token = token_file.read_text().strip()
        client = EdgedClient(args.target, timeout=args.timeout, token=token, tls_ca=args.tls_ca,
                             tls_cert=args.tls_cert, tls_key=args.tls_key)
    except (OSError, ValueError) as exc:
        print(f"edgectl: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    try:
        with client:
            return int(args.func(client, args) or 0)
    except e.EdgedError as err:
        code = exitcodes.for_error(err)
        if args.json:
            commands.emit_error(err, code)
        print(f"edgectl: {err.code.value.lower().replace('_', ' ')}: {err}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

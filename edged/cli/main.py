"""``edgectl`` entry point: argument parsing and error → exit code; commands live apart."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

# gRPC core logs through absl to stderr (e.g. "I1201 ... Handshake failed ..." at INFO) and
# reads this once, when it loads: set before anything imports grpc. The user's setting wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from edged import __version__  # noqa: E402
from edged import errors as e  # noqa: E402
from edged.cli import commands, exitcodes, output  # noqa: E402
from edged.cli.exitcodes import LocalError  # noqa: E402
from edged.client import EdgedClient, default_target  # noqa: E402


class Parser(argparse.ArgumentParser):
    """Usage errors in one line (``edgectl install: --max-bytes: ...``), no usage dump: the
    operator sees what was wrong and where to look (``--help``); exit 2 as before."""

    def error(self, message: str) -> NoReturn:
        self.exit(exitcodes.USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds above 0, got {text!r}")
    return value


def add_global_options(p: argparse.ArgumentParser, *, after_command: bool) -> None:
    """The options of every command. They are accepted before the command and after it
    (``edgectl status --json``, as kubectl and docker do); after it, their default is
    SUPPRESS so that a value given before the command is not overwritten by the default."""
    def d(value: object) -> object:
        return argparse.SUPPRESS if after_command else value

    g = p.add_argument_group("global options")
    g.add_argument("--target", default=d(None),
                   help=f"unix:PATH or HOST:PORT (default {default_target()}; env EDGED_TARGET)")
    g.add_argument("--timeout", type=_positive_seconds, default=d(30.0),
                   help="seconds per call (default 30)")
    g.add_argument("--json", action="store_true", default=d(False),
                   help="print one JSON document, nothing else")
    g.add_argument("--token-file", type=Path, default=d(None),
                   help="bearer token (TCP targets, admin calls; env EDGED_TOKEN_FILE)")
    g.add_argument("--tls-ca", type=Path, default=d(None),
                   help="CA certificate of the daemon (TCP targets)")
    g.add_argument("--tls-cert", type=Path, default=d(None), help="client certificate (mTLS)")
    g.add_argument("--tls-key", type=Path, default=d(None), help="client key (mTLS)")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="edgectl", description="Operate an edged model daemon.")
    p.add_argument("--version", action="version", version=f"edgectl {__version__}",
                   help="print edgectl's version and exit")
    add_global_options(p, after_command=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.register(sub)
    for command in sub.choices.values():
        add_global_options(command, after_command=True)
    return p


def _read_token(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise LocalError(f"--token-file {path}: no such file") from None
    except PermissionError:
        raise LocalError(f"--token-file {path}: not readable by this user") from None
    except IsADirectoryError:
        raise LocalError(f"--token-file {path}: is a directory, not a token file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LocalError(f"--token-file {path}: cannot read it ({exc})") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    token = None
    token_file = args.token_file or (Path(os.environ["EDGED_TOKEN_FILE"])
                                     if os.environ.get("EDGED_TOKEN_FILE") else None)
    try:
        if token_file is not None:
            token = _read_token(token_file)
        client = EdgedClient(args.target, timeout=args.timeout, token=token, tls_ca=args.tls_ca,
                             tls_cert=args.tls_cert, tls_key=args.tls_key)
    except (LocalError, OSError, ValueError) as exc:  # the token file, a malformed target
        print(f"edgectl: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    try:
        with client:
            return int(args.func(client, args) or 0)
    except LocalError as exc:
        if args.json:
            output.emit_json({"error": {"code": "LOCAL", "reason": "LOCAL_FILE",
                                        "message": str(exc), "field": exc.field,
                                        "exit_code": exitcodes.USAGE}})
        print(f"edgectl {args.command}: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    except e.EdgedError as err:
        code = exitcodes.for_error(err)
        if args.json:
            commands.emit_error(err, code)
        label = "" if code == exitcodes.UNREACHABLE else \
            f"{err.code.value.lower().replace('_', ' ')}: "
        print(f"edgectl: {label}{err}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edgectl events | head`: the reader is done, so are we
        return 0
    except OSError as exc:  # writing --save outputs, reading a file mid-command
        where = f" {exc.filename}" if exc.filename else ""
        print(f"edgectl {args.command}:{where}: {exc.strerror or exc}", file=sys.stderr)
        return exitcodes.USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

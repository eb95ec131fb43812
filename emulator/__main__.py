"""``python -m emulator``: run the Realtime Database emulator until Ctrl-C (same as ``peerchat emulator``)."""

from __future__ import annotations

import argparse
import sys

from . import DEFAULT_PORT

PROG = "python -m emulator"


def add_arguments(
    parser: argparse.ArgumentParser, rules_help: str = "security rules file applied to every namespace"
) -> None:
    """The emulator's options, shared with ``peerchat emulator``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on (default: %(default)s)")
    parser.add_argument("--rules", metavar="PATH", help=rules_help)
    parser.add_argument("--keepalive", type=float, default=30.0, metavar="SECONDS",
                        help="seconds between keep-alive events on idle streams (default: %(default)s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    from .server import run_emulator  # aiohttp loads here, not for the argument parser

    return run_emulator(args.host, args.port, rules=args.rules, keepalive_interval=args.keepalive,
                        print_line=lambda line: print(line, flush=True),
                        print_error=lambda line: print(f"{PROG}: {line}", file=sys.stderr, flush=True))


if __name__ == "__main__":
    sys.exit(main())

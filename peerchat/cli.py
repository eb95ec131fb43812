"""peerchat's command line: ``peerchat <command>``; ``peerchat emulator`` runs a local Realtime Database emulator."""

from __future__ import annotations

import argparse
import sys

from core.emulator.__main__ import add_arguments as add_emulator_arguments
from core.emulator.server import run_emulator

PROG = "peerchat emulator"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one subcommand per action (others add theirs here)."""
    parser = argparse.ArgumentParser(prog="peerchat", description="Chat and move files between your own devices.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    emulator = commands.add_parser(
        "emulator", help="run a local Realtime Database emulator",
        description="Run a local Firebase Realtime Database emulator until Ctrl-C.")
    add_emulator_arguments(emulator)
    emulator.set_defaults(handler=_emulator)
    return parser


def _emulator(args: argparse.Namespace) -> int:
    return run_emulator(args.host, args.port, rules=args.rules, keepalive_interval=args.keepalive,
                        print_line=lambda line: print(line, flush=True),
                        print_error=lambda line: print(f"{PROG}: {line}", file=sys.stderr, flush=True))


def main(argv: list[str] | None = None) -> None:
    """The ``peerchat`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        print("peerchat: the chat app is not there yet; running the emulator (see `peerchat --help`).", flush=True)
        args = parser.parse_args(["emulator"])
    sys.exit(args.handler(args))

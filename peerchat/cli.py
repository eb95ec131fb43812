"""peerchat's command line: ``peerchat`` starts the app; ``peerchat emulator`` runs a local Realtime Database
emulator; ``peerchat peers|send|receive`` are the headless commands (see :mod:`peerchat.commands`)."""

from __future__ import annotations

import argparse
import sys

from emulator.__main__ import add_arguments as add_emulator_arguments
from peerchat.commandline import register as register_commands
from peerchat.config import add_settings_arguments

PROG = "peerchat emulator"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one subcommand per action (others add theirs here)."""
    parser = argparse.ArgumentParser(prog="peerchat", description="Chat and move files between your own devices.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    emulator = commands.add_parser(
        "emulator", help="run a local Realtime Database emulator",
        description="Run a local Firebase Realtime Database emulator until Ctrl-C.")
    add_emulator_arguments(emulator, rules_help="security rules file applied to every namespace "
                           "(default: peerchat's own rules)")
    emulator.set_defaults(handler=_emulator)
    register_commands(commands)
    add_settings_arguments(parser)
    parser.set_defaults(handler=_app)
    return parser


def _command(args: argparse.Namespace) -> int:
    from peerchat.commands import run_command  # core and asyncio load here, once a headless command really runs

    return run_command(args)


def _app(args: argparse.Namespace) -> int:
    from peerchat.app import run_app  # Textual loads only for the app, not for the headless commands

    return run_app(args)


def _emulator(args: argparse.Namespace) -> int:
    from emulator.server import run_emulator  # aiohttp loads for this command only

    from peerchat.rules import RulesMissingError, rules_file

    rules = args.rules
    if rules is None:  # peerchat's own rules unless told otherwise, as in the embedded emulator
        try:
            rules = str(rules_file())
        except RulesMissingError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
            return 2
    return run_emulator(args.host, args.port, rules=rules, keepalive_interval=args.keepalive,
                        print_line=lambda line: print(line, flush=True),
                        print_error=lambda line: print(f"{PROG}: {line}", file=sys.stderr, flush=True))


def main(argv: list[str] | None = None) -> None:
    """The ``peerchat`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the subcommand's own parser, with its own usage (`peerchat send --bogus`)
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "command_main", None) is not None:  # a headless command (peerchat.commandline)
        sys.exit(_command(args))
    sys.exit(args.handler(args))  # the emulator, or no command: the app

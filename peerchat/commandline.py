"""The headless commands' argument parsers, kept apart from the commands themselves.

``peerchat --help`` and ``peerchat send --help`` build every parser, but run no command: this module imports only
argparse and the settings, so asking for help loads neither ``core`` nor asyncio. Each parser names the function that
runs its command as ``module:function`` (``command_main``); :func:`peerchat.commands.run_command` imports it when the
command really runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from .config import add_settings_arguments

EPILOG = ("exit codes: 0 ok, 1 unexpected error, 2 bad usage, 3 device not online, 4 relay unreachable, "
          "5 timed out, 6 declined/failed/closed, 130 interrupted")


def register(subparsers: Any) -> None:
    """Add ``peers``, ``send``, ``receive`` and ``devices`` to an argparse subparsers object."""
    peers = subparsers.add_parser("peers", help="list this user's other online devices", epilog=EPILOG)
    peers.add_argument("--wait", type=float, default=2.0, metavar="S",
                       help="how long to wait for the first device to show up (default: 2)")
    _runs(peers, "peerchat.commands:peers_main")

    send = subparsers.add_parser("send", help="send text and files to one of your devices", epilog=EPILOG)
    send.add_argument("device", metavar="DEVICE", help="the device's label or id")
    send.add_argument("files", metavar="FILE", nargs="*", help="files or folders to send; - sends standard input as "
                      "a file")
    send.add_argument("--text", help="a message to send before the files; - reads it from standard input")
    send.add_argument("--name", help="the file name standard input is sent as (with FILE -; default: stdin)")
    send.add_argument("--wait", type=float, default=10.0, metavar="S",
                      help="how long to wait for DEVICE to come online (default: 10)")
    _runs(send, "peerchat.commands:send_main")

    receive = subparsers.add_parser("receive", help="stay online and save what your devices send", epilog=EPILOG)
    receive.add_argument("--count", type=int, metavar="N", help="exit after N texts and files (default: keep receiving)")
    receive.add_argument("--timeout", type=float, metavar="S", help="exit after S seconds (code 5 if --count "
                         "was not reached; default: wait for ever)")
    receive.add_argument("--stdout", action="store_true", help="write the first text or file received to standard "
                         "output (a file byte for byte, a text with a newline) and exit; everything else goes to "
                         "standard error")
    _runs(receive, "peerchat.commands:receive_main")  # --download-dir is one of the settings

    devices = subparsers.add_parser("devices", help="list, verify and forget your devices' keys", epilog=EPILOG)
    actions = devices.add_subparsers(dest="devices_action", metavar="ACTION")
    verify = actions.add_parser("verify", help="compare the code both devices show; mark the device verified")
    verify.add_argument("device", metavar="DEVICE", help="the device's label or id")
    verify.add_argument("--yes", action="store_true", help="mark it verified without asking (the codes matched)")
    _runs(verify, "peerchat.trust_commands:verify_main")
    forget = actions.add_parser("forget", help="forget a device's key (after it was reinstalled)")
    forget.add_argument("device", metavar="DEVICE", help="the device's label or id")
    _runs(forget, "peerchat.trust_commands:forget_main")
    devices.add_argument("--wait", type=float, default=2.0, metavar="S",
                         help="how long to wait for presence to arrive (default: 2)")
    _runs(devices, "peerchat.trust_commands:list_main")


def _runs(parser: argparse.ArgumentParser, target: str) -> None:
    add_settings_arguments(parser)
    parser.set_defaults(command_main=target, command_parser=parser)

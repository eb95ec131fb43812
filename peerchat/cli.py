"""peerchat's command line."""


def main() -> None:
    raise SystemExit("peerchat: not yet implemented")

"""``python -m peerchat``: the same as the ``peerchat`` command."""

from .cli import main

main()

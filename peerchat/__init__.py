"""peerchat: chat and move files between your own devices, from a terminal."""

"""peerchat's reusable peer-to-peer connection library (no Textual, no peerchat imports)."""

__all__: list[str] = []

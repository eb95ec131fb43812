"""Utilities shared inside ``core``: :func:`cancel_and_wait`, :func:`spawn` and :func:`emit_safely`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from pyee.asyncio import AsyncIOEventEmitter

log = logging.getLogger("core")


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel ``task`` (if any) and wait until it has finished; its cancellation is not raised here."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def emit_safely(emitter: AsyncIOEventEmitter, name: str, payload: object) -> None:
    """Emit ``name``; a consumer's handler that raises is logged, never allowed to break the protocol or a link."""
    try:
        emitter.emit(name, payload)
    except Exception:  # noqa: BLE001 - the boundary to consumer code
        log.exception("a %r event handler failed", name)


def spawn(
    tasks: set[asyncio.Future[Any]], coroutine: Coroutine[Any, Any, Any] | asyncio.Future[Any]
) -> asyncio.Future[Any]:
    """Run ``coroutine`` as a background task held in ``tasks`` until it ends (asyncio keeps only weak references
    to tasks, and the owner cancels what is left in ``tasks`` when it closes)."""
    task = asyncio.ensure_future(coroutine)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task

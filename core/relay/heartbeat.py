"""The heartbeat task: writes this device's presence record every interval (see :mod:`core.protocol.presence`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .._tasks import cancel_and_wait
from ..errors import RelayUnavailableError
from ..protocol.records import heartbeat_record

log = logging.getLogger(__name__)


class Heartbeat:
    """Writes this device's heartbeat every ``interval`` seconds until stopped; write errors are retried, and a
    write still unanswered after each ``interval`` is reported as a failure too.

    Args:
        write: an async function writing one heartbeat record (it raises on failure).
        on_error: called with each write failure (the task keeps going).
        on_success: called after each periodic write that succeeded.
    """

    def __init__(
        self,
        write: Callable[[dict[str, Any]], Awaitable[None]],
        label: str,
        interval: float,
        on_error: Callable[[BaseException], None] | None = None,
        on_success: Callable[[], None] | None = None,
        key: str | None = None,
    ) -> None:
        self._write = write
        self._label = label
        self._key = key
        self._interval = interval
        self._on_error = on_error
        self._on_success = on_success
        self._task: asyncio.Task[None] | None = None
        self.beats = 0
        self.failures = 0

    async def beat(self) -> None:
        await self._write(heartbeat_record(self._label, key=self._key))
        self.beats += 1

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="presence-heartbeat")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            write = asyncio.ensure_future(self.beat())
            try:
                # A write the network does not answer (a black-holed connection waits for the HTTP time-out)
                # counts as one failure per interval it stays unanswered.
                waited = 0.0
                while not (await asyncio.wait({write}, timeout=self._interval))[0]:
                    waited += self._interval
                    self._failed(RelayUnavailableError(
                        f"The database has not answered this device's heartbeat for {waited:.1f} s. "
                        "Check the network connection."
                    ))
                write.result()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reported, and the next beat retries
                self._failed(exc)
            else:
                if self._on_success is not None:
                    self._on_success()
            finally:
                if not write.done():
                    write.cancel()

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        log.warning("heartbeat failed: %s", exc)
        if self._on_error is not None:
            self._on_error(exc)

    async def stop(self) -> None:
        """Stop beating (does not write the offline record: the owner does that)."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

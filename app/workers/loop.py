"""A small polling loop: run a step, rest when there was nothing to do, stop on request."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

log = logging.getLogger(__name__)


def freeze_start_up() -> None:
    """Keep what start-up made (modules, models and their mappers, the app and its routes:
    100,000 objects and more) out of the garbage collector's full passes: it lives as long
    as the process, and each full pass over it would stall the loop for ~50 ms (a request,
    a claim). Called once services are built, before they run."""
    gc.collect()
    gc.freeze()


class LoopService:
    """Subclasses implement `run_once`, returning True when more work may be waiting now."""

    name = "loop"

    def __init__(self, interval_seconds: float) -> None:
        self.interval_seconds = interval_seconds
        self.stopping = asyncio.Event()

    async def run_once(self) -> bool:
        raise NotImplementedError

    async def run(self) -> None:
        """Loop until `stop()`; an error in one step is logged and the loop goes on."""
        log.info("%s started", self.name)
        while not self.stopping.is_set():
            try:
                busy = await self.run_once()
            except Exception:
                log.exception("%s: step failed; trying again shortly", self.name)
                busy = False
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), self.interval_seconds)
        log.info("%s stopped", self.name)

    def stop(self) -> None:
        self.stopping.set()

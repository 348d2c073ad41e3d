"""The ASGI app: `app.main:app`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from app import errors, health
from app.api import router as api_router
from app.config import Settings, get_settings
from app.kit import embedded
from app.kit.crypto import SecretBox
from app.kit.db import autocommit_sessionmaker, create_engine, create_sessionmaker
from app.kit.limits import BodySizeLimit
from app.providers import codes
from app.workers.base import LoopService
from app.workers.delivery import DeliveryWorker
from app.workers.receipts import ReceiptApplier

log = logging.getLogger(__name__)

DESCRIPTION = """\
Campanile sends SMS campaigns for schools and tells staff, contact by contact, what
became of each message: Delivered, still being retried (Pending / Scheduled / Still in
Queue), or Failed with a reason a person understands.

Authenticate with `Authorization: Bearer <api key>`. Errors are `application/problem+json`.
"""


def bind(app: FastAPI, settings: Settings) -> None:
    """Attach what requests need to `app.state` (the lifespan, or a test, calls this)."""
    assert settings.database_url is not None and settings.secret_key is not None
    app.state.settings = settings
    app.state.engine = create_engine(settings.database_url)
    app.state.sessionmaker = create_sessionmaker(app.state.engine)
    # The status webhooks store receipts through a pool of their own, one autocommitted
    # INSERT per receipt and no pings (`app.delivery.receipts.keep` retries a dropped one).
    # No overflow: a burst of callbacks queues for a connection (each is held for one
    # INSERT) instead of opening and closing connections by the hundred.
    app.state.inbox_engine = create_engine(
        settings.database_url, pool_size=10, max_overflow=0, pre_ping=False
    )
    app.state.inbox = autocommit_sessionmaker(app.state.inbox_engine)
    app.state.secret_box = SecretBox(settings.secret_key)
    app.state.http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0))


async def unbind(app: FastAPI) -> None:
    await app.state.http.aclose()
    await app.state.engine.dispose()
    await app.state.inbox_engine.dispose()


def create_app(
    settings: Settings | None = None, *, run_worker: bool = False, apply_receipts: bool = False
) -> FastAPI:
    """The app. `run_worker` runs the delivery worker in this process and `apply_receipts`
    the receipt applier (`campanile serve` always applies, so webhooks take effect)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = embedded.resolve(settings)
        codes.configure(resolved)  # a broken code-table override stops the start here
        bind(app, resolved)
        services: list[LoopService] = []
        if apply_receipts:
            services.append(ReceiptApplier(app.state.sessionmaker, resolved))
        worker: DeliveryWorker | None = None
        if run_worker:
            worker = DeliveryWorker(
                app.state.sessionmaker, resolved, app.state.http, app.state.secret_box
            )
            app.state.registry = worker.registry
            services.append(worker)
        tasks = [asyncio.create_task(s.run(), name=s.name) for s in services]
        try:
            yield
        finally:
            for service in services:
                service.stop()  # the delivery worker finishes or releases what it claimed
            await asyncio.gather(*tasks)
            if worker is not None:
                await worker.aclose()
            await unbind(app)

    app = FastAPI(
        title="Campanile",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(api_router)
    return app


app = create_app()

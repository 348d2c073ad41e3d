"""The ASGI app: `app.main:app`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import errors, health
from app.api import router as api_router
from app.config import Settings, get_settings
from app.kit import embedded
from app.kit.crypto import SecretBox
from app.kit.db import create_engine, create_sessionmaker
from app.kit.http import outbound_client
from app.kit.limits import BodySizeLimit
from app.providers import codes
from app.workers.delivery import DeliveryWorker

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
    app.state.secret_box = SecretBox(settings.secret_key)
    app.state.http = outbound_client()


async def unbind(app: FastAPI) -> None:
    await app.state.http.aclose()
    await app.state.engine.dispose()


def create_app(settings: Settings | None = None, *, run_worker: bool = False) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = embedded.resolve(settings)
        codes.configure(resolved)  # a broken code-table override stops the start here
        bind(app, resolved)
        worker: DeliveryWorker | None = None
        task: asyncio.Task[None] | None = None
        if run_worker:
            worker = DeliveryWorker(
                app.state.sessionmaker, resolved, app.state.http, app.state.secret_box
            )
            app.state.registry = worker.registry
            task = asyncio.create_task(worker.run(), name="delivery worker")
        try:
            yield
        finally:
            if worker is not None and task is not None:
                worker.stop()  # finishes or releases what it claimed
                await task
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

"""The ASGI app: `app.main:app`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app import api, errors, health
from app.config import Settings, get_settings
from app.console import endpoints as console
from app.events.stream import Broadcaster
from app.kit import embedded, examples
from app.kit.crypto import SecretBox
from app.kit.db import Inbox, create_engine, create_sessionmaker
from app.kit.http import outbound_client
from app.kit.limits import BodySizeLimit
from app.kit.rate_limit import InFlight, TokenBuckets
from app.kit.request_id import RequestId
from app.providers import codes
from app.schools.service import KnownKeys, LastUsed
from app.webhooks.twilio_fast_path import TwilioStatusFastPath
from app.workers.audit_pruner import AuditPruner
from app.workers.delivery import DeliveryWorker
from app.workers.events import EventDeliverer, EventPruner
from app.workers.last_used import LastUseWriter
from app.workers.loop import LoopService, freeze_start_up
from app.workers.receipt_applier import ReceiptApplier
from app.workers.reconciler import ReconciliationLoop

log = logging.getLogger(__name__)

DESCRIPTION = """\
Campanile sends SMS campaigns for schools and tells staff, contact by contact, what
became of each message: Delivered, still being retried (Pending / Scheduled / Still in
Queue), or Failed with a reason a person understands.

Authenticate with `Authorization: Bearer <api key>` (the `SchoolApiKey` scheme; the admin
operations take `Bearer <ADMIN_TOKEN>`, the `AdminToken` scheme). Errors are
`application/problem+json` (RFC 9457), all of one shape: `Problem`.

Lists take `?limit=` (1-500, default 50) and `?cursor=` (the previous page's `next_cursor`)
and answer `{"items": [...], "next_cursor": str | null}`. Timestamps are RFC 3339 UTC; ids
are opaque strings.
"""


def bind(app: FastAPI, settings: Settings) -> None:
    """Attach what requests need to `app.state` (the lifespan, or a test, calls this)."""
    assert settings.database_url is not None and settings.secret_key is not None
    app.state.settings = settings
    app.state.engine = create_engine(settings.database_url)
    app.state.sessionmaker = create_sessionmaker(app.state.engine)
    # The webhooks keep receipts on a pool of their own: one INSERT each, no ORM.
    app.state.inbox = Inbox.pool(settings.database_url)
    app.state.secret_box = SecretBox(settings.secret_key)
    app.state.http = outbound_client()
    # The campaigns' live streams (started by the first one).
    app.state.broadcaster = Broadcaster(app.state.sessionmaker, settings.database_url)


async def unbind(app: FastAPI) -> None:
    await app.state.broadcaster.stop()  # the streams end
    await app.state.http.aclose()
    await app.state.engine.dispose()
    await app.state.inbox.aclose()


def create_app(settings: Settings | None = None, *, run_worker: bool = False) -> FastAPI:
    """The app; `run_worker` runs the delivery worker in this process: its sending loop
    and its receipt applier."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = embedded.resolve(settings)
        codes.configure(resolved)  # a broken code-table override stops the start here
        bind(app, resolved)
        services: list[LoopService] = [LastUseWriter(app.state.sessionmaker, app.state.last_used)]
        worker: DeliveryWorker | None = None
        if run_worker:
            worker = DeliveryWorker(
                app.state.sessionmaker,
                resolved,
                app.state.http,
                app.state.secret_box,
                app.state.inbox,
            )
            app.state.registry = worker.registry
            services += [
                worker,
                ReceiptApplier(app.state.sessionmaker, resolved),
                ReconciliationLoop(
                    app.state.sessionmaker, resolved, worker.registry, app.state.inbox
                ),
                AuditPruner(app.state.sessionmaker, resolved),
                EventPruner(app.state.sessionmaker, resolved),
                EventDeliverer(app.state.sessionmaker, resolved, app.state.secret_box),
            ]
        tasks = [asyncio.create_task(s.run(), name=s.name) for s in services]
        freeze_start_up()
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
        openapi_tags=api.TAGS,
        generate_unique_id_function=api.operation_id,
    )

    def openapi() -> dict[str, Any]:
        # FastAPI's document, completed with the errors every operation can answer.
        if app.openapi_schema is None:
            app.openapi_schema = errors.document(examples.restore(FastAPI.openapi(app)))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # Every request's id, behind the fast path: Twilio's status callbacks need none.
    app.add_middleware(RequestId)
    # Twilio's status callbacks are answered in front of the FastAPI stack (the hot path:
    # app.webhooks.twilio_fast_path), inside the body limit (the last added is outermost).
    app.add_middleware(TwilioStatusFastPath)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    # Per process (README, Rate limits), as is what keeps `last_used_at` to the minute.
    per_minute = settings.rate_limit_per_minute
    app.state.rate_limits = TokenBuckets(per_minute) if per_minute else None
    in_flight = settings.rate_limit_in_flight
    app.state.in_flight = InFlight(in_flight) if in_flight else None
    app.state.last_used = LastUsed()
    app.state.known_keys = KnownKeys()
    errors.install(app)
    app.include_router(health.router)
    app.include_router(api.router)
    app.include_router(console.router)
    return app


app = create_app()

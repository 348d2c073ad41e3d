"""The baseline of bench/webhooks.py: the least a status-callback handler can do.

    DATABASE_URL=postgresql://... python bench/webhook_baseline.py --port 8101 [--autocommit]

A bare ASGI app (no framework) served by uvicorn with its defaults, as `campanile serve`
is (uvloop and httptools when installed, one process), with an asyncpg pool as large as
the service's SQLAlchemy pool can grow (10 + 10 overflow). For each form POST it parses
the form, then runs one raw UPDATE of the attempt and one INSERT of the receipt (ON
CONFLICT DO NOTHING; marked applied, as it is, so the service's receipt applier leaves
it alone), in one transaction by default (`--autocommit`: two autocommitted
statements, two round trips fewer). No signature check, no account lookup, no status
rules: what the service's own work is measured against.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
import uvicorn
from _db import plain_url  # bench/_db.py

UPDATE = """
    UPDATE attempts SET status = $1, error_code = coalesce($3, error_code), updated_at = now()
    WHERE provider = 'twilio' AND provider_message_id = $2
"""
INSERT = """
    INSERT INTO receipts (provider, event_id, provider_message_id, provider_status, error_code,
                          applied_at)
    VALUES ('twilio', $1, $2, $3, $4, now())
    ON CONFLICT DO NOTHING
"""
POOL_MAX = 20  # the service: create_engine(pool_size=10, max_overflow=10)


class Baseline:
    def __init__(self, database_url: str, *, autocommit: bool) -> None:
        self.database_url = plain_url(database_url)
        self.autocommit = autocommit
        self.pool: asyncpg.Pool | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        form = dict(parse_qsl(body.decode("utf-8")))
        sid = form.get("MessageSid")
        status = (form.get("MessageStatus") or "").lower()
        if scope["method"] != "POST" or not sid or not status:
            await respond(send, 400)
            return
        code = form.get("ErrorCode") or None
        event_id = hashlib.sha256(f"{sid}|{status}|{code or ''}".encode()).hexdigest()
        assert self.pool is not None
        async with self.pool.acquire() as connection:
            if self.autocommit:
                await connection.execute(UPDATE, status, sid, code)
                await connection.execute(INSERT, event_id, sid, status, code)
            else:
                async with connection.transaction():
                    await connection.execute(UPDATE, status, sid, code)
                    await connection.execute(INSERT, event_id, sid, status, code)
        await respond(send, 204)

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.pool = await asyncpg.create_pool(
                    self.database_url, min_size=1, max_size=POOL_MAX
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.pool is not None:
                    await self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def respond(send: Any, status: int) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--autocommit", action="store_true")
    args = parser.parse_args()
    app = Baseline(os.environ["DATABASE_URL"], autocommit=args.autocommit)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

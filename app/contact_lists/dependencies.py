"""The body of an import, read raw: FastAPI would parse JSON only, and imports may be CSV."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from app.contact_lists import parsing
from app.contact_lists.parsing import ContactRow
from app.kit.deps import SettingsDep


async def import_rows(request: Request, settings: SettingsDep) -> list[ContactRow]:
    content_type = request.headers.get("content-type")
    parsing.media_type(content_type)  # 415 before reading a body we cannot use
    body = await request.body()
    # Reading a body is CPU work (half a second for 100,000 CSV rows): off the event loop.
    return await run_in_threadpool(parsing.read_rows, body, content_type, settings.max_import_rows)


ImportRows = Annotated[list[ContactRow], Depends(import_rows)]

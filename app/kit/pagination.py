"""Keyset pagination: `?limit=&cursor=`, answered as `{items, next_cursor}`."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from app.errors import BadRequest, ErrorDoc

T = TypeVar("T")

Limit = Annotated[int, Query(ge=1, le=500, description="Page size (1-500).")]
Cursor = Annotated[
    str | None, Query(description="`next_cursor` of the previous page; omit for the first.")
]


# What a list answers when its `cursor` is not one the service issued (`decode_cursor`).
CURSOR_ERROR: ErrorDoc = (
    BadRequest,
    "The cursor is not one this service issued for this list (`next_cursor` is opaque).",
)


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """A page of items shows its item's examples, as a page with no next one."""
        schema = handler(core_schema)
        item = cls.__pydantic_generic_metadata__["args"]
        extra = item[0].model_config.get("json_schema_extra") if item else None
        if isinstance(extra, dict) and isinstance(examples := extra.get("examples"), list):
            schema["examples"] = [{"items": examples, "next_cursor": None}]
        return schema


def encode_cursor(*values: Any) -> str:
    raw = json.dumps(list(values), default=str, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, *parsers: Callable[[Any], Any]) -> list[Any] | None:
    """The values a cursor carries, each passed through its parser (e.g. `uuid.UUID`,
    `datetime.fromisoformat`), or None for the first page. Anything else is a 400."""
    if cursor is None:
        return None
    bad = BadRequest("The cursor is not one this service issued.")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad from exc
    if not isinstance(values, list) or len(values) != len(parsers):
        raise bad
    try:
        return [parse(value) for parse, value in zip(parsers, values, strict=True)]
    except (ValueError, TypeError, OverflowError) as exc:
        raise bad from exc


def text_key(value: Any) -> str:
    """A cursor value that must be text (and storable: no NUL)."""
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError("not a text key")
    return value


def uuid_key(value: Any) -> uuid.UUID:
    return uuid.UUID(text_key(value))


def time_key(value: Any) -> datetime:
    """A timezone-aware timestamp (as `isoformat()` wrote it)."""
    moment = datetime.fromisoformat(text_key(value))
    if moment.tzinfo is None:
        raise ValueError("not an aware timestamp")
    return moment


def int_key(value: Any) -> int:
    """A cursor value that must be a BIGINT id."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ValueError("not an id")
    return value


def page_of(rows: list[T], limit: int, key: Any) -> tuple[list[T], str | None]:
    """Given up to limit+1 rows, the page and the cursor after it (`key(row)` -> tuple)."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(*key(rows[-1]))

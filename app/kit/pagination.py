"""Keyset pagination: `?limit=&cursor=`, answered as `{items, next_cursor}`."""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from app.errors import BadRequest

T = TypeVar("T")

Limit = Annotated[int, Query(ge=1, le=500, description="Page size (1-500).")]
Cursor = Annotated[
    str | None, Query(description="`next_cursor` of the previous page; omit for the first.")
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(*values: Any) -> str:
    raw = json.dumps(list(values), default=str, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, arity: int) -> list[Any] | None:
    """The values a cursor carries, or None for the first page; a bad cursor is a 400."""
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("The cursor is not one this service issued.") from exc
    if not isinstance(values, list) or len(values) != arity:
        raise BadRequest("The cursor is not one this service issued.")
    return values


def page_of(rows: list[T], limit: int, key: Any) -> tuple[list[T], str | None]:
    """Given up to limit+1 rows, the page and the cursor after it (`key(row)` -> tuple)."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(*key(rows[-1]))

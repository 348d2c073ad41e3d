"""Shared Pydantic bases and constrained types."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, field_validator

from app.errors import NotFound


class Schema(BaseModel):
    """Response schemas: lenient, read straight from ORM attributes."""

    model_config = ConfigDict(from_attributes=True)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


class RequestSchema(BaseModel):
    """Request schemas: strict, unknown fields are an error, and no text may hold a NUL
    character (PostgreSQL text cannot store one)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if _has_nul(value):
            raise ValueError("text must not contain NUL characters")
        return value


# A query-string text: no NUL characters either.
NoNul = r"^[^\x00]*$"


# Ids are opaque strings to clients, whatever the column type behind them.
Id = Annotated[str, BeforeValidator(str), PlainSerializer(str, return_type=str)]


def parse_uuid(value: str, what: str) -> uuid.UUID:
    """A path id that cannot be one of ours is simply not found."""
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise NotFound(f"No {what} with id {value!r}.") from exc


def parse_int_id(value: str, what: str) -> int:
    if not value.isdigit() or len(value) > 18:
        raise NotFound(f"No {what} with id {value!r}.")
    return int(value)

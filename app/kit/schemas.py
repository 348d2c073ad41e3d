"""Shared Pydantic bases and constrained types."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from app.errors import NotFound


class Schema(BaseModel):
    """Response schemas: lenient, read straight from ORM attributes."""

    model_config = ConfigDict(from_attributes=True)


class RequestSchema(BaseModel):
    """Request schemas: strict, unknown fields are an error."""

    model_config = ConfigDict(extra="forbid")


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

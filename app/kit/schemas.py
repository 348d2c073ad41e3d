"""Shared Pydantic bases and constrained types."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetJsonSchemaHandler,
    PlainSerializer,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

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


# A text without NUL characters, as a JSON Schema pattern.
NoNul = r"^[^\x00]*$"
# What a schema says of its own: left as it is.
_NOT_SCHEMAS = frozenset({"example", "examples", "default", "const", "enum", "description"})


# The characters `str.strip()` strips (those `str.isspace()` holds), for patterns.
SPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# A text that is not blank once stripped, without NUL characters.
NOT_BLANK = rf"^[^\x00]*[^\x00{SPACE}][^\x00]*$"


def text_only(node: Any) -> Any:
    """A JSON Schema (or an OpenAPI fragment holding some) saying, of every string it
    declares without a pattern, enum or format, and of every object's property names, that
    they hold no NUL character: what `RequestSchema` enforces. Changed in place."""
    if isinstance(node, list):
        for item in node:
            text_only(item)
    if not isinstance(node, dict):
        return node
    if node.get("type") == "string" and not {"pattern", "enum", "const", "format"} & set(node):
        node["pattern"] = NoNul
    if node.get("type") == "object" and node.get("additionalProperties", False) is not False:
        names = node.setdefault("propertyNames", {})
        if not {"pattern", "enum", "const", "format"} & set(names):
            names["pattern"] = NoNul
    for key, value in node.items():
        if key == "properties":  # names of properties, not keywords: each is a schema
            for schema in value.values():
                text_only(schema)
        elif key not in _NOT_SCHEMAS and key != "propertyNames":
            text_only(value)
    return node


class RequestSchema(BaseModel):
    """Request schemas: strict, unknown fields are an error, and no text may hold a NUL
    character (PostgreSQL text cannot store one); their JSON Schema says so."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        for field in handler.resolve_ref_schema(schema).get("properties", {}).values():
            text_only(field)
        return schema

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if _has_nul(value):
            raise ValueError("text must not contain NUL characters")
        return value


RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"


def _rfc3339(value: Any) -> Any:
    # Pydantic would also read numbers, and strings of digits, as Unix times.
    if not isinstance(value, str) or not re.fullmatch(RFC3339, value):
        raise ValueError("must be an RFC 3339 date-time with an offset: 2026-09-01T08:00:00Z")
    return value


# A moment a request gives: RFC 3339 text with its offset (the document's `date-time`).
Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


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

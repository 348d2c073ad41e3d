from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from app.kit import examples
from app.kit.schemas import NOT_BLANK, Id, RequestSchema, Schema

NAME_MAX = 200


def _no_nul(value: str) -> str:
    # PostgreSQL text and JSONB cannot hold U+0000; refuse it here rather than fail in SQL.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
PersonName = Annotated[Text, Field(max_length=NAME_MAX)]
FieldName = Annotated[Text, Field(min_length=1)]


class ContactListCreate(RequestSchema):
    model_config = examples.config({"name": examples.CONTACT_LIST["name"]})

    name: str = Field(
        min_length=1,
        max_length=NAME_MAX,
        examples=["Grade 5 families"],
        json_schema_extra={"pattern": NOT_BLANK},
    )

    @field_validator("name")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = _no_nul(value.strip())
        if not value:
            raise ValueError("must not be blank")
        return value


class ContactList(Schema):
    model_config = examples.config(examples.CONTACT_LIST)

    id: Id
    name: str
    contact_count: int = Field(description="How many contacts the list holds.")
    created_at: datetime


class ContactIn(RequestSchema):
    """One contact to import; `phone` is judged row by row, not rejected by validation."""

    phone: Text = Field(
        description="Any common format; national numbers are read in the school's "
        "`default_region`. Stored as E.164.",
        examples=["(201) 555-0123", "+12015550123"],
    )
    first_name: PersonName | None = None
    last_name: PersonName | None = None
    fields: dict[FieldName, Text] = Field(
        default_factory=dict,
        description="Merge fields, usable in a campaign body as `{name}`.",
        examples=[{"grade": "9", "homeroom": "B12"}],
    )

    @field_validator("first_name", "last_name")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        value = value.strip() if value is not None else None
        return value or None

    @field_validator("fields")
    @classmethod
    def _strip_values(cls, value: dict[str, str]) -> dict[str, str]:
        return {name: text.strip() for name, text in value.items()}


class ContactImport(RequestSchema):
    contacts: list[ContactIn]


class RejectedRow(BaseModel):
    row: int = Field(description="1-based number of the data row (the CSV header is not counted).")
    phone: str = Field(description="The phone as it was sent.")
    reason: str = Field(examples=["not a valid phone number", "already in this list"])


class ImportResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "imported": 5,
                    "rejected": [
                        {"row": 6, "phone": "not a phone", "reason": "not a phone number"}
                    ],
                }
            ]
        }
    )

    imported: int
    rejected: list[RejectedRow]


class Contact(Schema):
    model_config = examples.config(*examples.CONTACTS)

    id: Id
    phone: str = Field(description="E.164", examples=["+12015550123"])
    first_name: str | None
    last_name: str | None
    fields: dict[str, Any]
    created_at: datetime


CSV_EXAMPLE = (
    "phone,first_name,last_name,grade\n(201) 555-0123,Ada,Lovelace,9\n+12015550124,Alan,Turing,10\n"
)


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with its `$defs` written in place: OpenAPI resolves `#/...` refs against
    the whole document, so a schema outside components cannot carry its own `$defs`."""
    defs: dict[str, Any] = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                target = walk(defs[ref.removeprefix("#/$defs/")])
                return {**target, **{k: walk(v) for k, v in node.items() if k != "$ref"}}
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


# The import body is read raw (FastAPI parses JSON only), so both types are declared here.
IMPORT_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": _inline_refs(ContactImport.model_json_schema()),
                "example": {
                    "contacts": [
                        {
                            "phone": "(201) 555-0123",
                            "first_name": "Ada",
                            "last_name": "Lovelace",
                            "fields": {"grade": "9"},
                        }
                    ]
                },
            },
            "text/csv": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "UTF-8 (a byte-order mark is fine), comma-separated, with a "
                    "header row. `phone` is required; `first_name` and `last_name` are "
                    "optional; every other named column becomes a merge field, its name "
                    "trimmed and lower-cased. Header names are case-insensitive. Blank "
                    "lines are skipped but still counted in row numbers.",
                },
                "example": CSV_EXAMPLE,
            },
        },
    }
}

"""Import bodies, JSON or CSV, read into rows. Phones are judged later, by the service;
nothing here touches the database, so it can run in a worker thread."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.contact_lists import schemas
from app.errors import BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType

JSON = "application/json"
CSV = "text/csv"
# A body with thousands of bad rows would otherwise answer with thousands of errors.
MAX_ERRORS = 100


@dataclass(frozen=True, slots=True)
class ContactRow:
    """One data row as sent: `row` is its 1-based number, `phone` not yet parsed."""

    row: int
    phone: str
    first_name: str | None
    last_name: str | None
    fields: dict[str, str]


def media_type(content_type: str | None) -> str:
    """The body's media type, or 415 when it is neither JSON nor CSV."""
    media = (content_type or "").partition(";")[0].strip().lower()
    if not media:
        raise UnsupportedMediaType(
            f"Say what the body is with a Content-Type header: `{JSON}` or `{CSV}`."
        )
    if media not in (JSON, CSV):
        raise UnsupportedMediaType(
            f"Send contacts as `{JSON}` or `{CSV}`, not `{media}`. A CSV file goes as the "
            "raw request body, not as a multipart form upload."
        )
    return media


def read_rows(body: bytes, content_type: str | None, max_rows: int) -> list[ContactRow]:
    """The body's contact rows; 400/413/415/422 problems when it cannot be imported at all."""
    media = media_type(content_type)
    if not body.strip():
        raise BadRequest("The body is empty; send the contacts to import.")
    if media == CSV:
        return _from_csv(body, max_rows)
    return _from_json(body, max_rows)


def _too_many(max_rows: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"An import may hold at most {max_rows:,} rows; this one has more. Nothing was "
        "imported: split the file and send the parts one by one.",
        extra={"max_rows": max_rows},
    )


def _from_json(body: bytes, max_rows: int) -> list[ContactRow]:
    try:
        data = schemas.ContactImport.model_validate_json(body)
    except ValidationError as exc:
        errors: list[Any] = [
            {**error, "loc": ("body", *error["loc"])}
            for error in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        # Rendered by the app's one handler: 400 for malformed JSON, 422 otherwise.
        raise RequestValidationError(errors[:MAX_ERRORS]) from exc
    if len(data.contacts) > max_rows:
        raise _too_many(max_rows)
    return [
        ContactRow(number, contact.phone, contact.first_name, contact.last_name, contact.fields)
        for number, contact in enumerate(data.contacts, start=1)
    ]


def _decode(body: bytes) -> str:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"The CSV is not UTF-8 text (byte {exc.start + 1} is not valid UTF-8). Save it "
            "as “CSV UTF-8” and send it again."
        ) from exc
    if "\x00" in text:
        raise BadRequest(
            "The CSV is not UTF-8 text: it contains NUL bytes (UTF-16, or a spreadsheet file "
            "rather than CSV?). Save it as “CSV UTF-8” and send it again."
        )
    return text


def _columns(header: list[str]) -> tuple[int, int | None, int | None, list[tuple[str, int]]]:
    """Positions of phone, first_name, last_name, and the merge fields as (name, position)."""
    positions: dict[str, int] = {}
    for position, raw in enumerate(header):
        name = raw.strip().lower()
        if not name:
            continue  # an unnamed column cannot be a merge field; spreadsheets add them
        if name in positions:
            raise _header_problem(f"The column `{name}` appears twice in the header row.")
        positions[name] = position
    if "phone" not in positions:
        found = ", ".join(f"`{name}`" for name in positions) or "none"
        raise _header_problem(
            "The CSV's first row must be a header naming its columns, with a `phone` column "
            f"(and optionally `first_name`, `last_name`, and merge fields). Columns found: "
            f"{found}. Columns are separated by commas."
        )
    phone = positions.pop("phone")
    first_name = positions.pop("first_name", None)
    last_name = positions.pop("last_name", None)
    return phone, first_name, last_name, list(positions.items())


def _header_problem(detail: str) -> Unprocessable:
    return Unprocessable(
        detail, extra={"errors": [{"loc": ["body", "header"], "msg": detail, "type": "csv_header"}]}
    )


def _from_csv(body: bytes, max_rows: int) -> list[ContactRow]:
    text = _decode(body)
    if not text.strip():
        raise BadRequest("The body is empty; send the contacts to import.")
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[ContactRow] = []
    try:
        phone, first, last, fields = _columns(next(reader, []))
        # Short rows are padded to every named column: missing cells read as blank.
        width = 1 + max(phone, first or 0, last or 0, *(at for _, at in fields))
        for number, cells in enumerate(reader, start=1):
            if not "".join(cells).strip():
                continue  # a blank line: nothing to judge, but it keeps its number
            if len(rows) == max_rows:
                raise _too_many(max_rows)
            if len(cells) < width:
                cells += [""] * (width - len(cells))
            rows.append(
                ContactRow(
                    row=number,
                    phone=cells[phone].strip(),
                    first_name=None if first is None else cells[first].strip() or None,
                    last_name=None if last is None else cells[last].strip() or None,
                    fields={name: cells[at].strip() for name, at in fields},
                )
            )
    except csv.Error as exc:
        raise BadRequest(f"The CSV cannot be read at line {reader.line_num}: {exc}.") from exc
    return rows

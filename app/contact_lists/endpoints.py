from __future__ import annotations

from fastapi import APIRouter, status

from app.contact_lists import schemas, service
from app.contact_lists.dependencies import ImportRows
from app.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
    responses,
)
from app.kit.deps import SessionDep
from app.kit.pagination import CURSOR_ERROR, Cursor, Limit, Page
from app.kit.schemas import parse_uuid
from app.models import AuditAction
from app.schools.dependencies import CurrentSchool, SchoolTrail

router = APIRouter(tags=["contact-lists"])

LIST = "contact list"
NO_SUCH_LIST = (NotFound, "No such list in this school.")


@router.post(
    "/contact-lists",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.ContactList,
    operation_id="createContactList",
    summary="Create a contact list",
)
async def create_contact_list(
    school: CurrentSchool, session: SessionDep, trail: SchoolTrail, data: schemas.ContactListCreate
) -> schemas.ContactList:
    """Create an empty contact list."""
    created = await service.create(session, school, data)
    trail.record(school.id, AuditAction.contact_list_create, created.id)
    return schemas.ContactList.model_validate(created)


@router.get(
    "/contact-lists",
    response_model=Page[schemas.ContactList],
    operation_id="listContactLists",
    summary="List contact lists",
    responses=responses(CURSOR_ERROR),
)
async def list_contact_lists(
    school: CurrentSchool, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[schemas.ContactList]:
    """The school's contact lists, newest first."""
    rows, next_cursor = await service.list_page(session, school, limit, cursor)
    items = [schemas.ContactList.model_validate(row) for row in rows]
    return Page[schemas.ContactList](items=items, next_cursor=next_cursor)


@router.get(
    "/contact-lists/{list_id}",
    response_model=schemas.ContactList,
    operation_id="getContactList",
    summary="Get a contact list",
    responses=responses(NO_SUCH_LIST),
)
async def get_contact_list(
    list_id: str, school: CurrentSchool, session: SessionDep
) -> schemas.ContactList:
    """One contact list with its contact count."""
    found = await service.get(session, school, parse_uuid(list_id, LIST))
    return schemas.ContactList.model_validate(found)


@router.delete(
    "/contact-lists/{list_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="deleteContactList",
    summary="Delete a contact list",
    responses=responses(
        NO_SUCH_LIST, (Conflict, "A campaign uses the list; the problem names the campaigns.")
    ),
)
async def delete_contact_list(
    list_id: str, school: CurrentSchool, session: SessionDep, trail: SchoolTrail
) -> None:
    """Delete a contact list and its contacts (refused while a campaign uses it)."""
    list_uuid = parse_uuid(list_id, LIST)
    await service.delete(session, school, list_uuid)
    trail.record(school.id, AuditAction.contact_list_delete, list_uuid)


@router.post(
    "/contact-lists/{list_id}/contacts",
    response_model=schemas.ImportResult,
    openapi_extra=schemas.IMPORT_REQUEST_BODY,
    operation_id="importContacts",
    summary="Import contacts (JSON or CSV)",
    responses=responses(
        (
            BadRequest,
            "Malformed JSON, a CSV that is not UTF-8 or cannot be read, or an empty body.",
        ),
        NO_SUCH_LIST,
        (
            PayloadTooLarge,
            "More rows than the import limit (`MAX_IMPORT_ROWS`), or a body that is too large.",
        ),
        (UnsupportedMediaType, "Neither `application/json` nor `text/csv`."),
        (Unprocessable, "JSON of the wrong shape, or a CSV header without a `phone` column."),
    ),
)
async def import_contacts(
    list_id: str, school: CurrentSchool, rows: ImportRows, session: SessionDep, trail: SchoolTrail
) -> schemas.ImportResult:
    """Import contacts from JSON or CSV. Each row is judged on its own: rows with a missing,
    unreadable or invalid phone, or a number already in the list (or earlier in the
    upload), are listed in `rejected` with their 1-based row number; the rest are imported."""
    list_uuid = parse_uuid(list_id, LIST)
    result = await service.import_contacts(session, school, list_uuid, rows)
    if result.imported:
        details = {"imported": result.imported, "rejected": len(result.rejected)}
        trail.record(school.id, AuditAction.contact_list_import, list_uuid, details)
    return result


@router.get(
    "/contact-lists/{list_id}/contacts",
    response_model=Page[schemas.Contact],
    operation_id="listContacts",
    summary="List a contact list's contacts",
    responses=responses(NO_SUCH_LIST, CURSOR_ERROR),
)
async def list_contacts(
    list_id: str,
    school: CurrentSchool,
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[schemas.Contact]:
    """The list's contacts, in the order they were imported."""
    contacts, next_cursor = await service.contacts_page(
        session, school, parse_uuid(list_id, LIST), limit, cursor
    )
    items = [schemas.Contact.model_validate(contact) for contact in contacts]
    return Page[schemas.Contact](items=items, next_cursor=next_cursor)

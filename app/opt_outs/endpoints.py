from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.errors import NotFound, Unprocessable, responses
from app.kit.deps import SessionDep
from app.kit.pagination import CURSOR_ERROR, Cursor, Limit, Page
from app.models import AuditAction, OptOutSource
from app.opt_outs import schemas, service
from app.schools.dependencies import CurrentSchool, SchoolTrail

router = APIRouter(prefix="/opt-outs", tags=["opt-outs"])


@router.get(
    "",
    response_model=Page[schemas.OptOut],
    operation_id="listOptOuts",
    summary="List opted-out numbers",
    responses=responses(CURSOR_ERROR),
)
async def list_opt_outs(
    school: CurrentSchool, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[schemas.OptOut]:
    """The school's opt-out list, by phone number."""
    rows, next_cursor = await service.list_page(session, school, cursor, limit)
    return Page(items=[schemas.OptOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.OptOut,
    operation_id="createOptOut",
    summary="Opt a number out",
    responses={
        200: {"model": schemas.OptOut, "description": "Already opted out"},
        **responses((Unprocessable, "Invalid input, or `phone` is not a valid phone number.")),
    },
)
async def create_opt_out(
    data: schemas.OptOutCreate,
    school: CurrentSchool,
    session: SessionDep,
    trail: SchoolTrail,
    response: Response,
) -> schemas.OptOut:
    """Opt a number out (staff); its waiting messages in every campaign are cancelled."""
    record, created = await service.opt_out(
        session,
        school.id,
        service.normalize(school, data.phone),
        source=OptOutSource.staff,
        keyword=data.keyword,
    )
    if created:
        trail.record(school.id, AuditAction.opt_out_create, record.phone)
    else:
        response.status_code = status.HTTP_200_OK
    return schemas.OptOut.model_validate(record)


@router.delete(
    "/{phone}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="deleteOptOut",
    summary="Opt a number back in",
    responses=responses(
        (NotFound, "The number is not on the school's opt-out list."),
        (Unprocessable, "`phone` is not a valid phone number."),
    ),
)
async def delete_opt_out(
    phone: str, school: CurrentSchool, session: SessionDep, trail: SchoolTrail
) -> Response:
    """Opt a number back in."""
    opted_in = await service.opt_in(session, school, phone)
    trail.record(school.id, AuditAction.opt_out_delete, opted_in)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

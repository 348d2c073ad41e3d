from __future__ import annotations

from fastapi import APIRouter

from app.failed_reasons.schemas import FailedReasonOut
from app.sending import reasons

router = APIRouter(tags=["failed-reasons"])


@router.get(
    "/failed-reasons",
    response_model=list[FailedReasonOut],
    operation_id="listFailedReasons",
    summary="The failed-reason catalog",
)
async def list_failed_reasons() -> list[FailedReasonOut]:
    """The failed-reason catalog: code, label, definitions and whether a resend is allowed."""
    return [FailedReasonOut.model_validate(reason) for reason in reasons.CATALOG]

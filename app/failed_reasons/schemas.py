"""The failed-reason catalog's response schema."""

from __future__ import annotations

from pydantic import Field

from app.kit.schemas import Schema


class FailedReasonOut(Schema):
    """One failed reason of the catalog, for tooltips and filters."""

    code: str = Field(examples=["unreachable_number"])
    label: str = Field(examples=["Unreachable Number"])
    definitions: list[str]
    resendable: bool | None = Field(
        description="Whether staff may resend; null for `reattempting`, which is not final"
    )

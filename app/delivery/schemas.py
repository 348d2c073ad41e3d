"""Response schemas of the delivery domain: message previews and the failed-reason catalog."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.kit.schemas import Schema


class Preview(Schema):
    """A rendered message as the carrier will see it (read from `message.Measure`)."""

    text: str
    encoding: Literal["GSM-7", "UCS-2"]
    characters: int = Field(
        description="GSM-7 septets (extension characters count 2) or UTF-16 code units"
    )
    segments: int = Field(description="SMS parts the message is sent in (0 for an empty text)")


class FailedReasonOut(Schema):
    """One failed reason of the catalog (SPEC §4), for tooltips and filters."""

    code: str = Field(examples=["unreachable_number"])
    label: str = Field(examples=["Unreachable Number"])
    definitions: list[str]
    resendable: bool | None = Field(
        description="Whether staff may resend; null for `reattempting`, which is not final"
    )

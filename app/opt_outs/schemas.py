from __future__ import annotations

from datetime import datetime

from pydantic import Field

from app.kit import examples
from app.kit.schemas import Id, RequestSchema, Schema
from app.models.opt_out import OptOutSource


class OptOutCreate(RequestSchema):
    phone: str = Field(
        min_length=1, max_length=40, description="E.164, or national in the school's region"
    )
    keyword: str | None = Field(default=None, max_length=64)


class OptOut(Schema):
    model_config = examples.config(examples.OPT_OUT)

    phone: str
    source: OptOutSource
    keyword: str | None
    campaign_id: Id | None
    created_at: datetime

from __future__ import annotations

from datetime import datetime, time
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from app.kit.phones import is_country_code, is_region
from app.kit.schemas import Id, RequestSchema, Schema

HHMM = Annotated[
    time,
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str),
    Field(description="Local time, HH:MM", examples=["08:00"]),
]


def _check_timezone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {value!r}") from exc
    return value


def _check_region(value: str) -> str:
    if not is_region(value.upper()):
        raise ValueError(f"unknown ISO 3166 region {value!r}")
    return value.upper()


def _check_country_codes(values: list[int]) -> list[int]:
    bad = [v for v in values if not is_country_code(v)]
    if bad:
        raise ValueError(f"unknown country calling codes: {bad}")
    return sorted(set(values))


TimeZoneName = Annotated[str, AfterValidator(_check_timezone), Field(examples=["America/Chicago"])]
Region = Annotated[str, AfterValidator(_check_region), Field(examples=["US"])]
CountryCodes = Annotated[
    list[int], AfterValidator(_check_country_codes), Field(min_length=1, examples=[[1]])
]


class SendingWindow(BaseModel):
    """Local hours (school time zone) in which attempts may start."""

    start: HHMM
    end: HHMM

    @model_validator(mode="after")
    def _not_empty(self) -> SendingWindow:
        if self.start == self.end:
            raise ValueError("start and end must differ (use null for any time)")
        return self


class RetryPolicy(BaseModel):
    base_delay_seconds: int = Field(ge=1, le=86_400)
    max_delay_seconds: int = Field(ge=1, le=7 * 86_400)
    max_retry_age_seconds: int | None = Field(
        default=None, ge=60, description="null: retry indefinitely while the campaign is active"
    )

    @model_validator(mode="after")
    def _ordered(self) -> RetryPolicy:
        if self.max_delay_seconds < self.base_delay_seconds:
            raise ValueError("max_delay_seconds must be at least base_delay_seconds")
        return self


class SchoolSettings(RequestSchema):
    """What `PATCH /v1/school` may change; every field optional."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    timezone: TimeZoneName | None = None
    default_region: Region | None = None
    allowed_country_codes: CountryCodes | None = None
    sending_window: SendingWindow | None = None
    retry_policy: RetryPolicy | None = None

    @field_validator("name")
    @classmethod
    def _strip(cls, value: str | None) -> str | None:
        return value.strip() if value is not None else None


class SchoolCreate(SchoolSettings):
    name: str = Field(min_length=1, max_length=200)


class School(Schema):
    id: Id
    name: str
    timezone: str
    default_region: str
    allowed_country_codes: list[int]
    sending_window: SendingWindow | None
    retry_policy: RetryPolicy
    created_at: datetime


class SchoolWithKey(School):
    api_key: str = Field(description="Shown once; store it now.")


class ApiKeyCreated(BaseModel):
    id: Id
    api_key: str = Field(description="Shown once; store it now.")
    prefix: str
    created_at: datetime


class TwilioAccount(RequestSchema):
    provider: Literal["twilio"]
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: str = Field(min_length=8, max_length=128)
    from_number: str | None = Field(default=None, max_length=32)
    messaging_service_sid: str | None = Field(default=None, pattern=r"^MG[0-9a-fA-F]{32}$")
    api_base: str | None = Field(default=None, max_length=300, pattern=r"^https?://")
    max_messages_per_second: float | None = Field(default=None, gt=0, le=10_000)

    @model_validator(mode="after")
    def _sender(self) -> TwilioAccount:
        if (self.from_number is None) == (self.messaging_service_sid is None):
            raise ValueError("give exactly one of from_number or messaging_service_sid")
        return self


class TelnyxAccount(RequestSchema):
    provider: Literal["telnyx"]
    api_key: str = Field(min_length=8, max_length=256)
    public_key: str = Field(min_length=40, max_length=100, description="Base64 Ed25519 key")
    from_number: str | None = Field(default=None, max_length=32)
    messaging_profile_id: str | None = Field(default=None, max_length=64)
    api_base: str | None = Field(default=None, max_length=300, pattern=r"^https?://")
    max_messages_per_second: float | None = Field(default=None, gt=0, le=10_000)

    @model_validator(mode="after")
    def _sender(self) -> TelnyxAccount:
        if (self.from_number is None) == (self.messaging_profile_id is None):
            raise ValueError("give exactly one of from_number or messaging_profile_id")
        return self


class SimulatorAccount(RequestSchema):
    provider: Literal["simulator"]
    max_messages_per_second: float | None = Field(default=None, gt=0, le=10_000)


ProviderAccountIn = Annotated[
    TwilioAccount | TelnyxAccount | SimulatorAccount, Field(discriminator="provider")
]


class ProviderAccount(Schema):
    """A provider account as the API shows it: never with its secrets."""

    provider: str
    account_sid: str | None = None
    from_number: str | None = None
    messaging_service_sid: str | None = None
    messaging_profile_id: str | None = None
    api_base: str | None = None
    max_messages_per_second: float | None = None
    public_key: str | None = None
    updated_at: datetime

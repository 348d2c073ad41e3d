from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime, time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from app.kit import examples
from app.kit.phones import is_country_code, is_region
from app.kit.schemas import NOT_BLANK, Id, RequestSchema, Schema

HHMM_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
# PostgreSQL's `integer` columns hold retry settings; a year is far beyond any useful value.
MAX_RETRY_AGE_SECONDS = 366 * 86_400

StrictInt = Annotated[int, Strict()]
StrictFloat = Annotated[float, Strict()]


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold U+0000: refuse it here rather than fail in SQL.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]


def _hhmm(value: Any) -> Any:
    # Only "HH:MM": pydantic's `time` would also take seconds, offsets ("08:00Z") and
    # numbers, none of which the school's local wall-clock window can mean.
    if not isinstance(value, str) or not re.fullmatch(HHMM_PATTERN, value):
        raise ValueError("must be a 24-hour local time written HH:MM, such as 08:00")
    return value


HHMM = Annotated[
    time,
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str),
    Field(description="Local time, HH:MM", examples=["08:00"]),
]
HHMMIn = Annotated[
    time,
    BeforeValidator(_hhmm),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": HHMM_PATTERN,
            "description": "Local time, HH:MM (24-hour)",
            "examples": ["08:00"],
        }
    ),
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


# The shapes JSON Schema can check; whether the zone or region exists, only the code can.
TimeZoneName = Annotated[
    str,
    Field(
        max_length=64,
        pattern=r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$",
        description="An IANA time zone name.",
        examples=["America/Chicago"],
    ),
    AfterValidator(_check_timezone),
]
Region = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z]{2}$",
        description="An ISO 3166 region (any case): national numbers are read in it.",
        examples=["US"],
    ),
    AfterValidator(_check_region),
]
CountryCodes = Annotated[
    list[Annotated[StrictInt, Field(ge=1, le=999)]],
    AfterValidator(_check_country_codes),
    Field(min_length=1, description="Country calling codes.", examples=[[1]]),
]
SchoolName = Annotated[
    Text, Field(min_length=1, max_length=200, json_schema_extra={"pattern": NOT_BLANK})
]


class SendingWindowIn(RequestSchema):
    """Local hours (school time zone) in which attempts may start; `start` and `end` differ
    (an `end` before `start` spans midnight)."""

    start: HHMMIn
    end: HHMMIn

    @model_validator(mode="after")
    def _not_empty(self) -> SendingWindowIn:
        if self.start == self.end:
            raise ValueError("start and end must differ (use null for any time)")
        return self


# A sender's rate: from one message every 100 seconds (the slowest senders allow one every
# few seconds) to 10,000 a second.
MessagesPerSecond = Annotated[StrictFloat, Field(ge=0.01, le=10_000)]
BaseDelaySeconds = Annotated[StrictInt, Field(ge=1, le=86_400)]
MaxDelaySeconds = Annotated[StrictInt, Field(ge=1, le=7 * 86_400)]
MaxRetryAgeSeconds = Annotated[StrictInt, Field(ge=60, le=MAX_RETRY_AGE_SECONDS)]
RETRY_INDEFINITELY = "null: retry indefinitely while the campaign is active"


def _sent_not_null(cls: type, value: object) -> object:
    """A partial update's field validator: it runs only on the values sent, where an
    explicit null would otherwise be silently taken for "unchanged"."""
    if value is None:
        raise ValueError("cannot be null; omit the field to keep its value")
    return value


class RetryPolicyIn(RequestSchema):
    """A whole retry policy, as a school must hold it: what a change leaves once merged
    with the settings it does not name."""

    base_delay_seconds: BaseDelaySeconds
    max_delay_seconds: MaxDelaySeconds
    max_retry_age_seconds: MaxRetryAgeSeconds | None = Field(
        default=None, description=RETRY_INDEFINITELY
    )

    @field_validator("max_delay_seconds")
    @classmethod
    def _ordered(cls, value: int, info: ValidationInfo) -> int:
        # A field check rather than a model one, so that the 422 names the field.
        base = info.data.get("base_delay_seconds")
        if base is not None and value < base:
            raise ValueError(f"must be at least base_delay_seconds ({base})")
        return value


class RetryPolicyPatch(RequestSchema):
    """Any of the retry settings: those omitted keep their current values, and the policy
    that results must still be valid (max_delay_seconds at least base_delay_seconds)."""

    # `SkipJsonSchema[None]`: None is only the "not sent" default, never a value to send.
    base_delay_seconds: BaseDelaySeconds | SkipJsonSchema[None] = None
    max_delay_seconds: MaxDelaySeconds | SkipJsonSchema[None] = None
    max_retry_age_seconds: MaxRetryAgeSeconds | None = Field(
        default=None, description=f"{RETRY_INDEFINITELY}; omitted: unchanged"
    )

    _not_null = field_validator("base_delay_seconds", "max_delay_seconds")(_sent_not_null)


class SchoolSettings(RequestSchema):
    """What `PATCH /v1/school` may change; every field optional, omitted ones stay as they
    are, and `retry_policy` changes only the retry settings it names. `sending_window: null`
    means any time; the other settings cannot be null."""

    # `SkipJsonSchema[None]`: None is only the "not sent" default, never a value to send.
    name: SchoolName | SkipJsonSchema[None] = None
    timezone: TimeZoneName | SkipJsonSchema[None] = None
    default_region: Region | SkipJsonSchema[None] = None
    allowed_country_codes: CountryCodes | SkipJsonSchema[None] = None
    sending_window: SendingWindowIn | None = None
    retry_policy: RetryPolicyPatch | SkipJsonSchema[None] = None

    _not_null = field_validator(
        "name", "timezone", "default_region", "allowed_country_codes", "retry_policy"
    )(_sent_not_null)

    @field_validator("name")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be blank")
        return value


class SchoolCreate(SchoolSettings):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "Lincoln High", "timezone": "America/Chicago", "sending_window": None}
            ]
        }
    )

    name: SchoolName


class SendingWindow(Schema):
    """Local hours (school time zone) in which attempts may start."""

    start: HHMM
    end: HHMM


class RetryPolicy(Schema):
    base_delay_seconds: int
    max_delay_seconds: int
    max_retry_age_seconds: int | None = Field(
        description="null: retry indefinitely while the campaign is active"
    )


class School(Schema):
    model_config = examples.config(examples.SCHOOL)

    id: Id
    name: str
    timezone: str
    default_region: str
    allowed_country_codes: list[int]
    sending_window: SendingWindow | None
    retry_policy: RetryPolicy
    created_at: datetime


class SchoolWithKey(School):
    model_config = examples.config(examples.SCHOOL_WITH_KEY)

    api_key: str = Field(description="Shown once; store it now.")


KeyName = Annotated[
    Text, Field(min_length=1, max_length=100, json_schema_extra={"pattern": NOT_BLANK})
]
DEFAULT_KEY_NAME = "API key"


class ApiKeyCreate(RequestSchema):
    name: KeyName = Field(description="What the key is for, so staff can tell keys apart.")

    @field_validator("name")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be blank")
        return value


class ApiKey(Schema):
    """A school's API key as it is listed: never its secret."""

    model_config = examples.config(examples.API_KEY)

    id: Id
    name: str
    prefix: str = Field(description="The key's first characters, as the audit trail names it.")
    created_at: datetime
    last_used_at: datetime | None = Field(
        description="The minute of the key's latest use (seconds are zero); null: never used."
    )
    revoked_at: datetime | None = Field(description="null: the key works.")


class ApiKeyCreated(ApiKey):
    model_config = examples.config(
        examples.API_KEY | {"api_key": examples.SCHOOL_WITH_KEY["api_key"]}
    )

    api_key: str = Field(description="Shown once; store it now.")


API_BASE = r"^https?://[^\x00]*$"
# Base64 of a 32-byte Ed25519 key, as the Telnyx portal shows it; spaces and line breaks
# around it (from a copy) are ignored.
ED25519_KEY = r"^[ \t\r\n]*[A-Za-z0-9+/]{43}=[ \t\r\n]*$"
ED25519_AROUND = " \t\r\n"


def _one_of(*names: str) -> dict[str, Any]:
    """JSON Schema for "exactly one of these fields, as text" (the model's `_sender`)."""
    return {
        "oneOf": [{"required": [name], "properties": {name: {"type": "string"}}} for name in names]
    }


def _ed25519_key(value: str) -> str:
    value = value.strip(ED25519_AROUND)
    if not re.fullmatch(ED25519_KEY, value):
        raise ValueError("must be the base64 public key shown in the Telnyx portal")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("must be the base64 public key shown in the Telnyx portal") from exc
    if len(raw) != 32:
        raise ValueError("must be a base64 Ed25519 public key (32 bytes)")
    return value


class TwilioAccount(RequestSchema):
    model_config = ConfigDict(
        json_schema_extra=_one_of("from_number", "messaging_service_sid")
        | {
            "examples": [
                {
                    "provider": "twilio",
                    "account_sid": "AC" + "0" * 32,
                    "auth_token": "your-auth-token",
                    "from_number": "+12015550199",
                }
            ]
        }
    )

    provider: Literal["twilio"]
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: Text = Field(min_length=8, max_length=128)
    from_number: Text | None = Field(default=None, max_length=32)
    messaging_service_sid: str | None = Field(default=None, pattern=r"^MG[0-9a-fA-F]{32}$")
    api_base: str | None = Field(default=None, max_length=300, pattern=API_BASE)
    max_messages_per_second: MessagesPerSecond | None = None

    @model_validator(mode="after")
    def _sender(self) -> TwilioAccount:
        if (self.from_number is None) == (self.messaging_service_sid is None):
            raise ValueError("give exactly one of from_number or messaging_service_sid")
        return self


class TelnyxAccount(RequestSchema):
    model_config = ConfigDict(json_schema_extra=_one_of("from_number", "messaging_profile_id"))

    provider: Literal["telnyx"]
    api_key: Text = Field(min_length=8, max_length=256)
    public_key: Annotated[str, AfterValidator(_ed25519_key)] = Field(
        min_length=40,
        max_length=100,
        description="Base64 Ed25519 key",
        json_schema_extra={"pattern": ED25519_KEY},
    )
    from_number: Text | None = Field(default=None, max_length=32)
    messaging_profile_id: Text | None = Field(default=None, max_length=64)
    api_base: str | None = Field(default=None, max_length=300, pattern=API_BASE)
    max_messages_per_second: MessagesPerSecond | None = None

    @model_validator(mode="after")
    def _sender(self) -> TelnyxAccount:
        if (self.from_number is None) == (self.messaging_profile_id is None):
            raise ValueError("give exactly one of from_number or messaging_profile_id")
        return self


class SimulatorAccount(RequestSchema):
    provider: Literal["simulator"]
    max_messages_per_second: MessagesPerSecond | None = None


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

"""Phone numbers: parsed and validated with `phonenumbers`, stored as E.164."""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat


@dataclass(frozen=True, slots=True)
class Phone:
    e164: str
    country_code: int


class InvalidPhone(ValueError):
    """`str(exc)` is the reason, worded for staff."""


def parse_phone(raw: str, region: str) -> Phone:
    text = raw.strip()
    if not text:
        raise InvalidPhone("missing phone number")
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        raise InvalidPhone("not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone("not a valid phone number")
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    return Phone(e164=e164, country_code=int(number.country_code or 0))


def is_region(code: str) -> bool:
    return code in phonenumbers.SUPPORTED_REGIONS


def is_country_code(code: int) -> bool:
    return code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE
